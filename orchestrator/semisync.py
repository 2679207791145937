"""Semi-synchronous replication without asynchronous fallback: orch's record of the wait.

With ``failover.semi_sync`` a master acknowledges a commit only once its replica has
received it, and never falls back to asynchronous replication on its own (the server's
timeout is practically infinite). orch switches the wait off in two cases only, each
journaled: on a node it promotes (its peer cannot be replicating from it yet), and on a
master whose replica is gone while the master still reaches the witness. The maintainer
switches it back on once the peer replicates and has caught up.

This file keeps, per host, when orch last switched the wait on or off
(``state_dir/semisync.json``). A rewind trusts a tail to be unacknowledged only when
the wait has been on, with no fallback, since before the tail's first transaction.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

RECORD = "semisync.json"
# rpl_semi_sync_master_timeout (ms) orch sets: about 1 year, i.e. never fall back on its own.
NO_FALLBACK_MS = 31_536_000_000
# A server timeout at least this long counts as "no fallback" (a DBA may have set their own).
NO_FALLBACK_MIN_MS = 86_400_000


def path(state_dir: str) -> str:
    return os.path.join(state_dir, RECORD)


def read_record(state_dir: str) -> Optional[Dict[str, Any]]:
    """orch's last switch of the wait on this host ({"wait": "on"|"off", "at": epoch, "why": ...}), or None."""
    import json

    try:
        with open(path(state_dir), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("wait") not in ("on", "off") or not isinstance(record.get("at"), (int, float)):
        return None
    return record


def write_record(state_dir: str, on: bool, why: str, node: str) -> None:
    """Record a switch (atomically, fsynced) before anything relies on it."""
    from .statefile import replace_json

    replace_json(path(state_dir), {"wait": "on" if on else "off", "at": time.time(), "node": node, "why": why}, fsync=True)


def wait_on_since(state_dir: str, server_started: float) -> Optional[float]:
    """Since when (epoch seconds) the wait has been on without interruption, as far as orch
    knows; None when orch switched it off last.

    With no record orch never switched it: it has been as configured since the server
    started (``server_started`` = now - Uptime). The caller checks that the server's
    settings now say "on, no fallback"; a runtime change by hand is not seen here.
    """
    record = read_record(state_dir)
    if record is None:
        return server_started
    if record["wait"] == "off":
        return None
    return max(float(record["at"]), server_started)
