"""`orch maintain` under write load: a replica that keeps up stays in Atlas.

A real MariaDB pair, the Atlas stand-in and the maintainer loop (a pass every 0.5 s) as
a separate process, while a writer commits ~200 small transactions a second on the
master. Under load a replica nearly always has something received but not yet applied;
that must not take it out of Atlas (it used to: 8 removals in 20 s). Taken out for a
real reason (its SQL thread stopped), it comes back only once its relay log is drained.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_atlas_failover import ADMIN_PW, addr, atlas_conf, ro

pytestmark = pytest.mark.mariadb

RATE = 200  # commits per second on the master
PASS_EVERY = 0.5  # seconds: maintainer.interval


class Writer(threading.Thread):
    """Autocommit INSERTs at RATE per second on its own connection until stopped."""

    def __init__(self, server: lab.MariaDBInstance) -> None:
        super().__init__(name="writer", daemon=True)
        self.server = server
        self.commits = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            conn = self.server.connect()
            start = time.monotonic()
            with conn.cursor() as cur:
                while not self._done.is_set():
                    cur.execute("INSERT INTO test.t (v) VALUES (%s)", (f"row {self.commits}",))
                    self.commits += 1
                    ahead = start + self.commits / RATE - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            conn.close()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
        assert self.error is None, f"the writer failed: {self.error!r}"


class Watch(threading.Thread):
    """Samples the stand-in's read-only backends every 10 ms: (time, listed?) of one address."""

    def __init__(self, standin: AtlasStandin, address: str) -> None:
        super().__init__(name="watch", daemon=True)
        self.standin = standin
        self.address = address
        self.samples: list[tuple[float, bool]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.01):
            self.samples.append((time.monotonic(), self.address in ro(self.standin)))

    def listed(self) -> bool:
        return self.address in ro(self.standin)

    def absent_between(self, start: float, end: float) -> list[float]:
        return [when for when, listed in self.samples if start <= when <= end and not listed]

    def present_between(self, start: float, end: float) -> list[float]:
        return [when for when, listed in self.samples if start <= when <= end and listed]

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def wait_for(condition, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return time.monotonic()


def undrained(replica: lab.MariaDBInstance) -> bool:
    """Something received is not applied yet (status read before the applied position)."""
    received = t.slave_status(replica)["Gtid_IO_Pos"]
    applied = t.gtid(replica)
    return received != applied


@pytest.fixture
def loaded(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    conf = atlas_conf(tmp_path / "atlas.cnf", addr(s2))
    standin = AtlasStandin(conf, host="127.0.0.1", port=0, check_interval=None).start()
    host, port = standin.address
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW}, "config_file": conf}]
    state = str(tmp_path / "state")
    cfg = t.write_config(tmp_path / "orch.yaml", t.config_dict(
        s1, s2, state, atlas=atlas, maintainer={"interval": PASS_EVERY, "max_lag": 10}))
    s1.sql("CREATE TABLE test.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))")
    lab.wait_gtid_equal(s1, s2)
    log = tmp_path / "maintain.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([t.ORCH, "-c", cfg, "--node", "server1", "maintain"], stdout=subprocess.DEVNULL, stderr=stderr)
    watch = Watch(standin, addr(s2))
    watch.start()
    try:
        yield s1, s2, standin, proc, watch, state, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        watch.stop()
        standin.stop()


def said(log: Path) -> str:
    """What orch logged (APScheduler's lines about every job left out)."""
    return "".join(line for line in log.read_text().splitlines(keepends=True) if " apscheduler." not in line)


def test_replica_that_keeps_up_under_write_load_stays_and_a_stopped_one_returns_only_drained(loaded):
    s1, s2, standin, proc, watch, state, log = loaded
    passes = lambda: standin.commands.count("SELECT * FROM backends")  # noqa: E731  one read per pass
    wait_for(lambda: passes() >= 2, 10, "the maintainer does not run")
    assert watch.listed()

    writer = Writer(s1)
    writer.start()
    try:
        # 1. ~16 s of load. Midway the replica's SQL thread is held on a table lock for
        # 2.5 s: still running, lag a few seconds, a growing backlog received but not applied.
        load_start, passes_before = time.monotonic(), passes()
        time.sleep(6)
        holder = s2.connect()
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES test.t WRITE")
            wait_for(lambda: undrained(s2), 5, "the replica should be behind while its table is locked")
            time.sleep(2.5)
            assert undrained(s2)
            cur.execute("UNLOCK TABLES")
        holder.close()
        time.sleep(7.5)
        load_end = time.monotonic()
        rate = writer.commits / (load_end - load_start)
        # Preconditions, not speed goals: there was load, and the maintainer ran passes through it.
        assert rate > 0.3 * RATE, f"the writer managed only {rate:.0f} commits/s: no load to test under"
        assert passes() - passes_before >= (load_end - load_start) / PASS_EVERY * 0.3, "too few maintainer passes"
        assert standin.mutating_commands() == [], "a replica that keeps up was taken out of Atlas under load:\n" + said(log)
        assert watch.absent_between(load_start, load_end) == []

        # 2. Its SQL thread stops: out of Atlas at the next pass.
        s2.sql("STOP SLAVE SQL_THREAD")
        stopped = time.monotonic()
        removed = wait_for(lambda: not watch.listed(), 10, "a replica with a stopped SQL thread stays in Atlas")
        assert removed - stopped < 3 * PASS_EVERY + 4, "not taken out within a few passes"
        time.sleep(1)

        # 3. Running again, but held on a lock: not drained, so not added back (it would
        # stay if it were still listed), for several passes.
        holder = s2.connect()
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES test.t WRITE")
            s2.sql("START SLAVE SQL_THREAD")
            held = time.monotonic()
            time.sleep(3)
            assert undrained(s2) and t.slave_status(s2)["Slave_SQL_Running"] == "Yes"
            released = time.monotonic()
            cur.execute("UNLOCK TABLES")
        holder.close()
        assert watch.present_between(removed, released) == [], "added back before its relay log was drained"

        # 4. Drained (the load goes on): back in Atlas.
        back = wait_for(watch.listed, 15, "the drained replica was not added back")
    finally:
        writer.stop()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, said(log)
    err = said(log)
    assert standin.mutating_commands() == ["REMOVE BACKEND 2", f"ADD SLAVE {addr(s2)}"], err
    assert "server2's SQL thread is stopped" in err
    assert "server2 has not applied its relay log" in err, "the maintainer should say why it waits"
    assert back > released > held
    assert f"proxy-read-only-backend-addresses = {addr(s2)}\n" in Path(standin.config_path).read_text()
    ends = [e["event"] for e in t.journal(state) if e["phase"] == "end"]
    assert ends == ["MAINTAIN", "MAINTAIN"], ends
