"""Maintenance mode on a real pair, each node with its own config and state_dir (nothing shared
but the databases): the pause row replicates and both hosts see it, even with one server down;
a paused MASTER changes nothing and is journaled; --for runs out by the server's clock;
orch promote still works; resume ends it. The pure decisions: tests/test_pause.py."""

from __future__ import annotations

import json

import time

import pytest

from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_antiflap import BACKUP_ARGS, MASTER_ARGS

pytestmark = pytest.mark.mariadb


def configs(s1, s2, tmp_path):
    out = {}
    for name in ("server1", "server2"):
        d = t.config_dict(s1, s2, str(tmp_path / f"state-{name}"))
        d["self"] = name
        out[name] = (t.write_config(tmp_path / f"orch-{name}.yaml", d), str(tmp_path / f"state-{name}"))
    return out


def pause_rows(server):
    return [(r["kind"], r["by_whom"], r["reason"]) for r in server.sql("SELECT kind, by_whom, reason FROM orch_meta.pause ORDER BY at")]


def test_pause_resume_on_a_real_pair(cluster, tmp_path):
    s1, s2, _, _ = cluster
    cfgs = configs(s1, s2, tmp_path)
    c1, c2 = cfgs["server1"][0], cfgs["server2"][0]

    # Bad input: one line, exit 2, nothing written.
    r = t.orch(c2, None, "pause", "--for", "soon", "--yes")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "--for" in r.stderr, r
    r = t.orch(c2, None, "pause", "--dry-run")
    assert r.code == 0 and "dry run: nothing changed" in r.output and "record on server1 (orch_meta.pause" in r.output, r
    assert s1.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'orch_meta'") == 0

    # orch pause on server2's host: the row goes to the writable server1 and replicates.
    r = t.orch(c2, None, "pause", "--reason", "kernel upgrade", "--yes", env={"SUDO_USER": "alice"})
    assert r.code == 0, r
    lab.wait_gtid_equal(s1, s2)
    assert pause_rows(s1) == pause_rows(s2) == [("pause", "alice", "kernel upgrade")]
    for c in (c1, c2):
        shown = t.orch(c, None, "status")
        assert "maintenance: PAUSED" in shown.stdout and "by alice on server2" in shown.stdout, shown
        assert "until orch resume" in shown.stdout and "kernel upgrade" in shown.stdout
    # orch doctor on either host: a warning with who, why and until when (never a failure of its own).
    for c in (c1, c2):
        doctor = t.orch(c, None, "doctor", "--format", "json")
        [check] = [k for k in json.loads(doctor.stdout)["checks"] if k["name"] == "maintenance mode"]
        assert check["status"] == "warn" and "PAUSED: paused by alice on server2" in check["detail"], check
        assert "(until orch resume): kernel upgrade" in check["detail"] and "orch resume" in check["fix"], check
    assert [e["result"] for e in t.journal(cfgs["server2"][1]) if e.get("event") == "PAUSE" and e["phase"] == "end"] == ["act"]

    # server1 dies; server2's MASTER (a failover when not paused) changes nothing, journaled with what it would have done.
    s1.kill()
    shown = t.orch(c2, None, "status")
    assert "maintenance: PAUSED" in shown.stdout, shown  # read from server2's own copy
    before = t.snapshot(s2)
    r = t.orch(c2, None, *MASTER_ARGS)
    assert r.code == 0, r
    assert t.read_only(s2) and t.snapshot(s2) == before
    begin = [e for e in t.journal(cfgs["server2"][1]) if e.get("event") == "MASTER" and e["phase"] == "begin"][-1]
    assert begin["outcome"] == "paused" and begin["plan"] == [] and "would have: promoting server2" in begin["reason"]
    assert any("make server2 writable" in w or "writable" in w for w in begin["withheld"]), begin

    # orch promote is an operator's word: it runs while paused, with a warning.
    r = t.orch(c2, None, "promote", "--yes")
    assert r.code == 0 and "maintenance mode" in r.output, r
    assert not t.read_only(s2)

    # server1 comes back writable (the lab's my.cnf has no read_only): its BACKUP while paused
    # fences it (a fence is never withheld) but does not point it at server2.
    s1.start()
    r = t.orch(c1, None, *BACKUP_ARGS)
    assert r.code == 0, r
    backup = [e for e in t.journal(cfgs["server1"][1]) if e.get("event") == "BACKUP" and e["phase"] == "begin"][-1]
    assert backup["reason"].startswith("paused (") and "fencing server1 only" in backup["reason"], backup
    assert len(backup["plan"]) == 1 and backup["plan"][0].startswith("fence server1") and backup["withheld"], backup
    assert t.read_only(s1)
    status = t.slave_status(s1)
    assert not status or status.get("Master_Port") != s2.port, status

    # orch resume on server1's host: a row on server2 (now the writable one), which replicates to server1 once it rejoins.
    r = t.orch(c1, None, "resume", "--yes")
    assert r.code == 0 and "record on server2 (orch_meta.pause, replicated)" in r.output, r
    assert pause_rows(s2)[-1][0] == "resume"
    shown = t.orch(c1, None, "status")
    assert "maintenance: off; latest: resumed" in shown.stdout, shown
    r = t.orch(c1, None, *BACKUP_ARGS)
    assert r.code == 0, r
    lab.wait_gtid_equal(s2, s1)
    assert pause_rows(s1) == pause_rows(s2)
    r = t.orch(c1, None, "resume", "--yes")
    assert r.code == 0 and "nothing to resume" in r.output, r

    # --for runs out by itself, measured by the server's clock.
    r = t.orch(c1, None, "pause", "--for", "6", "--yes")  # long enough to be seen by two orch runs on a slow machine
    assert r.code == 0 and "for 6s" in r.output, r
    shown = t.orch(c2, None, "status")
    assert "maintenance: PAUSED" in shown.stdout and "s left" in shown.stdout, shown
    remaining = float(s2.query_value("SELECT until - UNIX_TIMESTAMP(NOW(6)) FROM orch_meta.pause ORDER BY at DESC LIMIT 1"))
    assert 0 < remaining <= 6, remaining
    time.sleep(remaining + 0.5)
    shown = t.orch(c2, None, "status", "--format", "json")
    assert '"paused": false' in shown.stdout and "ran out" in shown.stdout, shown
    doctor = t.orch(c2, None, "doctor", "--format", "json")
    [check] = [k for k in json.loads(doctor.stdout)["checks"] if k["name"] == "maintenance mode"]
    assert check["status"] == "pass" and "ran out" in check["detail"], check
    t.assert_no_secrets(r.output, shown.output)

    # orch history on either host: every pause and resume from the replicated record (the
    # first pause was run on server2's host, the resume on server1's), and the --for pause's
    # end by itself, newest first.
    for name, c in (("server1", c1), ("server2", c2)):
        h = t.orch(c, None, "history", "--format", "json")
        assert h.code == 0 and h.stderr == "", h
        entries = [e for e in json.loads(h.stdout) if e["kind"] in ("pause", "resume")]
        ran = {"server1": "act", "server2": "recorded"}[name]   # server1's host ran the last pause and the resume
        assert [(e["kind"], e["outcome"], e["node"]) for e in entries] == [
            ("resume", "ran out", "server1"), ("pause", ran, "server1"), ("resume", ran, "server1"),
            ("pause", "act" if name == "server2" else "recorded", "server2")], (name, entries)
        first = entries[-1]
        if name == "server1":  # the other host's pause, from the record only
            assert "paused by alice until orch resume" in first["reason"] and "kernel upgrade" in first["reason"], first
        # A host's own PAUSE run and its row are one entry.
        assert first["source"] == ("both" if name == "server2" else "record"), (name, first)
