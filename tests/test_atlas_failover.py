"""Failover and the maintainer at the Atlas level: real MariaDB pair + the Atlas stand-in."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_failover import count, insert_rows

pytestmark = pytest.mark.mariadb

ADMIN_PW = "atlas-admin-pw"
RW = "127.0.0.1:3999"  # the VIP as Atlas knows it; never touched by orch


def addr(server: lab.MariaDBInstance) -> str:
    return f"{server.host}:{server.port}"


def atlas_conf(path: Path, ro: str) -> str:
    path.write_text(
        "# Atlas config, hand-written\n"
        "[mysql-proxy]\n"
        "admin-username = user\n"
        f"admin-password = {ADMIN_PW}\n"
        "admin-address = 127.0.0.1:2345\n"
        f"proxy-backend-addresses = {RW}\n"
        f"proxy-read-only-backend-addresses = {ro}\n"
        "# keep me\n"
        "pwds = app:cGFzcw==\n"
    )
    return str(path)


@pytest.fixture
def env(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    conf = atlas_conf(tmp_path / "atlas.cnf", f"{addr(s2)}@2")
    standin = AtlasStandin(conf, host="127.0.0.1", port=0, check_interval=None).start()
    host, port = standin.address
    state = str(tmp_path / "state")
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW}, "config_file": conf}]
    cfg = t.write_config(tmp_path / "orch.yaml", t.config_dict(s1, s2, state, atlas=atlas))
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY, v VARCHAR(40))")
    lab.wait_gtid_equal(s1, s2)
    try:
        yield s1, s2, standin, cfg, conf, state
    finally:
        standin.stop()


def ro(standin) -> list:
    return [a for _, a, _, ty in standin.backends() if ty == "ro"]


def maintain(cfg: str, node: str) -> t.Result:
    r = t.orch(cfg, node, "maintain", "--once")
    assert r.code == 0, r
    return r


def test_failover_end_to_end_at_atlas_level(env):
    s1, s2, standin, cfg, conf, state = env
    assert ro(standin) == [addr(s2)]
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    # Atlas's writer was offline during the promotion and is `unknown` after SET ONLINE: the
    # new master stays its read backend (the only server it can read from) until it is up.
    assert ro(standin) == [addr(s2)] and "kept: Atlas's read/write backend is not up" in r.stderr, r
    assert [(a, st) for _, a, st, ty in standin.backends() if ty == "rw"] == [(RW, "unknown")], "offline, then online"
    assert standin.mutating_commands() == ["SET OFFLINE 1", "SET ONLINE 1"]
    standin.set_state(RW, "up")  # Atlas's checker found the new master
    maintain(cfg, "server2")
    assert ro(standin) == [], "the new master is no longer a read-only backend"
    text = Path(conf).read_text()
    assert "proxy-read-only-backend-addresses = \n" in text and "# keep me\n" in text and "admin-password = " in text

    insert_rows(s2, 1, 20)
    s1.start()
    assert t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90").code == 0
    lab.wait_gtid_equal(s1, s2)
    deadline = time.monotonic() + 10
    while int(t.slave_status(s1)["Seconds_Behind_Master"] or 0) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = maintain(cfg, "server1")
    assert ro(standin) == [addr(s1)], r
    assert f"proxy-read-only-backend-addresses = {addr(s1)}\n" in Path(conf).read_text()
    assert count(s1) == 20
    ends = [e for e in t.journal(state) if e["phase"] == "end"]
    assert [e["event"] for e in ends] == ["MASTER", "MAINTAIN", "BACKUP", "MAINTAIN"]
    t.assert_no_secrets(r.output, Path(state, "journal.jsonl").read_text(), extra=(ADMIN_PW,))


def test_atlas_down_does_not_block_failover(env):
    s1, s2, standin, cfg, _, state = env
    standin.stop()
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    assert not t.read_only(s2)
    assert "the maintainer retries" in r.stderr or "left to the maintainer" in r.stderr
    end = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    assert any(s["step"] == "RemoveBackend" and s["result"] == "failed" for s in end["steps"])


def test_maintainer_removes_unhealthy_replica(env):
    s1, s2, standin, cfg, _, _ = env
    maintain(cfg, "server1")
    assert ro(standin) == [addr(s2)]
    s2.sql("STOP SLAVE SQL_THREAD")
    r = maintain(cfg, "server1")
    assert ro(standin) == [], r
    assert "SQL thread is stopped" in r.stderr
    s2.sql("START SLAVE SQL_THREAD")
    lab.wait_gtid_equal(s1, s2)
    maintain(cfg, "server2")
    assert ro(standin) == [addr(s2)]


def test_unapplied_relay_log_is_not_added(env):
    s1, s2, standin, cfg, _, _ = env
    s2.sql("STOP SLAVE")
    maintain(cfg, "server1")  # out of Atlas: only a replica that is not listed needs the drain
    assert ro(standin) == []
    s2.sql("CHANGE MASTER TO MASTER_DELAY = 3600")
    s2.sql("START SLAVE")
    insert_rows(s1, 1, 3)
    deadline = time.monotonic() + 10
    while t.slave_status(s2)["Gtid_IO_Pos"] != t.gtid(s1, "gtid_binlog_pos"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = maintain(cfg, "server1")
    assert ro(standin) == [] and "has not applied its relay log" in r.stderr, r
    r = maintain(cfg, "server1")
    assert ro(standin) == []


def test_errant_replica_is_not_added(env):
    s1, s2, standin, cfg, _, _ = env
    s2.sql("INSERT INTO test.t VALUES (77, 'written on the replica')")  # root ignores read_only
    r = maintain(cfg, "server1")
    assert ro(standin) == [] and "errant GTIDs 0-2-" in r.stderr, r


def test_no_change_when_a_server_is_unreachable(env):
    s1, s2, standin, cfg, _, _ = env
    s1.sql("INSERT INTO test.t VALUES (1, 'x')")
    lab.wait_gtid_equal(s1, s2)
    s1.pause()  # SIGSTOP: orch cannot observe it; server2's IO thread still shows Yes
    try:
        r = maintain(cfg, "server2")
    finally:
        s1.resume()
    assert "cannot observe server1" in r.stderr and "errant GTIDs cannot be checked" in r.stderr, r
    assert ro(standin) == [addr(s2)] and standin.mutating_commands() == []


def test_atlas_change_notify_could_not_make_is_reapplied(env):
    s1, s2, standin, cfg, _, _ = env
    host, port = standin.address
    standin.stop()
    s1.kill()
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    # Atlas comes back from its config file, which still lists server2 as a read backend.
    with AtlasStandin(standin.config_path, host=host, port=port, check_interval=None) as again:
        assert ro(again) == [addr(s2)]
        r = maintain(cfg, "server2")
        assert ro(again) == [addr(s2)] and "server2 stays a read-only backend of local until its read/write backend is up" in r.stderr, r
        again.set_state(RW, "up")  # Atlas's checker found the new master
        r = maintain(cfg, "server2")
        assert ro(again) == [], r
        assert "server2 is writable (a master, not a replica)" in r.stderr


def test_second_pass_after_noop_sends_no_mutating_command(env):
    s1, s2, standin, cfg, _, _ = env
    maintain(cfg, "server1")
    maintain(cfg, "server1")
    assert standin.mutating_commands() == []
    s2.sql("STOP SLAVE SQL_THREAD")
    maintain(cfg, "server1")
    assert len(standin.mutating_commands()) == 1
    maintain(cfg, "server1")
    assert len(standin.mutating_commands()) == 1


def test_wrong_atlas_password_is_a_clear_error_and_changes_nothing(env, tmp_path):
    s1, s2, standin, _, conf, state = env
    host, port = standin.address
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": "nope-wrong"}, "config_file": conf}]
    cfg = t.write_config(tmp_path / "bad.yaml", t.config_dict(s1, s2, state, atlas=atlas))
    s2.sql("STOP SLAVE SQL_THREAD")
    r = maintain(cfg, "server1")
    assert "Atlas local unreachable" in r.stderr and "authentication failed" in r.stderr, r
    assert ro(standin) == [addr(s2)] and standin.mutating_commands() == []
    t.assert_no_secrets(r.output, extra=("nope-wrong",))


@pytest.mark.parametrize("atlas, node_extra, fragment", [
    ("not a list", {}, "atlas: expected a list of Atlas instances"),
    ([{"name": "local"}], {}, "atlas[0].admin: missing"),
    ([{"name": "a", "admin": {"host": "127.0.0.1", "port": "x", "user": "u", "password": "p"}}], {}, "atlas[0].admin.port: expected an integer"),
    ([{"name": "a", "admin": {"host": "127.0.0.1", "port": 1, "user": "u", "password": "p"}}], {"atlas_address": "db1.example:3306"}, "nodes.server1.atlas_address"),
])
def test_bad_atlas_config(env, tmp_path, atlas, node_extra, fragment):
    s1, s2, standin, _, _, state = env
    d = t.config_dict(s1, s2, state, atlas=atlas)
    d["nodes"]["server1"].update(node_extra)
    cfg = t.write_config(tmp_path / "bad.yaml", d)
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server1", "maintain", "--once")
    assert r.code == 1 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert standin.mutating_commands() == [] and t.snapshot(s1, s2) == before


def test_maintainer_loop_rechecks_fast_while_replica_is_out(env, tmp_path):
    """With a long interval, a replica that drains is back long before the next regular pass."""
    import subprocess

    s1, s2, standin, _, conf, state = env
    host, port = standin.address
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW}, "config_file": conf}]
    cfg = t.write_config(tmp_path / "loop.yaml", t.config_dict(s1, s2, state, atlas=atlas, maintainer={"interval": 60}))
    s2.sql("STOP SLAVE SQL_THREAD")
    proc = subprocess.Popen([t.ORCH, "-c", cfg, "maintain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while addr(s2) in ro(standin):
            assert time.monotonic() < deadline, "the first pass did not remove the stopped replica"
            time.sleep(0.05)
        time.sleep(1.5)
        s2.sql("START SLAVE SQL_THREAD")
        deadline = time.monotonic() + 10  # far below the 60 s interval
        while addr(s2) not in ro(standin):
            assert time.monotonic() < deadline, "the drained replica was not re-added before the next regular pass"
            time.sleep(0.05)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "maintainer stopping" in err and "remove " in err and "add " in err


def test_status_shows_atlas(env):
    import json

    s1, s2, standin, cfg, _, _ = env
    r = t.orch(cfg, "server1", "status")
    assert r.code == 0 and f"atlas local: {RW} (rw, unknown), {addr(s2)} (ro, unknown)" in r.stdout, r
    doc = json.loads(t.orch(cfg, "server1", "status", "--format", "json").stdout)
    assert [b["address"] for b in doc["atlas"][0]["backends"]] == [RW, addr(s2)]
    standin.stop()
    assert "atlas local: UNREACHABLE" in t.orch(cfg, "server1", "status").stdout


def test_maintainer_does_not_hold_the_lock_while_observing(env):
    import subprocess

    from orchestrator.lock import RunLock

    s1, s2, standin, cfg, _, state = env
    s1.pause()  # observing server1 now takes the whole connect timeout
    try:
        proc = subprocess.Popen([t.ORCH, "-c", cfg, "--node", "server2", "maintain", "--once"], stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert proc.poll() is None, "the pass should still be waiting for server1"
        with RunLock(state, timeout=0.05):
            pass  # a notify arriving now must not wait for the maintainer
        proc.wait(timeout=30)
    finally:
        s1.resume()


def test_maintainer_completes_an_unfinished_rejoin(env):
    s1, s2, standin, cfg, _, state = env
    insert_rows(s1, 1, 5)
    lab.wait_gtid_equal(s1, s2)
    s1.kill()
    s1.start()  # back before the replica was promoted: both read-only after its BACKUP
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 3 and "no writable master to follow yet" in r.stderr, r
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    assert t.slave_status(s1) is None, "keepalived sends no further event: nothing re-points server1"
    r = maintain(cfg, "server1")
    assert "completing an unfinished rejoin" in r.stderr, r
    insert_rows(s2, 100, 3)
    lab.wait_gtid_equal(s1, s2)
    assert t.read_only(s1) and t.slave_status(s1)["Slave_SQL_Running"] == "Yes"
    assert [e["event"] for e in t.journal(state) if e["phase"] == "end"][-1] == "REJOIN"
    maintain(cfg, "server1")
    assert ro(standin) == [addr(s2), addr(s1)], "the new master stays until Atlas's writer is up"
    standin.set_state(RW, "up")
    maintain(cfg, "server1")
    assert ro(standin) == [addr(s1)]


def test_failed_config_rewrite_is_redone_by_a_later_pass(env):
    import shutil

    s1, s2, standin, cfg, conf, state = env
    # A directory where the rewrite's backup goes: the rewrite fails (root included) while
    # the file itself stays readable, as after a full disk or a read-only remount.
    os.makedirs(conf + ".orch.bak/in-the-way")
    s2.sql("STOP SLAVE SQL_THREAD")
    r = maintain(cfg, "server1")
    assert ro(standin) == [] and "persisting the backends failed" in r.stderr, r
    assert f"proxy-read-only-backend-addresses = {addr(s2)}@2\n" in Path(conf).read_text()
    last = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    assert last["result"] == "partial" and [(s["step"], s["result"]) for s in last["steps"]] == [("RemoveBackend", "ok"), ("Persist", "failed")]

    r = maintain(cfg, "server1")  # Atlas is right, the file is not: a step of its own, failing again
    assert f"rewrite {conf} (it lists {addr(s2)}, Atlas local (none))" in r.stderr, r
    last = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    assert [(s["step"], s["result"]) for s in last["steps"]] == [("PersistBackends", "failed")]

    shutil.rmtree(conf + ".orch.bak")
    r = maintain(cfg, "server1")
    text = Path(conf).read_text()
    assert "proxy-read-only-backend-addresses = \n" in text and "# keep me\n" in text, r
    begin, end = [e for e in t.journal(state) if e["event"] == "MAINTAIN"][-2:]
    assert begin["plan"] == [f"rewrite {conf} so that Atlas local restarts with read-only backends (none) (the file lists {addr(s2)})"]
    assert end["result"] == "act" and [(s["step"], s["result"], s["detail"]) for s in end["steps"]] == [
        ("PersistBackends", "ok", f"{conf} rewritten")]

    entries = len(t.journal(state))
    r = maintain(cfg, "server1")
    assert len(t.journal(state)) == entries and standin.mutating_commands() == ["REMOVE BACKEND 2"], r


def test_replica_of_a_dead_master_stays_a_read_backend_until_stale(env, tmp_path):
    """Its master died: the replica (IO thread reconnecting, everything applied) keeps
    serving reads until what it has is older than max_lag, counted from the last pass that
    saw it receive (orch maintain --once keeps that memory in state_dir)."""
    s1, s2, standin, _, conf, state = env
    host, port = standin.address
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW}, "config_file": conf}]
    cfg = t.write_config(tmp_path / "lag.yaml", t.config_dict(s1, s2, state, atlas=atlas, maintainer={"max_lag": 5}))
    maintain(cfg, "server2")
    insert_rows(s1, 1, 3)
    lab.wait_gtid_equal(s1, s2)
    maintain(cfg, "server2")  # saw it receive something since the previous pass
    seen = time.monotonic()  # after that pass's observation: its age is counted from before this
    s1.kill()
    r = maintain(cfg, "server2")
    assert ro(standin) == [addr(s2)] and "server2 keeps serving reads: its IO thread is connecting" in r.stderr, r
    time.sleep(max(0.0, seen + 5.5 - time.monotonic()))
    r = maintain(cfg, "server2")
    assert ro(standin) == [] and "nothing received for" in r.stderr and "(> max_lag 5s)" in r.stderr, r


def test_fault_fences_first_and_rereads_a_peer_that_hung_meanwhile_within_its_bound(env):
    """The old master's FAULT with both servers alive, and the peer's mariadbd frozen
    (SIGSTOP: port open, no answer) the moment orch sets Atlas's writer offline, i.e. after
    observing and before the fence. The fence on this host is not delayed by the frozen
    peer; the re-read of the peer after it (the writer back online if the peer opened
    meanwhile) gives up within its 1 s bound, and the writer stays offline."""
    s1, s2, standin, cfg, _, state = env
    frozen = []
    execute = standin._state.execute

    def freeze_peer_on_offline(query):
        if query.startswith(b"SET OFFLINE") and not frozen:
            s2.pause()
            frozen.append(time.monotonic())
        return execute(query)

    standin._state.execute = freeze_peer_on_offline
    try:
        r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "FAULT", "100")
        ended = time.monotonic()
    finally:
        if frozen:
            s2.resume()
    assert frozen, "the plan set Atlas's writer offline"
    assert t.read_only(s1), r
    end = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    steps = {s["step"]: s for s in end["steps"]}
    assert steps["Fence"]["result"] == "ok" and steps["Fence"]["ms"] < 500, end
    assert "SetRwOnline" not in steps, end
    assert [(a, st) for _, a, st, ty in standin.backends() if ty == "rw"] == [(RW, "offline")]
    # It did ask the frozen peer (waiting its full second), and no longer than that.
    assert 0.9 <= ended - frozen[0] < 1.0 + 1.5, ended - frozen[0]
    assert r.code == 0, r
    t.assert_no_secrets(r.output, Path(state, "journal.jsonl").read_text(), extra=(ADMIN_PW,))
