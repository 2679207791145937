"""orch history, pure: the cluster-wide promotion record and this host's journal merged into
one list of entries, newest first (the I/O is commands/history.py).

The record (``orch_meta.promotions``) replicates, so either server's copy holds the
promotions decided on both hosts; the journal holds every run this host made (fences,
refusals, rewinds, switchovers, acknowledgements...). A journal run and the row it recorded
share the run id: they are one entry (source ``both``).

Each entry has exactly the keys of ``KEYS`` (docs/cli.md, "orch history"):

- ``time``: ISO 8601 UTC, the run's start (journal) or the row's time (record only)
- ``run_id``: the run's id
- ``node``: the node whose host ran it (journal), or the node the row names (record only)
- ``event``: the journal's event (MASTER, BACKUP, FAULT, ACK, SWITCHOVER, MAINTAIN...), or null
- ``kind``: the record's kind (failover, operator, switchover, ack; pause, resume from the
  maintenance record), or null when not on record
- ``promoted``: the node a promotion row names, or null (not on record, or an ack)
- ``acks``: the run id an ack row acknowledges, or null
- ``outcome``: the journal's result (act, refused, failed, partial, incomplete; ``unfinished``
  for a begin without an end; a one-record event such as an HTTP API lock-out: its own result, else ``note``), or ``recorded`` for a row this host has no run of, or ``ran out``
  for a ``--for`` pause's end by itself (at its end, under the pause's run id)
- ``reason``: the plan's reason (with the error of a failed run), or what the row says
- ``ms``: the run's milliseconds, or null
- ``source``: ``journal``, ``record`` or ``both``
- ``host``: the node whose host's orch read the entry (its journal holds the run; a ``record``
  entry is the same from either host); ``merge_hosts`` joins two hosts' lists
"""

from __future__ import annotations

import re
import textwrap
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional

KEYS = ("time", "run_id", "node", "event", "kind", "promoted", "acks", "outcome", "reason", "ms", "source", "host")
JOURNAL, RECORD, BOTH = "journal", "record", "both"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from ``now`` (``90s``, ``30m``, ``2h``, ``1d``, ``1w``) or an
    ISO 8601 time (``2026-01-31``, ``2026-01-31T10:00``, with ``Z`` or an offset; without
    one, UTC as every time orch prints). Epoch seconds; ValueError saying what it expects."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        return now - float(m.group(1)) * UNITS[m.group(2)]
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a duration (30m, 2h, 1d, 1w) or an ISO time (2026-01-31T10:00Z), got {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()


def iso(epoch: float) -> str:
    """Epoch seconds as the journal writes times: ``2026-01-31T10:00:00.123Z``."""
    at = datetime.fromtimestamp(epoch, timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def epoch(text: Any) -> Optional[float]:
    """A journal time (ISO 8601) as epoch seconds; None when it is not one."""
    try:
        at = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def _entry(**values: Any) -> Dict[str, Any]:
    return {key: values.get(key) for key in KEYS}


def journal_entries(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per run in the journal (its begin and end records joined by id)."""
    runs: Dict[str, Dict[str, Any]] = {}
    for rec in records:
        run_id = rec.get("id")
        if not run_id:
            continue
        run = runs.setdefault(str(run_id), {})
        phase = rec.get("phase")
        if phase in ("begin", "end", "note") and phase not in run:
            run[phase] = rec
    out = []
    for run_id, run in runs.items():
        begin, end, note = run.get("begin"), run.get("end"), run.get("note")
        first = begin or end or note
        if first is None:  # records of a phase of their own (a switchover's hooks) without their run
            continue
        if note is not None and not (begin or end):  # a note (the token keeper's, an API lock-out): one record
            out.append(_entry(time=note.get("time"), run_id=run_id, node=note.get("node"), event=note.get("event"),
                              outcome=str(note.get("result") or "note"), reason=str(note.get("reason", "")), source=JOURNAL))
            continue
        outcome = str(end.get("result")) if end else "unfinished"
        reason = str(begin.get("reason", "")) if begin else ""
        if end and end.get("error"):
            reason = f"{reason} (error: {end['error']})" if reason else f"error: {end['error']}"
        out.append(_entry(time=first.get("time"), run_id=run_id, node=first.get("node"), event=first.get("event"),
                          outcome=outcome, reason=reason, ms=end.get("ms") if end else None, source=JOURNAL))
    return out


def record_entries(rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per row of the record, over both servers' copies (the same row replicated
    to both is one: a row is its run id and kind)."""
    seen: Dict[tuple, Dict[str, Any]] = {}
    for row in rows:
        key = (row["run_id"], row["kind"])
        if key in seen:
            continue
        if row["kind"] == "ack":
            reason = f"acknowledged the promotion of run {row['acks']} (row written on {row['node']})"
        else:
            reason = f"{row['kind']} promotion of {row['node']} on record"
        seen[key] = _entry(time=iso(float(row["at"])), run_id=row["run_id"], node=row["node"], kind=row["kind"],
                           promoted=None if row["kind"] == "ack" else row["node"], acks=row["acks"] or None, outcome="recorded", reason=reason, source=RECORD)
    return list(seen.values())


def _length(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def pause_entries(rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per row of the maintenance record (``orch_meta.pause``) over both servers'
    copies, and one ``ran out`` entry, at its end, for a ``--for`` pause that ended by itself:
    its end passed (by the server's clock) with no later row before it."""
    unique: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["run_id"], row)
    ordered = sorted(unique.values(), key=lambda r: (r["at"], r["run_id"]))
    out = []
    for i, row in enumerate(ordered):
        by = f" by {row['by']}" if row["by"] else ""
        why = f": {row['reason']}" if row["reason"] else ""
        if row["kind"] == "pause":
            length = (f"for {_length(row['until'] - row['at'])}" if row["until"] is not None else "until orch resume")
            reason = f"paused{by} {length} (row written on {row['node']}){why}"
        else:
            reason = f"resumed{by} (row written on {row['node']}){why}"
        out.append(_entry(time=iso(row["at"]), run_id=row["run_id"], node=row["node"], kind=row["kind"],
                          outcome="recorded", reason=reason, source=RECORD))
        until = row["until"]
        later = ordered[i + 1]["at"] if i + 1 < len(ordered) else None
        if row["kind"] == "pause" and until is not None and until <= row["now"] and (later is None or later > until):
            out.append(_entry(time=iso(until), run_id=row["run_id"], node=row["node"], kind="resume", outcome="ran out",
                              reason=f"the pause of run {row['run_id']} ran out by itself ({_length(until - row['at'])} after it began)",
                              source=RECORD))
    return out


def merge(journal: List[Dict[str, Any]], record: List[Dict[str, Any]], since: float = 0.0) -> List[Dict[str, Any]]:
    """The entries of both, a run and its row as one (``both``), at or after ``since``, newest first."""
    by_run: Dict[str, Dict[str, Any]] = {}
    out: List[Dict[str, Any]] = []
    for entry in journal:
        entry = dict(entry)
        by_run[entry["run_id"]] = entry
        out.append(entry)
    for row in record:
        run = by_run.get(row["run_id"])
        if run is not None and run["kind"] is None and row["outcome"] == "recorded":
            run.update(kind=row["kind"], promoted=row["promoted"], acks=row["acks"], source=BOTH)
        else:
            out.append(dict(row))
    kept = [e for e in out if (epoch(e["time"]) or 0.0) >= since]
    return sorted(kept, key=lambda e: (epoch(e["time"]) or 0.0, e["run_id"]), reverse=True)


def mark_host(entries: Iterable[Dict[str, Any]], host: str) -> List[Dict[str, Any]]:
    """``entries`` read by ``host``'s orch, each marked so. Pure."""
    return [{**e, "host": host} for e in entries]


def merge_hosts(mine: Iterable[Dict[str, Any]], theirs: Iterable[Any]) -> List[Dict[str, Any]]:
    """Two hosts' histories as one, newest first. Pure. An entry in both (a promotion on
    record, read from either server) is kept once: the copy from the host whose journal has
    the run (``journal`` or ``both``), else this host's. An entry from the other host that is
    not one (a peer's bad answer) is left out."""
    chosen: Dict[tuple, Dict[str, Any]] = {}
    order: List[tuple] = []
    for e in list(mine) + [t for t in theirs if isinstance(t, dict) and set(KEYS) - {"host"} <= set(t)]:
        key = (str(e.get("run_id")), e.get("outcome") == "ran out")
        known = chosen.get(key)
        if known is None:
            chosen[key] = e
            order.append(key)
            continue
        run, row = (e, known) if known.get("source") == RECORD else (known, e)
        if run.get("source") == JOURNAL and row.get("source") == RECORD and row.get("kind"):
            # one host's run, the other's copy of its row (this host could not read the record)
            run = {**run, "kind": row["kind"], "promoted": row.get("promoted"), "acks": row.get("acks"), "source": BOTH}
        chosen[key] = run
    entries = [chosen[k] for k in order]
    return sorted(entries, key=lambda e: (epoch(e["time"]) or 0.0, str(e["run_id"])), reverse=True)


def render(entries: List[Dict[str, Any]], width: int = 100) -> str:
    """The table: one line per entry (time, node, what, outcome, ms, run id), its reason wrapped
    under it, no line wider than ``width``."""
    if not entries:
        return "history: nothing recorded"
    width = max(40, width)
    lines = []
    for e in entries:
        what = " ".join(x for x in (e["event"] or "", f"({e['kind']})" if e["kind"] and e["event"] else (e["kind"] or "")) if x)
        ms = f"{e['ms']} ms" if e["ms"] is not None else "-"
        where = f"{e['source']}, from {e['host']}" if e.get("host") else e["source"]
        head = f"{e['time']}  {e['node']}  {what}  {e['outcome']}  {ms}  run {e['run_id']}  [{where}]"
        lines += textwrap.wrap(head, width, subsequent_indent="    ", break_on_hyphens=False) or [""]
        if e["reason"]:
            lines += textwrap.wrap(e["reason"], width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)
