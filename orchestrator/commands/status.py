"""orch status: both nodes, replication, GTIDs, errant GTIDs and the journal's last entries."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from ..config import Config
from ..decide import flavor_of, replica_health
from ..errors import EXIT_FAILED, EXIT_OK
from ..journal import Journal
from ..model import ClusterView, NodeState
from .common import load_config

READ_ONLY_CELL: Dict[Optional[bool], str] = {True: "ON", False: "off"}


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
    from ..semisync import NO_FALLBACK_MIN_MS

    s = node.semisync
    assert s is not None
    if s.error:
        return {"error": s.error}
    return {"wait": s.enabled, "no_fallback": s.no_fallback(NO_FALLBACK_MIN_MS), "timeout_ms": s.timeout_ms,
            "wait_point": s.wait_point, "replica_side": s.replica_enabled, "clients": s.clients, "waiting_sessions": s.waiting}


def semisync_cell(n: Dict[str, Any]) -> str:
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


def table_rows(n: Dict[str, Any]) -> List[Tuple[str, str]]:
    """One node's column of the status table: (label, cell) per row."""
    replication = n.get("replication")
    if replication:
        source = replication.get("source", "-")
        threads = f"{replication['io_thread']} / {replication['sql_thread']}"
        if replication["relay_log_applied"]:
            applied = "yes"
        else:
            applied = f"no ({replication['unapplied_gtids']})"
        lag = "unknown" if replication["lag"] is None else f"{replication['lag']}s"
        last_error = replication.get("last_sql_error") or replication.get("last_io_error") or "-"
    else:
        source = threads = applied = lag = last_error = "-"
    if n.get("errant_gtids") is None:
        errant = "unknown"
    else:
        errant = n["errant_gtids"] or "none"
    cells = [
        ("address", n["address"]),
        ("reachable", "yes" if n["reachable"] else f"NO: {n['error']}"),
        ("version", n.get("version", "")),
        ("role", n.get("role", "")),
        ("read_only", READ_ONLY_CELL.get(n.get("read_only"), "")),
        ("replicates from", source),
        ("IO / SQL thread", threads),
        ("relay log applied", applied),
        ("lag", lag),
        ("executed GTIDs", n.get("executed_gtids", "")),
        ("errant GTIDs", errant),
        ("semi-sync", semisync_cell(n)),
        ("last error", last_error),
    ]
    return [(label, str(cell)) for label, cell in cells]


MAX_WIDTH = 120  # a table never wider than this, whatever the terminal: long cells wrap


def table_width() -> int:
    """The terminal's width, at least 80 and at most MAX_WIDTH columns."""
    from ..argv import terminal_width

    return max(80, min(terminal_width(), MAX_WIDTH))


def wrap(text: str, width: int, indent: str = "    ") -> List[str]:
    """One line of free text, wrapped to ``width`` (continuations indented)."""
    import textwrap

    if len(text) <= width:
        return [text]
    lead = text[:len(text) - len(text.lstrip())]
    return textwrap.wrap(text, width, subsequent_indent=lead + indent, break_on_hyphens=False) or [text]


def vip_row(vip: Dict[str, Any], nodes: List[Dict[str, Any]]) -> Tuple[str, List[str]]:
    """The VIP holder's row: this host's column says whether it holds the VIP; the peer's
    whether it may (orch sees only this host's addresses)."""
    held = vip.get("this_host_holds")
    if held is None:
        return "holds VIP", ["unknown (" + (vip.get("why") or "not checked") + ")", "-"][:len(nodes)]
    label = f"holds VIP {vip['address']}"
    if held:
        return label, ["YES (this host)", "no"][:len(nodes)]
    return label, ["no (not this host)", "not this host: the peer's or nobody's"][:len(nodes)]


def render_table(nodes: List[Dict[str, Any]], journal: List[Dict[str, Any]], cluster: str,
                 vip: Optional[Dict[str, Any]] = None, width: int = MAX_WIDTH) -> str:
    """The nodes side by side, one row per fact, cells wrapped so that no line is wider than
    ``width``; then the journal's last entries, wrapped too."""
    import textwrap

    columns = [table_rows(n) for n in nodes]
    labels = [label for label, _ in columns[0]]
    cells = [[column[i][1] for column in columns] for i in range(len(labels))]
    if vip is not None:
        label, row = vip_row(vip, nodes)
        labels.insert(0, label)
        cells.insert(0, row)
    label_width = max(len(label) for label in labels)
    natural = max(12, *(len(n["name"]) for n in nodes))
    natural = max(natural, *(len(c) for row in cells for c in row[:-1])) if len(nodes) > 1 else natural
    room = (width - label_width - 2 - 2 * (len(nodes) - 1)) // len(nodes)
    col = max(12, min(natural, room))
    lines = [f"cluster {cluster}", f"{'':<{label_width}}  " + "  ".join(f"{n['name']:<{col}}" for n in nodes)]
    for label, row in zip(labels, cells):
        # The last column may run to the table's edge; every cell wraps at its column's width.
        widths = [col] * (len(row) - 1) + [width - label_width - 2 - (col + 2) * (len(row) - 1)]
        wrapped = [textwrap.wrap(c, w, break_on_hyphens=False) or [""] for c, w in zip(row, widths)]
        for i in range(max(len(w) for w in wrapped)):
            first = label if i == 0 else ""
            parts = [w[i] if i < len(w) else "" for w in wrapped]
            lines.append((f"{first:<{label_width}}  " + "  ".join(f"{p:<{col}}" for p in parts)).rstrip())
    lines.append("")
    lines.append("journal (last entries):" if journal else "journal: empty")
    ended = {e.get("id") for e in journal if e.get("phase") == "end"}
    for e in journal:
        if e.get("phase") == "begin" and e.get("id") not in ended:
            line = (f"  {e.get('time')} {e.get('id')} {e.get('node')} {e.get('event')}: UNFINISHED (still running, or "
                    f"the run died mid-plan: the next event or orch promote/demote re-observes and completes it): {e.get('reason')}")
        elif e.get("phase") == "end":
            line = f"  {e.get('time')} {e.get('id')} {e.get('node')} {e.get('event')}: {e.get('result')}" + (f" ({e['error']})" if e.get("error") else "")
        else:
            line = f"  {e.get('time')} {e.get('id')} {e.get('node')} {e.get('event')}: {e.get('reason')}"
        lines += wrap(line, width)
    return "\n".join(lines)


def semisync_policy(cfg: Config) -> Dict[str, Any]:
    """failover.semi_sync as configured, and orch's last switch of the wait on this host."""
    from ..semisync import read_record

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
    from ..antiflap import block_reason

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


def status_document(view: ClusterView, cfg: Config, haproxy: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """``orch status --format json``'s document from an observed view (and this host's journal,
    pending event and semi-sync record); GET /status serves the same from the maintainer's view.
    ``haproxy``: each HAProxy's reading (orchestrator/haproxy.py, as_dict's form), as read."""
    from ..pending import peek

    nodes = [node_summary(view, view.me, view.peer, cfg), node_summary(view, view.peer, view.me, cfg)]
    atlas: List[Dict[str, Any]] = [
        {"name": a.name, "reachable": a.reachable, "error": a.error,
         "backends": [{"ndx": b.ndx, "address": b.address, "state": b.state, "type": b.type} for b in a.backends]}
        for a in view.atlas
    ]
    return {"cluster": cfg.cluster, "self": cfg.self_name, "holds_vip": view.holds_vip, "vip": vip_summary(view, cfg),
            "nodes": nodes, "atlas": atlas, "journal": Journal(cfg.state_dir).tail(10), "pending_event": peek(cfg.state_dir),
            "semi_sync_policy": semisync_policy(cfg), "anti_flapping": antiflap_summary(view, cfg),
            "maintenance": pause_summary(view), "haproxy": list(haproxy)}


def status(args: argparse.Namespace, out: TextIO) -> int:
    cfg = load_config(args)
    from ..db import open_servers
    from ..observe import observe

    servers = open_servers(cfg, read_timeout=5.0)
    try:
        view = observe(cfg, servers, atlas=bool(cfg.atlas))
    finally:
        for s in servers.values():
            s.close()
    from .. import haproxy

    doc = status_document(view, cfg, [r.as_dict() for r in haproxy.observe(cfg)])
    nodes, journal, vip, atlas = doc["nodes"], doc["journal"], doc["vip"], doc["atlas"]
    pending, policy, flap, paused = doc["pending_event"], doc["semi_sync_policy"], doc["anti_flapping"], doc["maintenance"]
    if args.format == "json":
        out.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        width = table_width()
        out.write(render_table(nodes, journal, cfg.cluster, vip, width) + "\n")
        lines = [f"semi-sync policy: {policy['text']}", f"anti-flapping: {flap['text']}", f"maintenance: {paused['text']}"]
        if pending is not None:
            lines.append(f"pending: a {pending.get('event')} event (run {pending.get('run')}) could not get the run lock; "
                         f"the maintainer decides it on its next pass")
        for a in atlas:
            if not a["reachable"]:
                lines.append(f"atlas {a['name']}: UNREACHABLE: {a['error']}")
                continue
            listed = ", ".join(f"{b['address']} ({b['type']}, {b['state']})" for b in a["backends"]) or "no backends"
            lines.append(f"atlas {a['name']}: {listed}")
        for reading in doc["haproxy"]:
            lines += haproxy.describe(reading)
        for line in lines:
            out.write("\n".join(wrap(line, width)) + "\n")
    return EXIT_OK if view.me.reachable and view.peer.reachable else EXIT_FAILED
