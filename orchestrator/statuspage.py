"""The status page (``GET /`` of the maintainer's HTTP port), pure: ``orch status --format
json``'s document and ``orch history --format json``'s entries in, one self-contained HTML
page out (inline CSS and SVG, a small inline script; nothing fetched from elsewhere).

Shown: both servers (role, read_only, reachability, GTIDs, errant GTIDs, semi-sync), the
replication arrow with its lag, the VIP holder as this host sees it, every Atlas's and
every HAProxy's (haproxy.stats_sockets) backends, the semi-sync policy, maintenance mode,
the anti-flapping block, the pending event, the recent failovers as timelines (see
``orchestrator/timeline.py``) and the latest history entries.

Everything drawn from the documents is escaped (names, reasons and errors are untrusted);
only known fields are shown, never a whole document, so nothing the documents may grow
(a secret) appears by accident. Served over http(s), the script fetches the page again
every REFRESH_SECONDS and swaps the content in place; from a file it stays still.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import timeline as tl

REFRESH_SECONDS = 5
FAILOVERS_SHOWN = 3
HISTORY_SHOWN = 15

CSS = """
:root { --ok:#2e9d5b; --bad:#d64545; --warn:#e0a030; --muted:#667085; --line:#e3e6ec; --ink:#1d2433; --info:#3f7fd0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0; background: #f6f7f9; }
header { background: #1d2b45; color: #fff; padding: 12px 20px; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header .sub { color: #c6d0e0; }
main { padding: 16px 20px; max-width: 1100px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin-bottom: 14px; }
h2 { font-size: 15px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 10px 0 6px; }
.servers { display: grid; grid-template-columns: 1fr 150px 1fr; gap: 10px; align-items: stretch; }
.server { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.server h3 { margin: 0 0 6px; font-size: 16px; }
.server.master { border-color: var(--ok); box-shadow: inset 4px 0 0 var(--ok); }
.server.replica { box-shadow: inset 4px 0 0 var(--info); }
.server.fenced, .server.down { box-shadow: inset 4px 0 0 var(--bad); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: var(--muted); }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); } .badge.warn { background: var(--warn); color: #222; }
.badge.info { background: var(--info); }
.arrow { display: flex; flex-direction: column; justify-content: center; align-items: center; text-align: center; color: var(--muted); font-size: 12px; }
.arrow .glyph { font-size: 30px; color: var(--info); line-height: 1; }
.arrow.none .glyph { color: var(--bad); }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: 3px 8px 3px 0; vertical-align: top; border-bottom: 1px solid #f0f1f4; }
th { color: var(--muted); font-weight: 500; white-space: nowrap; }
.kv th { width: 150px; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.muted { color: var(--muted); }
.nowrap { white-space: nowrap; }
pre.wrap { white-space: pre-wrap; word-break: normal; }
.banner { padding: 8px 12px; border-radius: 6px; margin: 6px 0; }
.banner.bad { background: #fdecec; border: 1px solid var(--bad); }
.banner.warn { background: #fff6e0; border: 1px solid var(--warn); }
.banner.ok { background: #eaf7ef; border: 1px solid var(--ok); }
.failover { border-top: 1px solid var(--line); padding-top: 8px; margin-top: 8px; }
.failover:first-of-type { border-top: 0; }
svg.timeline { max-width: 100%; height: auto; background: #fff; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
#refresh { font-size: 12px; color: #c6d0e0; margin-left: auto; }
"""

REFRESH_SCRIPT = """
(function () {
  var every = %d * 1000, note = document.getElementById("refresh");
  if (!/^https?:$/.test(location.protocol)) { if (note) note.textContent = "static copy: not refreshed"; return; }
  function again() {
    fetch(location.pathname, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (text) {
      var page = new DOMParser().parseFromString(text, "text/html").getElementById("page");
      if (!page) throw new Error("no page in the answer");
      document.getElementById("page").replaceWith(page);
      if (note) note.textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (err) {
      if (note) note.textContent = "refresh failed (" + err.message + "): showing the last page";
    }).then(function () { setTimeout(again, every); });
  }
  setTimeout(again, every);
})();
"""


def e(value: Any) -> str:
    """Escaped text of any value (None as an empty string)."""
    return html.escape("" if value is None else str(value), quote=True)


def badge(text: str, tone: str = "") -> str:
    return f'<span class="badge {e(tone)}">{e(text)}</span>'


def document(title: str, header: str, body: str, refresh: bool = False) -> str:
    """One self-contained HTML page: ``header`` and ``body`` are HTML already escaped."""
    script = f"<script>{REFRESH_SCRIPT % REFRESH_SECONDS}</script>" if refresh else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
            f"<header>{header}<span id=\"refresh\"></span></header>"
            f"<main id=\"page\">{body}</main>{script}</body></html>\n")


# ---------------------------------------------------------------------------- servers


def role_tone(node: Mapping[str, Any]) -> str:
    if not node.get("reachable"):
        return "bad"
    return {"master": "ok", "replica": "info", "fenced": "warn"}.get(str(node.get("role")), "")


def read_only_text(value: Any) -> str:
    return {True: "ON (read-only)", False: "off (writable)"}.get(value, "unknown")


def vip_cell(status: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    """Whether this node holds the VIP, as far as the host that wrote the document can tell."""
    vip = status.get("vip") or {}
    held = vip.get("this_host_holds")
    mine = node.get("name") == status.get("self")
    if held is None:
        return f'<span class="muted">unknown ({e(vip.get("why") or "not checked")})</span>'
    if held:
        return badge("holds the VIP", "ok") if mine else "no"
    return "no" if mine else '<span class="muted">not the reporting host: the peer\'s or nobody\'s</span>'


def semisync_text(node: Mapping[str, Any]) -> str:
    from .statusdoc import semisync_cell

    try:
        return semisync_cell(dict(node))
    except (KeyError, TypeError):
        return "unknown"


def server_card(status: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    name = node.get("name", "?")
    reachable = bool(node.get("reachable"))
    role = str(node.get("role") or "") if reachable else "unreachable"
    cls = role if role in ("master", "replica", "fenced") else "down"
    rows = [("role", badge(role, role_tone(node))), ("VIP", vip_cell(status, node)), ("address", f'<span class="mono">{e(node.get("address"))}</span>')]
    if not reachable:
        rows.append(("error", f'<span class="mono">{e(node.get("error"))}</span>'))
    else:
        ro = node.get("read_only")
        rows.append(("read_only", badge(read_only_text(ro), "info" if ro else ("ok" if ro is False else "warn"))))
        rows.append(("version", e(node.get("version"))))
        rows.append(("executed GTIDs", f'<span class="mono">{e(node.get("executed_gtids") or "(none)")}</span>'))
        errant = node.get("errant_gtids")
        rows.append(("errant GTIDs", '<span class="muted">unknown</span>' if errant is None else
                     (badge("none", "ok") if not errant else badge(str(errant), "bad"))))
        rows.append(("semi-sync", e(semisync_text(node))))
        repl = node.get("replication") or None
        if isinstance(repl, Mapping):
            applied = "yes" if repl.get("relay_log_applied") else f"no ({repl.get('unapplied_gtids')})"
            rows.append(("replicates from", f'<span class="mono">{e(repl.get("source"))}</span>'))
            rows.append(("IO / SQL thread", e(f"{repl.get('io_thread')} / {repl.get('sql_thread')}")))
            rows.append(("relay log applied", e(applied)))
            error = repl.get("last_sql_error") or repl.get("last_io_error")
            if error:
                rows.append(("last error", f'<span class="mono">{e(error)}</span>'))
        if node.get("read_backend_ok"):
            rows.append(("read backend", e(node.get("read_backend_ok"))))
    table = "".join(f"<tr><th>{e(label)}</th><td>{cell}</td></tr>" for label, cell in rows)
    this = ' <span class="muted">(this host)</span>' if name == status.get("self") else ""
    return (f'<div class="server {e(cls)}" data-node="{e(name)}" data-role="{e(role)}">'
            f'<h3>{e(name)}{this}</h3><table class="kv">{table}</table></div>')


def replication_arrow(nodes: Sequence[Mapping[str, Any]]) -> str:
    """Which way replication flows between the two cards, with its lag."""
    if len(nodes) < 2:
        return '<div class="arrow none"><span class="glyph">?</span>one node</div>'
    left, right = nodes[0], nodes[1]
    for src, dst, glyph in ((left, right, "\u27f6"), (right, left, "\u27f5")):
        repl = dst.get("replication") if dst.get("reachable") else None
        if isinstance(repl, Mapping) and repl.get("source") == src.get("address"):
            lag = repl.get("lag")
            running = repl.get("io_thread") == "running" and repl.get("sql_thread") == "running"
            lag_text = "lag unknown" if lag is None else f"lag {lag}s"
            state = "" if running else f"<br>{badge('threads: ' + str(repl.get('io_thread')) + ' / ' + str(repl.get('sql_thread')), 'bad')}"
            return (f'<div class="arrow" data-from="{e(src.get("name"))}" data-to="{e(dst.get("name"))}" data-lag="{e(lag)}">'
                    f'<span class="glyph">{glyph}</span>{e(src.get("name"))} to {e(dst.get("name"))}<br>{e(lag_text)}{state}</div>')
    return '<div class="arrow none"><span class="glyph">\u2715</span>no replication between them</div>'


def servers_section(status: Mapping[str, Any]) -> str:
    nodes = [n for n in status.get("nodes") or [] if isinstance(n, Mapping)]
    cards = [server_card(status, n) for n in nodes[:2]]
    middle = replication_arrow(nodes)
    inner = cards[0] + middle + (cards[1] if len(cards) > 1 else "<div></div>") if cards else "<p>no nodes in the document</p>"
    return f'<section id="servers"><h2>Servers</h2><div class="servers">{inner}</div></section>'


def vip_section(status: Mapping[str, Any]) -> str:
    vip = status.get("vip") or {}
    held, address = vip.get("this_host_holds"), vip.get("address")
    self_name = status.get("self")
    if held is None:
        text = f"VIP holder unknown: {vip.get('why') or 'not checked'}"
        holder = "unknown"
    elif held:
        text, holder = f"VIP {address} is on {self_name} (this host)", str(self_name)
    else:
        text, holder = f"VIP {address} is not on {self_name}: the peer's or nobody's (a host sees only its own addresses)", "not this host"
    return f'<p id="vip" data-holder="{e(holder)}"><b>VIP holder:</b> {e(text)}</p>'


def backends_section(status: Mapping[str, Any]) -> str:
    """Every Atlas's backends and every HAProxy's (status["haproxy"])."""
    names = {str(n.get("address")): str(n.get("name")) for n in status.get("nodes") or [] if isinstance(n, Mapping)}
    vip = (status.get("vip") or {}).get("address") if isinstance(status.get("vip"), Mapping) else None
    if vip:  # Atlas's writer backend is the VIP (docs/atlas.md)
        names.update({f"{vip}:{port}": "the VIP" for port in {a.split(":")[-1] for a in names}})
    parts = []
    for atlas in status.get("atlas") or []:
        if not isinstance(atlas, Mapping):
            continue
        head = f"<h3>Atlas {e(atlas.get('name'))}</h3>"
        if not atlas.get("reachable"):
            parts.append(head + f'<p>{badge("unreachable", "bad")} <span class="mono">{e(atlas.get("error"))}</span></p>')
            continue
        rows = "".join(
            f"<tr><td>{e(b.get('ndx'))}</td><td class=\"mono\">{e(b.get('address'))}</td><td>{e(names.get(str(b.get('address')), ''))}</td>"
            f"<td>{e(b.get('type'))}</td><td>{badge(str(b.get('state')), 'ok' if b.get('state') == 'up' else 'bad')}</td></tr>"
            for b in atlas.get("backends") or [] if isinstance(b, Mapping))
        parts.append(head + (f"<table><tr><th>#</th><th>backend</th><th>node</th><th>type</th><th>state</th></tr>{rows}</table>"
                             if rows else "<p>no backends</p>"))
    for proxy in status.get("haproxy") or []:
        if isinstance(proxy, Mapping):
            parts.append(haproxy_block(proxy, names))
    if not parts:
        parts.append('<p class="muted">no proxy configured on this host</p>')
    return '<section id="backends"><h2>Proxy backends</h2>' + "".join(parts) + "</section>"


HAPROXY_BADGE = {"UP": "ok", "DOWN": "bad", "MAINT": "warn", "DRAIN": "warn", "NOLB": "warn"}


def haproxy_block(proxy: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """One HAProxy (orchestrator/haproxy.py's reading): its write and read backends, each
    server with HAProxy's status (UP / DOWN / MAINT...) and its last check."""
    head = f"<h3>HAProxy <span class=\"mono\">{e(proxy.get('name'))}</span></h3>"
    age = proxy.get("age")
    if isinstance(age, (int, float)) and age > 5:
        head += f'<p>{badge("stale", "warn")} read {age:.0f}s ago</p>'
    if not proxy.get("reachable"):
        return f'<div class="haproxy" data-haproxy="{e(proxy.get("name"))}" data-reachable="no">{head}' \
               f'<p>{badge("unreachable", "bad")} <span class="mono">{e(proxy.get("error"))}</span></p></div>'
    rows = []
    for b in proxy.get("backends") or []:
        if not isinstance(b, Mapping):
            continue
        status = str(b.get("status"))
        node = names.get(str(b.get("address")), "")
        backup = ' <span class="muted">backup</span>' if b.get("backup") else ""
        check = " ".join(str(x) for x in (b.get("check"), b.get("check_code")) if x)
        rows.append(f'<tr class="haproxy-server" data-role="{e(b.get("role"))}" data-server="{e(b.get("server"))}" data-status="{e(status)}">'
                    f"<td>{e(b.get('role'))}</td><td>{e(b.get('backend'))}</td><td>{e(b.get('server'))}"
                    f"{backup}</td>"
                    f"<td class=\"mono\">{e(b.get('address'))}</td><td>{e(node)}</td>"
                    f"<td>{badge(status, HAPROXY_BADGE.get(status, 'bad'))}</td><td class=\"mono\">{e(check)}</td></tr>")
    table = ("<table><tr><th>role</th><th>backend</th><th>server</th><th>address</th><th>node</th><th>status</th><th>last check</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>no servers</p>"
    problem = f'<p>{badge("incomplete", "warn")} {e(proxy.get("error"))}</p>' if proxy.get("error") else ""
    return f'<div class="haproxy" data-haproxy="{e(proxy.get("name"))}" data-reachable="yes">{head}{problem}{table}</div>'


def policy_section(status: Mapping[str, Any]) -> str:
    """Semi-sync policy, maintenance mode, anti-flapping, the etcd write token (when configured)
    and a pending event, each one line."""
    rows = []
    semi = status.get("semi_sync_policy") or {}
    rows.append(("semi-sync", badge("no fallback", "ok") if semi.get("enabled") else badge("off: asynchronous", "warn"), semi.get("text")))
    pause = status.get("maintenance") or {}
    rows.append(("maintenance", badge("PAUSED", "warn") if pause.get("paused") else badge("off", "ok"), pause.get("text")))
    flap = status.get("anti_flapping") or {}
    rows.append(("anti-flapping", badge("BLOCKED", "bad") if flap.get("blocked") else badge("not blocking", "ok"), flap.get("text")))
    token = status.get("token")
    if isinstance(token, Mapping):  # etcd: configured
        holder = token.get("holder")
        state = (badge(f"held by {holder}", "ok") if holder else
                 badge("unknown", "bad") if token.get("error") else badge("free", "warn"))
        rows.append(("write token", state, token.get("text")))
    pending = status.get("pending_event")
    if isinstance(pending, Mapping):
        rows.append(("pending event", badge(str(pending.get("event")), "warn"),
                     f"a {pending.get('event')} event (run {pending.get('run')}) could not get the run lock; the maintainer "
                     "decides it on its next pass"))
    body = "".join(f'<tr id="policy-{e(label.replace(" ", "-"))}"><th>{e(label)}</th><td>{state}</td><td>{e(text)}</td></tr>'
                   for label, state, text in rows)
    banners = ""
    if pause.get("paused"):
        banners += f'<div class="banner warn">Maintenance mode: {e(pause.get("text"))}</div>'
    if flap.get("blocked"):
        banners += f'<div class="banner bad">Anti-flapping block: {e(flap.get("reason") or flap.get("text"))}</div>'
    return f'<section id="policy"><h2>Policies</h2>{banners}<table>{body}</table></section>'


# ---------------------------------------------------------------------------- failovers


LEGEND = (("ok", "acted / writable / acknowledged"), ("info", "read-only"), ("warn", "partial, incomplete"),
          ("bad", "refused, failed / down / no write"), ("neutral", "other"))


def legend() -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{tl.FILL[tone]}"></i>{e(text)}</span>'
                                          for tone, text in LEGEND) + "</p>"


def seconds_text(value: Optional[float]) -> str:
    return "unknown" if value is None else f"{value:.2f}s"


def failover_block(f: tl.Failover, chart: tl.Chart, extra_rows: Sequence[tuple] = ()) -> str:
    """One failover: its chart, its milestones (time, offset, which run says so) and durations."""
    origin = chart.origin
    milestones = "".join(
        f'<tr class="milestone" data-key="{e(m.key)}" data-known="{"yes" if m.at is not None else "no"}"><th>{e(m.label)}</th>'
        f"<td class=\"mono nowrap\">{e(tl.stamp(m.at)) if m.at is not None else 'not seen'}</td>"
        f"<td>{e(f'{m.at - origin:+.2f}s') if m.at is not None else ''}</td><td>{e(m.how)}</td></tr>"
        for m in f.milestones)
    durations = "".join(f'<tr class="duration"><th>{e(label)}</th><td>{e(seconds_text(value))}</td><td>{e(how)}</td></tr>'
                        for label, value, how in [(label, value, "") for label, value in f.durations()] + list(extra_rows))
    return (f'<div class="failover" data-promoted="{e(f.promoted)}" data-old="{e(f.old)}" data-kind="{e(f.kind)}" data-run="{e(f.run_id)}">'
            f"<h3>{e(chart.title)} <span class=\"muted\">run {e(f.run_id)}</span></h3>{tl.svg(chart)}"
            f"<table class=\"milestones\"><tr><th>milestone</th><th>time (UTC)</th><th>offset</th><th>from</th></tr>{milestones}</table>"
            f"<table class=\"durations\"><tr><th>duration</th><th>seconds</th><th></th></tr>{durations}</table></div>")


def failovers_section(status: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                      peer: Optional[Mapping[str, Any]] = None) -> str:
    nodes = [str(n.get("name")) for n in status.get("nodes") or [] if isinstance(n, Mapping)]
    journal = [r for r in status.get("journal") or [] if isinstance(r, Mapping)]
    runs = tl.runs_from_history(history, journal)
    found = tl.failovers(runs, nodes, FAILOVERS_SHOWN)
    if not found:
        body = '<p class="muted" id="no-failovers">no failover in this history</p>'
    else:
        body = legend() + "".join(failover_block(f, tl.failover_chart(f, nodes)) for f in found)
    if peer is None:  # saved documents (python -m orchestrator.statuspage, orch lab): this host's alone
        note = (f'<p class="muted">From {e(status.get("self"))}\'s view: the promotion record of both servers and this host\'s '
                "journal; the other host's runs (a FAULT, a rejoin) are in its own journal and page.</p>")
    elif peer.get("merged"):
        note = (f'<p class="muted" id="peer-history" data-host="{e(peer.get("host"))}" data-merged="yes">From '
                f'{e(status.get("self"))}\'s view, with {e(peer.get("note"))}: the promotion record of both servers and '
                "both hosts' journals (each entry marked with its host).</p>")
    else:
        note = (f'<p class="muted" id="peer-history" data-host="{e(peer.get("host"))}" data-merged="no">From '
                f'{e(status.get("self"))}\'s view only: {e(peer.get("note"))}; the other host\'s runs (a FAULT, a rejoin) '
                "show as not seen until it answers.</p>")
    return f'<section id="failovers"><h2>Recent failovers</h2>{note}{body}</section>'


def history_section(history: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for entry in list(history)[:HISTORY_SHOWN]:
        if not isinstance(entry, Mapping):
            continue
        what = " ".join(str(x) for x in (entry.get("event"), f"({entry.get('kind')})" if entry.get("kind") else None) if x)
        ms = "" if entry.get("ms") is None else f"{entry.get('ms')} ms"
        outcome = str(entry.get("outcome") or "")
        tone = tl.OUTCOME_TONE.get(outcome, "")
        rows.append(f'<tr class="entry" data-run="{e(entry.get("run_id"))}" data-host="{e(entry.get("host") or "")}">'
                    f'<td class="mono nowrap">{e(entry.get("time"))}</td><td>{e(entry.get("node"))}</td>'
                    f"<td>{e(what)}</td><td>{badge(outcome, tone)}</td><td>{e(ms)}</td><td>{e(entry.get('host') or '')}</td>"
                    f"<td>{e(entry.get('reason'))}</td></tr>")
    table = ("<table><tr><th>time (UTC)</th><th>node</th><th>what</th><th>outcome</th><th>took</th><th>from</th><th>reason</th></tr>"
             + "".join(rows) + "</table>") if rows else '<p class="muted">history: nothing recorded</p>'
    return f'<section id="history"><h2>History (latest {HISTORY_SHOWN})</h2>{table}</section>'


def render(status: Dict[str, Any], history: List[Dict[str, Any]], peer: Optional[Mapping[str, Any]] = None) -> str:
    """The status page: ``status`` is ``orch status --format json``'s document, ``history``
    ``orch history --format json``'s entries (newest first); ``peer`` (GET /): whether the
    other host's history is merged in (``host``, ``merged``, ``note``), None for saved documents."""
    status = status if isinstance(status, Mapping) else {}
    history = [h for h in history or [] if isinstance(h, Mapping)]
    cluster, me = status.get("cluster", "?"), status.get("self", "?")
    header = (f"<h1>orch: cluster {e(cluster)}</h1><span class=\"sub\">as seen from {e(me)}</span>")
    body = (vip_section(status) + servers_section(status) + backends_section(status) + policy_section(status)
            + failovers_section(status, history, peer) + history_section(history))
    return document(f"orch {cluster} ({me})", header, body, refresh=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m orchestrator.statuspage STATUS.json HISTORY.json``: the page on stdout, from
    saved ``orch status --format json`` and ``orch history --format json`` output ("-": stdin).
    A file that cannot be read or is not that JSON: one line on stderr, exit 2."""
    import json
    import sys

    from .errors import EXIT_OK, EXIT_USAGE

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m orchestrator.statuspage STATUS.json HISTORY.json > status.html", file=sys.stderr)
        return EXIT_USAGE
    docs: List[Any] = []
    for path, kind in zip(args, (dict, list)):
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
            doc = json.loads(text)
        except OSError as exc:
            print(f"orchestrator.statuspage: {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:
            print(f"orchestrator.statuspage: {path}: not JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not isinstance(doc, kind):
            what = "orch status --format json's document (an object)" if kind is dict else "orch history --format json's list"
            print(f"orchestrator.statuspage: {path}: expected {what}", file=sys.stderr)
            return EXIT_USAGE
        docs.append(doc)
    sys.stdout.write(render(docs[0], docs[1]))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
