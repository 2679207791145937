"""The status document (``orch status --format json``, ``GET /status``): pure, from one
observation and the config, with the few words shared by ``orch status``'s table and the
status page (so both say the same thing). commands/status.py prints it; http_server.py
serves it."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .config import Config
from .decide import flavor_of, replica_health
from .journal import Journal
from .model import ClusterView, NodeState

def node_summary(view: ClusterView, node: NodeState, other: NodeState, cfg: Config) -> Dict[str, Any]:
    if not node.reachable:
        return {"name": node.name, "address": f"{node.host}:{node.port}", "reachable": False, "error": node.error}
    flavor = flavor_of(node, cfg)
    r = node.replica
    role = "master" if node.writable else ("replica" if r is not None and r.configured else "fenced")
    out: Dict[str, Any] = {
        "name": node.name,
        "address": f"{node.host}:{node.port}",
        "reachable": True,
        "version": node.version,
        "flavor": node.flavor,
        "server_id": node.server_id,
        "role": role,
        "read_only": node.read_only,
        "executed_gtids": node.executed,
        "replication": None,
        # Only a replica can have errant GTIDs: a master is ahead of its lagging replica by design.
        "errant_gtids": (flavor.errant(node, other) if other.reachable else None) if role != "master" else "",
        "rewinding": node.rewinding,  # an orch rewind holds its mark: its errant GTIDs are being rolled back
    }
    if node.semisync is not None:
        out["semi_sync"] = semisync_summary(node)
    if r is not None and r.configured:
        out["replication"] = {
            "source": f"{r.source_host}:{r.source_port}",
            "io_thread": r.io.value,
            "sql_thread": r.sql.value,
            "relay_log_applied": not flavor.unapplied(node),
            "unapplied_gtids": flavor.unapplied(node),
            "lag": r.lag,
            "gtid_auto_position": r.auto_position,
            "last_io_error": r.last_io_error,
            "last_sql_error": r.last_sql_error,
        }
        out["read_backend_ok"] = replica_health(view, node, other, cfg).reason
    return out


def semisync_summary(node: NodeState) -> Dict[str, Any]:
    from .semisync import NO_FALLBACK_MIN_MS

    s = node.semisync
    assert s is not None
    if s.error:
        return {"error": s.error}
    return {"wait": s.enabled, "no_fallback": s.no_fallback(NO_FALLBACK_MIN_MS), "timeout_ms": s.timeout_ms,
            "wait_point": s.wait_point, "replica_side": s.replica_enabled, "clients": s.clients, "waiting_sessions": s.waiting}


def semisync_policy(cfg: Config) -> Dict[str, Any]:
    """failover.semi_sync as configured, and orch's last switch of the wait on this host."""
    from .semisync import read_record

    if not cfg.failover.semi_sync:
        return {"enabled": False, "text": "off (failover.semi_sync: false): asynchronous replication, a failover can lose "
                "acknowledged writes"}
    record = read_record(cfg.state_dir)
    text = (f"no fallback (failover.semi_sync: true), witness {cfg.failover.witness}; auto_rewind "
            f"{'on' if cfg.failover.auto_rewind else 'off'}")
    if record is not None:
        import time

        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["at"]))
        text += f"; orch switched {record.get('node', '?')}'s wait {record['wait']} at {when}: {record.get('why', '')}"
    return {"enabled": True, "witness": cfg.failover.witness, "auto_rewind": cfg.failover.auto_rewind, "record": record,
            "text": text}


def antiflap_summary(view: ClusterView, cfg: Config) -> Dict[str, Any]:
    """failover.block_seconds, the latest promotion on record, and whether it blocks the next one."""
    if cfg.failover.block_seconds <= 0:
        return {"block_seconds": 0, "blocked": False, "text": "off (failover.block_seconds: 0)"}
    from .antiflap import block_reason

    rec = view.last_promotion
    reason = block_reason(view, cfg)
    latest = (f"latest promotion on record: {rec.node} ({rec.kind}, {rec.age:.0f}s ago{', acknowledged' if rec.acked else ''})"
              if rec is not None else "no promotion on record")
    if view.promotion_error:
        latest += f" (unreadable: {view.promotion_error})"
    text = f"block_seconds {cfg.failover.block_seconds:g}; {latest}; " + (
        "BLOCKED: an automatic promotion would be refused (orch ack lifts it)" if reason else "an automatic promotion is allowed")
    return {"block_seconds": cfg.failover.block_seconds, "blocked": bool(reason), "reason": reason,
            "latest": None if rec is None else {"node": rec.node, "kind": rec.kind, "age": rec.age, "acked": rec.acked}, "text": text}


def pause_summary(view: ClusterView) -> Dict[str, Any]:
    """Maintenance mode: whether a pause is in force, who paused, why and until when."""
    rec, active = view.pause, view.paused is not None
    if rec is None:
        text = "off (no pause on record)"
    else:
        text = ("PAUSED: no automatic promotion, rejoin, rewind, semi-sync switch, hand-over or Atlas change "
                "(orch resume ends it); " if active else "off; latest: ") + rec.describe() + (
                    "" if rec.seen_on != "state_dir" else " (kept on this host only)")
    shared = view.pause_shared
    if not active and shared is not None and shared.active:
        text += (f"; but the databases still hold a pause ({shared.describe()}), which the other host follows: "
                 f"run orch resume once a server is writable")
    if view.pause_error:
        text += f" (unreadable: {view.pause_error})"
    return {"paused": active, "text": text, "error": view.pause_error,
            "record": None if rec is None else {"kind": rec.kind, "by": rec.by, "node": rec.node, "reason": rec.reason,
                                                "age": rec.age, "remaining": rec.remaining, "seen_on": rec.seen_on}}


def vip_summary(view: ClusterView, cfg: Config) -> Dict[str, Any]:
    """Who holds the VIP, as far as this host can tell: address, this_host_holds (null: not
    checked), holder (this node's name, "not this host", or null), why (when not checked)."""
    address = cfg.keepalived.vip or None
    held = view.holds_vip
    why = "" if held is not None else ("no keepalived.vip configured" if not address else "keepalived.vip_check is off")
    holder = None if held is None else (cfg.self_name if held else "not this host")
    return {"address": address, "this_host_holds": held, "holder": holder, "why": why}


def token_summary(view: ClusterView, cfg: Config) -> Optional[Dict[str, Any]]:
    """orch status: the token's holder and lease left (from the view), this host's lease and how
    long ago orch maintain last renewed it. None without etcd."""
    if cfg.etcd is None or view.token is None:
        return None
    from .lease import read_lease_file

    t = view.token
    lease, age = read_lease_file(cfg)
    keeper = (f"this host's lease {lease:x} renewed {age:.1f}s ago by orch maintain" if lease and age is not None and age <= cfg.etcd.ttl
              else f"this host's lease {lease:x} NOT RENEWED for {age:.0f}s (is orch maintain running?)" if lease and age is not None
              else "this host has no lease (orch maintain grants one)")
    text = f"write token {t.describe()}; {keeper}; ttl {cfg.etcd.ttl}s"
    return {"holder": t.holder if t.known else None, "lease_left": t.lease_left if t.known else None, "error": t.error,
            "ttl": cfg.etcd.ttl, "host_lease": f"{lease:x}" if lease else None, "host_lease_renewed_ago": age, "text": text}


def status_document(view: ClusterView, cfg: Config, haproxy: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """``orch status --format json``'s document from an observed view (and this host's journal,
    pending event and semi-sync record); GET /status serves the same from the maintainer's view.
    ``haproxy``: each HAProxy's reading (orchestrator/haproxy.py, as_dict's form), as read."""
    from .pending import peek

    token = token_summary(view, cfg)
    nodes = [node_summary(view, view.me, view.peer, cfg), node_summary(view, view.peer, view.me, cfg)]
    atlas: List[Dict[str, Any]] = [
        {"name": a.name, "reachable": a.reachable, "error": a.error,
         "backends": [{"ndx": b.ndx, "address": b.address, "state": b.state, "type": b.type} for b in a.backends]}
        for a in view.atlas
    ]
    return {"cluster": cfg.cluster, "self": cfg.self_name, "holds_vip": view.holds_vip, "vip": vip_summary(view, cfg),
            "nodes": nodes, "atlas": atlas, "journal": Journal(cfg.state_dir).tail(10), "pending_event": peek(cfg.state_dir),
            "semi_sync_policy": semisync_policy(cfg), "anti_flapping": antiflap_summary(view, cfg),
            "maintenance": pause_summary(view), "haproxy": list(haproxy), **({"token": token} if token is not None else {})}


def semisync_cell(n: Dict[str, Any]) -> str:
    """A node's semi-sync state in a few words (its ``semi_sync`` object, by its role)."""
    semi = n.get("semi_sync")
    if not semi:
        return "-"
    if semi.get("error"):
        return f"unknown: {semi['error']}"
    if n.get("role") == "master":
        if not semi["wait"]:
            return "wait OFF (async)"
        text = "wait on, no fallback" if semi["no_fallback"] else f"wait on, FALLBACK after {semi['timeout_ms']}ms"
        return text + f", {semi['clients']} client(s)" + (f", {semi['waiting_sessions']} waiting" if semi["waiting_sessions"] else "")
    return "acknowledges" if semi["replica_side"] else "does NOT acknowledge"
