"""The write token's pure decisions (orchestrator/token.py, invariants.decide_token, and the
token's steps in decide/switchover plans): observed view + event -> plan, no etcd needed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator import token as tk
from orchestrator.commands.switchover import plan_abort
from orchestrator.decide import BACKUP, FAULT, MASTER, STOP, decide
from orchestrator.invariants import TOKEN, decide_semisync, decide_token
from orchestrator.model import SemiSync, TokenState
from orchestrator.pass_choice import PassFacts, choose_action
from orchestrator.plan import (
    ACT, INCOMPLETE, NOOP, REFUSED, AcquireToken, Fence, HandOver, HandOverToken, Recheck, ReleaseToken, SemiSyncWait,
    SetWritable,
)

from .test_decide import MASTER1, MASTER2, REPLICA1, REPLICA2, cfg, down, node, repl, view, CONN

ETCD = {"endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.254:2379"], "ttl": 5}


def ecfg(**extra):
    return cfg(etcd=ETCD, **extra)


def tview(me, peer, holder="", left=None, error="", holds_vip=None):
    return replace(view(me, peer, holds_vip), token=TokenState(holder, left, 7, 42, error))


def kinds(plan):
    return [type(s).__name__ for s in plan.steps]


# ------------------------------------------------------------------ without etcd: nothing changes


def test_without_etcd_no_token_step_anywhere():
    c = cfg()
    for v, event in ((view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER), (view(MASTER1, REPLICA2), FAULT),
                     (view(MASTER1, MASTER2), BACKUP), (view(REPLICA1, MASTER2), MASTER)):
        plan = decide(v, event, c)
        assert not any(isinstance(s, (AcquireToken, ReleaseToken, HandOverToken)) for s in plan.steps)
    assert decide_token(view(MASTER1, REPLICA2), c) is None


# ------------------------------------------------------------------ promotions


PROMOTIONS = [
    # (id, holder, lease left, error, peer, outcome, reason fragment, the AcquireToken expected)
    ("nobody holds it: take it", "", None, "", down("server2"), ACT, "promoting server1", AcquireToken("server1", "server2", 0.0)),
    ("held here already", "server1", 4.0, "", down("server2"), ACT, "promoting server1", AcquireToken("server1", "server2", 0.0)),
    # ttl + 1 + an etcd election's lease restart, whatever the lease left read (an election restarts it)
    ("held by the dead peer: wait for its lease", "server2", 3.2, "", down("server2"), ACT, "promoting server1",
     AcquireToken("server1", "server2", 9.5)),
    ("held by the peer, lease unknown: wait the same", "server2", None, "", down("server2"), ACT, "promoting server1",
     AcquireToken("server1", "server2", 9.5)),
    ("etcd unreadable: refused", "", None, "no member answered", down("server2"), REFUSED,
     "refusing to promote server1: the write token cannot be read (no member answered)", None),
    ("held by a stranger: refused", "server9", 4.0, "", down("server2"), REFUSED, "held by 'server9', not a node", None),
]


@pytest.mark.parametrize("case", PROMOTIONS, ids=[c[0] for c in PROMOTIONS])
def test_promotion_takes_the_token_right_before_the_recheck(case):
    _, holder, left, error, peer, outcome, fragment, acquire = case
    me = replace(REPLICA1, replica=repl(io=CONN))
    plan = decide(tview(me, peer, holder, left, error), MASTER, ecfg())
    assert plan.outcome == outcome and fragment in plan.reason, plan.render()
    if acquire is None:
        assert plan.steps == ()
        return
    steps = list(plan.steps)
    assert acquire in steps
    # Taken before the opening: nothing opens without it.
    assert steps.index(acquire) < steps.index(SetWritable("server1"))


def test_a_master_event_next_to_the_writable_holder_stays_read_only_orch_promote_takes_over():
    plan = decide(tview(REPLICA1, MASTER2, "server2", 4.0), MASTER, ecfg())
    assert plan.outcome == REFUSED and "server2 is writable and holds the write token" in plan.reason and plan.steps == ()
    plan = decide(tview(REPLICA1, MASTER2, "server2", 4.0), MASTER, ecfg(), operator=True)
    steps = list(plan.steps)
    i_fence, i_acq, i_recheck, i_open = (steps.index(Fence("server2")), steps.index(AcquireToken("server1", "server2", 9.5)),
                                         steps.index(Recheck("server1", "server2")), steps.index(SetWritable("server1")))
    assert i_fence < i_acq < i_recheck < i_open


def test_the_split_the_token_exists_for_leaves_the_non_holder_read_only():
    """The hosts lose each other, both reach the witness and etcd: the non-holder's MASTER can
    only wait for a lease that is renewed (AcquireToken is refused at execution, tests/test_token_etcd.py)
    and the holder keeps its semi-sync switch-off right: the non-holder has none."""
    me = replace(REPLICA1, replica=repl(io=CONN))
    plan = decide(tview(me, down("server2"), "server2", 5.0, holds_vip=True), MASTER, ecfg())
    assert AcquireToken("server1", "server2", 9.5) in plan.steps


# ------------------------------------------------------------------ release


def test_fault_on_the_holder_fences_then_releases():
    plan = decide(tview(MASTER1, REPLICA2, "server1", 4.0), FAULT, ecfg())
    steps = list(plan.steps)
    assert steps.index(Fence("server1")) < steps.index(ReleaseToken("server1", "FAULT: server1 is fenced"))


def test_stop_with_the_server_down_releases_at_once():
    plan = decide(tview(down("server1"), REPLICA2, "server1", 4.0), STOP, ecfg())
    assert plan.outcome == INCOMPLETE and ReleaseToken("server1", "STOP: server1's server is down") in plan.steps


def test_a_server_that_answers_unusably_keeps_the_token():
    alive = replace(down("server1"), alive=True, error="(1040) Too many connections")
    plan = decide(tview(alive, REPLICA2, "server1", 4.0), FAULT, ecfg())
    assert plan.outcome == REFUSED and not any(isinstance(s, ReleaseToken) for s in plan.steps)


def test_fault_on_a_replica_releases_nothing():
    plan = decide(tview(REPLICA1, MASTER2, "server2", 4.0), FAULT, ecfg())
    assert not any(isinstance(s, ReleaseToken) for s in plan.steps)


def test_fault_with_etcd_unreadable_still_tries_to_release():
    plan = decide(tview(MASTER1, REPLICA2, error="timed out"), FAULT, ecfg())
    assert any(isinstance(s, ReleaseToken) for s in plan.steps) and ReleaseToken.best_effort


def test_backup_on_the_holder_releases_after_its_fence():
    # A read-only holder (fenced already): released.
    plan = decide(tview(node("server1", ro=True), MASTER2, "server1", 4.0, holds_vip=False), BACKUP, ecfg())
    assert ReleaseToken("server1", "BACKUP: server1 is fenced") in plan.steps
    # orch demote of the writable holder: fenced, then released.
    plan = decide(tview(MASTER1, MASTER2, "server1", 4.0, holds_vip=False), BACKUP, ecfg(), operator=True)
    steps = list(plan.steps)
    assert steps.index(Fence("server1")) < steps.index(ReleaseToken("server1", "BACKUP: server1 is fenced"))


# ------------------------------------------------------------------ the invariant


INVARIANT = [
    # (id, me, peer, holder, holds_vip, outcome or None, fragment, step)
    ("writable holder: nothing", MASTER1, REPLICA2, "server1", True, None, "", None),
    ("writable, the peer holds it: fence", MASTER1, REPLICA2, "server2", True, ACT, "server2 holds the write token", Fence("server1")),
    ("writable, nobody holds it: take it", MASTER1, REPLICA2, "", True, ACT, "nobody holds the write token",
     AcquireToken("server1", "server2", 0.0)),
    ("writable, a stranger holds it: said", MASTER1, REPLICA2, "x", True, NOOP, "not a node of this cluster", None),
    # A FAULT released it and the server came back (a frozen mariadbd): the VIP holder takes it, not this one.
    ("writable without the VIP, nobody holds it: left to the VIP holder", MASTER1, REPLICA2, "", False, None, "", None),
    ("read-only holder without the VIP: release", REPLICA1, MASTER2, "server1", False, ACT, "releasing it",
     ReleaseToken("server1", "fenced, not the VIP holder")),
    ("read-only holder with the VIP: kept (it opens)", REPLICA1, node("server2"), "server1", True, None, "", None),
]


@pytest.mark.parametrize("case", INVARIANT, ids=[c[0] for c in INVARIANT])
def test_token_invariant(case):
    _, me, peer, holder, vip, outcome, fragment, step = case
    got = decide_token(tview(me, peer, holder, 3.0, holds_vip=vip), ecfg())
    if outcome is None:
        assert got is None
        return
    event, plan = got
    assert event == TOKEN and plan.outcome == outcome and fragment in plan.reason
    if step is not None:
        assert step in plan.steps


def test_etcd_unreadable_leaves_the_writable_master_to_the_keeper():
    assert decide_token(tview(MASTER1, REPLICA2, error="no member answered", holds_vip=True), ecfg()) is None


def test_the_token_rule_comes_first_in_a_pass():
    choice = choose_action(tview(MASTER1, REPLICA2, "server2", 3.0, holds_vip=True), ecfg(), PassFacts(vip_elsewhere=()))
    assert choice.event == TOKEN and Fence("server1") in choice.plan.steps


def test_read_only_vip_holder_hands_the_vip_to_the_token_holding_writer():
    """After the split heals: server1 (read-only) holds the VIP, server2 is the writable holder
    with nothing server1 lacks (no writes yet): the VIP goes back through the track file."""
    c = ecfg(keepalived={"vip": "10.0.0.100", "track_file": "/run/orch/track"})
    me = node("server1", ro=True, executed="0-1-10")
    peer = node("server2", ro=False, executed="0-1-10")
    v = tview(me, peer, "server2", 4.0, holds_vip=True)
    choice = choose_action(v, c, PassFacts(track="0"))
    assert any(isinstance(s, HandOver) and s.give_up for s in choice.plan.steps), choice.plan.render()


# ------------------------------------------------------------------ semi-sync


def test_only_the_holder_switches_the_semisync_wait_off():
    c = ecfg(failover={"semi_sync": True, "witness": "10.0.0.254", "block_seconds": 0})
    semi = SemiSync(enabled=True, timeout_ms=10**9, wait_no_replica=True, wait_point="AFTER_SYNC", clients=0)
    me = replace(MASTER1, semisync=semi)
    holder = decide_semisync(tview(me, down("server2"), "server1", 4.0, holds_vip=True), c, witness=True)
    assert holder is not None and SemiSyncWait("server1", False, holder.steps[0].why) in holder.steps
    other = decide_semisync(tview(me, down("server2"), "server2", 4.0, holds_vip=True), c, witness=True)
    assert other is not None and other.outcome == NOOP and "does not hold the write token" in other.reason
    unknown = decide_semisync(tview(me, down("server2"), error="timed out", holds_vip=True), c, witness=True)
    assert unknown is not None and unknown.outcome == NOOP and "cannot be read" in unknown.reason


# ------------------------------------------------------------------ the deadline


def test_fence_deadline_keeps_the_margin_below_the_ttl():
    for ttl in (5, 10, 30):
        due = tk.fence_at(100.0, ttl)
        # Fenced (the budget spent) before the lease can run out by a clock up to RATE_MARGIN faster.
        assert due + tk.FENCE_BUDGET <= 100.0 + ttl * (1 - tk.RATE_MARGIN) + 1e-9
        # Renewals come often enough that a single lost one never triggers it: the next is sent before the deadline.
        assert 100.0 + 2 * tk.renew_every(ttl) < due
    assert tk.renew_timeout(5) < tk.renew_every(5)


def test_outage_safe_only_with_semisync_on_and_the_replica_receiving():
    semi = SemiSync(enabled=True, timeout_ms=10**9, wait_no_replica=True, wait_point="AFTER_SYNC", clients=1)
    me = replace(MASTER1, semisync=semi)
    v = tview(me, REPLICA2, "server1", 4.0)
    assert "every acknowledged write is on server2" in tk.outage_safe(v, 1.0, 10.0, 1000)
    assert tk.outage_safe(v, 11.0, 10.0, 1000) == ""  # too old a view
    assert tk.outage_safe(replace(v, me=MASTER1), 1.0, 10.0, 1000) == ""  # no semi-sync read
    assert tk.outage_safe(replace(v, peer=replace(REPLICA2, replica=repl("10.0.0.1", io=CONN))), 1.0, 10.0, 1000) == ""
    assert tk.outage_safe(replace(v, me=replace(me, semisync=replace(semi, wait_no_replica=False))), 1.0, 10.0, 1000) == ""


# ------------------------------------------------------------------ switchover


def test_switchover_abort_takes_the_token_back_before_unfencing():
    c = ecfg()
    v = tview(REPLICA1, node("server2", ro=True, replica=repl("10.0.0.1")), "server2", 4.0)
    plan = plan_abort(v, c, "the candidate did not open", "")
    steps = list(plan.steps)
    acquire = next(s for s in steps if isinstance(s, AcquireToken))
    assert steps.index(acquire) < steps.index(SetWritable("server1"))


# ------------------------------------------------------------------ fleet and doctor (pure)


def test_fleet_rows_merge_each_clusters_reports():
    import json

    from orchestrator.commands.etcd_report import fleet_rows
    from orchestrator.etcd import KeyValue

    def kv(key, value):
        return KeyValue(key, value if isinstance(value, str) else json.dumps(value), 0, 1, 1)

    rows = fleet_rows([
        kv("/orch/a/token", "s1"),
        kv("/orch/a/state/s1", {"master": "s1", "replica": "s2", "lag": 0, "at": 100.0, "last_failover": None}),
        kv("/orch/a/state/s2", {"master": "s2", "replica": "s1", "lag": 3, "at": 90.0}),
        kv("/orch/a/lease/s1", "123"),
        kv("/orch/b/token", "x1"),
        kv("/orch/c/state/y", "not json"),
    ], "/orch", 110.0)
    assert rows == [
        {"cluster": "a", "reporters": ["s1", "s2"], "master": "s1", "replica": "s2", "lag": 0, "last_failover": None,
         "holder": "s1", "age": 10.0},
        {"cluster": "b", "holder": "x1", "master": None, "replica": None, "lag": None, "last_failover": None,
         "reporters": [], "age": None},
    ]


def test_doctor_checks_of_etcd():
    from orchestrator.commands.etcd_report import EtcdFacts, check_etcd

    c = ecfg()
    eps = c.etcd.endpoints
    good = EtcdFacts({e: "" for e in eps}, {e: "9" for e in eps}, (("a", (eps[0],)), ("b", (eps[1],)), ("c", (eps[2] + "/",))),
                     "", 0x42, 1.0)
    v = tview(MASTER1, REPLICA2, "server1", 4.0)
    assert {ch.name: ch.status for ch in check_etcd(c, v, good)} == {
        "etcd members": "pass", "etcd endpoints are the members": "pass", "etcd leader": "pass", "write token": "pass",
        "host lease": "pass", "etcd lease margin": "warn"}  # ttl 5 without semi-sync: below
    bad = EtcdFacts({eps[0]: "", eps[1]: "timed out", eps[2]: "refused"}, {eps[0]: "9"}, (("a", (eps[0],)),), "", 0x42, 30.0)
    got = {ch.name: ch for ch in check_etcd(c, tview(MASTER1, REPLICA2, "server2", 4.0), bad)}
    assert got["etcd members"].status == "fail"  # no majority
    assert got["etcd endpoints are the members"].status == "fail" and "configured but not a member" in got["etcd endpoints are the members"].detail
    assert got["write token"].status == "fail" and "server1 is writable" in got["write token"].detail
    assert got["host lease"].status == "fail" and "30s ago" in got["host lease"].detail


def test_the_lease_margin_against_an_etcd_leader_election():
    """An election outlasting the self-fence margin fences the master, unless semi-sync without
    fallback vouches for every acknowledged write: doctor warns only for that combination."""
    from orchestrator import token as tk
    from orchestrator.commands.etcd_report import check_lease_margin

    assert not tk.election_tolerated(5) and tk.election_tolerated(10)
    assert tk.fence_at(0.0, 10) >= tk.ELECTION_SECONDS + tk.renew_every(10)
    warned = check_lease_margin(ecfg())
    assert warned.status == "warn" and "2.4s after its last renewal" in warned.detail and "etcd.ttl to 10" in warned.fix
    assert check_lease_margin(ecfg(failover={"semi_sync": True, "witness": "10.0.0.254"})).status == "pass"
    longer = cfg(etcd={**ETCD, "ttl": 10})
    assert check_lease_margin(longer).status == "pass" and "7.3s" in check_lease_margin(longer).detail


def test_backup_on_the_writable_holder_keeps_writing_the_vip_holder_hands_it_back():
    """VRRP after a split heals may give the VIP to the host without the token: the writer stays."""
    v = tview(MASTER1, REPLICA2, "server1", 4.0, holds_vip=False)
    plan = decide(v, BACKUP, ecfg())
    assert plan.outcome == NOOP and "holds the write token" in plan.reason
    assert decide(v, BACKUP, ecfg(), operator=True).steps[0] == Fence("server1")  # orch demote still fences
    assert decide(v, BACKUP, cfg()).steps[0] == Fence("server1")  # without etcd: as before


def test_a_promotion_refused_for_the_token_is_retried_once_the_token_is_free():
    from orchestrator.pass_choice import Refusal, still_refused

    last = Refusal(100.0, "held by server2", token=True)
    assert still_refused(last, 101.0, tview(REPLICA1, down("server2"), "server2", 3.0), ecfg())
    assert not still_refused(last, 101.0, tview(REPLICA1, down("server2"), "", None), ecfg())
    assert still_refused(last, 101.0, tview(REPLICA1, down("server2"), error="timed out"), ecfg())


def test_the_vip_goes_back_to_the_token_holder_after_a_shorter_backoff():
    from orchestrator.invariants import HANDOVER, TOKEN_HANDOVER_BACKOFF, decide_invariant

    c = ecfg(keepalived={"vip": "10.0.0.100", "track_file": "/run/orch/track"})
    v = tview(node("server1", ro=True, executed="0-1-10"), node("server2", ro=False, executed="0-1-10"), "server2", 4.0,
              holds_vip=True)
    event, plan = decide_invariant(v, c, track="0", handback_age=TOKEN_HANDOVER_BACKOFF + 1)
    assert event == HANDOVER and any(isinstance(s, HandOver) and s.give_up for s in plan.steps)
    event, plan = decide_invariant(v, c, track="0", handback_age=TOKEN_HANDOVER_BACKOFF - 1)
    assert event == HANDOVER and plan.outcome == NOOP


def test_backup_on_the_writable_holder_next_to_a_resumed_writable_peer_keeps_the_token():
    """A frozen old master resumed writable and took the VIP by priority: the holder's BACKUP must not
    fence it and release the token (the resumed one would open without the holder's writes)."""
    v = tview(MASTER1, MASTER2, "server1", 4.0, holds_vip=False)
    plan = decide(v, BACKUP, ecfg())
    assert plan.outcome == NOOP and not plan.steps


# ------------------------------------------------------------------ the etcd leader's place

NODES = {"server1": "10.0.0.1", "server2": "10.0.0.2"}
# (id, name, client and peer URLs): the lab's shape, clients on their own network, peers on the hosts'.
MEMBERS = [(11, "etcd-server1", ("http://10.0.1.1:2379", "http://10.0.0.1:2380")),
           (22, "etcd-server2", ("http://10.0.1.2:2379", "http://10.0.0.2:2380")),
           (99, "etcd-witness", ("http://10.0.1.254:2379", "http://10.0.0.254:2380"))]


@pytest.mark.parametrize("urls, node", [
    (("http://10.0.0.1:2379",), "server1"),
    (("https://10.0.0.2:2379/",), "server2"),
    (("http://10.0.1.1:2379", "http://10.0.0.1:2380"), "server1"),  # a peer URL on the host counts
    (("http://10.0.0.254:2379",), ""),
    (("http://10.0.0.10:2379",), ""),  # a prefix of another address is not it
    (("not a url", ""), ""),
])
def test_a_member_is_matched_to_the_host_its_urls_name(urls, node):
    assert tk.member_node(urls, NODES) == node


def test_leader_on_a_db_host_is_moved_to_the_healthy_member_off_them():
    p = tk.leader_placement(MEMBERS, 11, {11, 22, 99}, NODES)
    assert (p.leader, p.on_node, p.target, p.target_id) == ("etcd-server1", "server1", "etcd-witness", 99)
    why = tk.leader_move_due(p, 100.0, None)
    assert "etcd-server1 runs on server1's host" in why and "etcd-witness" in why and "restarts every lease" in why


def test_leader_off_the_db_hosts_or_nowhere_to_go_stays():
    off = tk.leader_placement(MEMBERS, 99, {11, 22, 99}, NODES)
    assert off.on_node == "" and off.describe() == "etcd leader etcd-witness runs off the DB hosts"
    assert tk.leader_move_due(off, 100.0, None) == ""
    unhealthy = tk.leader_placement(MEMBERS, 22, {11, 22}, NODES)  # the witness's member did not answer
    assert unhealthy.on_node == "server2" and unhealthy.target == "" and tk.leader_move_due(unhealthy, 100.0, None) == ""
    assert tk.leader_placement(MEMBERS, 0, {11}, NODES).describe() == "no etcd leader known"
    assert tk.leader_placement(MEMBERS, 1234, {11}, NODES).leader == ""  # a leader not in the list


def test_leader_moves_are_rate_limited():
    p = tk.leader_placement(MEMBERS, 22, {11, 22, 99}, NODES)
    assert tk.leader_move_due(p, 100.0, 100.0 - tk.LEADER_MOVE_GAP + 1) == ""
    assert tk.leader_move_due(p, 100.0, 100.0 - tk.LEADER_MOVE_GAP)


def test_doctor_warns_when_the_etcd_leader_runs_on_a_db_host():
    from orchestrator.commands.etcd_report import EtcdFacts, check_etcd

    c = ecfg()
    eps = c.etcd.endpoints
    members = ((1, "e1", (eps[0],)), (2, "e2", (eps[1],)), (3, "ew", (eps[2],)))
    base = EtcdFacts({e: "" for e in eps}, {e: "1" for e in eps}, tuple((m[1], m[2]) for m in members), "", 0x42, 1.0,
                     members, 1)
    v = tview(MASTER1, REPLICA2, "server1", 4.0)
    got = {ch.name: ch for ch in check_etcd(c, v, base)}["etcd leader placement"]
    assert got.status == "warn" and "e1 runs on server1's host" in got.detail and "etcdctl move-leader 3" in got.fix
    off = replace(base, leader_id=3)
    assert {ch.name: ch.status for ch in check_etcd(c, v, off)}["etcd leader placement"] == "pass"
    assert "etcd leader placement" not in {ch.name for ch in check_etcd(c, v, replace(base, leader_id=0))}


def test_the_take_over_tries_finer_in_the_holders_lease_last_seconds():
    from orchestrator.lease import FINE_POLL, POLL, poll_pause

    assert poll_pause(5, 10.0) == POLL  # a FAULT on the holder's host may release it any moment
    assert poll_pause(2, 10.0) == POLL
    assert poll_pause(1, 10.0) == FINE_POLL and poll_pause(0, 10.0) == FINE_POLL and poll_pause(-1, 10.0) == FINE_POLL
    assert poll_pause(5, 0.05) == 0.05 and poll_pause(5, -1.0) == 0.0  # never past the step's deadline


def test_a_frozen_peer_read_does_not_hold_the_take_over_back():
    """lease.acquire reads the peer's fence in a thread of its own: a read that hangs costs that thread."""
    import threading
    import time

    from orchestrator.lease import PeerCheck

    release, calls = threading.Event(), []

    def hung() -> str:
        calls.append(1)
        release.wait(5)
        return ""

    check = PeerCheck(hung)
    assert check.result() == ""
    for _ in range(100):
        if calls:
            break
        time.sleep(0.01)
    assert check.result() == "" and len(calls) == 1  # answered at once, while the read still hangs
    check.stop()
    release.set()
    fenced = PeerCheck(lambda: "server1 re-read fenced")
    fenced.result()
    for _ in range(100):  # taken at a later try
        if fenced.result():
            break
        time.sleep(0.01)
    assert fenced.result() == "server1 re-read fenced"
    fenced.stop()


def test_the_fence_deadline_does_not_wait_for_a_hung_renewal():
    """The watchdog's check fences at the deadline while the renewing round is stuck in a keepalive
    (a frozen local etcd member answers nothing until its own deadline, or after a resume)."""
    import threading

    from orchestrator.lease import LeaseKeeper

    now = [1.0]
    fenced, journal, stuck, entered = [], [], threading.Event(), threading.Event()
    keeper = LeaseKeeper(ecfg(), fence=lambda why: fenced.append(why) or "read_only=1 verified", journal=journal.append,
                         clock=lambda: now[0], fresh_view=lambda: None)
    keeper.lease, keeper.holds, keeper.last_ok = 7, True, 0.0

    def hung_keepalive(lease, timeout=None):
        entered.set()
        stuck.wait(5)
        return 5

    keeper.client.keepalive = hung_keepalive
    round_ = threading.Thread(target=keeper.tick, daemon=True)
    round_.start()
    assert entered.wait(2)  # the round is inside its keepalive now, before the deadline
    assert keeper.check_deadline() > 0 and not fenced
    now[0] = tk.fence_at(0.0, 5.0) + 0.01
    keeper.check_deadline()
    assert len(fenced) == 1 and "has not renewed its lease" in fenced[0] and round_.is_alive()
    assert keeper.fence_due() is None  # fenced once: not again until it renews
    assert [e["event"] for e in journal] == ["token-self-fence"]
    stuck.set()
    round_.join(5)
