"""Anti-flapping, pure: the block a promotion record implies, and what opening a node is.

Each host has its own state_dir, so the record lives in the databases (``orch_meta.promotions``,
read and written by ``orchestrator/promotions.py``); observation puts the latest row in the
view (``ClusterView.last_promotion``). The decisions here take that value: ``block_reason``
refuses an automatic promotion while the latest promotion on record is an automatic one
younger than failover.block_seconds that no operator acknowledged; ``decide_ack`` plans
``orch ack``. Nothing here runs SQL or reads a file.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from .model import ClusterView, PromotionRecord
from .plan import Plan

FAILOVER = "failover"  # an automatic promotion (keepalived's MASTER, the maintainer): the kind that blocks
OPERATOR = "operator"  # orch promote: an operator took charge, no block follows
SWITCHOVER = "switchover"  # written by orch switchover on the old master before it hands the VIP over
ACK = "ack"
KINDS = (FAILOVER, OPERATOR, SWITCHOVER, ACK)
# A switchover's row names its candidate: the candidate's MASTER within this many seconds of
# it is the planned promotion (not recorded as a failover, so it starts no block).
SWITCHOVER_WINDOW = 300.0


def latest(copies: Mapping[str, Tuple[Optional[PromotionRecord], str]],
           local_ack: Optional[str] = None) -> Tuple[Optional[PromotionRecord], str]:
    """The latest record over both servers' copies (acknowledged if either copy says so, or
    ``local_ack``, the run id this host's state_dir acknowledges, names it; None: not read)
    and the errors of the copies that could not be read."""
    records = [r for r, _ in copies.values() if r is not None]
    errors = "; ".join(e for _, e in copies.values() if e)
    if not records:
        return None, errors
    newest = max(records, key=lambda r: (r.at, r.run_id))
    acked = any(r.acked for r in records if r.run_id == newest.run_id and r.kind == newest.kind)
    if not acked and newest.kind == FAILOVER and local_ack is not None:
        acked = local_ack == newest.run_id
    if acked != newest.acked:
        from dataclasses import replace

        newest = replace(newest, acked=acked)
    return newest, errors


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
            f"maintainer promotes), or promote now with `orch promote --ignore-anti-flapping`")


def promotion_kind(view: ClusterView, cfg: Any, operator: bool) -> str:
    """Pure: the kind of row a promotion of this node records ("" for none: anti-flapping
    off, or the planned promotion of a switchover, whose own row is on record already)."""
    if cfg.failover.block_seconds <= 0:
        return ""
    if operator:
        return OPERATOR
    if planned_switchover(view):
        return ""
    return FAILOVER if writes_move(view) else ""  # a re-opening records nothing


def planned_switchover(view: ClusterView) -> bool:
    """Pure: this node's MASTER is the planned promotion of an orch switchover (its row names
    this node, written within SWITCHOVER_WINDOW): an operator's word, even in maintenance mode."""
    rec = view.last_promotion
    return rec is not None and rec.kind == SWITCHOVER and rec.node == view.me.name and -60 <= rec.age < SWITCHOVER_WINDOW


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
                f"own): automatic promotions decided on this host are allowed again; the other host keeps its own "
                f"acknowledgement (orch ack asks it through its HTTP API; without one, run orch ack there too)",
                (AckLocally(cfg.state_dir, rec.run_id),))
