"""The timeline ``orch lab failover`` writes next to its narration: one HTML page of the run.

While the failover runs, a ``Recording`` keeps what the lab saw: the read_only samples of
both servers, the VIP holder, the fault and the client's acknowledged writes (all on
CLOCK_MONOTONIC). Afterwards ``failover_page`` (pure) joins them with both hosts'
journal records of the run into the same timeline the status page draws: client write
gaps, read_only of both servers, the VIP holder, each orch decision, and the failover's
milestones with their durations.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from orchestrator import statuspage as sp
from orchestrator import timeline as tl

WRITE_GAP = 0.1  # seconds without an acknowledged insert that the chart shows as a gap (the writer inserts every few ms)
VIP_INTERVAL = 0.05  # seconds between two looks at who holds the VIP


@dataclass
class Recording:
    """What one lab failover saw, times on CLOCK_MONOTONIC; ``wall`` maps them to epoch seconds."""

    mode: str
    nodes: Tuple[str, ...]
    old: str
    new: str
    wall: float = field(default_factory=lambda: time.time() - time.monotonic())
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    fault_at: Optional[float] = None
    fault_text: str = ""
    fault_seen_at: Optional[float] = None  # when keepalived (or the lab in its place) saw the fault
    fault_seen_text: str = ""
    read_only: List[Tuple[float, Dict[str, Optional[int]]]] = field(default_factory=list)
    vip: List[Tuple[float, Tuple[str, ...]]] = field(default_factory=list)
    acked: Optional[List[float]] = None  # None: no client wrote during this run
    healed: bool = False

    def vip_seen(self, holders: Sequence[str], at: Optional[float] = None) -> None:
        self.vip.append((time.monotonic() if at is None else at, tuple(sorted(holders))))


class VipWatch:
    """Looks at the VIP holder every VIP_INTERVAL seconds in a thread, into a Recording."""

    def __init__(self, recording: Recording, holders: Callable[[], List[str]]) -> None:
        self.recording = recording
        self.holders = holders
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.recording.vip_seen(self.holders())
            except Exception:  # a look that failed is a missing sample, never a failed failover
                pass
            self._stop.wait(VIP_INTERVAL)

    def __enter__(self) -> "VipWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(5)


RO_NAMES = {1: ("read-only", "info"), 0: ("writable", "ok"), None: ("not answering", "bad")}


def failover_page(rec: Recording, journals: Mapping[str, Sequence[Mapping[str, Any]]], narration: str) -> str:
    """The HTML page of one lab failover (pure): its chart, milestones, durations, every orch
    decision of both hosts during the run, and the narration."""
    w = rec.wall
    end = (rec.ended or rec.started) + w
    lanes: List[str] = []
    spans: List[tl.Span] = []
    if rec.acked is not None:
        lanes.append("client writes")
        spans += tl.write_spans("client writes", [a + w for a in rec.acked], WRITE_GAP, end)
    for name in rec.nodes:
        lane = f"read_only {name}"
        lanes.append(lane)
        spans += tl.sample_spans(lane, [(t + w, row.get(name, None)) for t, row in rec.read_only], RO_NAMES, end)
    lanes.append("VIP holder")
    vip_names = {holders: (" + ".join(holders) if holders else "nobody", "bad" if len(holders) != 1 else "ok")
                 for _, holders in rec.vip}
    spans += tl.sample_spans("VIP holder", [(t + w, holders) for t, holders in rec.vip], vip_names, end)
    since = rec.started + w - 1.0
    runs = [r for host_records in journals.values() for r in tl.runs_from_journal(host_records) if r.end >= since]
    runs.sort(key=lambda r: (r.start, r.run_id))
    origin = rec.fault_at + w if rec.fault_at is not None else rec.started + w
    marks = [tl.Mark(origin, "fault", rec.fault_text, "bad")] if rec.fault_at is not None else []
    found = [f for f in tl.failovers(runs, rec.nodes, limit=1) if f.promoted == rec.new]
    if found and rec.fault_seen_at is not None:
        found[0] = tl.with_milestone(found[0], "fault", rec.fault_seen_at + w, rec.fault_seen_text)
    moved = vip_moved(rec)
    if found and moved is not None:
        found[0] = tl.with_milestone(found[0], "vip", moved + w, f"the lab saw the VIP on {rec.new} (looked every "
                                     f"{VIP_INTERVAL * 1000:.0f} ms)" if rec.mode == "netns" else
                                     f"the lab delivered MASTER to {rec.new} (no keepalived in the loopback lab)")
    extra: List[Tuple[str, Optional[float], str]] = []
    if rec.acked is not None and rec.fault_at is not None:
        gap = client_gap(rec.acked, rec.fault_at)
        if gap is not None:
            marks.append(tl.Mark(gap[1] + w, "writes acknowledged again", "the client's first acknowledged insert after the fault", "ok"))
            extra.append(("client saw no acknowledged write", gap[1] - gap[0], "from its last insert before the fault to its first after"))
    two = [t for t, row in rec.read_only if len(row) > 1 and all(v == 0 for v in row.values())]
    samples = f"{len(two)} of {len(rec.read_only)} read_only samples of both servers (every 50 ms) saw two writable servers"
    title = f"orch lab failover ({rec.mode} lab): {rec.old} to {rec.new}"
    if found:
        block = sp.failover_block(found[0], tl.failover_chart(found[0], rec.nodes, lanes, spans, marks, title, origin), extra)
    else:
        chart = tl.chart(title, runs, rec.nodes, lanes, spans, marks, origin)
        block = (f'<div class="failover" data-promoted="" data-kind="none"><h3>{sp.e(title)}</h3>'
                 f'<p class="banner bad">no promotion of {sp.e(rec.new)} in the journals of this run</p>{tl.svg(chart)}</div>')
    verdict = ('<div class="banner ok" id="verdict">healed</div>' if rec.healed
               else '<div class="banner bad" id="verdict">the cluster did not heal: see the narration</div>')
    decisions = "".join(
        f'<tr class="decision" data-node="{sp.e(r.node)}"><td class="mono nowrap">{sp.e(tl.clock(r.start))}</td>'
        f"<td>{sp.e(f'{r.start - origin:+.2f}s')}</td><td>{sp.e(r.node)}</td><td>{sp.e(r.event)}</td>"
        f"<td>{sp.badge(r.outcome, tl.OUTCOME_TONE.get(r.outcome, ''))}</td><td>{sp.e(f'{(r.end - r.start) * 1000:.0f} ms')}</td>"
        f"<td>{sp.e(r.reason)}{sp.e(' (error: ' + r.error + ')') if r.error else ''}</td></tr>" for r in runs)
    body = (f'<section id="run">{verdict}<p id="two-writers" data-count="{len(two)}">{sp.e(samples)}</p>'
            f"{sp.legend()}{block}</section>"
            '<section id="decisions"><h2>orch\'s decisions (both hosts\' journals)</h2>'
            "<table><tr><th>time (UTC)</th><th>offset</th><th>host</th><th>event</th><th>outcome</th><th>took</th><th>reason</th></tr>"
            f"{decisions}</table></section>"
            f'<section id="narration"><h2>Narration</h2><pre class="mono wrap">{sp.e(narration)}</pre></section>')
    header = f"<h1>{sp.e(title)}</h1><span class=\"sub\">{sp.e(tl.stamp(rec.started + w))}</span>"
    return sp.document(title, header, body, refresh=False)


def vip_moved(rec: Recording) -> Optional[float]:
    """When the VIP was first seen on the new master alone after the fault (None: never)."""
    after = rec.fault_at if rec.fault_at is not None else rec.started
    return next((t for t, holders in rec.vip if t >= after and holders == (rec.new,)), None)


def client_gap(acked: Sequence[float], fault_at: float) -> Optional[Tuple[float, float]]:
    """The client's outage: the longest pause between two consecutive acknowledged inserts
    that ends after the fault (an insert acknowledged just as the kill landed does not cut
    it short); None without an insert after the fault."""
    times = sorted(acked)
    pauses = [(a, b) for a, b in zip([fault_at] if times and times[0] > fault_at else [], times[:1])]
    pauses += [(a, b) for a, b in zip(times, times[1:]) if b > fault_at]
    return max(pauses, key=lambda p: p[1] - p[0]) if pauses else None


def write_failover_page(lab: Any, rec: Recording, narration: str, path: Path) -> Path:
    """Read both lab hosts' journals and write the run's page to ``path``."""
    from orchestrator.journal import Journal

    journals = {name: Journal(str(host.file("state"))).records() for name, host in lab.hosts.items()}
    path.write_text(failover_page(rec, journals, narration))
    return path
