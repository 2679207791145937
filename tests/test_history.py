"""orch history: the cluster-wide promotion record (both servers' copies) merged with this
host's journal, newest first. Pure merging first, then two hosts on real servers, each with
its own state_dir: each shows both hosts' promotions and its own runs."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator import history as h
from orchestrator.journal import Journal
from orchestrator.lab import mariadb as lab

from . import orchtest as t

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("90s", NOW - 90), ("30m", NOW - 1800), ("2h", NOW - 7200), ("1d", NOW - 86400), ("1w", NOW - 7 * 86400),
    ("2027-01-15T08:00:00Z", NOW), ("2027-01-15T08:00:00", NOW), ("2027-01-15T09:00:00+01:00", NOW),
    ("2027-01-15", NOW - 8 * 3600),
])
def test_since_takes_a_duration_or_an_iso_time(text, expected):
    assert h.parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "2x", "-1h", "", "2027-13-01"])
def test_since_refuses_anything_else_saying_what_it_expects(text):
    with pytest.raises(ValueError, match="expected a duration"):
        h.parse_since(text, NOW)


def row(run_id, kind, node, at, acks="", seen_on="server1"):
    return {"run_id": run_id, "kind": kind, "node": node, "at": at, "acks": acks, "seen_on": seen_on}


def run(run_id, event, at, result="act", reason="promoting", node="server1", ms=120, error=""):
    begin = {"time": h.iso(at), "id": run_id, "node": node, "event": event, "phase": "begin", "reason": reason,
             "outcome": result, "plan": []}
    end = {"time": h.iso(at + ms / 1000), "id": run_id, "node": node, "event": event, "phase": "end", "result": result,
           "exit": 0, "ms": ms, "error": error, "steps": []}
    return [begin, end]


def test_merge_joins_a_run_and_its_row_dedups_the_copies_and_sorts_newest_first():
    journal = h.journal_entries(
        run("r-fence", "FAULT", NOW - 300, reason="fencing server1")
        + run("r-mine", "MASTER", NOW - 100, reason="promoting server1: a failover")
        + run("r-refused", "MASTER", NOW - 50, result="refused", reason="refusing to promote server1: anti-flapping block")
        + [{"time": h.iso(NOW - 10), "id": "r-cut", "node": "server1", "event": "BACKUP", "phase": "begin", "reason": "rejoin"}])
    rows = [row("r-other", "failover", "server2", NOW - 200), row("r-other", "failover", "server2", NOW - 200, seen_on="server2"),
            row("r-mine", "failover", "server1", NOW - 99.9), row("r-mine", "failover", "server1", NOW - 99.9, seen_on="server2"),
            row("r-ack", "ack", "server2", NOW - 20, acks="r-mine")]
    entries = h.merge(journal, h.record_entries(rows))
    assert all(tuple(e) == h.KEYS for e in entries)
    assert [(e["run_id"], e["source"], e["outcome"]) for e in entries] == [
        ("r-cut", "journal", "unfinished"),
        ("r-ack", "record", "recorded"),
        ("r-refused", "journal", "refused"),
        ("r-mine", "both", "act"),
        ("r-other", "record", "recorded"),
        ("r-fence", "journal", "act"),
    ]
    mine = entries[3]
    assert (mine["event"], mine["kind"], mine["promoted"], mine["ms"], mine["node"]) == ("MASTER", "failover", "server1", 120, "server1")
    ack = entries[1]
    assert ack["acks"] == "r-mine" and ack["promoted"] is None and "acknowledged the promotion of run r-mine" in ack["reason"]
    assert [e["run_id"] for e in h.merge(journal, h.record_entries(rows), since=NOW - 60)] == ["r-cut", "r-ack", "r-refused"]


def prow(run_id, kind, node, at, until=None, by="alice", reason="", now=NOW, seen_on="server1"):
    return {"run_id": run_id, "kind": kind, "node": node, "by": by, "reason": reason, "at": at, "until": until, "now": now,
            "seen_on": seen_on}


def test_pauses_and_resumes_from_the_record_and_a_for_pause_that_ran_out():
    rows = [prow("p1", "pause", "server2", NOW - 900, reason="kernel upgrade"),
            prow("p1", "pause", "server2", NOW - 900, seen_on="server2"),          # the replicated copy: one entry
            prow("r1", "resume", "server1", NOW - 800),
            prow("p2", "pause", "server1", NOW - 700, until=NOW - 400),            # ran out: nothing came before its end
            prow("p3", "pause", "server1", NOW - 300, until=NOW - 100),            # extended by p4 before its end
            prow("p4", "pause", "server1", NOW - 200, until=NOW + 600)]            # still in force: no end yet
    journal = h.journal_entries(run("p1", "PAUSE", NOW - 900.01, node="server2", reason="pausing"))
    entries = h.merge(journal, h.pause_entries(rows))
    assert all(tuple(e) == h.KEYS for e in entries)
    assert [(e["run_id"], e["kind"], e["outcome"], e["source"]) for e in entries] == [
        ("p4", "pause", "recorded", "record"),
        ("p3", "pause", "recorded", "record"),
        ("p2", "resume", "ran out", "record"),
        ("p2", "pause", "recorded", "record"),
        ("r1", "resume", "recorded", "record"),
        ("p1", "pause", "act", "both"),
    ]
    ran_out = entries[2]
    assert ran_out["time"] == h.iso(NOW - 400) and "ran out by itself (5m after it began)" in ran_out["reason"]
    assert "paused by alice for 5m (row written on server1)" in entries[3]["reason"]
    assert entries[-1]["reason"] == "pausing"  # a run and its row: the run's own reason
    # --since keeps a pause's end inside the window.
    assert [e["outcome"] for e in h.merge([], h.pause_entries(rows), since=NOW - 450) if e["run_id"] == "p2"] == ["ran out"]


def test_a_failed_run_keeps_its_error_in_the_reason():
    entries = h.journal_entries(run("r1", "MASTER", NOW, result="failed", reason="promoting server1", error="fence timed out"))
    assert entries[0]["outcome"] == "failed" and entries[0]["reason"] == "promoting server1 (error: fence timed out)"


def test_render_wraps_within_the_width():
    entries = h.merge(h.journal_entries(run("20270115T080000-abcdef", "MASTER", NOW, reason="promoting server1: " + "words " * 60)),
                      h.record_entries([row("20270115T080000-abcdef", "failover", "server1", NOW)]))
    text = h.render(entries, 80)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert text.splitlines()[0].startswith("2027-01-15T08:00:00.000Z  server1  MASTER (failover)  act  120 ms")
    assert h.render([], 80) == "history: nothing recorded"


def test_journal_records_reads_rotated_files_oldest_first(tmp_path):
    j = Journal(str(tmp_path), max_bytes=300)
    for i in range(12):
        j.append({"id": f"r{i}", "phase": "begin", "event": "MASTER", "reason": "x" * 50})
    assert (tmp_path / "journal.jsonl.1").exists()
    assert [r["id"] for r in j.records()] == [f"r{i}" for i in range(12)][-len(j.records()):]
    assert len(j.records()) > len(j.tail(1))


# --------------------------------------------------------------------------- real servers

MASTER_ARGS = ("notify", "INSTANCE", "VI_1", "MASTER", "100")
BACKUP_ARGS = ("notify", "INSTANCE", "VI_1", "BACKUP", "90")


def history(cfg: str, *args: str) -> tuple:
    r = t.orch(cfg, None, "history", "--format", "json", *args)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


@pytest.mark.mariadb
def test_history_from_either_host_shows_both_hosts_failovers(cluster, tmp_path):
    from .test_antiflap import node_configs

    s1, s2, _, _ = cluster
    cfgs = node_configs(s1, s2, tmp_path)
    c1, c2 = cfgs["server1"][0], cfgs["server2"][0]
    for name in cfgs:  # block_seconds 1: records are written, the second failover is not blocked
        text = open(cfgs[name][0]).read().replace("block_seconds: 600", "block_seconds: 1")
        open(cfgs[name][0], "w").write(text)

    # 1. server1 dies: decided on server2's host.
    s1.kill()
    r = t.orch(c2, None, *MASTER_ARGS)
    assert r.code == 0, r
    s1.start()
    assert t.orch(c1, None, *BACKUP_ARGS).code == 0
    lab.wait_gtid_equal(s2, s1)
    time.sleep(1.2)
    # 2. server2 dies: decided on server1's host.
    s2.kill()
    r = t.orch(c1, None, *MASTER_ARGS)
    assert r.code == 0, r
    assert not t.read_only(s1)
    s2.start()
    assert t.orch(c2, None, *BACKUP_ARGS).code == 0
    lab.wait_gtid_equal(s1, s2)

    seen = {}
    for name, cfg in (("server1", c1), ("server2", c2)):
        r, entries = history(cfg)
        assert r.code == 0 and r.stderr == "", r
        assert all(tuple(e) == ("time", "run_id", "node", "event", "kind", "promoted", "acks", "outcome", "reason", "ms", "source", "host")
                   for e in entries)
        promotions = [(e["kind"], e["promoted"]) for e in entries if e["kind"]]
        assert promotions == [("failover", "server1"), ("failover", "server2")], (name, entries)  # newest first
        own = [e for e in entries if e["source"] in ("journal", "both")]
        assert own and all(e["node"] == name for e in own), (name, own)
        journal_ids = {rec["id"] for rec in t.journal(cfgs[name][1])}
        assert {e["run_id"] for e in own} == journal_ids, name
        times = [e["time"] for e in entries]
        assert times == sorted(times, reverse=True)
        seen[name] = entries
    # Each host's own promotion is one entry from both sources; the other host's from the record only.
    mine = {name: [e for e in entries if e["source"] == "both"] for name, entries in seen.items()}
    assert [(e["event"], e["promoted"], e["outcome"]) for e in mine["server1"]] == [("MASTER", "server1", "act")]
    assert [(e["event"], e["promoted"]) for e in mine["server2"]] == [("MASTER", "server2")]
    assert mine["server1"][0]["ms"] > 0 and "a failover" in mine["server1"][0]["reason"]
    other = [e for e in seen["server1"] if e["promoted"] == "server2"][0]
    assert other["source"] == "record" and other["event"] is None and other["outcome"] == "recorded"
    assert other["run_id"] == mine["server2"][0]["run_id"], "the same run id on both hosts"

    # The table: every entry, newest first, within 120 columns.
    table = t.orch(c2, None, "history")
    assert table.code == 0, table
    assert max(len(line) for line in table.stdout.splitlines()) <= 120
    assert table.stdout.index(mine["server1"][0]["run_id"]) < table.stdout.index(mine["server2"][0]["run_id"])
    # --since: nothing in the future; the global options after the command.
    r = t.orch(c1, None, "history", "--since", "2099-01-01", "--format", "json")
    assert r.code == 0 and json.loads(r.stdout) == [], r
    r = t.orch(c1, None, "history", "--since", "1h", "-c", c2, "--format", "json")
    assert r.code == 0 and [e["promoted"] for e in json.loads(r.stdout) if e["source"] == "both"] == ["server2"], r

    # One server down: the other's copy holds both promotions; a one-line warning names the other.
    s1.kill()
    r, entries = history(c2)
    assert r.code == 0, r
    assert [(e["kind"], e["promoted"]) for e in entries if e["kind"]] == [("failover", "server1"), ("failover", "server2")]
    assert len(r.stderr.strip().splitlines()) == 1 and "unreadable on server1" in r.stderr, r
    # Both down: what the journal holds, exit 1.
    s2.kill()
    r, entries = history(c2)
    assert r.code == 1 and entries and all(e["source"] == "journal" for e in entries), r
    t.assert_no_secrets(r.output)


def test_a_one_record_event_is_an_entry_and_a_lone_phase_is_skipped():
    """A note (the token keeper's, an HTTP API lock-out) is one entry with its own result; a
    record of a phase of its own (hooks) without its run is left out (it used to stop orch history)."""
    from orchestrator.history import journal_entries

    got = journal_entries([
        {"id": "a", "phase": "note", "event": "HTTP_LOCKOUT", "result": "refused", "node": "server1", "reason": "10.0.0.9: ..."},
        {"id": "b", "phase": "note", "event": "token-renewed", "node": "server1"},
        {"id": "c", "phase": "hooks", "event": "SWITCHOVER"},
    ])
    assert [(e["run_id"], e["event"], e["outcome"]) for e in got] == [("a", "HTTP_LOCKOUT", "refused"), ("b", "token-renewed", "note")]


def test_two_hosts_histories_merge_each_entry_once_marked_with_its_host():
    from orchestrator.history import KEYS, mark_host, merge_hosts

    def entry(run_id, time, source, node="server1", event=None, kind=None, outcome="act"):
        return {**{k: None for k in KEYS}, "run_id": run_id, "time": time, "source": source, "node": node, "event": event,
                "kind": kind, "outcome": outcome, "reason": ""}

    mine = mark_host([
        entry("p1", "2026-01-01T10:00:01.000Z", "both", "server2", "MASTER", "failover"),  # this host's promotion
        entry("m1", "2026-01-01T10:00:05.000Z", "journal", "server2", "MAINTAIN"),
        entry("s1", "2026-01-01T09:00:00.000Z", "record", "server1", kind="switchover", outcome="recorded"),
    ], "server2")
    theirs = mark_host([
        entry("f1", "2026-01-01T10:00:00.000Z", "journal", "server1", "FAULT"),  # only in the other host's journal
        entry("p1", "2026-01-01T10:00:01.000Z", "record", "server2", kind="failover", outcome="recorded"),
        entry("s1", "2026-01-01T09:00:00.000Z", "journal", "server1", "SWITCHOVER"),  # its run; this host read the row
    ], "server1") + [{"junk": 1}, "not an entry"]
    got = merge_hosts(mine, theirs)
    assert [(e["run_id"], e["host"], e["source"]) for e in got] == [
        ("m1", "server2", "journal"), ("p1", "server2", "both"), ("f1", "server1", "journal"), ("s1", "server1", "both")]
    assert got[-1]["kind"] == "switchover" and got[-1]["event"] == "SWITCHOVER"
    assert merge_hosts(mine, []) == sorted(mine, key=lambda e: e["time"], reverse=True)
