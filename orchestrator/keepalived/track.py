"""keepalived's track file (keepalived.track_file, tracked with weight 0) and orch's record of
what it last wrote there.

1 puts this node's VRRP instance in FAULT, so the VIP moves to the peer; 0 lets it take
part again. The HandOver step writes it (execute.py); the maintainer and orch switchover
read it, and the maintainer asks how long ago the VIP was handed back.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

from ..errors import OrchError

log = logging.getLogger(__name__)

HANDOVER_RECORD = "handover.json"  # in state_dir: when orch last wrote the track file, and what


def write_track_file(path: str, give_up: bool) -> str:
    """Write keepalived's track file in place (keepalived re-reads it when it is modified)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b"1\n" if give_up else b"0\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OrchError(f"cannot write keepalived's track file {path}: {exc.strerror or exc}") from None
    return "written"


def read_track_file(path: str) -> str:
    """The track file's value ("" when it does not exist or cannot be read)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(32).strip()
    except OSError:
        return ""


def record_handover(state_dir: str, give_up: bool) -> None:
    """Note in state_dir what was written and when (bookkeeping: a failure is only logged)."""
    from ..statefile import replace_json

    try:
        replace_json(os.path.join(state_dir, HANDOVER_RECORD), {"value": "1" if give_up else "0", "at": time.time()})
    except OSError as exc:
        log.warning("cannot record the hand-over in %s: %s", state_dir, exc.strerror or exc)


def last_handback_age(state_dir: str) -> Optional[float]:
    """Seconds since orch last wrote 0 to the track file (the VIP had left after a hand-over)."""
    import json

    try:
        with open(os.path.join(state_dir, HANDOVER_RECORD), encoding="utf-8") as fh:
            record = json.load(fh)
        if record.get("value") != "0":
            return None
        return max(0.0, time.time() - float(record["at"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
