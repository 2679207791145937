"""Failover under hostile faults, on a real MariaDB pair, through the real `orch` command.

Each test is a fault production sees every year: a replica with both replication threads
stopped, a master busy with a long write, a hung master, a server that answers unusably,
a refused MASTER that keepalived never repeats, a keepalived that woke up holding the VIP
on the node that lacks the newest writes, a peer opened behind the promoter's back.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_failover import Sampler, count, insert_rows

pytestmark = pytest.mark.mariadb

HELD_VIP = "127.0.0.77"  # every 127/8 address is local: "this host holds the VIP"
ELSEWHERE_VIP = "192.0.2.77"  # TEST-NET-1, never local: "the VIP is on the other host"


def vip_config(tmp_path: Path, s1, s2, node: str, vip: str, **failover) -> tuple:
    """A config for one host: its own state_dir and a VIP it holds or not."""
    state = tmp_path / f"state-{node}"
    d = t.config_dict(s1, s2, str(state), keepalived={"vip": vip})
    d["self"] = node
    d["failover"] = {"catchup_timeout": 5, "block_seconds": 0, **failover}
    d["maintainer"] = {"interval": 1}
    return t.write_config(tmp_path / f"orch-{node}.yaml", d), str(state)


def wait_received(replica, master, timeout: float = 10) -> None:
    target = t.gtid(master, "gtid_binlog_pos")
    deadline = time.monotonic() + timeout
    while t.slave_status(replica)["Gtid_IO_Pos"] != target:
        assert time.monotonic() < deadline, "the replica did not receive everything"
        time.sleep(0.05)


def hold_row(server, row_id: int):
    """A session holding a row lock on ``server``: replicated changes to that row wait for it."""
    conn = server.connect()
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT * FROM test.t WHERE id = %s FOR UPDATE", (row_id,))
    return conn


def writable_samples(sampler: Sampler, index: int = 0):
    return [row[index] for _, row in sampler.samples if row[index] is not None and row[index][0] == 0]


# --------------------------------------------------------------------------- 1. short promotion


def test_both_threads_stopped_relay_log_applied_not_discarded(cluster):
    """Measured before: START SLAVE SQL_THREAD in GTID mode with both threads stopped deleted
    the relay log, and orch opened writes with 0 of the 50 received rows (exit 0)."""
    s1, s2, cfg, state = cluster
    s2.sql("STOP SLAVE SQL_THREAD")
    insert_rows(s1, 1, 50)
    wait_received(s2, s1)
    s2.sql("STOP SLAVE")  # both threads stopped, 50 transactions received and not applied
    assert count(s2) == 0
    s1.kill()
    with Sampler(s2) as sampler:
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        time.sleep(0.1)
    assert r.code == 0, r
    assert count(s2) == 50, "the promoted server lost received transactions"
    assert not t.read_only(s2) and t.slave_status(s2) is None
    seen = writable_samples(sampler)
    assert seen and all(n == 50 for _, n in seen), "writable before the relay log was applied"
    end = [rec for rec in t.journal(state) if rec.get("phase") == "end"][-1]
    assert any(st["step"] == "PreserveRelayLog" and st["result"] == "ok" for st in end["steps"]), end


def test_both_threads_stopped_peer_alive_and_ahead(cluster):
    """Relay log kept and drained, then the rest fetched from the (read-only) peer."""
    s1, s2, cfg, state = cluster
    s2.sql("STOP SLAVE SQL_THREAD")
    insert_rows(s1, 1, 30)
    wait_received(s2, s1)
    s2.sql("STOP SLAVE")
    insert_rows(s1, 31, 20)  # never received by server2
    s1.sql("SET GLOBAL read_only = 1")
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    assert count(s2) == 50 and not t.read_only(s2) and t.read_only(s1)


# --------------------------------------------------------------------------- 2. bounded fence


def test_fence_behind_a_long_write_kills_it_within_the_deadline(cluster, tmp_path):
    """Measured before: SET GLOBAL read_only=1 waited behind a 60 s UPDATE, MASTER failed after
    15 s, the old master stayed writable and the VIP holder read-only."""
    s1, s2, _, state = cluster
    d = t.config_dict(s1, s2, state)
    d["failover"] = {"catchup_timeout": 5, "fence_timeout": 1, "block_seconds": 0}
    cfg = t.write_config(tmp_path / "fence.yaml", d)
    insert_rows(s1, 1, 5)
    lab.wait_gtid_equal(s1, s2)
    writer = s1.connect()
    errors = []

    def long_update() -> None:
        try:
            with writer.cursor() as cur:
                cur.execute("UPDATE test.t SET v = 'long write' WHERE id < 1000 AND SLEEP(60) = 0")
        except Exception as exc:  # killed: the client sees its connection end
            errors.append(exc)

    th = threading.Thread(target=long_update, daemon=True)
    th.start()
    t.wait_running(s1, "UPDATE test.t SET v = 'long write'")
    started = time.monotonic()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=30)
    elapsed = time.monotonic() - started
    th.join(10)
    assert r.code == 0, r
    assert t.read_only(s1) and not t.read_only(s2), "exactly one writable master: the VIP holder"
    assert elapsed < 10, f"the fence was not bounded: {elapsed:.1f}s"
    assert errors, "the blocking UPDATE was not killed"
    assert "killed session" in r.output and "'root'" in r.output and "digest" in r.output, r.output
    assert "long write" not in r.output, "a statement's values must not be logged, only its shape"
    assert count(s1) == 5 and s1.query_value("SELECT COUNT(*) FROM test.t WHERE v = 'long write'") == 0
    end = [rec for rec in t.journal(state) if rec.get("phase") == "end"][-1]
    fence = next(st for st in end["steps"] if st["step"] == "Fence")
    assert "blocking session" in fence["detail"], fence


# --------------------------------------------------------------------------- 3. hung peer


def test_hung_peer_costs_the_handshake_timeout_not_the_read_timeout(cluster, tmp_path):
    """Measured before: a SIGSTOPped peer made MASTER take 15 s (35 s with the default catch-up)."""
    s1, s2, cfg, state = cluster
    insert_rows(s1, 1, 10)
    lab.wait_gtid_equal(s1, s2)
    s1.pause()
    try:
        started = time.monotonic()
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=60)
        elapsed = time.monotonic() - started
        assert r.code == 0, r
        assert not t.read_only(s2) and count(s2) == 10
        # connect_timeout (1 s) + 1 s + an immediate catch-up, plus process start-up
        assert elapsed < 8, f"MASTER with a hung peer took {elapsed:.1f}s (the read timeout would be 15 s)"
    finally:
        s1.resume()
    # The hung master wakes up writable: the maintainer on its host (no VIP there) fences it.
    c1, _ = vip_config(tmp_path, s1, s2, "server1", ELSEWHERE_VIP)
    assert not t.read_only(s1), "precondition: the woken master is still writable"
    r = t.orch(c1, None, "maintain", "--once")
    assert r.code == 0, r
    assert t.read_only(s1) and not t.read_only(s2)
    assert "both servers are writable" in r.output


# --------------------------------------------------------------------------- 7. alive but unusable


def _set_orch_password(server, password: str) -> None:
    conn = server.connect()
    with conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")
        cur.execute(f"ALTER USER '{lab.ORCH_CREDENTIALS.user}'@'%%' IDENTIFIED BY %s", (password,))
    conn.close()


def test_peer_refusing_login_blocks_promotion(cluster):
    """An authentication failure is an alive server (it may take writes), not a dead one."""
    s1, s2, cfg, state = cluster
    hosts = s1.sql(f"SELECT Host FROM mysql.user WHERE User = '{lab.ORCH_CREDENTIALS.user}'")
    assert hosts and hosts[0]["Host"] == "%", hosts
    _set_orch_password(s1, "changed-by-someone")
    try:
        for args in (("notify", "INSTANCE", "VI_1", "MASTER", "100"), ("promote", "--force", "--yes")):
            r = t.orch(cfg, "server2", *args)
            assert r.code == 1, r
            assert "alive but cannot be fenced" in r.output and "1045" in r.output, r.output
            assert t.read_only(s2) and not t.read_only(s1)
        # BACKUP on a server orch cannot log in to: it may still take writes, so not "nothing to fence".
        r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
        assert r.code == 1 and "cannot fence server1" in r.output, r
    finally:
        _set_orch_password(s1, lab.ORCH_CREDENTIALS.password)


class Proxy:
    """A TCP forwarder to a server that can stop accepting while open connections flow on."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop_accepting(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); later connects are refused
        except OSError:
            pass
        self.listener.close()

    def close(self) -> None:
        self.stop_accepting()
        for s in self.socks:
            s.close()


def test_replica_still_receiving_proves_the_master_alive(cluster, tmp_path):
    """orch cannot connect to the master (refused), but server2's IO thread keeps receiving
    heartbeats from it: it is alive and may take writes, so no promotion."""
    s1, s2, _, state = cluster
    proxy = Proxy(s1.port)
    try:
        s2.sql("STOP SLAVE")
        s2.sql(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USE_GTID=slave_pos, MASTER_HEARTBEAT_PERIOD=0.5",
            (proxy.port,),
        )
        s2.sql("START SLAVE")
        lab.wait_replica_running(s2)
        d = t.config_dict(s1, s2, state)
        d["nodes"]["server1"]["port"] = proxy.port
        cfg = t.write_config(tmp_path / "proxy.yaml", d)
        proxy.stop_accepting()  # new connections refused; the IO thread's connection flows on
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 1, r
        assert "still receiving from it" in r.output, r.output
        assert t.read_only(s2) and not t.read_only(s1)
        # Once the source is really gone (its connections cut), the same event promotes.
        proxy.close()
        time.sleep(0.3)
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 0, r
        assert not t.read_only(s2)
    finally:
        proxy.close()


# --------------------------------------------------------------------------- 4. the maintainer's invariant


def backlog_then_master_killed(s1, s2):
    """server2 received 201 transactions it cannot apply yet (a session of the returned
    connection holds the row the first one updates), then server1 is killed."""
    insert_rows(s1, 1, 3)
    lab.wait_gtid_equal(s1, s2)
    holder = hold_row(s2, 1)  # the next replicated UPDATE waits: the catch-up cannot finish
    s1.sql("UPDATE test.t SET v = 'late' WHERE id = 1")
    insert_rows(s1, 4, 200)
    wait_received(s2, s1)
    s1.kill()
    return holder


def test_refused_master_is_retried_by_the_maintainer(cluster, tmp_path):
    """Measured before: after a catch-up timeout the VIP holder stayed read-only for good
    (keepalived sends no second MASTER), with every row applied soon after."""
    s1, s2, _, _ = cluster
    c2, state2 = vip_config(tmp_path, s1, s2, "server2", HELD_VIP, catchup_timeout=0.5)
    holder = backlog_then_master_killed(s1, s2)
    try:
        r = t.orch(c2, None, "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 1 and "catch-up timed out" in r.output, r
        r = t.orch(c2, None, "maintain", "--once")
        assert t.read_only(s2), "promoted short"
        assert "ERROR" in r.output and "holds VIP" in r.output and "catch-up timed out" in r.output, r.output
    finally:
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 30
    while t.read_only(s2):
        assert time.monotonic() < deadline, "the maintainer never promoted the VIP holder"
        r = t.orch(c2, None, "maintain", "--once")
        time.sleep(0.2)
    assert count(s2) == 203 and s2.query_value("SELECT v FROM test.t WHERE id = 1") == "late"
    assert t.slave_status(s2) is None
    ends = [rec for rec in t.journal(state2) if rec.get("phase") == "end" and rec["event"] == "MASTER"]
    assert [rec["result"] for rec in ends][-1] == "act" and "refused" in [rec["result"] for rec in ends]


def test_vip_on_the_stale_node_replicates_the_newer_peer_then_opens(cluster, tmp_path):
    """keepalived frozen on the master: server2 took the VIP and 40 acknowledged rows, then the
    woken server1 kept the VIP; both ended read-only, the rows only on server2 (measured)."""
    s1, s2, cfg, _ = cluster
    insert_rows(s1, 1, 10)
    lab.wait_gtid_equal(s1, s2)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")  # fences server1
    assert r.code == 0 and t.read_only(s1), r
    insert_rows(s2, 11, 40)  # acknowledged on server2 only
    s2.sql("SET GLOBAL read_only = 1")  # server2 lost the VIP and fenced itself (BACKUP)
    c1, state1 = vip_config(tmp_path, s1, s2, "server1", HELD_VIP)
    c2, _ = vip_config(tmp_path, s1, s2, "server2", ELSEWHERE_VIP)
    r = t.orch(c1, None, "maintain", "--once")
    assert r.code == 0, r
    assert not t.read_only(s1) and t.read_only(s2)
    assert count(s1) == 50, "the new master lacks rows acknowledged on its peer"
    assert t.slave_status(s1) is None
    # server2's maintainer completes the rejoin: the pair converges without an operator.
    r = t.orch(c2, None, "maintain", "--once")
    assert r.code == 0, r
    insert_rows(s1, 51, 5)
    lab.wait_gtid_equal(s1, s2)
    assert count(s2) == 55 and t.slave_status(s2)["Slave_SQL_Running"] == "Yes"


def test_notify_that_cannot_get_the_lock_is_handed_to_the_maintainer(cluster, tmp_path):
    s1, s2, _, _ = cluster
    c2, state2 = vip_config(tmp_path, s1, s2, "server2", HELD_VIP, lock_timeout=0.3)
    os.makedirs(state2, exist_ok=True)
    fd = os.open(os.path.join(state2, "orch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds the lock for longer than lock_timeout
    try:
        s1.kill()
        r = t.orch(c2, None, "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 3, r
        assert "handed to the maintainer" in r.output
        pending = json.loads(Path(state2, "pending-event.json").read_text())
        assert pending["event"] == "MASTER"
        assert t.read_only(s2)
        st = t.orch(c2, None, "status", "--format", "json")
        assert json.loads(st.stdout)["pending_event"]["event"] == "MASTER", st
        assert "pending: a MASTER event" in t.orch(c2, None, "status").stdout
    finally:
        os.close(fd)
    r = t.orch(c2, None, "maintain", "--once")
    assert r.code == 0, r
    assert not t.read_only(s2) and not Path(state2, "pending-event.json").exists()
    assert "handed-over MASTER" in r.output


# --------------------------------------------------------------------------- 5. re-check before opening


def test_peer_opened_during_the_catch_up_aborts_the_promotion(cluster, tmp_path):
    """The peer's state is read again right before writes open: two writers never."""
    s1, s2, cfg, _ = cluster
    insert_rows(s1, 1, 3)
    lab.wait_gtid_equal(s1, s2)
    holder = hold_row(s2, 1)  # server2's SQL thread waits for the row, and so the catch-up
    s1.sql("UPDATE test.t SET v = 'late' WHERE id = 1")
    s1.sql("SET GLOBAL read_only = 1")  # read-only when orch observes it
    result = {}

    def promote() -> None:
        result["r"] = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=30)

    th = threading.Thread(target=promote)
    th.start()
    # Once orch waits for the catch-up (its MASTER_GTID_WAIT runs on server2), it has observed
    # server1 read-only: waited for, not slept on (a slow start would have it see server1 open).
    deadline = time.monotonic() + 25
    while not s2.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT MASTER_GTID_WAIT(%'"):
        assert th.is_alive() and time.monotonic() < deadline, f"orch never waited for the catch-up: {result}"
        time.sleep(0.02)
    s1.sql("SET GLOBAL read_only = 0")  # someone opened server1 meanwhile
    holder.rollback()
    holder.close()
    th.join(30)
    r = result["r"]
    assert r.code == 1, r
    assert "server1 was opened for writes meanwhile" in r.output, r.output
    assert t.read_only(s2) and not t.read_only(s1), "server2 must stay read-only"
    st = t.slave_status(s2)
    assert st["Slave_SQL_Running"] == "Yes", "an aborted promotion leaves replication as it was"


def test_vip_gone_during_the_catch_up_aborts_the_promotion(cluster):
    """The executor's VIP re-check, on real servers (the VIP is simply not on this host)."""
    from orchestrator import config as config_mod
    from orchestrator.db import open_servers
    from orchestrator.errors import Refused
    from orchestrator.execute import Executor
    from orchestrator.plan import Plan, Recheck, SetWritable

    s1, s2, cfg, _ = cluster
    c = config_mod.load(cfg, "server2")
    servers = open_servers(c)
    try:
        result = Executor(c, servers).run(Plan("test", (Recheck("server2", "server1", ELSEWHERE_VIP), SetWritable("server2"))))
        assert isinstance(result.error, Refused) and "left this host" in str(result.error)
        assert t.read_only(s2)
        result = Executor(c, servers).run(Plan("test", (Recheck("server2", None, HELD_VIP),)))
        assert result.error is None, result.results
    finally:
        for s in servers.values():
            s.close()


# --------------------------------------------------------------------------- 11. status


def test_status_shows_no_errant_gtids_for_a_master_ahead_of_its_replica(cluster):
    s1, s2, cfg, _ = cluster
    s2.sql("STOP SLAVE")
    insert_rows(s1, 1, 3)
    r = t.orch(cfg, "server1", "status", "--format", "json")
    assert r.code == 0, r
    nodes = {n["name"]: n for n in json.loads(r.stdout)["nodes"]}
    assert nodes["server1"]["role"] == "master" and not nodes["server1"]["errant_gtids"]
    assert nodes["server2"]["errant_gtids"] in ("", None) or nodes["server2"]["errant_gtids"] == "none"
    s2.sql("START SLAVE")


def test_server_frozen_behind_a_kept_connection_is_down_not_alive(cluster):
    """The maintainer keeps connections between passes: a statement that times out on one
    is retried over a new handshake, so a frozen server counts as down (its handshake times
    out), not as alive-but-unusable (which would block every promotion)."""
    from orchestrator import config as config_mod
    from orchestrator.db import open_servers
    from orchestrator.observe import observe_node

    s1, s2, cfg, _ = cluster
    c = config_mod.load(cfg, "server2")
    servers = open_servers(c)
    try:
        assert observe_node(servers["server1"], "auto").reachable
        assert servers["server1"].connected
        s1.pause()
        time.sleep(0.2)  # SIGSTOP reaches every thread of it
        try:
            state = observe_node(servers["server1"], "auto")
        finally:
            s1.resume()
        assert state.down, state
        assert "no handshake" in state.error, state.error
        assert observe_node(servers["server1"], "auto").reachable  # and back once it answers
    finally:
        for s in servers.values():
            s.close()


def test_torn_replication_metadata_after_a_crash_is_reset_and_the_node_rejoins(cluster):
    """Found by the randomized fault test: a replica killed while it wrote master.info comes
    back with the file torn; every CHANGE MASTER then fails (1201) until it is reset."""
    s1, s2, cfg, _ = cluster
    insert_rows(s1, 1, 5)
    lab.wait_gtid_equal(s1, s2)
    s2.stop()
    info = Path(s2.datadir) / "master.info"
    info.write_text(info.read_text()[:7])  # what a kill -9 mid-write leaves
    s2.start()
    assert t.slave_status(s2) is None, "precondition: the server cannot read its replication metadata"
    insert_rows(s1, 6, 5)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0, r
    assert "metadata unreadable" in r.output
    lab.wait_gtid_equal(s1, s2)
    st = t.slave_status(s2)
    assert st["Slave_IO_Running"] == "Yes" and st["Slave_SQL_Running"] == "Yes" and count(s2) == 10


# --------------------------------------------------------------------------- a stop that waits on the old master


def test_replication_still_stopping_after_opening_is_reported_not_a_failed_promotion(cluster, tmp_path):
    """Measured before: with the old master frozen (port open, nothing answers) and semi-sync
    on, STOP SLAVE after opening writes waited past read_timeout (a semi-sync replica's IO
    thread, when stopped, connects to its master to end the master's dump thread, and that
    connect waits for a greeting that never comes) and the run ended `MASTER failed` with the
    node writable. Now the run succeeds and says what it left (writes open, replication still
    stopping), the journal agrees, and the maintainer removes the replication once it can."""
    s1, s2, _, _ = cluster
    c2, state2 = vip_config(tmp_path, s1, s2, "server2", HELD_VIP)
    # STOP SLAVE then takes about 2 s (the replica's connect to end the dump thread gives up):
    # a 1 s read_timeout makes it outlast the bound every time, not one run in five.
    raw = __import__("yaml").safe_load(Path(c2).read_text())
    raw["mysql"]["read_timeout"] = 1
    c2 = t.write_config(Path(c2), raw)
    for s in (s1, s2):
        s.sql("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
    s2.sql("STOP SLAVE IO_THREAD")
    s2.sql("START SLAVE IO_THREAD")  # a semi-sync replica from now on
    insert_rows(s1, 1, 10)
    lab.wait_gtid_equal(s1, s2)
    s1.pause()
    try:
        time.sleep(0.2)
        r = t.orch(c2, None, "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=60)
        assert r.code == 0, r
        assert not t.read_only(s2) and count(s2) == 10
        assert "still stopping" in r.output, r.output
        end = [e for e in t.journal(state2) if e.get("phase") == "end" and e["event"] == "MASTER"][-1]
        assert end["result"] == "act" and not end.get("error"), end
        by_step = {s["step"]: s for s in end["steps"]}
        assert by_step["SetWritable"]["result"] == "ok"
        assert by_step["StopReplica"]["result"] == "warning" and "still stopping" in by_step["StopReplica"]["detail"]
        assert by_step["ResetReplica"]["result"] == "skipped"
        s2.sql("INSERT INTO test.t (id, v) VALUES (11, 'after')")  # the new master takes writes meanwhile
    finally:
        s1.resume()
    # The maintainer on the VIP holder finishes the job: no replication left on the master.
    s1.kill()
    deadline = time.monotonic() + 90
    while t.slave_status(s2) is not None:
        assert time.monotonic() < deadline, "the maintainer never removed the new master's replication"
        t.orch(c2, None, "maintain", "--once", timeout=60)
        time.sleep(0.5)
    assert not t.read_only(s2) and count(s2) == 11


# --------------------------------------------------------------------------- a host that wakes up


def test_woken_stale_master_fences_itself_hands_the_vip_over_and_rolls_its_tail_back(cluster, tmp_path):
    """Measured before (issue: a host that wakes up must not win over newer history): the whole
    master host frozen 10 s, server2 promoted and acknowledged 833 writes; server1 resumed still
    writable, took the VIP back (higher priority), server2's BACKUP fenced server2, and server1's
    maintainer switched its semi-sync wait off ("the replica is gone and the witness answers"):
    server1 took writes again and the 833 acknowledged rows were not on the master.

    Now: server1's maintainer sees itself stale (server2, not its replica, has transactions it
    lacks; its own commits since waited for a semi-sync acknowledgement that never came), keeps
    the wait on, fences itself, points itself at server2, hands the VIP over through the track
    file and rolls its unacknowledged tail back (proven, saved). server2's MASTER then opens
    server2 without following server1's tail, and server1 replicates every acknowledged row."""
    from .test_semisync import enable, insert_in_thread

    s1, s2, _, _ = cluster
    for s in (s1, s2):
        s.sql("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
    enable(s1, s2)
    insert_rows(s1, 1, 10)
    lab.wait_gtid_equal(s1, s2)
    track = tmp_path / "keepalived.track"
    track.write_text("0\n")
    semi = {"semi_sync": True, "witness": "127.0.0.1"}
    c1, state1 = vip_config(tmp_path, s1, s2, "server1", HELD_VIP, **semi)
    c2, state2 = vip_config(tmp_path, s1, s2, "server2", HELD_VIP, **semi)
    d1 = __import__("yaml").safe_load(Path(c1).read_text())
    d1["keepalived"]["track_file"] = str(track)
    c1 = t.write_config(Path(c1), d1)
    s1.pause()  # the whole master host freezes: its server still writable, its wait still on
    try:
        time.sleep(0.2)
        r = t.orch(c2, None, "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=60)
        assert r.code == 0 and not t.read_only(s2), r
        insert_rows(s2, 11, 40)  # acknowledged by server2 (its wait is off: no replica yet)
    finally:
        s1.resume()
    assert not t.read_only(s1), "precondition: the woken master is still writable"
    # A client commits on the woken server1: written to its binlog, then waits for an ack.
    out: dict = {}
    blocked = insert_in_thread(s1, 9001, out)
    time.sleep(0.5)
    assert 9001 not in out, f"precondition: server1's commit waits for a semi-sync acknowledgement: {out}"
    # keepalived moved the VIP back to server1: server2's BACKUP fences server2 (its tail is errant
    # for server1: it stays fenced).
    c2b, _ = vip_config(tmp_path, s1, s2, "server2", ELSEWHERE_VIP, **semi)
    t.orch(c2b, None, "notify", "INSTANCE", "VI_1", "BACKUP", "100", timeout=60)
    assert t.read_only(s2)
    r = t.orch(c1, None, "maintain", "--once", timeout=120)
    assert r.code == 0, r
    assert "stale" in r.output, r.output
    assert "stop waiting" not in r.output, "the stale master's semi-sync wait must stay on"
    assert t.read_only(s1), "the stale master fenced itself"
    assert track.read_text().strip() == "1", "the VIP is handed over to the newer history"
    blocked.join(10)
    assert isinstance(out.get(9001), Exception), f"the blocked commit was never acknowledged: {out}"
    ends = [e for e in t.journal(state1) if e.get("phase") == "end" and e.get("event") == "STALE"]
    assert ends and ends[-1]["result"] == "act", ends
    # The VIP reaches server2: its MASTER opens it with its own history.
    c2, _ = vip_config(tmp_path, s1, s2, "server2", HELD_VIP, **semi)
    r = t.orch(c2, None, "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=60)
    assert r.code == 0 and not t.read_only(s2), r
    insert_rows(s2, 51, 5)
    lab.wait_gtid_equal(s2, s1)
    assert count(s1) == count(s2) == 55, "every acknowledged row on both, the unacknowledged one on neither"
    assert s2.query_value("SELECT COUNT(*) FROM test.t WHERE id = 9001") == 0
    assert t.read_only(s1) and not t.read_only(s2)
    assert t.slave_status(s1)["Slave_SQL_Running"] == "Yes" and t.slave_status(s2) is None
    t.assert_no_secrets(r.output)


def test_long_running_maintainer_retries_a_timed_out_catch_up_as_soon_as_it_is_applied(cluster, tmp_path):
    """Measured before: MASTER refused for a catch-up timeout, maintainer running: the VIP
    holder became writable 62 s later although its backlog applied in a few seconds (a refused
    plan was retried once a minute). The long-running maintainer now retries it on the first
    pass that shows the backlog applied; an identical refusal is still journaled once a minute."""
    from orchestrator import config as config_mod
    from orchestrator.maintainer import Maintainer

    from orchestrator.commands.common import ensure_state_dir

    s1, s2, _, _ = cluster
    c2, state2 = vip_config(tmp_path, s1, s2, "server2", HELD_VIP, catchup_timeout=0.5)
    holder = backlog_then_master_killed(s1, s2)
    loaded = config_mod.load(c2)
    ensure_state_dir(loaded)
    m = Maintainer(loaded)
    try:
        m.run_pass()
        m.run_pass()
        assert t.read_only(s2), "promoted short"
        refusals = [e for e in t.journal(state2) if e.get("phase") == "end" and e.get("result") == "refused"]
        assert len(refusals) == 1, "an identical refusal is journaled once, not every pass"
        holder.rollback()
        holder.close()
        holder = None
        applied_at = None
        deadline = time.monotonic() + 20
        while t.read_only(s2):
            assert time.monotonic() < deadline, "the maintainer did not retry the promotion once the backlog was applied"
            if applied_at is None and count(s2) == 203:
                applied_at = time.monotonic()
            m.run_pass()
            time.sleep(0.2)
        opened_at = time.monotonic()
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
        m.close()
    assert count(s2) == 203 and s2.query_value("SELECT v FROM test.t WHERE id = 1") == "late"
    # The pass after the one that saw it applied opened it: within a pass or two, not a minute.
    assert applied_at is None or opened_at - applied_at < 5, f"opened {opened_at - applied_at:.1f}s after the backlog was applied"
