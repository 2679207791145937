"""The HTTP API's router, pure (orchestrator/http_api.py): each check for each role and fault,
staleness, authentication, POST bodies, and the commands that forward to the peer's host."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestrator import http_api
from orchestrator.commands.pause import this_host_only
from orchestrator.commands.switchover import master_elsewhere
from orchestrator.http_api import Command, Effect, Request, Response, Snapshot, route
from orchestrator.model import ThreadState
from orchestrator.plan import PauseLocally, Plan, RecordPause

from .test_decide import cfg, down, node, repl, view

NOW = 1000.0
TOKEN = "s3cret-token-0123456789"
VIP = {"keepalived": {"vip": "10.0.0.100"}}


def snap(v, age=0.1, **kw) -> Snapshot:
    return Snapshot(v, NOW - age, **kw)


def get(path, s, c=None, token=TOKEN) -> Response:
    got = route(Request("GET", path), s, c or cfg(**VIP), token, NOW)
    assert isinstance(got, Response), got
    return got


def body(resp: Response):
    return json.loads(resp.body)


MASTER = view(node("server1", ro=False), node("server2", replica=repl(source="10.0.0.1")), holds_vip=True)
REPLICA = view(node("server1", replica=repl(source="10.0.0.2")), node("server2", ro=False), holds_vip=False)


# --- each check for each role ------------------------------------------------------------


def test_the_master_answers_200_on_master_and_health_503_on_replica():
    s = snap(MASTER)
    assert get("/master", s).status == 200 and body(get("/master", s))["role"] == "master"
    assert get("/primary", s).status == 200  # Patroni's name
    assert get("/health", s).status == 200
    r = get("/replica", s)
    assert r.status == 503 and "writable" in body(r)["reason"]


def test_a_replica_answers_200_on_replica_and_503_on_master():
    s = snap(REPLICA)
    m = get("/master", s)
    assert m.status == 503 and "read-only" in body(m)["reason"]
    r = get("/replica", s)
    assert r.status == 200 and body(r)["role"] == "replica" and body(r)["lag"] == 0
    assert get("/health", s).status == 200


def test_a_writable_node_without_the_vip_is_not_the_master():
    s = snap(replace(MASTER, holds_vip=False))
    r = get("/master", s)
    assert r.status == 503 and "does not hold VIP" in body(r)["reason"]


def test_master_without_vip_check_needs_only_writability():
    c = cfg()  # vip_check: false
    assert get("/master", snap(replace(MASTER, holds_vip=None)), c).status == 200
    # with a VIP configured, an unknown holder is not vouched for
    assert get("/master", snap(replace(MASTER, holds_vip=None))).status == 503


def test_the_etcd_seam_a_writable_vip_holder_without_the_token_is_not_the_master():
    assert get("/master", snap(MASTER, write_token=False)).status == 503
    assert get("/master", snap(MASTER, write_token=True)).status == 200
    assert get("/master", snap(MASTER, write_token=None)).status == 200  # no etcd


@pytest.mark.parametrize("replica, why", [
    (repl(source="10.0.0.2", lag=11), "lags 11s"),
    (repl(source="10.0.0.2", sql=ThreadState.STOPPED, errno=1062, error="Duplicate"), "SQL thread is stopped"),
    (repl(source="10.0.0.2", io=ThreadState.STOPPED), "IO thread is stopped"),
    (repl(source="10.0.0.2", lag=None), "lag is unknown"),
    (repl(source="10.0.0.9"), "not from server2"),
])
def test_replica_faults_are_503_with_the_read_backend_rule_reason(replica, why):
    v = replace(REPLICA, me=node("server1", replica=replica))
    r = get("/replica", snap(v))
    assert r.status == 503 and why in body(r)["reason"], body(r)


def test_errant_gtids_fail_the_replica_check():
    v = replace(REPLICA, me=node("server1", executed="0-1-12", replica=repl(source="10.0.0.2")),
                peer=node("server2", ro=False, executed="0-2-10"))
    r = get("/replica", snap(v))
    assert r.status == 503 and "errant" in body(r)["reason"]


def test_a_replica_whose_peer_is_unknown_still_serves_reads():
    v = replace(REPLICA, peer=down("server2"))
    assert get("/replica", snap(v)).status == 200  # as orch check --replica: errant GTIDs unchecked


def test_lag_override_replaces_max_lag_for_that_check_only():
    v = replace(REPLICA, me=node("server1", replica=repl(source="10.0.0.2", lag=5)))
    assert get("/replica", snap(v)).status == 200  # max_lag 10
    assert get("/replica?lag=4", snap(v)).status == 503
    assert get("/replica?lag=5", snap(v)).status == 200
    assert get("/replica?lag=x", snap(v)).status == 400
    assert get("/replica?lag=-1", snap(v)).status == 400


def test_a_fenced_node_without_replication_is_neither():
    v = view(node("server1"), node("server2", ro=False), holds_vip=False)
    assert get("/master", snap(v)).status == 503 and get("/replica", snap(v)).status == 503
    assert body(get("/health", snap(v)))["role"] == "fenced"


# --- faults: a server down, a stale observation ---------------------------------------------


def test_own_server_down_fails_every_check():
    v = view(down("server1"), node("server2", ro=False), holds_vip=True)
    for path in ("/health", "/master", "/replica"):
        r = get(path, snap(v))
        assert r.status == 503 and "does not answer" in body(r)["reason"], path


@pytest.mark.parametrize("path", ["/health", "/master", "/replica"])
def test_an_old_observation_vouches_for_nothing(path):
    """A hung server stalls the refresher, not the endpoint: the endpoint sees the age."""
    s = snap(MASTER if path != "/replica" else REPLICA, age=http_api.STALE_AFTER + 0.5)
    r = get(path, s)
    assert r.status == 503 and "old" in body(r)["reason"] and body(r)["observed_age"] == pytest.approx(http_api.STALE_AFTER + 0.5)
    assert get(path, snap(MASTER if path != "/replica" else REPLICA, age=http_api.STALE_AFTER - 0.5)).status == 200


def test_nothing_observed_yet():
    r = get("/health", Snapshot())
    assert r.status == 503 and "not observed" in body(r)["reason"]


def test_head_and_unknown_paths():
    assert isinstance(route(Request("HEAD", "/master"), snap(MASTER), cfg(**VIP), None, NOW), Response)
    assert get("/nope", snap(MASTER)).status == 404
    assert get("/switchover", snap(MASTER)).status == 405
    assert route(Request("DELETE", "/master"), snap(MASTER), cfg(**VIP), None, NOW).status == 405  # type: ignore[union-attr]


def test_status_history_page_and_metrics_are_effects():
    assert get("/status", Snapshot()).status == 503
    assert route(Request("GET", "/status"), Snapshot(full=MASTER), cfg(), None, NOW) == Effect("status")
    assert route(Request("GET", "/history?since=2h"), Snapshot(), cfg(), None, NOW) == Effect("history", "2h")
    assert route(Request("GET", "/"), Snapshot(), cfg(), None, NOW) == Effect("page")
    assert route(Request("GET", "/metrics"), Snapshot(), cfg(), None, NOW) == Effect("metrics")


# --- authentication and POST bodies ---------------------------------------------------------


def post(path, data=b"", auth=f"Bearer {TOKEN}", token=TOKEN, c=None):
    return route(Request("POST", path, auth, data), snap(MASTER), c or cfg(**VIP), token, NOW)


def test_posts_need_the_token():
    assert post("/switchover", auth="").status == 401  # type: ignore[union-attr]
    assert post("/switchover", auth="Bearer wrong").status == 401  # type: ignore[union-attr]
    assert post("/switchover", auth=f"Basic {TOKEN}").status == 401  # type: ignore[union-attr]
    assert post("/pause", auth=f"Bearer {TOKEN}x").status == 401  # type: ignore[union-attr]
    off = post("/resume", token=None)
    assert off.status == 403 and "token_file" in body(off)["error"]  # type: ignore[union-attr, arg-type]
    assert TOKEN.encode() not in off.body  # type: ignore[union-attr]
    assert post("/master").status == 405  # type: ignore[union-attr]


def test_authorized_compares_the_whole_token():
    assert http_api.authorized(f"Bearer {TOKEN}", TOKEN)
    assert http_api.authorized(f"bearer  {TOKEN} ", TOKEN)
    assert not http_api.authorized(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not http_api.authorized("Bearer ", TOKEN)
    assert not http_api.authorized(f"Bearer {TOKEN}", "")
    assert not http_api.authorized("Bearer é", TOKEN)


def test_post_bodies_become_orch_commands():
    got = post("/switchover", b'{"to": "server2", "by": "alice"}')
    assert got == Command("switchover", ("switchover", "--yes", "--to", "server2"), "alice", got.timeout)  # type: ignore[union-attr]
    got = post("/switchover", b'{"dry_run": true, "format": "json"}')
    assert isinstance(got, Command) and got.argv == ("switchover", "--dry-run", "--format", "json") and got.operator == "http"
    got = post("/pause", b'{"for": 1800, "reason": "upgrade"}')
    assert isinstance(got, Command) and got.argv == ("pause", "--yes", "--for", "1800", "--reason", "upgrade")
    got = post("/resume")
    assert isinstance(got, Command) and got.argv == ("resume", "--yes")


def test_promote_demote_and_ack_run_the_same_command_here():
    got = post("/promote", b'{"by": "alice", "from": "server2", "ignore_anti_flapping": true}')
    assert isinstance(got, Command) and got.argv == ("promote", "--yes", "--ignore-anti-flapping")
    assert (got.operator, got.asked_from) == ("alice", "server2")
    got = post("/promote", b'{"dry_run": true, "format": "json", "ignore_catchup": true, "force": true}')
    assert isinstance(got, Command) and got.argv == ("promote", "--dry-run", "--format", "json", "--ignore-catchup", "--force")
    got = post("/demote", b'{"rewind": true}')
    assert isinstance(got, Command) and got.argv == ("demote", "--yes", "--rewind") and got.operator == "http"
    got = post("/demote", b'{"dry_run": true}')
    assert isinstance(got, Command) and got.argv == ("demote", "--dry-run")
    got = post("/ack", b'{"dry_run": true, "format": "json", "from": "server2"}')
    assert isinstance(got, Command) and got.argv == ("ack", "--dry-run", "--format", "json")
    assert isinstance(post("/ack"), Command) and post("/ack").argv == ("ack", "--yes")  # type: ignore[union-attr]
    # --format json only goes with a dry run (a run that acts prints text)
    got = post("/promote", b'{"format": "json"}')
    assert isinstance(got, Command) and got.argv == ("promote", "--yes")
    # every action's timeout covers the lock wait and the catch-up of the command it runs
    c = cfg(**VIP)
    got = post("/promote")
    assert isinstance(got, Command) and got.timeout > c.failover.lock_timeout + c.failover.catchup_timeout


def test_the_client_address_goes_with_the_command():
    got = route(Request("POST", "/demote", f"Bearer {TOKEN}", b"{}", "10.0.0.1"), snap(MASTER), cfg(**VIP), TOKEN, NOW)
    assert isinstance(got, Command) and got.client == "10.0.0.1"


@pytest.mark.parametrize("path", ["/promote", "/demote", "/ack"])
def test_the_new_actions_need_the_token_and_a_post(path):
    assert post(path, auth="Bearer wrong").status == 401  # type: ignore[union-attr]
    assert post(path, token=None).status == 403  # type: ignore[union-attr]
    got = route(Request("GET", path), snap(MASTER), cfg(**VIP), TOKEN, NOW)
    assert isinstance(got, Response) and got.status == 405


@pytest.mark.parametrize("path, data, why", [
    ("/promote", b'{"rewind": true}', "unknown key"),
    ("/demote", b'{"ignore_catchup": true}', "unknown key"),
    ("/promote", b'{"ignore_catchup": 1}', "ignore_catchup: expected true or false"),
    ("/ack", b'{"format": "yaml"}', "format"),
    ("/ack", b'{"from": "a\\u0000b"}', "from"),
    ("/switchover", b'{"to": "server9"}', "not a node"),
    ("/switchover", b'{"force": true}', "unknown key"),
    ("/switchover", b"[1]", "JSON object"),
    ("/switchover", b"\xff", "not JSON"),
    ("/pause", b'{"for": "1h"}', "for: expected seconds"),
    ("/pause", b'{"for": true}', "for: expected seconds"),
    ("/pause", b'{"reason": "a\\nb"}', "reason"),
    ("/resume", b'{"dry_run": "yes"}', "dry_run"),
])
def test_bad_post_bodies_are_400_in_one_line(path, data, why):
    got = post(path, data)
    assert isinstance(got, Response) and got.status == 400 and why in body(got)["error"], got


def test_command_exit_codes_map_to_http_statuses():
    assert [http_api.command_status(c) for c in (0, 1, 2, 3, 70)] == [200, 409, 400, 409, 500]


# --- which host acts --------------------------------------------------------------------------


def test_a_switchover_asked_on_the_replica_host_goes_to_the_master_host():
    assert master_elsewhere(REPLICA, cfg(**VIP)) == "server2"
    assert master_elsewhere(MASTER, cfg(**VIP)) is None
    # no master to ask: the local preflight refuses and says why
    assert master_elsewhere(view(node("server1"), node("server2"), holds_vip=False), cfg()) is None
    assert master_elsewhere(view(node("server1"), down("server2"), holds_vip=False), cfg()) is None
    # this host holds the VIP (a promotion under way): it is the host that acts
    assert master_elsewhere(replace(REPLICA, holds_vip=True), cfg()) is None


def test_promote_and_demote_of_another_node_go_to_its_host(monkeypatch):
    from orchestrator.commands.roles import acting_host
    from orchestrator.errors import UsageError

    c = cfg(**VIP)
    assert acting_host(c, "server2", "promote") == "server2" and acting_host(c, "server1", "demote") == "server1"
    with pytest.raises(UsageError, match="not a node of this cluster"):
        acting_host(c, "server9", "promote")
    monkeypatch.setenv("ORCH_VIA_API", "1")  # asked through the API: never handed on again
    assert acting_host(c, "server1", "promote") == "server1"
    with pytest.raises(UsageError, match="orch acts only here"):
        acting_host(c, "server2", "promote")


def test_an_ack_kept_on_this_host_only_is_handed_to_the_other_host():
    from orchestrator.commands.ack import this_host_only as ack_here_only
    from orchestrator.plan import AckLocally, RecordPromotion

    assert ack_here_only(Plan("x", (AckLocally("/s", "run1"),)))
    assert not ack_here_only(Plan("x", (RecordPromotion("server2", "ack", "run1"),)))
    assert not ack_here_only(Plan("nothing to acknowledge"))


def test_the_journal_names_who_asked_through_the_api():
    from orchestrator.http_client import api_origin

    assert api_origin({"ORCH_OPERATOR": "alice"}) is None  # by hand: nothing to add
    assert api_origin({"ORCH_VIA_API": "1", "ORCH_OPERATOR": "alice", "ORCH_ASKED_FROM": "server2",
                       "ORCH_CLIENT": "10.0.0.2"}) == {"by": "alice", "from": "server2", "address": "10.0.0.2"}


def test_a_peer_plan_is_shown_as_the_local_one_would_be():
    from orchestrator.commands.roles import render_plan

    doc = {"node": "server2", "reason": "promoting server2", "warnings": ["paused"], "outcome": "act",
           "steps": [{"step": "Fence", "description": "fence server1"}, {"step": "SetWritable", "description": "open server2"}]}
    assert render_plan(doc) == "plan (server2): promoting server2\n  warning: paused\n  1. fence server1\n  2. open server2"
    assert render_plan({"reason": "nothing to do", "steps": []}).endswith("(no steps)")


def test_a_peer_answer_shows_what_it_printed_on_stdout_and_what_it_logged_on_stderr():
    """A command run by the other host looks as it would run here: its printed result on
    stdout, its log lines on stderr. An answer from an orch that does not tell them apart
    (no ``stderr`` key) is shown whole on stdout."""
    import io

    from orchestrator.http_client import PeerAnswer
    from orchestrator.http_server import command_answer

    printed, logged = "plan: promote server2\nresult: act\n", "2026-12-07 05:30:53,768 orch[9] INFO x orchestrator: opened\n"
    doc = json.loads(command_answer(cfg(), Command("promote", ("promote",), "me", 60.0), 0, printed, logged).body)
    assert doc["output"] == printed + logged and doc["stdout"] == printed and doc["stderr"] == logged
    answer = PeerAnswer(200, 0, doc["output"], None, doc["stderr"])
    out, err = io.StringIO(), io.StringIO()
    answer.show(out, err)
    assert out.getvalue() == printed and err.getvalue() == logged
    old = PeerAnswer(200, 0, "result: act")
    out, err = io.StringIO(), io.StringIO()
    old.show(out, err)
    assert out.getvalue() == "result: act\n" and err.getvalue() == ""


def test_a_pause_kept_on_this_host_only_is_handed_to_the_other_host():
    local = Plan("x", (PauseLocally("/s", "pause", 0.0, "", "me"),))
    shared = Plan("x", (RecordPause("server1", "pause", 0.0, "", "me"),))
    both = Plan("x", (RecordPause("server1", "resume", 0.0, "", "me"), PauseLocally("/s", "resume", 0.0, "", "me")))
    assert this_host_only(local) and not this_host_only(shared) and not this_host_only(both)


# --- the two servers' readings, paired (http_server.paired) -----------------------------------


def test_a_replica_read_after_its_master_is_not_errant():
    """Under write load the replica, read after the master's older reading, holds newer GTIDs:
    judged against a reading of itself finished before the master's began, it is not errant
    (it was, before the pairing: reads left the replica for the hung master's backup)."""
    from orchestrator.http_server import paired

    c = cfg(**VIP)
    master = node("server2", ro=False, executed="0-2-100")
    replica = lambda n: node("server1", executed=f"0-2-{n}", replica=repl(source="10.0.0.2"))  # noqa: E731
    mine = [(replica(99), 9.0, 9.01), (replica(100), 9.25, 9.26), (replica(103), 9.5, 9.51)]
    me, peer = paired(replica(103), mine, (master, 9.3, 9.31), c, 9.6)
    assert me.binlog_pos == "0-2-100" and peer is master
    assert get("/replica", snap(view(me, peer, holds_vip=False), age=0.1), c).status == 200
    # Unpaired, the same readings look errant: the race the pairing removes.
    r = get("/replica", snap(view(replica(103), master, holds_vip=False)), c)
    assert r.status == 503 and "errant" in body(r)["reason"]
    # A transaction of its own (errant) stays errant in every reading of it.
    own = lambda n: node("server1", executed=f"0-2-{n},1-1-5", binlog_pos=f"0-2-{n},1-1-5", replica=repl(source="10.0.0.2"))  # noqa: E731
    me, peer = paired(own(103), [(own(99), 9.0, 9.01), (own(100), 9.25, 9.26)], (master, 9.3, 9.31), c, 9.6)
    r = get("/replica", snap(view(me, peer, holds_vip=False)), c)
    assert r.status == 503 and "errant" in body(r)["reason"]


def test_a_peer_not_read_lately_or_not_after_this_node_counts_as_not_answering():
    from orchestrator.http_server import PEER_STALE, paired

    c = cfg(**VIP)
    me = node("server1", replica=repl(source="10.0.0.2"))
    master = node("server2", ro=False)
    _, peer = paired(me, [(me, 1.0, 1.1)], (master, 2.0, 2.1), c, 2.1 + PEER_STALE + 0.1)
    assert not peer.reachable and "not observed lately" in peer.error
    _, peer = paired(me, [(me, 3.0, 3.1)], (master, 2.0, 2.1), c, 3.2)
    assert not peer.reachable and "no reading" in peer.error
    _, peer = paired(me, [], None, c, 3.2)
    assert not peer.reachable and "never" in peer.error


# --- the brute-force limit on the token (http_api.gate) ----------------------------------------


def attempt(strikes, token_given, now, path="/pause"):
    return http_api.gate(strikes, Request("POST", path, f"Bearer {token_given}", b"", "10.0.0.9"), TOKEN, now)


def test_five_failures_within_a_minute_lock_the_address_out_even_with_the_right_token():
    strikes = None
    for i in range(http_api.AUTH_FAILURES - 1):
        got = attempt(strikes, "wrong", NOW + i)
        assert got.failed and not got.locked_out and got.answer is None  # routed: the router answers 401
        strikes = got.strikes
    got = attempt(strikes, "wrong", NOW + 10)
    assert got.failed and got.locked_out and got.answer is None
    strikes = got.strikes
    locked = attempt(strikes, TOKEN, NOW + 11)  # the right token: refused all the same, not counted
    assert locked.answer is not None and locked.answer.status == 429 and not locked.failed and not locked.locked_out
    assert dict(locked.answer.headers)["Retry-After"] == str(int(http_api.AUTH_LOCKOUT - 1))
    assert TOKEN.encode() not in locked.answer.body
    again = attempt(locked.strikes, "wrong", NOW + 12)  # a failure while locked out: 429, no second lock-out
    assert again.answer is not None and again.answer.status == 429 and not again.locked_out
    after = attempt(again.strikes, TOKEN, NOW + 10 + http_api.AUTH_LOCKOUT + 0.1)  # the lock-out over
    assert after.answer is None and not after.failed and after.strikes is None


def test_failures_older_than_the_window_do_not_count():
    strikes = None
    for i in range(20):  # one failure every 20 s: never 5 within 60 s
        got = attempt(strikes, "wrong", NOW + 20 * i)
        assert got.failed and not got.locked_out, i
        strikes = got.strikes
    assert strikes is not None and len(strikes.failures) == 3


def test_a_success_forgets_the_failures():
    strikes = None
    for i in range(http_api.AUTH_FAILURES - 1):
        strikes = attempt(strikes, "wrong", NOW + i).strikes
    assert attempt(strikes, TOKEN, NOW + 5).strikes is None
    assert not attempt(None, "wrong", NOW + 6).locked_out


def test_the_limit_guards_only_the_token():
    many = http_api.Strikes((), NOW + 100)  # a locked-out address
    for req in (Request("GET", "/master", "", b"", "10.0.0.9"), Request("POST", "/master", "Bearer x", b"", "10.0.0.9")):
        got = http_api.gate(many, req, TOKEN, NOW)
        assert got.answer is None and not got.failed
    # no token configured: the POSTs are off (403), there is nothing to guess
    got = http_api.gate(None, Request("POST", "/pause", "Bearer x", b"", "10.0.0.9"), None, NOW)
    assert got.answer is None and not got.failed


def test_the_addresses_remembered_are_bounded():
    book = {f"10.0.{i // 250}.{i % 250}": http_api.Strikes((NOW - 100 + i * 0.01,)) for i in range(5000)}
    book["10.9.9.9"] = http_api.Strikes((), NOW + 200)  # locked out: kept
    book["10.9.9.8"] = http_api.Strikes((NOW - 61,))  # nothing left to remember: dropped
    kept = http_api.forget_old(book, NOW, keep=100)
    assert len(kept) == 100 and "10.9.9.9" in kept and "10.9.9.8" not in kept
