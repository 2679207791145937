"""Reading what orch history shows: both servers' copies of the cluster-wide records (the
promotions and the maintenance record) and this host's journal, merged by the pure
orchestrator/history.py. ``GET /history`` serves it; ``orch history`` and the status page
also merge the other host's (``peer_history``: its ``GET /history``, within a deadline)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

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
    merged = h.merge(journal, h.record_entries(rows) + h.pause_entries(pause_rows), since)
    return h.mark_host(merged, cfg.self_name), errors, unread


PAGE_DEADLINE = 1.0  # seconds the status page waits for the other host's history (never longer)
CLI_DEADLINE = 3.0  # seconds orch history waits for it


@dataclass(frozen=True)
class PeerHistory:
    """The other host's history as its ``GET /history`` gave it, or why there is none."""

    host: str
    entries: Optional[List[Any]]  # None: not read
    why: str = ""  # why not (one line), "" when read

    def note(self) -> str:
        if self.entries is not None:
            return f"{self.host}'s history merged ({len(self.entries)} entries, its journal included)"
        return f"{self.host}'s history not merged: {self.why}"


def peer_history(cfg: Any, since: float, deadline: float) -> "PeerHistoryWait":
    """Start reading the other host's history (its orch's ``GET /history``) on a thread of its
    own; ``.result()`` waits for it until ``deadline`` seconds after the start, never longer
    (a hung peer, a slow answer dripping in: the caller goes on without it)."""
    return PeerHistoryWait(cfg, since, deadline)


class PeerHistoryWait:
    def __init__(self, cfg: Any, since: float, deadline: float) -> None:
        self.host = cfg.peer.name
        self.deadline = deadline
        self.until = time.monotonic() + deadline
        self.got: Optional[PeerHistory] = None
        if not cfg.maintainer.metrics_port:
            self.got = PeerHistory(self.host, None, "maintainer.metrics_port is 0 (no HTTP API to ask)")
            return
        self.thread = threading.Thread(target=self._read, args=(cfg, since), name="peer-history", daemon=True)
        self.thread.start()

    def _read(self, cfg: Any, since: float) -> None:
        from .errors import OrchError
        from .http_client import get_peer

        from urllib.parse import quote

        from .history import iso

        target = "/history" + (f"?since={quote(iso(since))}" if since > 0 else "")
        try:
            doc = get_peer(cfg, target, self.deadline)
        except OrchError as exc:
            self.got = PeerHistory(self.host, None, str(exc))
            return
        if not isinstance(doc, list):
            self.got = PeerHistory(self.host, None, "its GET /history is not a list")
            return
        self.got = PeerHistory(self.host, doc)

    def result(self) -> PeerHistory:
        if self.got is None:
            self.thread.join(max(0.0, self.until - time.monotonic()))
        got = self.got  # read once: the thread may finish after the deadline
        if got is None:
            return PeerHistory(self.host, None, f"no answer within {self.deadline:g}s")
        return got
