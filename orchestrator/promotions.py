"""The anti-flapping record's I/O: rows of ``orch_meta.promotions``, and this host's acknowledgement.

Each host has its own state_dir, so the record lives in the databases: after a promotion
opens writes, the new master inserts a row into ``orch_meta.promotions`` (created when
missing), which replicates to the peer. Observation reads the latest row from each
server's copy (one query each, only with ``failover.block_seconds``); the decisions on it
are pure and live in ``orchestrator/antiflap.py``.

Ages are measured by the clock of the server the row is read from (``UNIX_TIMESTAMP()``
in the same query), never by this host's clock.

``orch ack`` writes an ``ack`` row naming the promotion on the writable server. When no
server is writable (the block itself leaves both read-only), a row would be a transaction
of a read-only server's own (an errant GTID): the acknowledgement is then kept in this
host's state_dir (``flap-ack.json``) and covers promotions decided on this host.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .antiflap import FAILOVER, KINDS, SWITCHOVER, latest
from .errors import DatabaseError
from .orch_meta import CREATE_SCHEMA, NO_TABLE, insert_row, read_rows  # noqa: F401  (CREATE_SCHEMA: tests create the table by hand)
from .model import PromotionRecord

# The kinds of row are antiflap's (pure); SWITCHOVER is named here too for the executor's step.
__all__ = ["SWITCHOVER", "read_latest", "read_all", "combine", "record", "record_switchover", "read_local_ack", "write_local_ack"]

log = logging.getLogger(__name__)

SCHEMA = "orch_meta"
TABLE = "orch_meta.promotions"
ACK_FILE = "flap-ack.json"

CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "run_id VARCHAR(64) NOT NULL, kind VARCHAR(16) NOT NULL, node VARCHAR(64) NOT NULL, "
    "at DECIMAL(17,6) NOT NULL, acks VARCHAR(64) NOT NULL DEFAULT '', "
    "PRIMARY KEY (run_id, kind), KEY by_time (at)) ENGINE=InnoDB"
)
INSERT = f"INSERT INTO {TABLE} (run_id, kind, node, at, acks) VALUES (%s, %s, %s, UNIX_TIMESTAMP(NOW(6)), %s)"
# The latest promotion (any kind but ack), whether an ack names it, and the server's clock: one query.
LATEST = (
    "SELECT UNIX_TIMESTAMP(NOW(6)) AS now, p.run_id, p.kind, p.node, p.at, "
    f"EXISTS (SELECT 1 FROM {TABLE} a WHERE a.kind = 'ack' AND a.acks = p.run_id) AS acked "
    f"FROM {TABLE} p WHERE p.kind <> 'ack' ORDER BY p.at DESC, p.run_id DESC LIMIT 1"
)
# Asked instead of LATEST while the table is missing on a server (it cannot fail).
PRESENT = "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'orch_meta' AND TABLE_NAME = 'promotions'"


def read_latest(server: Any, name: str) -> Tuple[Optional[PromotionRecord], str]:
    """(the latest promotion in this server's copy or None, why it could not be read or "").

    A failed statement closes the connection, so a server (kept open by the maintainer)
    whose table was missing is asked whether it exists until it appears; the server object
    remembers it (``Server.missing_tables``) for as long as it lives.
    """
    rows, error = read_rows(server, TABLE, PRESENT, LATEST, name)
    if not rows:
        return None, error
    row = rows[0]
    at = float(row["at"])
    return PromotionRecord(run_id=str(row["run_id"]), kind=str(row["kind"]), node=str(row["node"]), at=at,
                           age=float(row["now"]) - at, acked=bool(int(row["acked"] or 0)), seen_on=name), ""


def combine(copies: Mapping[str, Tuple[Optional[PromotionRecord], str]], state_dir: str) -> Tuple[Optional[PromotionRecord], str]:
    """The latest record over both servers' copies (acknowledged if either copy, or this host's
    state_dir, says so) and the errors of the copies that could not be read."""
    newest, errors = latest(copies)
    if newest is not None and newest.kind == FAILOVER and not newest.acked:
        return latest(copies, read_local_ack(state_dir))  # only a failover's block can be acknowledged here
    return newest, errors


def record(server: Any, kind: str, node: str, run_id: str, acks: str = "") -> str:
    """Insert one row (creating the schema and table when missing); raises DatabaseError.

    ``orch switchover`` calls it with kind SWITCHOVER and the candidate as ``node`` on the
    old master while it is still writable, before fencing it: the row then reaches the
    candidate before the hand-over, and its MASTER event is the planned promotion.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown promotion kind {kind!r}")
    args = (run_id, kind, node, acks)
    why = f"anti-flapping record: {kind} {node}" + (f" acknowledges {acks}" if acks else "")
    return insert_row(server, INSERT, args, why, CREATE_TABLE, TABLE, "anti-flapping record (first promotion on record)")


def record_switchover(server: Any, candidate: str, run_id: str) -> str:
    """For orch switchover, on the old master while it is still writable (before its fence):
    the candidate's coming MASTER is the planned promotion, neither blocked nor counted as
    a failover. Best effort: returns a warning instead of raising (then the candidate's MASTER
    meets the block as any automatic promotion would, and is recorded as a failover)."""
    try:
        return record(server, SWITCHOVER, candidate, run_id)
    except DatabaseError as exc:
        log.warning("switchover not recorded for anti-flapping: %s", exc)
        return f"warning: not recorded: {exc}"


def ack_path(state_dir: str) -> str:
    return os.path.join(state_dir, ACK_FILE)


def read_local_ack(state_dir: str) -> str:
    """The run id this host's state_dir acknowledges ("" when none)."""
    import json

    try:
        with open(ack_path(state_dir), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return ""
    return str(data.get("acks", "")) if isinstance(data, dict) else ""


def write_local_ack(state_dir: str, acks: str, run_id: str) -> str:
    """Acknowledge ``acks`` in this host's state_dir (written whole, then renamed)."""
    import time

    from .statefile import replace_json

    data: Dict[str, Any] = {"acks": acks, "run": run_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = ack_path(state_dir)
    replace_json(path, data, fsync=True, newline=True)
    return f"written to {path}"


# Every row since a time (orch history): the server's own clock, as on record.
ALL_SINCE = f"SELECT run_id, kind, node, at, acks FROM {TABLE} WHERE at >= %s ORDER BY at DESC, run_id DESC"


def read_all(server: Any, name: str, since: float = 0.0) -> Tuple[List[Dict[str, Any]], str]:
    """(every row of this server's copy recorded at or after ``since`` (epoch seconds), newest
    first, why it could not be read or ""). A missing table is an empty record."""
    try:
        rows = server.query(ALL_SINCE, (since,))
    except DatabaseError as exc:
        if exc.code in NO_TABLE:
            return [], ""
        return [], f"{name}: {str(exc).split(': ', 1)[-1]}"
    return [{"run_id": str(r["run_id"]), "kind": str(r["kind"]), "node": str(r["node"]), "at": float(r["at"]),
             "acks": str(r["acks"] or ""), "seen_on": name} for r in rows], ""
