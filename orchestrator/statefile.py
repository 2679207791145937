"""The one way orch replaces a small file: the JSON state files in state_dir (semisync.json,
pending.json, handover.json, received.json, the alert dedup state, a local ack).

Written whole to a temporary file beside it (mode 0600 unless asked), then renamed over it:
a reader sees the old file or the new one, never a part of either. The temporary file is removed
when anything fails, and the OSError is the caller's to handle: some records must exist
before a step relies on them, others are bookkeeping that only warns."""

from __future__ import annotations

import os
from typing import Any


def replace_json(path: str, data: Any, fsync: bool = False, newline: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON. ``fsync``: on disk before the rename (a record
    something relies on after a crash); ``newline``: end the file with one."""
    import json

    replace_bytes(path, (json.dumps(data) + ("\n" if newline else "")).encode(), fsync=fsync)


def replace_bytes(path: str, body: bytes, fsync: bool = False, mode: int = 0o600) -> None:
    """Replace ``path`` with ``body`` (a new file of ``mode``, less the umask)."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(3).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
