"""Failover timelines, pure: orch's runs (from ``orch history`` entries or journal records)
in, failovers with their milestones and durations out, and an SVG chart of them.

A failover's milestones, each read from a run some host journaled:

- ``fault``: the old master's FAULT run (its host's journal; the latest before the
  promotion, else one that began up to LATE_FAULT after it: a notify can run late), or the
  SWITCHOVER run that asked for it; a host sees only its own journal, so the new master's
  host does not see it
- ``vip``: the promoted node's MASTER run began (keepalived runs the notify hook when it
  takes the VIP)
- ``opened``: writes opened on the promoted node: its SetWritable step when the run's
  steps are known (journal records), else the run's end (an upper bound)
- ``rejoined``: the old master is a replica again: its BACKUP or REJOIN run that pointed it
  at the new master, or, seen from the new master's host, the run that switched the
  semi-sync wait back on because the old master "replicates from <new> and has caught up"

Which run is a promotion and which promotion is a failover is read from the record's kind
when the promotion is on record (failover.block_seconds > 0), else from the plan's reason,
whose words orch keeps for this (antiflap.opening_kind: "a failover: writes move from ...",
"a re-opening, not a failover").

The chart (``Chart``) is lanes of spans and vertical marks on one time axis; ``svg``
draws it. Every text drawn is escaped: node names, reasons and errors are untrusted.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

PROMOTION_KINDS = ("failover", "operator")  # a switchover's row is its request: its MASTER run opens writes
OPENED = ("act", "partial")  # outcomes of a promotion run whose writes opened
PROMOTING = "promoting "  # decide's reason for every promotion plan: "promoting <node>: ..."
FAILOVER_WORDS = "a failover: writes move from"  # antiflap.opening_kind
REOPENING_WORDS = "a re-opening, not a failover"
FAULT_WINDOW = 300.0  # seconds: a FAULT (or SWITCHOVER) this long before a promotion is its cause
LATE_FAULT = 30.0  # seconds: the old master's FAULT run this long after the promotion began is still its fault
REJOIN_EVENTS = ("BACKUP", "REJOIN")
MILESTONES = (
    ("fault", "fault seen"),
    ("vip", "VIP moved"),
    ("opened", "writes opened"),
    ("rejoined", "old master rejoined"),
)
DURATIONS = (
    ("fault", "vip", "fault seen to VIP moved"),
    ("vip", "opened", "VIP moved to writes opened (orch's promotion)"),
    ("fault", "opened", "fault seen to writes opened (no writable master)"),
    ("opened", "rejoined", "writes opened to old master rejoined"),
)


def epoch(text: Any) -> Optional[float]:
    """A journal time (ISO 8601, UTC when no offset) as epoch seconds; None when it is not one."""
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def clock(at: float) -> str:
    """Epoch seconds as a UTC time of day with milliseconds: ``23:31:14.925``."""
    when = datetime.fromtimestamp(at, timezone.utc)
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def stamp(at: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time with milliseconds."""
    when = datetime.fromtimestamp(at, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One orch run on one host: when it began and ended, what it decided, how it ended."""

    run_id: str
    node: str
    event: str
    outcome: str
    start: float
    end: float
    reason: str = ""
    kind: Optional[str] = None  # the promotion record's kind, when on record
    opened: Optional[float] = None  # when its SetWritable step succeeded (steps known)
    repointed: bool = False  # a ChangeSource or StartReplica step succeeded (steps known)
    steps_known: bool = False
    error: str = ""
    by: str = ""  # the command that ran it when not the event's own ("maintain"), journal records only


def _float(value: Any) -> Optional[float]:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def runs_from_journal(records: Iterable[Mapping[str, Any]]) -> List[Run]:
    """One Run per run id in journal records (begin and end joined), oldest first.

    The begin record's time is when the decided plan started; the end record's time when
    it ended; each step's milliseconds, added from the start, date its SetWritable."""
    begins: Dict[str, Mapping[str, Any]] = {}
    ends: Dict[str, Mapping[str, Any]] = {}
    order: List[str] = []
    for rec in records:
        if not isinstance(rec, Mapping) or not rec.get("id"):
            continue
        run_id = str(rec["id"])
        phase = rec.get("phase")
        if phase == "begin":
            begins.setdefault(run_id, rec)
        elif phase == "end":
            ends.setdefault(run_id, rec)
        else:
            continue
        if run_id not in order:
            order.append(run_id)
    out = []
    for run_id in order:
        begin, end = begins.get(run_id), ends.get(run_id)
        first = begin or end
        assert first is not None
        start = epoch(first.get("time"))
        if start is None:
            continue
        finish = epoch(end.get("time")) if end else None
        if begin is None and end is not None and _float(end.get("ms")) is not None:
            start = (finish or start) - float(end["ms"]) / 1000.0
        finish = start if finish is None or finish < start else finish
        opened, repointed, steps_known = None, False, False
        if end is not None and isinstance(end.get("steps"), list):
            steps_known = True
            elapsed = 0.0
            for step in end["steps"]:
                if not isinstance(step, Mapping):
                    continue
                elapsed += (_float(step.get("ms")) or 0.0) / 1000.0
                ok = step.get("result") == "ok"
                if ok and step.get("step") == "SetWritable" and opened is None:
                    opened = min(start + elapsed, finish)
                if ok and step.get("step") in ("ChangeSource", "StartReplica"):
                    repointed = True
        out.append(Run(run_id, str(first.get("node") or ""), str(first.get("event") or ""),
                       str(end.get("result")) if end else "unfinished", start, finish,
                       str(begin.get("reason") or "") if begin else "", None, opened, repointed, steps_known,
                       str(end.get("error") or "") if end else "", str(first.get("by") or "")))
    return out


def runs_from_history(entries: Iterable[Mapping[str, Any]], journal: Iterable[Mapping[str, Any]] = ()) -> List[Run]:
    """One Run per ``orch history`` entry, oldest first. Journal records of the same runs
    (``orch status``'s last entries) add what an entry lacks: the end and the steps."""
    detail = {r.run_id: r for r in runs_from_journal(journal)}
    out = []
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        start = epoch(e.get("time"))
        if start is None:
            continue
        run_id = str(e.get("run_id") or "")
        ms = _float(e.get("ms"))
        kind = e.get("kind") if isinstance(e.get("kind"), str) else None
        known = detail.get(run_id)
        if known is not None:
            run = Run(run_id, known.node or str(e.get("node") or ""), known.event, known.outcome, known.start, known.end,
                      known.reason or str(e.get("reason") or ""), kind, known.opened, known.repointed, known.steps_known,
                      known.error, known.by)
        elif e.get("source") == "record":
            # A row without a run of this host: the row is written right after writes open.
            promoted = e.get("promoted")
            run = Run(run_id, str(promoted or e.get("node") or ""), str(e.get("event") or ""), str(e.get("outcome") or ""),
                      start, start, str(e.get("reason") or ""), kind, start if promoted and kind in PROMOTION_KINDS else None)
        else:
            run = Run(run_id, str(e.get("node") or ""), str(e.get("event") or ""), str(e.get("outcome") or ""), start,
                      start + (ms or 0.0) / 1000.0, str(e.get("reason") or ""), kind)
        out.append(run)
    return sorted(out, key=lambda r: (r.start, r.run_id))


# ---------------------------------------------------------------------------- failovers


def is_promotion(run: Run) -> bool:
    """A run that opened writes on its node: on record as a promotion, or a MASTER run that
    acted on a promotion plan."""
    if run.kind in PROMOTION_KINDS:
        return True
    # decide's promotion reasons say "promoting <node>: ..."; the maintainer puts why it runs
    # the plan first ("server2 holds VIP ... but is read-only: promoting server2: ...").
    return run.event == "MASTER" and run.outcome in OPENED and f"{PROMOTING}{run.node}: " in run.reason


def moves_writes(run: Run) -> bool:
    """A promotion that moved writes from the other server (not a re-opening of the last writer)."""
    if run.kind in PROMOTION_KINDS:
        return run.kind == "failover" or REOPENING_WORDS not in run.reason
    return FAILOVER_WORDS in run.reason or REOPENING_WORDS not in run.reason


@dataclass(frozen=True)
class Milestone:
    key: str  # one of MILESTONES' keys
    label: str
    at: Optional[float]  # None: not seen in these runs
    how: str  # which run says so, or why it is unknown


@dataclass(frozen=True)
class Failover:
    """One promotion that moved writes, with its milestones and the runs around it."""

    promoted: str
    old: str  # "" when unknown
    kind: str  # failover, switchover, operator
    run_id: str
    milestones: Tuple[Milestone, ...]
    runs: Tuple[Run, ...]
    complete: bool = field(default=False)

    def at(self, key: str) -> Optional[float]:
        return next((m.at for m in self.milestones if m.key == key), None)

    def durations(self) -> List[Tuple[str, Optional[float]]]:
        """(label, seconds or None when either end is unknown or they are out of order) for each of DURATIONS."""
        out = []
        for a, b, label in DURATIONS:
            start, end = self.at(a), self.at(b)
            # None when either end is unknown, or out of order (a late FAULT notify)
            out.append((label, None if start is None or end is None or end < start else end - start))
        return out

    def start(self) -> float:
        known = [m.at for m in self.milestones if m.at is not None] + [r.start for r in self.runs]
        return min(known)

    def end(self) -> float:
        known = [m.at for m in self.milestones if m.at is not None] + [r.end for r in self.runs]
        return max(known)


def failovers(runs: Sequence[Run], nodes: Sequence[str] = (), limit: int = 5) -> List[Failover]:
    """The latest ``limit`` promotions that moved writes, newest first, each with its
    milestones (see the module's docstring) and the runs of its window: from the fault
    (or FAULT_WINDOW before the promotion) until the next promotion (or the rejoin plus a
    little)."""
    runs = sorted(runs, key=lambda r: (r.start, r.run_id))
    promotions = [r for r in runs if is_promotion(r)]
    out: List[Failover] = []
    for i, promo in enumerate(promotions):
        if not moves_writes(promo):
            continue
        previous = promotions[i - 1].start if i > 0 else -math.inf
        following = promotions[i + 1].start if i + 1 < len(promotions) else math.inf
        out.append(_failover(promo, runs, nodes, max(previous, promo.start - FAULT_WINDOW), following))
    return list(reversed(out))[:max(0, limit)]


def _failover(promo: Run, runs: Sequence[Run], nodes: Sequence[str], since: float, until: float) -> Failover:
    new = promo.node
    before = [r for r in runs if since <= r.start <= promo.start and r is not promo]
    switchover = next((r for r in reversed(before) if r.event == "SWITCHOVER" or r.kind == "switchover"), None)
    fault = next((r for r in reversed(before) if r.event == "FAULT" and r.node != new), None)
    late = False
    if fault is None:  # the old master's own notify may run after its peer already promoted
        fault = next((r for r in runs if r.event == "FAULT" and r.node != new and promo.start < r.start
                      <= promo.start + LATE_FAULT and r.start < until), None)
        late = fault is not None
    old = (fault.node if fault else "") or next((n for n in nodes if n != new), "") or next(
        (r.node for r in runs if r.node and r.node != new), "")
    kind = "switchover" if switchover else (promo.kind if promo.kind in PROMOTION_KINDS else "failover")
    if switchover is not None and fault is None:
        first = Milestone("fault", "switchover asked", switchover.start, f"switchover run {switchover.run_id} ({switchover.node})")
    elif fault is not None:
        first = Milestone("fault", "fault seen", fault.start, f"{fault.node}: FAULT run {fault.run_id} ({fault.outcome})"
                          + (", after the promotion: its notify ran late" if late else ""))
    else:
        first = Milestone("fault", "fault seen", None, "no FAULT run in this history: the old master's host journals it")
    if promo.event == "MASTER" and promo.by == "maintain":
        vip = Milestone("vip", "VIP moved", promo.start, f"{new}: the maintainer's MASTER run {promo.run_id} began (the VIP "
                        f"was on {new} by then, {new} still read-only: its notify came later or not at all)")
    elif promo.event == "MASTER":
        vip = Milestone("vip", "VIP moved", promo.start, f"{new}: MASTER run {promo.run_id} began (keepalived took the VIP)")
    else:
        vip = Milestone("vip", "VIP moved", None, f"the promotion of {new} is on record, its run is in the other host's journal")
    if promo.opened is not None:
        opened = Milestone("opened", "writes opened", promo.opened, f"{new}: SetWritable of run {promo.run_id}")
    else:
        opened = Milestone("opened", "writes opened", promo.end, f"{new}: run {promo.run_id} ended ({promo.outcome}); writes "
                           "opened by then")
    after = [r for r in runs if (opened.at or promo.end) <= r.end and r.start < until and r is not promo]
    rejoin = next((r for r in after if _rejoins(r, old, new)), None)
    if rejoin is not None:
        how = (f"{rejoin.node}: {rejoin.event} run {rejoin.run_id}" +
               (" switched the semi-sync wait back on" if rejoin.event == "SEMISYNC" else f" ({rejoin.outcome})"))
        rejoined = Milestone("rejoined", "old master rejoined", rejoin.end, how)
    else:
        rejoined = Milestone("rejoined", "old master rejoined", None, "no run in this history shows the old master replicating again")
    start = first.at if first.at is not None else promo.start
    end = (rejoined.at or opened.at or promo.end) + 2.0
    window = tuple(r for r in runs if r.end >= start - 0.5 and r.start <= min(end, until - 1e-6) and r.start >= since)
    if promo not in window:
        window = tuple(sorted(window + (promo,), key=lambda r: (r.start, r.run_id)))
    return Failover(new, old, kind, promo.run_id, (first, vip, opened, rejoined), window,
                    all(m.at is not None for m in (first, vip, opened, rejoined)))


def with_milestone(f: Failover, key: str, at: float, how: str) -> Failover:
    """``f`` with one milestone's time and source replaced (the lab sees the VIP move itself)."""
    from dataclasses import replace

    milestones = tuple(replace(m, at=at, how=how) if m.key == key else m for m in f.milestones)
    return replace(f, milestones=milestones, complete=all(m.at is not None for m in milestones))


def _rejoins(run: Run, old: str, new: str) -> bool:
    if not old or run.outcome not in OPENED:
        return False
    if run.node == old and run.event in REJOIN_EVENTS:
        return run.repointed or not run.steps_known
    return run.node == new and run.event == "SEMISYNC" and f"{old} replicates from {new} and has caught up" in run.reason


# ---------------------------------------------------------------------------- the chart


@dataclass(frozen=True)
class Span:
    lane: str
    start: float
    end: float
    label: str
    tone: str = "neutral"  # ok, bad, warn, neutral, info, down
    detail: str = ""  # the tooltip


@dataclass(frozen=True)
class Mark:
    at: float
    label: str
    detail: str = ""
    tone: str = "info"


@dataclass(frozen=True)
class Chart:
    title: str
    start: float
    end: float
    origin: float  # the axis counts seconds from here (the fault, when known)
    lanes: Tuple[str, ...]
    spans: Tuple[Span, ...]
    marks: Tuple[Mark, ...]


OUTCOME_TONE = {"act": "ok", "partial": "warn", "incomplete": "warn", "refused": "bad", "failed": "bad", "unfinished": "bad",
                "noop": "neutral", "recorded": "info"}


def run_lane(node: str) -> str:
    return f"orch on {node}"


def run_spans(runs: Iterable[Run]) -> List[Span]:
    """Each run as a span in its node's lane, named by event and outcome; the reason as tooltip."""
    out = []
    for r in runs:
        detail = f"{stamp(r.start)} run {r.run_id}: {r.event} {r.outcome}, {(r.end - r.start) * 1000:.0f} ms: {r.reason}"
        if r.error:
            detail += f" (error: {r.error})"
        out.append(Span(run_lane(r.node), r.start, r.end, f"{r.event} {r.outcome}", OUTCOME_TONE.get(r.outcome, "neutral"), detail))
    return out


def milestone_marks(f: Failover) -> List[Mark]:
    return [Mark(m.at, m.label, m.how) for m in f.milestones if m.at is not None]


def failover_chart(f: Failover, nodes: Sequence[str] = (), lanes: Sequence[str] = (), spans: Sequence[Span] = (),
                   marks: Sequence[Mark] = (), title: str = "", origin: Optional[float] = None) -> Chart:
    """A failover's chart: ``lanes``/``spans``/``marks`` first (the lab's samples), then one
    lane of orch runs per node that ran something (each node's, when ``nodes`` is given and
    the lab shows both), and the milestones. The axis counts from ``origin``, else the fault."""
    if origin is None:
        origin = f.at("fault")
    return chart(title or f"{f.kind} to {f.promoted}" + (f" from {f.old}" if f.old else ""), f.runs, nodes, lanes, spans,
                 tuple(marks) + tuple(milestone_marks(f)), origin if origin is not None else f.start())


def chart(title: str, runs: Sequence[Run], nodes: Sequence[str] = (), lanes: Sequence[str] = (), spans: Sequence[Span] = (),
          marks: Sequence[Mark] = (), origin: Optional[float] = None) -> Chart:
    """A chart of ``runs`` (a lane per node, in ``nodes``' order) after the given lanes."""
    ran = {r.node for r in runs}
    all_lanes = list(lanes) + [run_lane(n) for n in nodes if (n in ran or lanes) and run_lane(n) not in lanes]
    for r in runs:
        if run_lane(r.node) not in all_lanes:
            all_lanes.append(run_lane(r.node))
    all_spans = tuple(spans) + tuple(run_spans(runs))
    times = [s.start for s in all_spans] + [s.end for s in all_spans] + [m.at for m in marks]
    if origin is not None:
        times.append(origin)
    if not times:
        times = [0.0]
    return Chart(title, min(times), max(times), origin if origin is not None else min(times), tuple(all_lanes), all_spans,
                 tuple(marks))


def sample_spans(lane: str, samples: Sequence[Tuple[float, Any]], names: Mapping[Any, Tuple[str, str]], end: float) -> List[Span]:
    """Runs of equal consecutive samples as spans: ``names`` maps a value to (label, tone);
    each span lasts until the next different sample (the last one until ``end``)."""
    out: List[Span] = []
    current: Optional[Tuple[float, Any]] = None
    for at, value in samples:
        if current is None:
            current = (at, value)
        elif value != current[1]:
            out.append(_sample_span(lane, current[0], at, current[1], names))
            current = (at, value)
    if current is not None:
        out.append(_sample_span(lane, current[0], max(end, current[0]), current[1], names))
    return out


def _sample_span(lane: str, start: float, end: float, value: Any, names: Mapping[Any, Tuple[str, str]]) -> Span:
    label, tone = names.get(value, (str(value), "neutral"))
    return Span(lane, start, end, label, tone, f"{label} from {clock(start)} to {clock(end)} ({end - start:.2f}s)")


def write_gaps(acked: Sequence[float], min_gap: float) -> List[Tuple[float, float]]:
    """(last acknowledged write before, first after) for every pause of at least ``min_gap``
    seconds between a client's consecutive acknowledged writes."""
    times = sorted(acked)
    return [(a, b) for a, b in zip(times, times[1:]) if b - a >= min_gap]


def write_spans(lane: str, acked: Sequence[float], min_gap: float, end: float) -> List[Span]:
    """The client's writes as spans: acknowledged (ok) between gaps, each gap (bad) named by its length."""
    times = sorted(acked)
    if not times:
        return [Span(lane, end, end, "no acknowledged write", "bad")]
    out = []
    begin = times[0]
    for a, b in write_gaps(times, min_gap):
        out.append(Span(lane, begin, a, "writes acknowledged", "ok", f"writes acknowledged from {clock(begin)} to {clock(a)}"))
        out.append(Span(lane, a, b, f"no write for {b - a:.2f}s", "bad",
                        f"no acknowledged write from {clock(a)} to {clock(b)}: {b - a:.3f}s"))
        begin = b
    out.append(Span(lane, begin, max(times[-1], begin), "writes acknowledged", "ok",
                    f"writes acknowledged from {clock(begin)} to {clock(times[-1])}"))
    return out


# ---------------------------------------------------------------------------- SVG

WIDTH = 960
LABEL_WIDTH = 150
LANE_HEIGHT = 26
AXIS_HEIGHT = 24
MARK_ROW = 15
FILL = {"ok": "#2e9d5b", "bad": "#d64545", "warn": "#e0a030", "neutral": "#8a94a6", "info": "#3f7fd0", "down": "#555"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def tick_step(seconds: float, ticks: int = 8) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks over ``seconds``."""
    if seconds <= 0:
        return 1.0
    raw = seconds / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def svg(chart: Chart, width: int = WIDTH) -> str:
    """The chart as an inline SVG element: a time axis in seconds from ``origin``, a lane
    per row with its spans, and each mark as a vertical line named below the lanes."""
    plot = width - LABEL_WIDTH - 10
    span_s = max(chart.end - chart.start, 0.001)
    pad = span_s * 0.02
    t_min, t_max = chart.start - pad, chart.end + pad

    def x(at: float) -> float:
        return LABEL_WIDTH + (at - t_min) / (t_max - t_min) * plot

    marks = sorted(chart.marks, key=lambda m: m.at)
    rows: List[float] = []  # the right end of the last label in each row of mark labels
    placed = []
    for m in marks:
        left = x(m.at)
        label_w = 7 * len(m.label) + 10
        row = next((i for i, right in enumerate(rows) if right < left), None)
        if row is None:
            rows.append(0.0)
            row = len(rows) - 1
        rows[row] = left + label_w
        placed.append((m, row))
    lanes_top = AXIS_HEIGHT
    lanes_bottom = lanes_top + LANE_HEIGHT * len(chart.lanes)
    height = lanes_bottom + MARK_ROW * max(1, len(rows)) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-origin="{_e(stamp(chart.origin))}">',
             f"<title>{_e(chart.title)}</title>"]
    step = tick_step(t_max - t_min)
    first = math.ceil((t_min - chart.origin) / step)
    last = math.floor((t_max - chart.origin) / step)
    for k in range(first, last + 1):
        at = chart.origin + k * step
        tx = x(at)
        text = f"{k * step:+.{max(0, -math.floor(math.log10(step)))}f}s" if k else "0s"
        parts.append(f'<line x1="{tx:.1f}" y1="{AXIS_HEIGHT - 4}" x2="{tx:.1f}" y2="{lanes_bottom}" class="tick" '
                     f'stroke="#d8dde6" stroke-width="1"/>')
        parts.append(f'<text x="{tx:.1f}" y="{AXIS_HEIGHT - 8}" font-size="11" text-anchor="middle" fill="#555">{_e(text)}</text>')
    for i, lane in enumerate(chart.lanes):
        y = lanes_top + i * LANE_HEIGHT
        parts.append(f'<g class="lane" data-lane="{_e(lane)}">')
        parts.append(f'<text x="4" y="{y + LANE_HEIGHT / 2 + 4:.1f}" font-size="12" fill="#222">{_e(lane)}</text>')
        parts.append(f'<line x1="{LABEL_WIDTH}" y1="{y + LANE_HEIGHT:.1f}" x2="{width - 10}" y2="{y + LANE_HEIGHT:.1f}" '
                     f'stroke="#eef0f4" stroke-width="1"/>')
        for s in (s for s in chart.spans if s.lane == lane):
            sx, ex = x(s.start), x(s.end)
            w = max(ex - sx, 3.0)
            fill = FILL.get(s.tone, FILL["neutral"])
            parts.append(f'<g class="span {_e(s.tone)}" data-label="{_e(s.label)}"><title>{_e(s.detail or s.label)}</title>'
                         f'<rect x="{sx:.1f}" y="{y + 4}" width="{w:.1f}" height="{LANE_HEIGHT - 8}" rx="3" fill="{fill}"/>')
            room = int(w // 6.5)
            if room >= 4:
                text = s.label if len(s.label) <= room else s.label[:room - 1] + "\u2026"
                parts.append(f'<text x="{sx + 4:.1f}" y="{y + LANE_HEIGHT / 2 + 4:.1f}" font-size="11" fill="#fff">{_e(text)}</text>')
            parts.append("</g>")
        parts.append("</g>")
    for m, row in placed:
        mx = x(m.at)
        ly = lanes_bottom + MARK_ROW * row + 12
        parts.append(f'<g class="mark" data-mark="{_e(m.label)}"><title>{_e(clock(m.at))} {_e(m.label)}: {_e(m.detail)}</title>'
                     f'<line x1="{mx:.1f}" y1="{AXIS_HEIGHT - 4}" x2="{mx:.1f}" y2="{ly - 10}" stroke="#1d3f72" '
                     f'stroke-width="1.5" stroke-dasharray="4 3"/>'
                     f'<text x="{mx + 3:.1f}" y="{ly}" font-size="11" fill="#1d3f72">{_e(m.label)} '
                     f'{_e(_offset(m.at - chart.origin))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _offset(seconds: float) -> str:
    return f"{seconds:+.2f}s"
