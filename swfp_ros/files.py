"""Writing output files so that a failure (an exception, Ctrl-C, a full disk) never leaves half of one behind."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` to write to. When the block succeeds it replaces ``path`` (flushed to disk
    first), so readers see the old file or the new one, never half of one; when it fails, Ctrl-C included, the
    temporary file is removed and ``path`` is untouched. Missing parent directories are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(target.with_name(f'.{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp'))
    open(tmp, 'xb').close()   # created exclusively, with the usual permissions (umask), unlike mkstemp's 0600
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)   # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
