"""orchestrator.timeline, pure: a failover's runs (journal records, or ``orch history``
entries made from them by orchestrator.history) -> milestones, durations and the SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from orchestrator import history as h
from orchestrator import timeline as tl

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
NODES = ("server1", "server2")

FAILOVER_TO_2 = ("promoting server2: server1 is not reachable ((2003) Can't connect), applying the relay log first; "
                 "a failover: writes move from server1 (server2 replicates from server1)")
FAILOVER_TO_1 = FAILOVER_TO_2.replace("server2", "@").replace("server1", "server2").replace("@", "server1")
REOPEN_1 = ("promoting server1: server2 is read-only, applying everything received first; a re-opening, not a failover: "
            "server1 was the last writer (server2 does not hold newer writes)")
SEMISYNC_ON = "server1 replicates from server2 and has caught up: semi-sync wait back on, without fallback"
PROMOTION_STEPS = (("SetRwOffline", 1), ("CatchUp", 20), ("StopSqlThread", 2), ("SemiSyncWait", 1), ("SetWritable", 3),
                   ("StopReplica", 40), ("ResetReplica", 5), ("SetRwOnline", 1))
REJOIN_STEPS = (("ChangeSource", 6), ("StartReplica", 4))


def run(run_id: str, node: str, event: str, at: float, ms: int = 50, result: str = "act", reason: str = "",
        steps: Sequence[Tuple[str, int]] = (), step_result: str = "ok", end: bool = True) -> List[Dict[str, Any]]:
    """The begin and end journal records of one run, as runs.execute_plan writes them."""
    begin = {"time": h.iso(at), "id": run_id, "node": node, "event": event, "phase": "begin", "reason": reason,
             "outcome": result, "plan": []}
    if not end:
        return [begin]
    return [begin, {"time": h.iso(at + ms / 1000), "id": run_id, "node": node, "event": event, "phase": "end",
                    "result": result, "exit": 0, "ms": ms, "error": "",
                    "steps": [{"step": s, "result": step_result, "detail": "", "ms": m, "description": s} for s, m in steps]}]


def row(run_id: str, kind: str, node: str, at: float, acks: str = "") -> Dict[str, Any]:
    return {"run_id": run_id, "kind": kind, "node": node, "at": at, "acks": acks, "seen_on": "server1"}


def entries(records: List[Dict[str, Any]], rows: Sequence[Dict[str, Any]] = ()) -> List[Dict[str, Any]]:
    """``orch history --format json``'s entries, made by the real merge."""
    return h.merge(h.journal_entries(records), h.record_entries(rows))


# One failover of server1 to server2, as each host journals it.
ON_SERVER1 = (run("r-fault", "server1", "FAULT", T0, 60, "incomplete", "FAULT: server1's server is not reachable: nothing to fence")
              + run("r-rejoin", "server1", "REJOIN", T0 + 6.0, 12, reason="completing an unfinished rejoin", steps=REJOIN_STEPS))
ON_SERVER2 = (run("r-setup", "server2", "BACKUP", T0 - 600, 100, reason="fenced server2; replicating from it", steps=REJOIN_STEPS)
              + run("r-master", "server2", "MASTER", T0 + 2.0, 90, reason=FAILOVER_TO_2, steps=PROMOTION_STEPS)
              + run("r-semi", "server2", "SEMISYNC", T0 + 7.5, 2, reason=SEMISYNC_ON, steps=(("SemiSyncWait", 1),)))
OPENED = T0 + 2.0 + 0.027  # the steps' milliseconds up to SetWritable
ROW = row("r-master", "failover", "server2", T0 + 2.03)


def milestones(f: tl.Failover) -> Dict[str, Optional[float]]:
    return {m.key: m.at for m in f.milestones}


CASES = [
    # (id, runs, promoted, old, kind, {milestone: time or None}, {duration label: seconds or None})
    ("new master's host: history with orch status's journal (steps known)",
     lambda: tl.runs_from_history(entries(ON_SERVER2), ON_SERVER2),
     "server2", "server1", "failover",
     {"fault": None, "vip": T0 + 2.0, "opened": OPENED, "rejoined": T0 + 7.502},
     {"VIP moved to writes opened (orch's promotion)": 0.027, "writes opened to old master rejoined": T0 + 7.502 - OPENED,
      "fault seen to VIP moved": None}),
    ("new master's host: history alone (writes opened by the run's end)",
     lambda: tl.runs_from_history(entries(ON_SERVER2)),
     "server2", "server1", "failover",
     {"fault": None, "vip": T0 + 2.0, "opened": T0 + 2.09, "rejoined": T0 + 7.502}, {}),
    ("old master's host with anti-flapping on: its FAULT, the replicated row, its rejoin",
     lambda: tl.runs_from_history(entries(ON_SERVER1, [ROW]), ON_SERVER1),
     "server2", "server1", "failover",
     {"fault": T0, "vip": None, "opened": T0 + 2.03, "rejoined": T0 + 6.012},
     {"fault seen to writes opened (no writable master)": 2.03, "fault seen to VIP moved": None}),
    ("both hosts' journals (the lab): every milestone",
     lambda: tl.runs_from_journal(ON_SERVER1 + ON_SERVER2),
     "server2", "server1", "failover",
     {"fault": T0, "vip": T0 + 2.0, "opened": OPENED, "rejoined": T0 + 6.012},
     {"fault seen to VIP moved": 2.0, "fault seen to writes opened (no writable master)": OPENED - T0,
      "writes opened to old master rejoined": T0 + 6.012 - OPENED}),
    ("an operator's promotion on record",
     lambda: tl.runs_from_history(entries(run("r-op", "server2", "MASTER", T0, 80, reason=FAILOVER_TO_2), [row("r-op", "operator", "server2", T0 + 0.05)])),
     "server2", "server1", "operator",
     {"fault": None, "vip": T0, "opened": T0 + 0.08, "rejoined": None}, {}),
    ("a switchover: asked on the old master, opened by the candidate's MASTER",
     lambda: tl.runs_from_journal(run("r-sw", "server1", "SWITCHOVER", T0, 3000, reason="switchover to server2")
                                  + run("r-m", "server2", "MASTER", T0 + 1.0, 60, reason=FAILOVER_TO_2, steps=PROMOTION_STEPS)
                                  + run("r-b", "server1", "BACKUP", T0 + 3.5, 20, reason="replicating from server2", steps=REJOIN_STEPS)),
     "server2", "server1", "switchover",
     {"fault": T0, "vip": T0 + 1.0, "opened": T0 + 1.027, "rejoined": T0 + 3.52}, {}),
    ("a refused rejoin is no rejoin (errant GTIDs)",
     lambda: tl.runs_from_journal(ON_SERVER2[2:4] + run("r-fault", "server1", "FAULT", T0, 60, "incomplete")
                                  + run("r-b", "server1", "BACKUP", T0 + 5, 20, "refused", "refusing: errant GTIDs")),
     "server2", "server1", "failover",
     {"fault": T0, "vip": T0 + 2.0, "opened": OPENED, "rejoined": None}, {"writes opened to old master rejoined": None}),
    ("the old master's FAULT notify ran after its peer promoted (keepalived or the maintainer was faster)",
     lambda: tl.runs_from_journal(ON_SERVER2[2:4] + run("r-fault", "server1", "FAULT", T0 + 2.5, 60, "incomplete")),
     "server2", "server1", "failover",
     {"fault": T0 + 2.5, "vip": T0 + 2.0, "opened": OPENED, "rejoined": None},
     {"fault seen to VIP moved": None, "fault seen to writes opened (no writable master)": None,
      "VIP moved to writes opened (orch's promotion)": 0.027}),
    ("a FAULT long after the promotion is not this failover's",
     lambda: tl.runs_from_journal(ON_SERVER2[2:4] + run("r-fault", "server1", "FAULT", T0 + 2.0 + tl.LATE_FAULT + 1, 60, "incomplete")),
     "server2", "server1", "failover",
     {"fault": None, "vip": T0 + 2.0, "opened": OPENED, "rejoined": None}, {}),
    ("a FAULT older than FAULT_WINDOW is not this failover's",
     lambda: tl.runs_from_journal(run("r-fault", "server1", "FAULT", T0 + 2.0 - tl.FAULT_WINDOW - 1, 60, "incomplete")
                                  + ON_SERVER2[2:4]),
     "server2", "server1", "failover",
     {"fault": None, "vip": T0 + 2.0, "opened": OPENED, "rejoined": None}, {}),
]


@pytest.mark.parametrize("name, make, promoted, old, kind, expected, durations", CASES, ids=[c[0] for c in CASES])
def test_a_failovers_runs_give_its_milestones_and_durations(name, make, promoted, old, kind, expected, durations):
    (f,) = tl.failovers(make(), NODES)
    assert (f.promoted, f.old, f.kind) == (promoted, old, kind)
    got = milestones(f)
    assert set(got) == set(expected)
    for key, at in expected.items():
        assert (got[key] is None) == (at is None), (key, got[key], at)
        if at is not None:
            assert got[key] == pytest.approx(at, abs=0.0015), key
    measured = dict(f.durations())
    for label, seconds in durations.items():
        if seconds is None:
            assert measured[label] is None, label
        else:
            assert measured[label] == pytest.approx(seconds, abs=0.0015), label
    assert f.complete == all(at is not None for at in expected.values())


@pytest.mark.parametrize("records", [
    pytest.param(run("r", "server1", "MASTER", T0, reason=REOPEN_1, steps=PROMOTION_STEPS), id="a re-opening of the last writer"),
    pytest.param(run("r", "server2", "MASTER", T0, result="refused", reason="refusing to promote server2: anti-flapping"), id="a refused MASTER"),
    pytest.param(run("r", "server2", "MASTER", T0, reason=FAILOVER_TO_2, end=False), id="an unfinished MASTER"),
    pytest.param(run("r", "server2", "MASTER", T0, result="noop", reason="server2 is already the writable master"), id="a noop"),
    pytest.param(run("r", "server2", "FAULT", T0, result="act", reason="fenced server2") + ON_SERVER1[2:], id="fences and rejoins only"),
])
def test_what_is_not_a_failover(records):
    assert tl.failovers(tl.runs_from_journal(records), NODES) == []


def test_the_maintainers_promotion_counts_too():
    """The maintainer runs the MASTER plan when the VIP holder is still read-only (its notify
    late or lost); its reason says why first."""
    reason = "server2 holds VIP 10.213.0.100 but is read-only: " + FAILOVER_TO_2
    (f,) = tl.failovers(tl.runs_from_journal(ON_SERVER1 + run("m", "server2", "MASTER", T0 + 1.5, 95, reason=reason,
                                                                steps=PROMOTION_STEPS)), NODES)
    assert (f.promoted, f.run_id, f.complete) == ("server2", "m", True)
    records = run("m", "server2", "MASTER", T0 + 1.5, 95, reason=reason, steps=PROMOTION_STEPS)
    for record in records:
        record["by"] = "maintain"
    (f,) = tl.failovers(tl.runs_from_journal(records), NODES)
    assert "the maintainer's MASTER run m began" in f.milestones[1].how
    # A reason that only mentions the word for another node is not this node's promotion.
    other = tl.Run("x", "server1", "MASTER", "act", T0, T0, "server2 is promoting server2: ...")
    assert not tl.is_promotion(other)


def test_switchover_row_is_the_request_not_a_promotion():
    # On the candidate's host: the replicated switchover row, then its own MASTER.
    runs = tl.runs_from_history(entries(run("r-m", "server2", "MASTER", T0 + 1, 60, reason=FAILOVER_TO_2),
                                        [row("r-sw", "switchover", "server2", T0)]))
    (f,) = tl.failovers(runs, NODES)
    assert (f.kind, f.run_id, f.milestones[0].label, f.at("fault")) == ("switchover", "r-m", "switchover asked", T0)


def test_back_to_back_failovers_keep_their_own_runs_newest_first():
    first = ON_SERVER1 + ON_SERVER2
    second = (run("f2", "server2", "FAULT", T0 + 100, 40, "incomplete")
              + run("m2", "server1", "MASTER", T0 + 101, 70, reason=FAILOVER_TO_1, steps=PROMOTION_STEPS))
    found = tl.failovers(tl.runs_from_journal(first + second), NODES)
    assert [(f.promoted, f.old) for f in found] == [("server1", "server2"), ("server2", "server1")]
    newest, oldest = found
    assert milestones(newest)["fault"] == T0 + 100 and milestones(newest)["rejoined"] is None
    assert milestones(oldest)["rejoined"] == pytest.approx(T0 + 6.012)
    assert all(r.start < T0 + 100 for r in oldest.runs)
    assert [f.run_id for f in tl.failovers(tl.runs_from_journal(first + second), NODES, limit=1)] == ["m2"]


def test_the_words_it_reads_are_the_ones_decide_writes():
    """A failover and a re-opening told apart by the reasons the real decide gives."""
    from orchestrator.decide import MASTER, decide
    from orchestrator.model import ThreadState

    from .test_decide import REPLICA2, cfg, down, node, repl, view

    failover = decide(view(node("server1", replica=repl(io=ThreadState.CONNECTING)), down("server2")), MASTER, cfg())
    reopening = decide(view(node("server1", ro=True), REPLICA2), MASTER, cfg())
    for plan, moves in ((failover, True), (reopening, False)):
        r = tl.Run("r", "server1", "MASTER", "act", T0, T0 + 0.1, plan.reason)
        assert tl.is_promotion(r) and tl.moves_writes(r) is moves, plan.reason


# ---------------------------------------------------------------------------- chart pieces


@pytest.mark.parametrize("seconds, step", [(0.5, 0.1), (4.2, 1), (3.9, 0.5), (8, 1), (30, 5), (95, 20), (7200, 1000), (0, 1.0)])
def test_tick_step_is_round(seconds, step):
    assert tl.tick_step(seconds) == pytest.approx(step)


def test_write_gaps_and_spans():
    acked = [0.0, 0.01, 0.02, 1.5, 1.51, 1.52, 1.7]
    assert tl.write_gaps(acked, 0.1) == [(0.02, 1.5), (1.52, 1.7)]
    spans = tl.write_spans("client", acked, 0.1, 2.0)
    assert [(s.label, s.tone) for s in spans] == [("writes acknowledged", "ok"), ("no write for 1.48s", "bad"),
                                                 ("writes acknowledged", "ok"), ("no write for 0.18s", "bad"),
                                                 ("writes acknowledged", "ok")]
    assert tl.write_spans("client", [], 0.1, 2.0)[0].label == "no acknowledged write"


def test_sample_spans_merge_equal_samples_until_the_next_change():
    names = {0: ("writable", "ok"), 1: ("read-only", "info"), None: ("down", "bad")}
    spans = tl.sample_spans("ro", [(0.0, 0), (0.05, 0), (0.1, None), (0.15, None), (0.2, 1)], names, 1.0)
    assert [(s.start, s.end, s.label) for s in spans] == [(0.0, 0.1, "writable"), (0.1, 0.2, "down"), (0.2, 1.0, "read-only")]


HOSTILE = '<script>alert("x")</script> & \' "'


def test_svg_is_well_formed_and_escapes_every_text():
    runs = tl.runs_from_journal(
        run("r<1>", HOSTILE, "FAULT", T0, 60, "incomplete", reason=HOSTILE)
        + run("r-m", "server2", "MASTER", T0 + 2, 60, reason=FAILOVER_TO_2 + HOSTILE, steps=PROMOTION_STEPS))
    (f,) = tl.failovers(runs, ("server2", HOSTILE))
    chart = tl.failover_chart(f, ("server2", HOSTILE))
    svg = tl.svg(chart)
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = ET.fromstring(svg)  # well-formed XML, so well-formed inline SVG
    ns = "{http://www.w3.org/2000/svg}"
    lanes = [g.get("data-lane") for g in root.iter(f"{ns}g") if g.get("class") == "lane"]
    assert lanes == ["orch on server2", f"orch on {HOSTILE}"]
    texts = " ".join(t.text or "" for t in root.iter(f"{ns}text"))
    assert "fault seen" in texts and "VIP moved" in texts and "writes opened" in texts
    marks = [g.get("data-mark") for g in root.iter(f"{ns}g") if g.get("class") == "mark"]
    assert marks == ["fault seen", "VIP moved", "writes opened"]


@pytest.mark.parametrize("acked, fault, gap", [
    ([0.0, 0.01, 0.02, 1.5, 1.51], 0.015, (0.02, 1.5)),
    ([0.0, 0.01, 0.02, 0.021, 1.5, 1.51], 0.015, (0.021, 1.5)),  # one insert acknowledged as the kill landed
    ([0.0, 0.01], 0.015, None),  # nothing after the fault
    ([0.5, 0.51], 0.0, (0.0, 0.5)),  # nothing before it
])
def test_the_clients_gap_is_its_longest_pause_after_the_fault(acked, fault, gap):
    from orchestrator.lab.report import client_gap

    assert client_gap(acked, fault) == gap
