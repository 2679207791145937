"""One orch run at a time per host: an exclusive flock in state_dir."""

from __future__ import annotations

import fcntl
import os
import time
from typing import Optional

from .errors import LockBusy


class RunLock:
    def __init__(self, state_dir: str, timeout: float) -> None:
        self.path = os.path.join(state_dir, "orch.lock")
        self.timeout = timeout
        self._fd: Optional[int] = None
        self.waited = 0.0

    def __enter__(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start >= self.timeout:
                    holder = _read(fd)
                    os.close(fd)
                    raise LockBusy(f"another orch run holds {self.path} ({holder or 'unknown pid'}) for more than {self.timeout:g}s") from None
                time.sleep(0.01)
        self.waited = time.monotonic() - start
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
