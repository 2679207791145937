"""Append-only JSON-lines journal of every run that changes something."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List

JOURNAL = "journal.jsonl"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class Journal:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, JOURNAL)

    def append(self, record: Dict[str, Any]) -> None:
        """One line per record; O_APPEND keeps concurrent writers' lines whole."""
        import json  # deferred: only runs that change something write

        record = {"time": _now(), **record}
        line = (json.dumps(record, sort_keys=False, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def marker(self) -> tuple:
        """Changes whenever a record is appended (for 'did anyone act meanwhile?')."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_size)

    def tail(self, count: int = 10) -> List[Dict[str, Any]]:
        import json

        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for raw in lines[-count:]:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # a torn first line after the seek
        return out
