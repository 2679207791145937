"""Append-only JSON-lines journal of every run that changes something, rotated by size.

``journal.jsonl`` is renamed to ``journal.jsonl.1`` (``.1`` to ``.2`` and so on, the
oldest dropped) once the next record would take it past ``max_bytes``. Appenders in
separate processes (a notify and the maintainer) serialize on an flock of the
current file and re-check after locking that it is still the current one, so a line
is never written to a file being rotated away, never torn and never lost. Readers
take no lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

JOURNAL = "journal.jsonl"
MAX_BYTES = 4 * 1024 * 1024  # a run writes 1-2 KB: thousands of runs per file
KEEP = 4  # rotated files kept: journal.jsonl.1 .. journal.jsonl.4
LOCK_WAIT = 2.0  # seconds an appender waits for another one before writing unlocked
TAIL_BYTES = 256 * 1024  # how much of each file tail() reads

log = logging.getLogger("orchestrator.journal")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class Journal:
    def __init__(self, state_dir: str, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = os.path.join(state_dir, JOURNAL)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)

    def rotated(self, n: int) -> str:
        return f"{self.path}.{n}"

    def append(self, record: Dict[str, Any]) -> None:
        """Write one line (and fdatasync it: one flush per record, the file's size included
        but not its timestamps); rotate first when it would overflow the file.

        Raises OSError when the journal cannot be written: callers decide whether
        that matters (a failover goes on).
        """
        import json  # deferred: only runs that change something write

        record = {"time": _now(), **record}
        line = (json.dumps(record, sort_keys=False, default=str) + "\n").encode()
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                unlocked = _lock(fd, deadline)
                if unlocked:
                    # A writer stuck for seconds (a hung disk?) must not hold this run up.
                    # O_APPEND keeps the line whole; at worst it lands in a just-rotated file.
                    log.warning("journal %s: %s; appending without the lock", self.path, unlocked)
                    _write_all(fd, line)
                    os.fdatasync(fd)
                    return
                if not _is_current(fd, self.path):
                    continue  # rotated while we waited: append to the new file
                size = os.fstat(fd).st_size
                if size and size + len(line) > self.max_bytes:
                    try:
                        self._rotate()
                        continue
                    except OSError as exc:  # growing beats losing the record
                        log.warning("journal %s: cannot rotate (%s); appending to it as it is", self.path, exc.strerror or exc)
                _write_all(fd, line)
                os.fdatasync(fd)
                return
            finally:
                os.close(fd)  # closing releases the flock

    def _rotate(self) -> None:
        """Shift journal.jsonl.N up by one (the oldest is replaced) and the current file to .1.

        Runs under the current file's lock, so only one appender rotates it; renames
        are atomic, so a reader sees every record in exactly one of the files.
        """
        for n in range(self.keep - 1, 0, -1):
            try:
                os.rename(self.rotated(n), self.rotated(n + 1))
            except FileNotFoundError:
                pass
        os.rename(self.path, self.rotated(1))
        log.info("journal %s rotated to %s", self.path, self.rotated(1))

    def marker(self) -> tuple:
        """Changes whenever a record is appended (for 'did anyone act meanwhile?').

        A rotation makes a new current file, another inode than the one renamed to
        .1 (which still exists); the modification time guards against a recycled
        inode of a dropped file coming back with the same size.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def tail(self, count: int = 10) -> List[Dict[str, Any]]:
        """The last ``count`` records, oldest first, across rotated files.

        An unreadable journal gives what could be read (status must still work).
        """
        import json

        chunks: List[List[bytes]] = []  # newest file first
        total = 0
        seen: set = set()
        for path in [self.path] + [self.rotated(n) for n in range(1, self.keep + 1)]:
            got = _read_tail(path, seen)
            if got is None:
                continue  # absent (not rotated that far, or mid-rotation) or already read under its old name
            lines, whole = got
            chunks.append(lines)
            total += len(lines)
            if total >= count or not whole:
                break  # enough, or a cut file: older ones would leave a gap
        out: List[Dict[str, Any]] = []
        for lines in reversed(chunks):
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue  # a torn first line after the seek
        return out[-count:] if count > 0 else []

    def records(self) -> List[Dict[str, Any]]:
        """Every record in the current and rotated files, oldest first (orch history).

        An unreadable file gives what could be read; a rotation while reading may show a
        file under two names, which is read once.
        """
        import json

        out: List[Dict[str, Any]] = []
        seen: set = set()
        for path in [self.rotated(n) for n in range(self.keep, 0, -1)] + [self.path]:
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    data = fh.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("journal %s unreadable: %s", path, exc.strerror or exc)
                continue
            for raw in data.splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # a torn or empty line
                if isinstance(record, dict):
                    out.append(record)
        return out


def _lock(fd: int, deadline: float) -> str:
    """flock the fd, waiting until ``deadline``: "" when locked, else why not."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return ""
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return f"another writer held it for more than {LOCK_WAIT:g}s"
            time.sleep(0.005)
        except OSError as exc:  # no flock here (ENOLCK): O_APPEND still keeps lines whole
            return f"cannot lock it: {exc.strerror or exc}"


def _is_current(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    # One write() for a regular file opened O_APPEND; loop only on a short write (disk full).
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_tail(path: str, seen: set) -> Optional[Tuple[List[bytes], bool]]:
    """(lines, whether the whole file was read), or None when it does not exist or was
    already read under another name (a rotation between two opens)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            key = (st.st_dev, st.st_ino)
            if key in seen:
                return None
            seen.add(key)
            start = max(0, st.st_size - TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("journal %s unreadable: %s", path, exc.strerror or exc)
        return None
    lines = data.splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line is cut by the seek
    return lines, start == 0
