"""Issue 13's pure decisions and their effects: the read/write backend offline while there is
no safe writer, a reconnecting replica kept while fresh enough, a new master kept as a read
backend until the read/write backend is up; the receive memory; the executor's order; the
Atlas steps against the stand-in (no MariaDB needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

import pytest

from orchestrator.atlas.apply import run_atlas_steps
from orchestrator.atlas.client import AtlasAdmin
from orchestrator.decide import BACKUP, FAULT, MASTER, STOP, decide, replica_health
from orchestrator.errors import Refused
from orchestrator.execute import Executor
from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.model import AtlasState, Backend, ClusterView
from orchestrator.plan import (
    ACT, NOOP, CatchUp, Fence, PersistBackends, RemoveBackend, ResetReplica, SetRwOffline, SetRwOnline,
    SetWritable, StepResult, StopReplica, StopSqlThread,
)
from orchestrator.receipts import stamp
from orchestrator.reconcile import decide_maintain, replica_out

from .test_decide import CONN, MASTER1, MASTER2, REPLICA1, REPLICA2, STOPPED, T, cfg, down, node, repl, view

C = cfg(atlas=True)
ADDR1, ADDR2, RW = "10.0.0.1:3306", "10.0.0.2:3306", "10.0.0.100:3306"
OFFLINE = SetRwOffline("local", "", "no safe writer until server1 is open")
ONLINE = SetRwOnline("local", "", "server1 is the writable master")
OWN_OUT = RemoveBackend("local", ADDR1, "server1 is the master now", after_rw_up=True)


# --------------------------------------------------------------------------- decide (notify)


def test_promotion_sets_the_writer_offline_first_and_online_once_open():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, C)
    assert plan.steps == (OFFLINE, CatchUp("server1", None, T), StopSqlThread("server1"), SetWritable("server1"),
                          StopReplica("server1"), ResetReplica("server1"), ONLINE, OWN_OUT), plan.render()
    assert "set read/write backend offline in Atlas local" in plan.render()
    assert "once its read/write backend is up" in plan.render()


def test_promotion_fencing_a_live_master_sets_the_writer_offline_before_the_fence():
    plan = decide(view(REPLICA1, MASTER2), MASTER, C)
    assert plan.steps[:2] == (OFFLINE, Fence("server2")) and plan.steps[-2:] == (ONLINE, OWN_OUT)


def test_refused_promotion_changes_nothing_in_atlas():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN, sql=STOPPED, errno=1062, error="dup")), down("server2")), MASTER, C)
    assert plan.steps == ()


def test_no_atlas_no_atlas_steps():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, cfg())
    assert not any(isinstance(s, (SetRwOffline, SetRwOnline, RemoveBackend)) for s in plan.steps)


FAULT_CASES = [
    # (id, view, offline expected)
    ("old master's server died, peer a read-only replica", view(down("server1"), REPLICA2), True),
    ("writable master fenced, peer unreachable (this host isolated)", view(MASTER1, down("server2")), True),
    ("writable master fenced, peer read-only", view(MASTER1, REPLICA2), True),
    ("answers unusably, peer read-only", view(replace(down("server1"), alive=True, error="(1040)"), REPLICA2), True),
    ("replica's server died, the peer is the writable master", view(down("server1"), MASTER2), False),
    ("replica of a reachable writable master", view(REPLICA1, MASTER2), False),
    ("split brain: the peer writes too", view(MASTER1, MASTER2), False),
]


@pytest.mark.parametrize("name, v, offline", FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
def test_fault_sets_the_writer_offline_only_without_a_safe_writer(name, v, offline):
    for event in (FAULT, STOP):
        plan = decide(v, event, C)
        assert any(isinstance(s, SetRwOffline) for s in plan.steps) == offline, plan.render()
        if offline:
            assert isinstance(plan.steps[0], SetRwOffline) and "no safe writer" in plan.steps[0].why


def test_backup_never_touches_the_writer():
    for v in (view(REPLICA1, MASTER2), view(MASTER1, node("server2", ro=False, executed="0-2-20", binlog_state="0-1-10,0-2-20"))):
        assert not any(isinstance(s, (SetRwOffline, SetRwOnline)) for s in decide(v, BACKUP, C).steps)


# --------------------------------------------------------------------------- replica_health: a dead source


SOURCELESS = replace(REPLICA1, replica=replace(repl(io=CONN, lag=None), received_ago=3.0))


@pytest.mark.parametrize("replica, peer, in_atlas, healthy, fragment", [
    (SOURCELESS, down("server2"), True, True, "keeps serving reads: its IO thread is connecting, and it applied everything it received 3s ago"),
    (SOURCELESS, down("server2"), False, False, "IO thread is connecting"),  # never (re-)added like this
    (replace(SOURCELESS, replica=replace(SOURCELESS.replica, received_ago=10.0)), down("server2"), True, True, "10s ago"),
    (replace(SOURCELESS, replica=replace(SOURCELESS.replica, received_ago=10.5)), down("server2"), True, False,
     "nothing received for 10s (> max_lag 10s)"),
    (replace(SOURCELESS, replica=replace(SOURCELESS.replica, received_ago=None)), down("server2"), True, False, "is not known"),
    (replace(SOURCELESS, executed="0-1-9", replica=replace(SOURCELESS.replica, retrieved="0-1-10")), down("server2"), True, None,
     "still applies what it received"),
    (replace(SOURCELESS, replica=replace(SOURCELESS.replica, sql=STOPPED)), down("server2"), True, False, "IO thread is connecting"),
    (replace(SOURCELESS, replica=replace(SOURCELESS.replica, io=STOPPED)), down("server2"), True, False, "IO thread is stopped"),
    (SOURCELESS, node("server2", ro=True, executed="0-1-10"), True, True, "keeps serving reads"),  # restarted read-only
    (replace(SOURCELESS, executed="0-1-11", binlog_pos="0-1-11"), node("server2", ro=True, binlog_state="0-1-10"), True, False, "errant"),
])
def test_a_listed_replica_whose_source_died_stays_while_fresh(replica, peer, in_atlas, healthy, fragment):
    health = replica_health(view(replica, peer), replica, peer, C, in_atlas=in_atlas)
    assert health.healthy is healthy and fragment in health.reason, health


# --------------------------------------------------------------------------- reconcile (maintainer)


def atlas(*ro, rw_state="up", name="local", config_ro=None):
    backends = [Backend(1, RW, rw_state, "rw")] + [Backend(i + 2, a, "up", "ro") for i, a in enumerate(ro)]
    return AtlasState(name, True, "", tuple(backends), "/etc/atlas/my.cnf" if config_ro is not None else "", config_ro)


def v(me, peer, *atlases, holds_vip=None):
    return ClusterView(me=me, peer=peer, holds_vip=holds_vip, atlas=atlases)


def test_new_master_stays_a_read_backend_until_the_writer_is_up():
    for state in ("offline", "unknown", "down"):
        plan = decide_maintain(v(MASTER1, down("server2"), atlas(ADDR1, rw_state=state)), C)
        assert not any(isinstance(s, RemoveBackend) for s in plan.steps), plan.render()
        assert "server1 stays a read-only backend of local until its read/write backend is up" in plan.reason
    plan = decide_maintain(v(MASTER1, down("server2"), atlas(ADDR1, rw_state="up")), C)
    assert plan.steps == (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)


def test_a_writable_server_that_is_not_the_safe_writer_is_removed_at_once():
    plan = decide_maintain(v(MASTER1, MASTER2, atlas(ADDR1, ADDR2, rw_state="down")), C)
    assert {s.address for s in plan.steps if isinstance(s, RemoveBackend)} == {ADDR1, ADDR2}


def test_the_writer_is_set_online_whenever_there_is_a_writable_master():
    plan = decide_maintain(v(REPLICA1, MASTER2, atlas(ADDR1, rw_state="offline")), C)
    assert plan.steps == (SetRwOnline("local", RW, "server2 is the writable master"),), plan.render()
    assert plan.outcome == ACT and "set 10.0.0.100:3306 online in local" in plan.reason
    assert replica_out(v(REPLICA1, MASTER2, atlas(ADDR1, rw_state="offline")), C), "re-checked every second while offline"


@pytest.mark.parametrize("view_", [
    v(down("server1"), REPLICA2, atlas(ADDR2, rw_state="offline")),  # the master died, no promotion yet
    v(node("server1", ro=True), node("server2", ro=True), atlas(rw_state="offline")),
    v(MASTER1, MASTER2, atlas(rw_state="offline")),  # two writers: not a safe one
    v(MASTER1, REPLICA2, atlas(ADDR2, rw_state="offline"), holds_vip=False),  # writable here, but the VIP is not
    v(replace(MASTER1, replica=repl(io=STOPPED, sql=STOPPED)), down("server2"), atlas(rw_state="offline")),  # still replicating
], ids=["no-writer", "both-read-only", "two-writers", "vip-elsewhere", "not-a-master-yet"])
def test_no_online_without_a_safe_writer(view_):
    assert not any(isinstance(s, SetRwOnline) for s in decide_maintain(view_, C).steps)


def test_online_with_the_vip_here():
    plan = decide_maintain(v(MASTER1, REPLICA2, atlas(ADDR2, rw_state="offline"), holds_vip=True), C)
    assert plan.steps == (SetRwOnline("local", RW, "server1 is the writable master"),)


def test_an_online_step_does_not_delay_a_stale_config_file():
    plan = decide_maintain(v(REPLICA1, MASTER2, atlas(ADDR1, rw_state="offline", config_ro=())), C)
    assert plan.steps == (SetRwOnline("local", RW, "server2 is the writable master"),
                          PersistBackends("local", config_file="/etc/atlas/my.cnf", runtime=(ADDR1,), listed=()))


def test_no_state_change_no_step():
    assert decide_maintain(v(REPLICA1, MASTER2, atlas(ADDR1)), C).outcome == NOOP
    assert not replica_out(v(REPLICA1, MASTER2, atlas(ADDR1)), C)
    assert replica_out(v(MASTER1, down("server2"), atlas(ADDR1, rw_state="unknown")), C), "a new master's entry waits"


# --------------------------------------------------------------------------- receipts


def test_receive_memory_counts_from_the_last_pass_before_the_change(tmp_path):
    state = str(tmp_path)
    def seen(marker, now):
        me = replace(REPLICA1, replica=replace(repl(io=CONN), io_marker=("bin.1", marker, 0)))
        return stamp(view(me, down("server2")), state, now).me.replica.received_ago

    assert seen(100, 1000.0) is None, "never seen to change: unknown"
    assert seen(100, 1001.0) is None
    assert seen(200, 1002.0) == 1.0, "changed after the pass at 1001"
    assert seen(200, 1005.5) == 4.5
    assert seen(300, 1006.0) == 0.5
    # Pointed at another source: afresh.
    other = replace(REPLICA1, replica=replace(repl("10.0.0.9", io=CONN), io_marker=("bin.1", 300, 0)))
    assert stamp(view(other, down("server2")), state, 1007.0).me.replica.received_ago is None


def test_receive_memory_unreadable_means_unknown(tmp_path):
    (tmp_path / "received.json").write_text("{not json")
    me = replace(REPLICA1, replica=repl(io=CONN))
    assert stamp(view(me, down("server2")), str(tmp_path), 5.0).me.replica.received_ago is None


# --------------------------------------------------------------------------- the executor's order


class _Recording(Executor):
    def __init__(self, fail: str = "") -> None:
        super().__init__(C, {}, atlas_runner=self._atlas_run)
        self.order: List[str] = []
        self.fail = fail

    def _atlas_run(self, cfg, steps) -> List[StepResult]:
        self.order += [type(s).__name__ for s in steps]
        return [StepResult(type(s).__name__, s.describe(), "ok") for s in steps]

    def _do(self, step) -> str:
        self.order.append(type(step).__name__)
        if type(step).__name__ == self.fail:
            raise Refused("no")
        return ""


def test_offline_runs_before_the_database_steps_and_online_after_the_master_opened():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, C)
    ex = _Recording()
    assert not ex.run(plan).failed
    assert ex.order == ["SetRwOffline", "CatchUp", "StopSqlThread", "SetWritable", "StopReplica", "ResetReplica",
                        "SetRwOnline", "RemoveBackend"]


def test_online_still_runs_when_a_step_after_the_opening_fails():
    """Replication still stopping after the opening (its SQL thread stopped before): a warning,
    not a failed promotion; Atlas lets the writes through and the rest of the plan runs."""
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, C)
    ex = _Recording(fail="ResetReplica")
    result = ex.run(plan)
    assert not result.failed and "SetRwOnline" in ex.order and "RemoveBackend" in ex.order
    assert [r.result for r in result.results if r.step == "ResetReplica"] == ["warning"]


def test_online_still_runs_when_the_opening_is_followed_by_a_failing_step():
    """A step after the opening that fails (here a STOP SLAVE with the SQL thread never stopped
    by the plan: not the tolerated case) fails the run, and Atlas still lets the writes through."""
    from orchestrator.plan import Plan, SetRwOffline, SetRwOnline, SetWritable, StopReplica

    plan = Plan("test", (SetRwOffline("local"), SetWritable("server1"), StopReplica("server1"), SetRwOnline("local")))
    ex = _Recording(fail="StopReplica")
    result = ex.run(plan)
    assert result.failed and ex.order[-1] == "SetRwOnline"


def test_no_online_when_the_master_never_opened():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, C)
    ex = _Recording(fail="CatchUp")
    result = ex.run(plan)
    assert result.failed and ex.order == ["SetRwOffline", "CatchUp"]
    assert [r.result for r in result.results if r.step == "SetRwOnline"] == ["skipped"]


class _Peer:
    """The peer's server as the FAULT run's re-read sees it (one query)."""

    def __init__(self, read_only) -> None:
        self.read_only = read_only
        self.asked = 0

    def value(self, sql, args=None, timeout=None):
        self.asked += 1
        if isinstance(self.read_only, Exception):
            raise self.read_only
        return self.read_only


@pytest.mark.parametrize("read_only, online", [("0", True), ("1", False), (None, False)])
def test_a_fault_offline_is_undone_when_the_peer_opened_meanwhile(read_only, online):
    """The old master's FAULT and the new master's MASTER run at once on two hosts: the
    offline may land after the new master set the writer online. Re-read once: an open
    peer gets it back online; a read-only or unreadable one leaves it offline."""
    from orchestrator.errors import DatabaseError

    plan = decide(view(MASTER1, REPLICA2), FAULT, C)
    assert [s.unless_open for s in plan.steps if isinstance(s, SetRwOffline)] == ["server2"]
    peer = _Peer(DatabaseError("gone") if read_only is None else read_only)
    ex = _Recording()
    ex.servers = {"server2": peer}
    ex.run(plan)
    assert peer.asked == 1
    assert ex.order[0] == "SetRwOffline" and "Fence" in ex.order
    assert ("SetRwOnline" in ex.order) == online, ex.order
    if online:  # read after the fence: a peer that stops answering never delays it
        assert ex.order.index("Fence") < ex.order.index("SetRwOnline") == len(ex.order) - 1, ex.order


def test_no_reread_when_the_peer_is_unreachable():
    plan = decide(view(MASTER1, down("server2")), FAULT, C)
    assert [s.unless_open for s in plan.steps if isinstance(s, SetRwOffline)] == [""]


# --------------------------------------------------------------------------- the Atlas steps, against the stand-in


ADMIN_PW = "pw"


@pytest.fixture
def standin(tmp_path):
    conf = tmp_path / "atlas.cnf"
    conf.write_text("[mysql-proxy]\nadmin-username = user\n"
                    f"admin-password = {ADMIN_PW}\nadmin-address = 127.0.0.1:1\n"
                    f"proxy-backend-addresses = {RW}\nproxy-read-only-backend-addresses = {ADDR1}, {ADDR2}\n")
    with AtlasStandin(str(conf), host="127.0.0.1", port=0, check_interval=None) as s:
        yield s


def cfg_with(atlas: dict):
    from orchestrator.config import parse

    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1", "port": 3306}, "server2": {"host": "10.0.0.2", "port": 3306}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "keepalived": {"vip_check": False}, "atlas": [atlas],
    })


def config_for(standin) -> object:
    host, port = standin.address
    return cfg_with({"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW},
                     "config_file": standin.config_path})


def test_a_new_masters_entry_is_kept_until_the_writer_is_up(standin):
    c = config_for(standin)
    before = Path(standin.config_path).read_text()
    [result] = run_atlas_steps(c, [RemoveBackend("local", ADDR1, "server1 is the master now", after_rw_up=True)])
    assert result.result == "skipped" and "kept: Atlas's read/write backend is not up (10.0.0.100:3306 unknown)" in result.detail
    assert standin.mutating_commands() == [] and Path(standin.config_path).read_text() == before
    standin.set_state(RW, "up")
    [result, persisted] = run_atlas_steps(c, [RemoveBackend("local", ADDR1, "server1 is the master now", after_rw_up=True)])
    assert (result.result, result.detail) == ("ok", "removed") and persisted.detail.endswith("rewritten")
    assert [a for _, a, _, ty in standin.backends() if ty == "ro"] == [ADDR2]


def test_offline_and_online_change_state_not_the_config_file(standin):
    c = config_for(standin)
    before = Path(standin.config_path).read_text()
    [off] = run_atlas_steps(c, [SetRwOffline("local", "", "no safe writer")])
    assert off.result == "ok" and off.detail == f"{RW} set offline"
    [again] = run_atlas_steps(c, [SetRwOffline("local", "", "no safe writer")])
    assert again.detail == f"{RW} offline already"
    [on] = run_atlas_steps(c, [SetRwOnline("local", "", "server1 is the writable master")])
    assert on.detail == f"{RW} set online" and standin.backends()[0][2] == "unknown"
    [none] = run_atlas_steps(c, [SetRwOnline("local", "", "server1 is the writable master")])
    assert none.detail == "no read/write backend is offline"
    assert standin.mutating_commands() == ["SET OFFLINE 1", "SET ONLINE 1"]
    assert Path(standin.config_path).read_text() == before, "the backends' state is not in the config file"


def test_offline_before_a_failover_is_one_quick_try_against_a_dead_atlas(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = cfg_with({"name": "local", "admin": {"host": "127.0.0.1", "port": port, "user": "u", "password": "p"}})
    start = time.monotonic()
    [result] = run_atlas_steps(c, [SetRwOffline("local", "", "no safe writer")])
    assert result.result == "failed" and time.monotonic() - start < 0.2, "no retries before the database steps"


def test_a_set_that_took_another_backend_gives_it_back(standin):
    """SET OFFLINE n after another admin shifted the numbers: the backend it took is set back."""
    host, port = standin.address
    admin = AtlasAdmin(host, port, "user", ADMIN_PW)
    real = admin._execute

    def shifted(command):
        if command.startswith("SET OFFLINE"):
            shifted.calls += 1
            if shifted.calls == 1:
                return real("SET OFFLINE 2")  # the numbers moved: our 1 is now their 2
        return real(command)

    shifted.calls = 0
    admin._execute = shifted
    with admin:
        standin.set_state(ADDR1, "up")
        assert admin.set_offline(RW) is True
        states = {a: st for _, a, st, _ in standin.backends()}
        assert states[RW] == "offline" and states[ADDR1] == "unknown", states
        assert any("took 10.0.0.1:3306 (ro) (was up)" in text for text in admin.last_incidents)
