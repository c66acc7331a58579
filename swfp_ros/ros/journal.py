"""The learner's inbox: an append-only on-disk journal of the transitions it received, read back at the pace it
trains. Pure Python + numpy (no ROS).

Why: actors can produce transitions faster than the learner trains on them. Kept in memory, that backlog grows
without bound and dies with the process. Here every accepted transition is written to the journal (one ``os.pwrite``
at the record's offset: in the kernel's page cache, so it survives the learner's process being killed -- not a power
cut, which only the ``sync()`` at each checkpoint covers) before it counts as received (a record the disk took only in
part does not count, and the next one takes its place); the learner stores records into its replay in
order, and each learner checkpoint marks how far it got. A restart resumes from the checkpoint and reads the journal
from there: nothing the journal took is lost, and nothing is stored twice.

Layout of ``DIR``: ``journal.json`` (record size, dims, and ``first_transition``: the learner's transition count at
record 0, i.e. record ``seq`` is the learner's transition number ``first_transition + seq``), and segment files
``<first seq, 12 digits>.seg`` of up to ``SEGMENT_RECORDS`` records. A record is the transition's packed float64
vector (``messages.pack_transition`` layout) followed by its crc32 (8 bytes, little endian). A record torn by a kill in
the middle of a write is cut off when the journal is opened again; a bad record anywhere else is an error (the file
was damaged), never silently skipped.
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from swfp_ros.files import write_text_atomic

SEGMENT_RECORDS = 4096
FORMAT = 'swfp-transition-journal'
FORMAT_VERSION = 1


class JournalError(RuntimeError):
    """A journal that cannot be used as it is; the message names the file."""


class TransitionJournal:
    """Append (one thread) and read (another thread) fixed-size float64 records by sequence number."""

    def __init__(self, directory: str | os.PathLike, record_floats: int, obs_dim: int, act_dim: int,
                 first_transition: int = 0):
        """Open ``directory``'s journal, or create it (with ``first_transition``) when it has none."""
        self.dir = Path(directory)
        self.record_floats = int(record_floats)
        self.record_bytes = 8 * self.record_floats + 8
        self._lock = threading.Lock()              # guards the segment list (append/rotate vs read/prune)
        meta_path = self.dir / 'journal.json'
        want = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'record_floats': self.record_floats,
                'obs_dim': int(obs_dim), 'act_dim': int(act_dim)}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise JournalError(f'{meta_path}: unreadable ({e})') from e
            if {k: meta.get(k) for k in want} != want:
                raise JournalError(f'{meta_path}: a journal of {({k: meta.get(k) for k in want})}, this learner '
                                   f'needs {want}')
            self.first_transition = int(meta['first_transition'])
        else:                                      # write_text_atomic creates the directory
            self.first_transition = int(first_transition)
            write_text_atomic(meta_path, json.dumps({**want, 'first_transition': self.first_transition}))
        self.torn_bytes = 0
        self._segments = self._scan()              # sorted first seqs
        self.written = self._recover_tail()         # records in the journal (next seq to write)
        self._fd = None
        self._fd_first = None

    # --- files -----------------------------------------------------------------------------------------------------
    def _path(self, first: int) -> Path:
        return self.dir / f'{first:012d}.seg'

    def _scan(self) -> list[int]:
        firsts = []
        for p in self.dir.glob('*.seg'):
            try:
                firsts.append(int(p.stem))
            except ValueError:
                raise JournalError(f'{p}: not a journal segment name') from None
        return sorted(firsts)

    def _recover_tail(self) -> int:
        """Check every record; cut off a torn last record; return the number of records."""
        expected = self._segments[0] if self._segments else 0
        for i, first in enumerate(self._segments):
            path = self._path(first)
            if first != expected:
                raise JournalError(f'{path}: starts at record {first}, expected {expected} (a segment is missing)')
            data = path.read_bytes()
            n_full = len(data) // self.record_bytes
            last = i == len(self._segments) - 1
            if len(data) % self.record_bytes and not last:
                raise JournalError(f'{path}: {len(data)} bytes is not a whole number of records')
            for k in range(n_full):
                if not self._record_ok(data[k * self.record_bytes:(k + 1) * self.record_bytes]):
                    if last and k == n_full - 1:     # torn while being written: the write never returned
                        n_full -= 1
                        break
                    raise JournalError(f'{path}: record {first + k} fails its checksum (the file is damaged)')
            keep = n_full * self.record_bytes
            if keep != len(data):
                self.torn_bytes += len(data) - keep
                os.truncate(path, keep)
            expected = first + n_full
        return expected

    def _record_ok(self, raw: bytes) -> bool:
        return zlib.crc32(raw[:-8]) == int.from_bytes(raw[-8:], 'little')

    # --- writing (one thread) --------------------------------------------------------------------------------------
    def append(self, values: np.ndarray) -> int:
        """Write one record; returns its sequence number. It is in the journal when this returns."""
        v = np.ascontiguousarray(values, dtype='<f8')
        if v.shape != (self.record_floats,):
            raise ValueError(f'journal record needs {self.record_floats} values, got shape {v.shape}')
        body = v.tobytes()
        record = body + zlib.crc32(body).to_bytes(8, 'little')
        seq = self.written
        with self._lock:
            if self._fd is None or seq - self._fd_first >= SEGMENT_RECORDS:
                self._rotate(seq)
        # At the record's own offset, not appended: a full disk can write part of a record and return the short count;
        # the record is then not journaled, and the next one overwrites the part (appended, it would follow it and
        # leave a torn record in the middle of the segment, which makes the journal unreadable for good).
        n = os.pwrite(self._fd, record, (seq - self._fd_first) * self.record_bytes)
        if n != len(record):
            raise OSError(f'{self._path(self._fd_first)}: record {seq} written in part ({n} of {len(record)} bytes; '
                          f'disk full?): not journaled')
        self.written = seq + 1
        return seq

    def _rotate(self, seq: int) -> None:
        """Open the segment record ``seq`` goes to: the last one while it has room, else a new one."""
        if self._fd is not None:
            fd, self._fd = self._fd, None           # forgotten first: if the open below fails, no stale descriptor
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if not self._segments or seq - self._segments[-1] >= SEGMENT_RECORDS:
            self._segments.append(seq)
        self._fd_first = self._segments[-1]
        self._fd = os.open(self._path(self._fd_first), os.O_WRONLY | os.O_CREAT, 0o600)   # pwrite: no O_APPEND

    def sync(self) -> None:
        """fsync the segment being written (what a power cut would otherwise lose)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    # --- reading (another thread; prune from the same one) ---------------------------------------------------------
    def read(self, start: int, max_records: int) -> np.ndarray:
        """Records [start, start + n) with n <= max_records, up to what has been written: array [n, record_floats]."""
        end = min(self.written, start + max_records)
        out = []
        seq = start
        while seq < end:
            with self._lock:
                i = int(np.searchsorted(self._segments, seq, side='right')) - 1
                if i < 0:
                    raise JournalError(f'{self.dir}: record {seq} was pruned')
                first = self._segments[i]
            n = min(end, first + SEGMENT_RECORDS) - seq
            with open(self._path(first), 'rb') as f:
                f.seek((seq - first) * self.record_bytes)
                raw = f.read(n * self.record_bytes)
            if len(raw) != n * self.record_bytes:
                raise JournalError(f'{self._path(first)}: records {seq}..{seq + n} are missing')
            recs = np.frombuffer(raw, np.uint8).reshape(n, self.record_bytes)
            for k in range(n):
                if not self._record_ok(recs[k].tobytes()):
                    raise JournalError(f'{self._path(first)}: record {seq + k} fails its checksum')
            out.append(recs[:, :-8].copy().view('<f8').reshape(n, self.record_floats))
            seq += n
        return np.concatenate(out) if out else np.zeros((0, self.record_floats))

    def prune(self, upto: int) -> int:
        """Delete the segments whose records all precede ``upto`` (stored and checkpointed); returns how many."""
        removed = 0
        with self._lock:
            while len(self._segments) > 1 and self._segments[1] <= upto:
                first = self._segments.pop(0)
                self._path(first).unlink()
                removed += 1
        return removed

    def disk_bytes(self) -> int:
        with self._lock:
            firsts = list(self._segments)
        return sum(self._path(f).stat().st_size for f in firsts if self._path(f).exists())
