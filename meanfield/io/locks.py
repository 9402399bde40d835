"""Advisory locks: one writer per run file, one sweep per folder.

``hold(path, what)`` takes an exclusive ``flock`` on ``path`` (created if needed) without
waiting; if another process holds it, :class:`~meanfield.theory.errors.InputError` says who
(pid, host, since when, from the lock file's contents). The lock dies with its process (the
kernel releases it), so a killed run never leaves a stale lock; the file is removed on a
normal release.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from meanfield.theory.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str, parameter: str,
         wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the duration of the block (see module doc);
    retry for up to ``wait`` seconds while another process holds it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    give_up = time.monotonic() + wait
    while True:
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            if time.monotonic() < give_up:
                time.sleep(0.2)
                continue
            raise InputError(parameter, f"{what} is in use by another meanfield process "
                             f"({holder}); wait for it to finish") from None
        # the file may have been removed by the previous holder after we opened it: retry
        try:
            same = os.fstat(fd).st_ino == os.stat(p).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = (f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}")
        os.ftruncate(fd, 0)
        os.write(fd, info.encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(p)
        os.close(fd)


def _read(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 512).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
