"""--dry-run changes nothing: not the servers, and not state_dir (no lock file, no
received.json, no event handed to the maintainer), on a real pair."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from . import orchtest as t

# (node, argv) of every command that has --dry-run, each planning something real.
DRY_RUNS: List[Tuple[str, Tuple[str, ...]]] = [
    ("server2", ("notify", "INSTANCE", "VI_1", "MASTER", "100", "--dry-run")),
    ("server1", ("notify", "INSTANCE", "VI_1", "BACKUP", "100", "--dry-run")),
    ("server2", ("promote", "--dry-run")),
    ("server1", ("demote", "--dry-run")),
    ("server1", ("ack", "--dry-run")),
    ("server1", ("switchover", "--dry-run")),
    ("server1", ("maintain", "--dry-run")),
    ("server2", ("maintain", "--dry-run")),
    ("server1", ("bootstrap", "--dry-run")),
]


def tree(path: Path) -> Dict[str, Tuple[int, int]]:
    """Every file under ``path`` with its size and modification time."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            st = p.stat()
            out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.mariadb
def test_dry_runs_write_nothing_in_a_fresh_state_dir(cluster):
    s1, s2, cfg, state = cluster
    assert not os.path.exists(state)
    before = t.snapshot(s1, s2)
    for node, argv in DRY_RUNS:
        r = t.orch(cfg, node, *argv)
        assert "dry run: nothing changed" in r.stdout, (argv, r)
        assert r.code in (0, 1, 3) and "Traceback" not in r.stderr, (argv, r)
        assert not os.path.exists(state), (argv, os.listdir(state))
        assert t.snapshot(s1, s2) == before, argv
    # The same commands for real do write there (the check above can fail).
    assert t.orch(cfg, "server1", "maintain", "--once").code == 0
    assert "received.json" in os.listdir(state)


@pytest.mark.mariadb
def test_dry_runs_leave_an_existing_state_dir_as_it_was_even_while_another_run_holds_the_lock(cluster):
    s1, s2, cfg, state = cluster
    assert t.orch(cfg, "server1", "maintain", "--once").code == 0
    assert t.orch(cfg, "server2", "maintain", "--once").code == 0  # received.json remembers server2's receive position
    # Another run holds the lock: a real notify would hand its event over; a dry run neither waits nor hands over.
    fd = os.open(os.path.join(state, "orch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        was = tree(Path(state))
        assert set(was) == {"received.json", "orch.lock"}, was
        for node, argv in DRY_RUNS:
            r = t.orch(cfg, node, *argv, timeout=30)
            assert "dry run: nothing changed" in r.stdout, (argv, r)
            assert tree(Path(state)) == was, argv
    finally:
        os.close(fd)


PLAN_KEYS = {"command", "node", "dry_run", "reason", "outcome", "exit_code", "warnings", "steps"}


@pytest.mark.mariadb
def test_every_dry_run_prints_its_plan_as_json_with_the_documented_keys(cluster):
    """--dry-run --format json: one object (docs/cli.md), the exit code as in text."""
    import json

    s1, s2, cfg, state = cluster
    for node, argv in DRY_RUNS:
        text = t.orch(cfg, node, *argv)
        r = t.orch(cfg, node, *argv, "--format", "json")
        doc = json.loads(r.stdout)
        assert set(doc) == PLAN_KEYS, (argv, doc)
        assert doc["command"] == argv[0] and doc["node"] == node and doc["dry_run"] is True
        assert doc["outcome"] in ("noop", "act", "refused", "incomplete") and doc["exit_code"] == r.code == text.code, (argv, r)
        assert doc["reason"] in text.stdout and all(w in text.stdout for w in doc["warnings"])
        assert all(set(step) == {"step", "description"} and step["description"] in text.stdout for step in doc["steps"]), doc
        assert not os.path.exists(state), argv
    promote = json.loads(t.orch(cfg, "server2", "promote", "--dry-run", "--format", "json").stdout)
    assert promote["outcome"] == "act" and "Fence" in [s["step"] for s in promote["steps"]], promote
    # The reporting commands: status (with the VIP holder) and check.
    status = json.loads(t.orch(cfg, None, "status", "--format", "json").stdout)
    assert set(status["vip"]) == {"address", "this_host_holds", "holder", "why"} and status["vip"]["this_host_holds"] is None
    r = t.orch(cfg, "server2", "check", "--format", "json")
    assert r.code == 0 and json.loads(r.stdout) == {"check": "server", "node": "server2", "ok": True, "reason": "the server answers"}
    r = t.orch(cfg, "server2", "check", "--replica", "--format", "json")
    doc = json.loads(r.stdout)
    assert r.code == 0 and set(doc) == {"check", "node", "ok", "reason"} and doc["check"] == "replica" and doc["ok"] is True, r
    r = t.orch(cfg, "server1", "check", "--replica", "--format", "json")
    assert r.code == 1 and json.loads(r.stdout)["ok"] is False, r  # the master is no replica
    s2.kill()
    r = t.orch(cfg, "server2", "check", "--format", "json")
    assert r.code == 1 and json.loads(r.stdout)["ok"] is False, r
    t.assert_no_secrets(r.output)
