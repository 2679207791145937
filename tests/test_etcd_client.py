"""The etcd door (orchestrator/etcd.py) against a real three-member etcd cluster on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from orchestrator.config import Etcd
from orchestrator.etcd import EtcdClient, EtcdError

from .etcdtest import etcd_cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.etcd


def client(cluster, **kw) -> EtcdClient:
    return EtcdClient(Etcd(endpoints=tuple(cluster.endpoints), **kw))


def test_lease_grant_keepalive_revoke(etcd_cluster):
    c = client(etcd_cluster)
    lease = c.grant(5)
    assert 0 < c.time_to_live(lease) <= 5
    assert c.keepalive(lease) == 5
    c.put("/t/leased", "x", lease)
    assert c.get("/t/leased").lease == lease
    c.revoke(lease)
    assert c.get("/t/leased") is None  # the lease's keys go with it
    assert c.time_to_live(lease) == -1
    assert c.keepalive(lease) <= 0  # an expired lease is not renewed


def test_create_is_atomic_and_says_who_holds_it(etcd_cluster):
    c = client(etcd_cluster)
    lease = c.grant(10)
    results = []

    def race(name: str) -> None:
        results.append((name, EtcdClient(c.settings).create("/t/token", name, lease)))

    threads = [threading.Thread(target=race, args=(f"n{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [name for name, (ok, _) in results if ok]
    assert len(winners) == 1
    holder = c.get("/t/token")
    assert holder.value == winners[0]
    assert all(kv.value == winners[0] for _, (ok, kv) in results if not ok)
    # Release only at the revision read: a stale release cannot drop a newer holder's key.
    assert c.delete_if("/t/token", holder.mod_revision + 100)[0] is False
    ok, _ = c.swap("/t/token", holder.mod_revision, "other", lease)
    assert ok and c.get("/t/token").value == "other"
    assert c.delete_if("/t/token", holder.mod_revision)[0] is False  # the swap moved it on
    assert c.delete_if("/t/token", c.get("/t/token").mod_revision)[0] is True
    c.revoke(lease)


def test_prefix_members_and_unicode(etcd_cluster):
    c = client(etcd_cluster)
    c.put("/t/fleet/a/state/x", "é1")
    c.put("/t/fleet/b/state/y", "2")
    c.put("/t/fleet0", "outside")
    got = {kv.key: kv.value for kv in c.get_prefix("/t/fleet/")}
    assert got == {"/t/fleet/a/state/x": "é1", "/t/fleet/b/state/y": "2"}
    members = c.members()
    assert len(members) == 3
    assert sorted(u for _, urls in members for u in urls) == sorted(etcd_cluster.endpoints)


def test_a_dead_first_endpoint_fails_over(etcd_cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens: refused
    c = EtcdClient(Etcd(endpoints=(dead,) + tuple(etcd_cluster.endpoints)))
    c.put("/t/failover", "1")
    assert c.get("/t/failover").value == "1" and c.last_endpoint != dead


def test_a_hung_member_costs_its_share_not_the_call(etcd_cluster):
    # A port that accepts and never answers (a frozen member): the call still succeeds on
    # the next endpoint within its deadline.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        c = EtcdClient(Etcd(endpoints=(endpoint,) + tuple(etcd_cluster.endpoints), timeout=1.0))
        started = time.monotonic()
        c.put("/t/hung", "ok")
        assert time.monotonic() - started < 1.0
        only = EtcdClient(Etcd(endpoints=(endpoint,), timeout=0.5))
        started = time.monotonic()
        with pytest.raises(EtcdError, match="no member answered within 0.5s"):
            only.get("/t/hung")
        assert time.monotonic() - started < 0.9
    finally:
        hung.close()


def test_a_frozen_follower_under_calls(etcd_cluster):
    leader = etcd_cluster.leader()
    victim = next(m for m in etcd_cluster.members if m is not leader)
    c = client(etcd_cluster)
    c.last_endpoint = victim.url  # tried first
    etcd_cluster.freeze(victim)
    try:
        started = time.monotonic()
        lease = c.grant(5)
        assert c.keepalive(lease) == 5
        assert time.monotonic() - started < 2.0
        assert c.last_endpoint != victim.url
    finally:
        etcd_cluster.thaw(victim)
    etcd_cluster.wait_healthy()


def test_a_frozen_leader_costs_an_election(etcd_cluster):
    leader = etcd_cluster.leader()
    c = client(etcd_cluster)
    lease = c.grant(5)
    etcd_cluster.freeze(leader)
    try:
        started = time.monotonic()
        while True:
            try:
                assert c.keepalive(lease, timeout=1.0) == 5
                break
            except EtcdError:
                assert time.monotonic() - started < 5.0, "no new leader within 5 s"
        assert time.monotonic() - started < 5.0
    finally:
        etcd_cluster.thaw(leader)
    etcd_cluster.wait_healthy()


def test_auth_with_a_non_ascii_password_never_shows_it(etcd_cluster, tmp_path, caplog):
    import subprocess

    pw = "pässwörd-ü"
    root = client(etcd_cluster)
    ep = ",".join(etcd_cluster.endpoints)

    def ctl(*args: str, **kw) -> None:
        subprocess.run(["etcdctl", "--endpoints", ep, *args], check=True, capture_output=True, timeout=10, **kw)

    ctl("user", "add", "root", "--new-user-password", "rootpw")
    ctl("user", "add", "orch", "--interactive=false", input=(pw + "\n").encode())
    ctl("role", "add", "orch")
    ctl("role", "grant-permission", "orch", "--prefix=true", "readwrite", "/t/auth/")
    ctl("user", "grant-role", "orch", "orch")
    ctl("auth", "enable")
    try:
        good = client(etcd_cluster, user="orch", password=pw)
        good.put("/t/auth/k", "v")
        assert good.get("/t/auth/k").value == "v"
        with pytest.raises(EtcdError) as exc:
            client(etcd_cluster, user="orch", password="wrong").get("/t/auth/k")
        assert "wrong" not in str(exc.value) and pw not in str(exc.value) and "orch" in str(exc.value)
        with pytest.raises(EtcdError):
            root.get("/t/auth/k")  # no user: refused while auth is on
        with pytest.raises(EtcdError, match="permission denied"):
            good.put("/t/other", "v")
    finally:
        ctl("--user", "root:rootpw", "auth", "disable")
    assert pw not in caplog.text


def test_member_list_and_move_leader(etcd_cluster):
    """MoveLeader (etcdctl move-leader) through the gateway: sent to the leader, it hands leadership
    to the member named; sent to any other member, it is refused with a one-line error."""
    from orchestrator.etcd import member_list, move_leader

    c = client(etcd_cluster)
    members = member_list(c)
    assert sorted(m.name for m in members) == sorted(m.name for m in etcd_cluster.members)
    assert all(m.id and m.client_urls and m.peer_urls for m in members)
    leader = etcd_cluster.leader()
    target = next(m for m in members if m.name != leader.name)
    other = next(m for m in members if m.name not in (leader.name, target.name))
    with pytest.raises(EtcdError) as refused:
        move_leader(c, other.client_urls[0], target.id)
    assert refused.value.reached and "\n" not in str(refused.value)
    move_leader(c, leader.url, target.id)
    assert etcd_cluster.leader().name == target.name
    etcd_cluster.wait_healthy()
