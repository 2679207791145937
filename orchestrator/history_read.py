"""Reading what orch history shows: both servers' copies of the cluster-wide records (the
promotions and the maintenance record) and this host's journal, merged by the pure
orchestrator/history.py. ``orch history`` prints it; ``GET /history`` serves it."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .journal import Journal

READ_TIMEOUT = 5.0  # seconds per server: a history is read by a person, not on a failover's path


def history_entries(cfg: Any, since: float, read_timeout: float = READ_TIMEOUT) -> Tuple[List[Dict[str, Any]], List[str], int]:
    """``orch history --format json``'s entries (both servers' copies of the promotion and
    maintenance records merged with this host's journal), what could not be read (one line
    each), and how many servers' copies of the promotion record could not be read. GET
    /history serves it."""
    from . import history as h
    from . import pauses, promotions
    from .db import open_servers

    rows: List[Dict[str, Any]] = []
    pause_rows: List[Dict[str, Any]] = []
    errors: List[str] = []
    unread = 0
    servers = open_servers(cfg, read_timeout=read_timeout)
    try:
        for name, server in servers.items():
            got, error = promotions.read_all(server, name, since)
            rows += got
            if error:
                errors.append(f"the promotion record is unreadable on {error}")
                unread += 1
                continue  # the connection is gone: the pause record would fail the same way
            got, error = pauses.read_all(server, name, since)
            pause_rows += got
            if error:
                errors.append(f"the maintenance record is unreadable on {error}")
    finally:
        for s in servers.values():
            s.close()
    journal = h.journal_entries(Journal(cfg.state_dir).records())
    return h.merge(journal, h.record_entries(rows) + h.pause_entries(pause_rows), since), errors, unread
