"""Anti-flapping: the record of promotions both nodes see, and the block it implies.

Each host has its own state_dir, so the record lives in the databases: after a promotion
opens writes, the new master inserts a row into ``orch_meta.promotions`` (created when
missing), which replicates to the peer. Observation reads the latest row from each
server's copy (one query each, only with ``failover.block_seconds``); the decision (pure,
``block_reason``) refuses an automatic promotion while the latest promotion on record is
an automatic one younger than block_seconds that no operator acknowledged.

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
import weakref

from .errors import DatabaseError
from .model import ClusterView, PromotionRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Optional, Tuple
    from .plan import Plan

log = logging.getLogger(__name__)

SCHEMA = "orch_meta"
TABLE = "orch_meta.promotions"
FAILOVER = "failover"  # an automatic promotion (keepalived's MASTER, the maintainer): the kind that blocks
OPERATOR = "operator"  # orch promote: an operator took charge, no block follows
SWITCHOVER = "switchover"  # written by orch switchover on the old master before it hands the VIP over
ACK = "ack"
KINDS = (FAILOVER, OPERATOR, SWITCHOVER, ACK)
# A switchover's row names its candidate: the candidate's MASTER within this many seconds of
# it is the planned promotion (not recorded as a failover, so it starts no block).
SWITCHOVER_WINDOW = 300.0
ACK_FILE = "flap-ack.json"
NO_TABLE = (1146, 1049)  # table, database does not exist: nothing on record

CREATE_SCHEMA = f"CREATE DATABASE IF NOT EXISTS {SCHEMA}"
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


# Servers (kept open by the maintainer) whose table was missing: a failed statement closes
# the connection, so until the table appears they are asked whether it exists, which cannot fail.
_missing: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
PRESENT = "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'orch_meta' AND TABLE_NAME = 'promotions'"


def read_latest(server: Any, name: str) -> Tuple[Optional[PromotionRecord], str]:
    """(the latest promotion in this server's copy or None, why it could not be read or "")."""
    try:
        if _missing.get(server) and not int(server.value(PRESENT) or 0):
            return None, ""
        rows = server.query(LATEST)
        _missing.pop(server, None)
    except DatabaseError as exc:
        if exc.code in NO_TABLE:
            _missing[server] = True
            return None, ""
        return None, f"{name}: {str(exc).split(': ', 1)[-1]}"
    if not rows:
        return None, ""
    row = rows[0]
    at = float(row["at"])
    return PromotionRecord(run_id=str(row["run_id"]), kind=str(row["kind"]), node=str(row["node"]), at=at,
                           age=float(row["now"]) - at, acked=bool(int(row["acked"] or 0)), seen_on=name), ""


def combine(copies: Mapping[str, Tuple[Optional[PromotionRecord], str]], state_dir: str) -> Tuple[Optional[PromotionRecord], str]:
    """The latest record over both servers' copies (acknowledged if either copy, or this host's
    state_dir, says so) and the errors of the copies that could not be read."""
    records = [r for r, _ in copies.values() if r is not None]
    errors = "; ".join(e for _, e in copies.values() if e)
    if not records:
        return None, errors
    latest = max(records, key=lambda r: (r.at, r.run_id))
    acked = any(r.acked for r in records if r.run_id == latest.run_id and r.kind == latest.kind)
    if not acked and latest.kind == FAILOVER:
        acked = read_local_ack(state_dir) == latest.run_id
    if acked != latest.acked:
        from dataclasses import replace

        latest = replace(latest, acked=acked)
    return latest, errors


def writes_move(view: ClusterView) -> str:
    """Pure: why opening this node moves writes from its peer to it (a failover), or "" when
    it does not: the node re-opened is the one its peer replicates from (bring-up, a restart
    of the whole pair, the same master back after a FAULT, a hang or a keepalived restart),
    or nothing says the peer was the last writer. Anti-flapping counts only failovers."""
    me, peer = view.me, view.peer
    if peer.writable:
        return f"{peer.name} is writable"
    if peer.reachable and peer.replicates_from(me.host, me.port):
        return ""
    if me.replicates_from(peer.host, peer.port):
        return f"{me.name} replicates from {peer.name}"
    rec = view.last_promotion
    if rec is not None and rec.kind != ACK and rec.node == peer.name:
        return f"{peer.name} was the last node promoted"
    return ""


def opening_kind(view: ClusterView) -> str:
    """Pure: the words for what opening this node is, for the plan's reason and the journal."""
    moving = writes_move(view)
    if moving:
        return f"a failover: writes move from {view.peer.name} ({moving})"
    return f"a re-opening, not a failover: {view.me.name} was the last writer ({view.peer.name} does not hold newer writes)"


def block_reason(view: ClusterView, cfg: Any) -> str:
    """Pure: why a promotion of this node is blocked now ("" when it is not).

    Only a failover (writes_move) is ever blocked. Blocked while the latest promotion on record is an automatic one (a failover) younger
    than failover.block_seconds that no operator acknowledged. An operator's promote or a
    switchover after it ends the block: someone took charge.
    """
    seconds = cfg.failover.block_seconds
    rec = view.last_promotion
    if seconds <= 0 or rec is None or rec.kind != FAILOVER or rec.acked or rec.age >= seconds:
        return ""
    if not writes_move(view):
        return ""  # re-opening the last writer is not a failover: never blocked
    return (f"anti-flapping block: {rec.node} was promoted automatically {max(rec.age, 0):.0f}s ago (run {rec.run_id}), "
            f"less than failover.block_seconds ({seconds:g}s) ago; {view.me.name} stays fenced. After finding why the "
            f"cluster failed over twice, lift the block with `orch ack` (then keepalived's next MASTER event or the "
            f"maintainer promotes), or promote now with `orch promote --force`")


def promotion_kind(view: ClusterView, cfg: Any, operator: bool) -> str:
    """Pure: the kind of row a promotion of this node records ("" for none: anti-flapping
    off, or the planned promotion of a switchover, whose own row is on record already)."""
    if cfg.failover.block_seconds <= 0:
        return ""
    if operator:
        return OPERATOR
    rec = view.last_promotion
    if rec is not None and rec.kind == SWITCHOVER and rec.node == view.me.name and -60 <= rec.age < SWITCHOVER_WINDOW:
        return ""
    return FAILOVER if writes_move(view) else ""  # a re-opening records nothing


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
    try:
        server.execute(INSERT, args, why=why)
        return "recorded"
    except DatabaseError as exc:
        if exc.code == 1062:
            return "already recorded"
        if exc.code not in NO_TABLE:
            raise
    server.execute(CREATE_SCHEMA, why="anti-flapping record (first promotion on record)")
    server.execute(CREATE_TABLE, why="anti-flapping record (first promotion on record)")
    server.execute(INSERT, args, why=why)
    return f"recorded (created {TABLE})"


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


def decide_ack(view: ClusterView, cfg: Any) -> "Plan":
    """Pure: the plan of ``orch ack``. The acknowledgement is a row on the writable server
    (it replicates); with no writable server, this host's state_dir."""
    from .plan import NOOP, REFUSED, AckLocally, Plan, RecordPromotion

    seconds = cfg.failover.block_seconds
    if seconds <= 0:
        return Plan("nothing to acknowledge: anti-flapping is off (failover.block_seconds: 0)", outcome=NOOP)
    rec = view.last_promotion
    if rec is None:
        if view.promotion_error:
            return Plan(f"cannot read the anti-flapping record: {view.promotion_error}", outcome=REFUSED)
        return Plan("nothing to acknowledge: no promotion on record", outcome=NOOP)
    what = f"the {rec.kind} promotion of {rec.node} {max(rec.age, 0):.0f}s ago (run {rec.run_id})"
    if rec.kind != FAILOVER:
        return Plan(f"nothing to acknowledge: the latest promotion on record is {what}, which blocks nothing", outcome=NOOP)
    if rec.acked:
        return Plan(f"nothing to acknowledge: {what} is acknowledged already", outcome=NOOP)
    if rec.age >= seconds:
        return Plan(f"nothing to acknowledge: {what} is older than failover.block_seconds ({seconds:g}s)", outcome=NOOP)
    writable = [n for n in (view.me, view.peer) if n.writable]
    if len(writable) == 1:
        return Plan(f"acknowledging {what}: automatic promotions are allowed again",
                    (RecordPromotion(writable[0].name, ACK, rec.run_id),))
    why = "both servers are writable" if writable else "no server is writable"
    return Plan(f"acknowledging {what} on this host only ({why}: a read-only server must not log a transaction of its "
                f"own): automatic promotions decided on this host are allowed again; run orch ack on the other host too "
                f"if it is the one to promote", (AckLocally(cfg.state_dir, rec.run_id),))
