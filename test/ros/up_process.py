"""Helpers for tests that run `swfp up` (the bring-up) as a subprocess and read its prefixed output."""
import os
import re
import signal
import subprocess


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a reaper (an orphan's reaper may be slow, or none)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except FileNotFoundError:
        return True


def started_pids(text: str) -> dict[str, int]:
    """Node name -> pid, from the bring-up's 'started NAME (pid N)' lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'started (\S+) \(pid (\d+)\)', text)}


def finish(proc: subprocess.Popen, log) -> str:
    """SIGKILL the bring-up (its whole process group) if it is still running and every node it started (each in a
    process group of its own, so a killed bring-up leaves them running), then return its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.seek(0)
    out = log.read()
    log.close()
    for pid in started_pids(out).values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:      # stopped already (the usual case after a clean stop)
            pass
    return out
