"""Table tests for the maintainer's pure decision."""

from dataclasses import replace

import pytest

from orchestrator.model import AtlasState, Backend, ClusterView
from orchestrator.plan import NOOP, AddBackend, RemoveBackend
from orchestrator.plan import PersistBackends
from orchestrator.reconcile import decide_maintain, replica_out

from .test_decide import CONN, MASTER2, REPLICA1, STOPPED, cfg, down, node, repl

C = cfg(atlas=True)
ADDR1, ADDR2 = "10.0.0.1:3306", "10.0.0.2:3306"


def atlas(*ro, name="local", reachable=True, config_ro=None, config_error=""):
    backends = [Backend(1, "10.0.0.100:3306", "up", "rw")] + [Backend(i + 2, a, "up", "ro") for i, a in enumerate(ro)]
    return AtlasState(name, reachable, "" if reachable else "refused", tuple(backends) if reachable else (),
                      "/etc/atlas/my.cnf" if config_ro is not None or config_error else "", config_ro, config_error)


def v(me, peer, *atlases):
    return ClusterView(me=me, peer=peer, atlas=atlases)


# A replica that keeps up under write load: threads running, lag 1s, but something
# received (1-2-9) not yet applied. Its master has executed up to 1-2-9.
UNDER_LOAD = replace(REPLICA1, executed="0-1-10,1-2-8", binlog_pos="0-1-10,1-2-8", binlog_state="0-1-10,1-2-8",
                     replica=repl(retrieved="1-2-9", lag=1))
MASTER2_LOADED = replace(MASTER2, executed="0-1-10,1-2-9", binlog_pos="0-1-10,1-2-9", binlog_state="0-1-10,1-2-9")
ADD1 = AddBackend("local", ADDR1, "server1 is a healthy replica")
REMOVE1 = RemoveBackend("local", ADDR1, "server1 is not a healthy replica")

CASES = [
    ("healthy replica missing is added", v(REPLICA1, MASTER2, atlas()), (AddBackend("local", ADDR1, "server1 is a healthy replica"),)),
    # Hysteresis: a listed replica stays without a drained relay log; an unlisted one is added only drained.
    ("listed, relay log not drained under load: stays", v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1)), ()),
    ("not listed, relay log not drained: not added", v(UNDER_LOAD, MASTER2_LOADED, atlas()), ()),
    ("not listed, drained again: added", v(replace(UNDER_LOAD, executed="0-1-10,1-2-9", binlog_pos="0-1-10,1-2-9"), MASTER2_LOADED, atlas()), (ADD1,)),
    ("listed, undrained, SQL thread stopped: removed", v(replace(UNDER_LOAD, replica=repl(retrieved="1-2-9", sql=STOPPED)), MASTER2_LOADED, atlas(ADDR1)), (REMOVE1,)),
    ("listed, undrained, IO thread connecting: removed", v(replace(UNDER_LOAD, replica=repl(retrieved="1-2-9", io=CONN)), MASTER2_LOADED, atlas(ADDR1)), (REMOVE1,)),
    ("listed, undrained, lag above max_lag: removed", v(replace(UNDER_LOAD, replica=repl(retrieved="1-2-9", lag=11)), MASTER2_LOADED, atlas(ADDR1)), (REMOVE1,)),
    ("listed, undrained, lag unknown: removed", v(replace(UNDER_LOAD, replica=repl(retrieved="1-2-9", lag=None)), MASTER2_LOADED, atlas(ADDR1)), (REMOVE1,)),
    ("listed, undrained, errant GTIDs: removed", v(replace(UNDER_LOAD, binlog_pos="0-1-11,1-2-8"), MASTER2_LOADED, atlas(ADDR1)), (REMOVE1,)),
    ("listed by one Atlas, not the other, undrained: each keeps its own",
     v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1), atlas(name="other")), ()),
    ("listed by one Atlas, not the other, drained: added to the other",
     v(replace(UNDER_LOAD, executed="0-1-10,1-2-9"), MASTER2_LOADED, atlas(ADDR1), atlas(name="other")),
     (AddBackend("other", ADDR1, "server1 is a healthy replica"),)),
    ("healthy replica present: no change", v(REPLICA1, MASTER2, atlas(ADDR1)), ()),
    ("master listed as ro is removed", v(REPLICA1, MASTER2, atlas(ADDR1, ADDR2)), (RemoveBackend("local", ADDR2, "server2 is not a healthy replica"),)),
    ("stopped SQL thread removed", v(replace(REPLICA1, replica=repl(sql=STOPPED)), MASTER2, atlas(ADDR1)), (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)),
    ("IO connecting removed", v(replace(REPLICA1, replica=repl(io=CONN)), MASTER2, atlas(ADDR1)), (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)),
    ("lag above max_lag removed", v(replace(REPLICA1, replica=repl(lag=11)), MASTER2, atlas(ADDR1)), (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)),
    ("lag at max_lag is fine", v(replace(REPLICA1, replica=repl(lag=10)), MASTER2, atlas()), (AddBackend("local", ADDR1, "server1 is a healthy replica"),)),
    ("errant GTIDs not added", v(replace(REPLICA1, executed="0-1-11", binlog_pos="0-1-11"), replace(MASTER2, binlog_state="0-1-10"), atlas()), ()),
    ("writable replica not added", v(replace(REPLICA1, read_only=False), MASTER2, atlas()), ()),
    ("foreign ro backend left alone", v(REPLICA1, MASTER2, atlas(ADDR1, "10.9.9.9:3306")), ()),
    ("several Atlas: only the one lacking it", v(REPLICA1, MASTER2, atlas(ADDR1), atlas(name="other")), (AddBackend("other", ADDR1, "server1 is a healthy replica"),)),
]


@pytest.mark.parametrize("name, view, steps", CASES, ids=[c[0] for c in CASES])
def test_maintain_cases(name, view, steps):
    plan = decide_maintain(view, C)
    assert plan.steps == steps, plan.render()


def test_unreachable_server_changes_nothing():
    plan = decide_maintain(v(REPLICA1, down("server2"), atlas(ADDR1, ADDR2)), C)
    assert plan.outcome == NOOP and plan.steps == () and "cannot observe server2" in plan.reason
    assert "server2 is not reachable, so server1's errant GTIDs cannot be checked: its entry is left as it is" in plan.reason
    # nor is a healthy-looking replica added while the errant check cannot run
    assert decide_maintain(v(REPLICA1, down("server2"), atlas()), C).steps == ()


def test_reachable_server_unhealthy_on_its_own_is_removed_even_with_peer_down():
    # After a failover with Atlas down at notify time, the new master must not stay a read backend.
    plan = decide_maintain(v(node("server1", ro=False), down("server2"), atlas(ADDR1, ADDR2)), C)
    assert plan.steps == (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)
    plan = decide_maintain(v(replace(REPLICA1, replica=repl(io=CONN)), down("server2"), atlas(ADDR1)), C)
    assert plan.steps == (RemoveBackend("local", ADDR1, "server1 is not a healthy replica"),)


def test_unreachable_atlas_is_left_alone_and_said():
    plan = decide_maintain(v(REPLICA1, MASTER2, atlas(reachable=False), atlas(name="other")), C)
    assert plan.steps == (AddBackend("other", ADDR1, "server1 is a healthy replica"),)
    assert any("Atlas local unreachable" in w for w in plan.warnings)


def test_reason_says_why():
    plan = decide_maintain(v(replace(REPLICA1, replica=repl(lag=99)), MASTER2, atlas(ADDR1)), C)
    assert "server1 lags 99s (> max_lag 10s)" in plan.reason and "remove 10.0.0.1:3306 from local" in plan.reason


def test_unapplied_relay_log_not_added_and_said():
    me = replace(REPLICA1, executed="0-1-10,1-2-5", replica=repl(retrieved="1-2-9"))
    plan = decide_maintain(v(me, replace(MASTER2, binlog_state="0-1-10,1-2-9"), atlas()), C)
    assert plan.steps == () and "server1 has not applied its relay log (1-2-9)" in plan.reason


def test_listed_replica_under_load_stays_and_the_reason_says_so():
    plan = decide_maintain(v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1)), C)
    assert plan.outcome == NOOP and plan.reason == "no change: server1 is a healthy replica of server2 (lag 1s)"


def test_reason_names_each_atlas_when_the_verdicts_differ():
    plan = decide_maintain(v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1), atlas(name="other")), C)
    assert plan.reason == (
        "no change: server1 is a healthy replica of server2 (lag 1s) (listed by local); "
        "not listed by other: server1 has not applied its relay log (1-2-9)"
    )


def test_replica_out_only_while_some_atlas_lacks_it_or_must_drop_it():
    assert not replica_out(v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1)), C), "listed and staying: nothing to hurry"
    assert replica_out(v(UNDER_LOAD, MASTER2_LOADED, atlas()), C), "out and draining: re-check soon"
    assert replica_out(v(UNDER_LOAD, MASTER2_LOADED, atlas(ADDR1), atlas(name="other")), C)
    assert not replica_out(v(REPLICA1, MASTER2, atlas(ADDR1)), C)
    assert replica_out(v(replace(REPLICA1, replica=repl(sql=STOPPED)), MASTER2, atlas(ADDR1)), C)


# --------------------------------------------------------------------------- config file

PERSIST = PersistBackends("local", config_file="/etc/atlas/my.cnf", runtime=(ADDR1,), listed=(ADDR1, ADDR2))


CONFIG_CASES = [
    ("file lists a backend Atlas dropped: rewritten", v(REPLICA1, MASTER2, atlas(ADDR1, config_ro=(ADDR1, ADDR2))), (PERSIST,)),
    ("file lacks a backend Atlas lists: rewritten", v(REPLICA1, MASTER2, atlas(ADDR1, config_ro=())),
     (PersistBackends("local", config_file="/etc/atlas/my.cnf", runtime=(ADDR1,), listed=()),)),
    ("same set, other order: nothing", v(REPLICA1, MASTER2, atlas(ADDR1, "10.9.9.9:3306", config_ro=("10.9.9.9:3306", ADDR1))), ()),
    ("a change is due: it persists itself", v(REPLICA1, MASTER2, atlas(config_ro=(ADDR2,))), (ADD1,)),
    ("file not read (persist is not rewrite)", v(REPLICA1, MASTER2, atlas(ADDR1)), ()),
    ("Atlas unreachable: nothing", v(REPLICA1, MASTER2, atlas(reachable=False, config_ro=(ADDR2,))), ()),
    ("servers unobservable: the file is still fixed", v(down("server1"), down("server2"), atlas(ADDR1, config_ro=(ADDR1, ADDR2))), (PERSIST,)),
]


@pytest.mark.parametrize("name, view, steps", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_file_cases(name, view, steps):
    assert decide_maintain(view, C).steps == steps


def test_config_file_rewrite_is_said():
    plan = decide_maintain(v(REPLICA1, MASTER2, atlas(ADDR1, config_ro=(ADDR1, ADDR2))), C)
    assert plan.reason.endswith(f": rewrite /etc/atlas/my.cnf (it lists {ADDR1},{ADDR2}, Atlas local {ADDR1})")
    assert PERSIST.describe() == (f"rewrite /etc/atlas/my.cnf so that Atlas local restarts with read-only backends {ADDR1} "
                                  f"(the file lists {ADDR1},{ADDR2})")


def test_unreadable_config_file_is_a_warning():
    plan = decide_maintain(v(REPLICA1, MASTER2, atlas(ADDR1, config_error="atlas config /etc/atlas/my.cnf: cannot read: gone")), C)
    assert plan.steps == () and plan.warnings == (
        "Atlas local: atlas config /etc/atlas/my.cnf: cannot read: gone: its config file is not checked",)


# --------------------------------------------------------------------------- unfinished rejoin

from orchestrator.plan import ACT, REFUSED, ChangeSource, StartReplica  # noqa: E402
from orchestrator.reconcile import decide_rejoin  # noqa: E402

FENCED_EX_MASTER = node("server1", ro=True)  # what an incomplete BACKUP leaves: fenced, no replication


def test_rejoin_completed_when_peer_became_writable():
    plan = decide_rejoin(v(FENCED_EX_MASTER, node("server2", ro=False, binlog_state="0-1-10,0-2-3")), C)
    assert plan.outcome == ACT and plan.reason.startswith("completing an unfinished rejoin")
    assert ChangeSource("server1", "server2", "10.0.0.2", 3306) in plan.steps and plan.steps[-2] == StartReplica("server1")


@pytest.mark.parametrize("view", [
    v(REPLICA1, MASTER2),  # already replicating
    v(replace(REPLICA1, replica=repl(io=STOPPED, sql=STOPPED)), MASTER2),  # stopped on purpose: not ours to start
    v(node("server1", ro=False), MASTER2),  # writable: not a fenced ex-master
    v(FENCED_EX_MASTER, node("server2", ro=True)),  # peer not the master yet
    v(FENCED_EX_MASTER, down("server2")),
    ClusterView(me=FENCED_EX_MASTER, peer=MASTER2, holds_vip=True),  # holds the VIP: a MASTER event is due
], ids=["replicating", "stopped", "writable", "peer-read-only", "peer-down", "holds-vip"])
def test_rejoin_not_attempted(view):
    assert decide_rejoin(view, C) is None


def test_rejoin_with_errant_gtids_is_refused_not_acted():
    plan = decide_rejoin(v(node("server1", ro=True, executed="0-1-11"), node("server2", ro=False, binlog_state="0-1-10,0-2-5")), C)
    assert plan.outcome == REFUSED and "errant GTIDs 0-1-11" in plan.reason
