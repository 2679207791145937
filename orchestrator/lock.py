"""One orch run at a time per host: an exclusive flock in state_dir.

When state_dir cannot hold the lock file (not creatable, read-only or full disk) the
run does not abort: bookkeeping never blocks a failover. It locks the existing
lock file read-only if there is one (flock needs no write access, so it still
excludes a run holding it), or else a lock file outside state_dir whose name is
derived from state_dir, so every run of this cluster on this host falls back to
the same one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
from typing import List, Optional

from .errors import LockBusy, OrchError

LOCK_FILE = "orch.lock"
FALLBACK_DIRS = ("/run/orch", "/dev/shm/orch")  # tmpfs: writable when the state disk is not

log = logging.getLogger("orchestrator.lock")


def fallback_name(state_dir: str) -> str:
    """The fallback lock's file name: readable, and unique per state_dir."""
    import hashlib  # deferred, like everything off the notify hook's happy path

    path = os.path.abspath(state_dir)
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    readable = path.strip("/").replace("/", "-")[-80:] or "root"
    return f"{readable}-{digest}.lock"


class RunLock:
    def __init__(self, state_dir: str, timeout: float) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, LOCK_FILE)
        self.timeout = timeout
        self._fd: Optional[int] = None
        self.waited = 0.0
        self.fallback = False  # True when the lock is not state_dir/orch.lock

    def __enter__(self) -> "RunLock":
        fd = self._open()
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
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass  # a read-only lock file: the flock is what counts
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            primary_error = exc
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            log.warning("run lock %s is not writable (%s); locking it read-only", self.path, primary_error.strerror or primary_error)
            return fd
        except OSError:
            pass
        import tempfile

        name = fallback_name(self.state_dir)
        tried: List[str] = []
        for directory in FALLBACK_DIRS + (os.path.join(tempfile.gettempdir(), "orch"),):
            path = os.path.join(directory, name)
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                _check_private(directory)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                tried.append(f"{path}: {exc.strerror or exc}")
                continue
            log.critical("run lock %s unusable (%s): locking %s instead; the failover goes on",
                         self.path, primary_error.strerror or primary_error, path)
            self.path = path
            self.fallback = True
            return fd
        # Running unlocked could interleave two runs' fences and promotions: refuse instead.
        raise OrchError(f"no usable run lock: {self.path}: {primary_error.strerror or primary_error}; " + "; ".join(tried))

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _check_private(directory: str) -> None:
    """A fallback directory in a world-writable place must be ours alone (no planted files)."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PermissionError(1, f"{directory} is not a private directory of uid {os.geteuid()}")


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
