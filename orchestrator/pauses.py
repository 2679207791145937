"""Maintenance mode's I/O: rows of ``orch_meta.pause``, and this host's ``state_dir/pause.json``.

As the anti-flapping record (orchestrator/promotions.py): each host has its own state_dir, so
``orch pause`` inserts a row on the writable server (created when missing) which replicates to
the peer; every observation reads the latest row from each reachable server's copy (one
query each) and measures its age, and a ``--for`` pause's end, by that server's clock
(``UNIX_TIMESTAMP()`` in the same query), never by this host's. With no (single) writable
server a row would be a read-only server's own transaction (an errant GTID): the record then
goes to this host's state_dir and covers this host only (its age by this host's clock).
The decisions on the record are pure and live in orchestrator/pause.py.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import DatabaseError
from .orch_meta import NO_TABLE, insert_row, read_rows
from .model import PauseRecord
from .pause import KINDS, PAUSE

TABLE = "orch_meta.pause"
LOCAL_FILE = "pause.json"

CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "run_id VARCHAR(64) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL, node VARCHAR(64) NOT NULL, "
    "by_whom VARCHAR(64) NOT NULL DEFAULT '', reason VARCHAR(255) NOT NULL DEFAULT '', "
    "at DECIMAL(17,6) NOT NULL, until DECIMAL(17,6) NULL, KEY by_time (at)) ENGINE=InnoDB"
)
# until: the server's clock plus the pause's length, NULL until orch resume.
INSERT = (f"INSERT INTO {TABLE} (run_id, kind, node, by_whom, reason, at, until) VALUES "
          "(%s, %s, %s, %s, %s, UNIX_TIMESTAMP(NOW(6)), IF(%s > 0, UNIX_TIMESTAMP(NOW(6)) + %s, NULL))")
LATEST = (f"SELECT UNIX_TIMESTAMP(NOW(6)) AS now, run_id, kind, node, by_whom, reason, at, until FROM {TABLE} "
          "ORDER BY at DESC, run_id DESC LIMIT 1")
PRESENT = "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'orch_meta' AND TABLE_NAME = 'pause'"
# orch history: every row recorded, or still in force, at or after a time (a pause that began
# before --since but ran out after it ended in the window).
ALL_SINCE = (f"SELECT UNIX_TIMESTAMP(NOW(6)) AS now, run_id, kind, node, by_whom, reason, at, until FROM {TABLE} "
             "WHERE at >= %s OR until >= %s ORDER BY at DESC, run_id DESC")


def _record(row: Mapping[str, Any], now: float, seen_on: str) -> PauseRecord:
    at = float(row["at"])
    until = row.get("until")
    return PauseRecord(kind=str(row["kind"]), run_id=str(row["run_id"]), node=str(row["node"]), by=str(row.get("by_whom") or ""),
                       reason=str(row.get("reason") or ""), at=at, age=now - at,
                       remaining=None if until is None else float(until) - now, seen_on=seen_on)


def read_latest(server: Any, name: str) -> Tuple[Optional[PauseRecord], str]:
    """(the latest row in this server's copy or None, why it could not be read or "").

    A missing table is no record. Every observation reads it (a FAULT's too), and a failed
    statement closes the connection (the fence would pay a new handshake): so a server
    object first asks whether the table exists, until it has seen it (``present_tables``)."""
    rows, error = read_rows(server, TABLE, PRESENT, LATEST, name, ask_first=True)
    if not rows:
        return None, error
    return _record(rows[0], float(rows[0]["now"]), name), ""


def read_all(server: Any, name: str, since: float = 0.0) -> Tuple[List[Dict[str, Any]], str]:
    """(this server's copy's rows recorded, or in force, at or after ``since`` (epoch seconds),
    newest first, why they could not be read or ""), for orch history. A missing table is no
    record. ``now`` is the server's clock, which a ``--for`` pause's end is measured by."""
    try:
        rows = server.query(ALL_SINCE, (since, since))
    except DatabaseError as exc:
        if exc.code in NO_TABLE:
            return [], ""
        return [], f"{name}: {str(exc).split(': ', 1)[-1]}"
    return [{"run_id": str(r["run_id"]), "kind": str(r["kind"]), "node": str(r["node"]), "by": str(r.get("by_whom") or ""),
             "reason": str(r.get("reason") or ""), "at": float(r["at"]),
             "until": None if r.get("until") is None else float(r["until"]), "now": float(r["now"]), "seen_on": name}
            for r in rows], ""


def combine(copies: Mapping[str, Tuple[Optional[PauseRecord], str]], state_dir: str,
            now: Optional[float] = None) -> Tuple[Optional[PauseRecord], Optional[PauseRecord], str]:
    """(the latest record over both servers' copies and this host's state_dir, the latest in
    the servers' copies alone, the errors of the copies that could not be read)."""
    records = [r for r, _ in copies.values() if r is not None]
    errors = "; ".join(e for _, e in copies.values() if e)
    shared = max(records, key=lambda r: (r.at, r.run_id)) if records else None
    local = read_local(state_dir, time.time() if now is None else now)
    if local is not None:
        records.append(local)
    if not records:
        return None, None, errors
    return max(records, key=lambda r: (r.at, r.run_id)), shared, errors


def record(server: Any, kind: str, node: str, run_id: str, seconds: float = 0.0, reason: str = "", by: str = "") -> str:
    """Insert one row (creating the schema and table when missing); raises DatabaseError."""
    if kind not in KINDS:
        raise ValueError(f"unknown pause kind {kind!r}")
    args = (run_id, kind, node, by[:64], reason[:255], seconds, seconds)
    why = f"maintenance record: {kind}" + (f" for {seconds:g}s" if seconds else "")
    return insert_row(server, INSERT, args, why, CREATE_TABLE, TABLE, "maintenance record (first on record)")


def local_path(state_dir: str) -> str:
    return os.path.join(state_dir, LOCAL_FILE)


def read_local(state_dir: str, now: float) -> Optional[PauseRecord]:
    """This host's record (None when there is none or it cannot be read), aged by ``now``."""
    try:
        with open(local_path(state_dir), encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            return None
        return _record(data, now, "state_dir")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local_pause(state_dir: str) -> bool:
    """Whether this host's state_dir holds a pause (run out or not): orch resume clears it."""
    rec = read_local(state_dir, time.time())
    return rec is not None and rec.kind == PAUSE


def write_local(state_dir: str, kind: str, node: str, run_id: str, seconds: float = 0.0, reason: str = "", by: str = "") -> str:
    """Keep a pause or resume in this host's state_dir (written whole, then renamed)."""
    from .statefile import replace_json

    at = time.time()
    data: Dict[str, Any] = {"kind": kind, "run_id": run_id, "node": node, "by_whom": by, "reason": reason, "at": at,
                            "until": at + seconds if kind == PAUSE and seconds else None}
    path = local_path(state_dir)
    replace_json(path, data, fsync=True, newline=True)
    return f"written to {path}"
