"""observe() reads both servers at once; a replica read after its source can look errant."""

from orchestrator import observe as obs
from orchestrator.model import NodeState

from .test_decide import cfg


def mnode(name, pos, state):
    n = int(name[-1])
    return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version="10.11.6-MariaDB", flavor="mariadb",
                     read_only=name == "server1", executed=pos, binlog_pos=pos, binlog_state=state)


def test_a_replica_ahead_of_an_earlier_read_of_its_source_is_read_again(monkeypatch):
    # server1 (me) applied 0-2-21, which server2 committed just after server2 was read.
    me = mnode("server1", "0-2-21", "0-1-10,0-2-21")
    stale_peer = mnode("server2", "0-2-20", "0-1-10,0-2-20")
    fresh_peer = mnode("server2", "0-2-22", "0-1-10,0-2-22")
    reads = []
    monkeypatch.setattr(obs, "observe_node", lambda server, flavor, semisync=False: reads.append(server) or fresh_peer)
    got_me, got_peer = obs.settle_errant(cfg(), {"server1": "s1", "server2": "s2"}, me, stale_peer)
    assert reads == ["s2"] and got_peer is fresh_peer and got_me is me


def test_a_master_ahead_of_its_replica_is_not_what_is_read_again(monkeypatch):
    """Only a replica can have errant GTIDs: the master's normal lead reads nobody again,
    and a replica read after the master's first read is settled by reading the master."""
    master = mnode("server2", "0-1-30", "0-1-30")
    master = NodeState(**{**master.__dict__, "read_only": False})
    replica = mnode("server1", "0-1-31", "0-1-31")  # applied 0-1-31 after server2 was read
    fresh_master = NodeState(**{**mnode("server2", "0-1-32", "0-1-32").__dict__, "read_only": False})
    reads = []
    monkeypatch.setattr(obs, "observe_node", lambda server, flavor, semisync=False: reads.append(server) or fresh_master)
    c = cfg()
    # this host is the master's (self server2): me=master, peer=replica
    c2 = type(c)(**{**c.__dict__, "self_name": "server2"})
    got_me, got_peer = obs.settle_errant(c2, {"server1": "s1", "server2": "s2"}, master, replica)
    assert reads == ["s2"] and got_me is fresh_master and got_peer is replica


def test_a_real_divergence_stays(monkeypatch):
    me = mnode("server1", "0-1-11", "0-1-11")
    peer = mnode("server2", "0-2-20", "0-1-10,0-2-20")
    monkeypatch.setattr(obs, "observe_node", lambda server, flavor, semisync=False: peer)
    got_me, got_peer = obs.settle_errant(cfg(), {"server1": "s1", "server2": "s2"}, me, peer)
    from orchestrator import flavors

    assert flavors.get("mariadb", me.version).errant(got_me, got_peer) == "0-1-11"


def test_nothing_read_again_when_nothing_looks_errant(monkeypatch):
    me = mnode("server1", "0-2-20", "0-1-10,0-2-20")
    peer = mnode("server2", "0-2-20", "0-1-10,0-2-20")
    monkeypatch.setattr(obs, "observe_node", lambda server, flavor, semisync=False: (_ for _ in ()).throw(AssertionError("read again")))
    assert obs.settle_errant(cfg(), {}, me, peer) == (me, peer)
