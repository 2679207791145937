"""A keepalived event that could not get the run lock in time, handed to the maintainer.

Only the newest event matters (it is keepalived's current state), so the file holds one.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

PENDING = "pending-event.json"


def path(state_dir: str) -> str:
    return os.path.join(state_dir, PENDING)


def hand_over(state_dir: str, event: str, run_id: str) -> str:
    """Record the event for the maintainer (atomically); returns the file written."""
    from .statefile import replace_json

    target = path(state_dir)
    replace_json(target, {"event": event, "run": run_id, "time": time.time()}, fsync=True)
    return target


def peek(state_dir: str) -> Optional[Dict[str, Any]]:
    """The handed-over event, left on disk; None when there is none (or it is unreadable)."""
    import json

    try:
        with open(path(state_dir), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("event"), str) else None


def take(state_dir: str) -> Optional[Dict[str, Any]]:
    """The handed-over event, removed from disk (an unreadable one too); None when there is none."""
    record = peek(state_dir)
    try:
        os.unlink(path(state_dir))
    except OSError:
        pass
    return record


def waiting(state_dir: str) -> bool:
    return os.path.exists(path(state_dir))
