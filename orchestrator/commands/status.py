"""orch status: both nodes, replication, GTIDs, errant GTIDs and the journal's last entries."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, TextIO, Tuple

from ..errors import EXIT_FAILED, EXIT_OK
from ..statusdoc import semisync_cell, status_document
from .common import load_config

READ_ONLY_CELL: Dict[Optional[bool], str] = {True: "ON", False: "off"}


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
    if n.get("rewinding"):
        errant = f"{errant} (being rewound)"
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
    token = doc.get("token")
    if args.format == "json":
        out.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        width = table_width()
        out.write(render_table(nodes, journal, cfg.cluster, vip, width) + "\n")
        lines = [f"semi-sync policy: {policy['text']}", f"anti-flapping: {flap['text']}", f"maintenance: {paused['text']}"]
        if token is not None:
            lines.append(f"etcd: {token['text']}")
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
