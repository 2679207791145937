"""orch notify-fifo: keepalived's events in order from its notify_fifo, real processes and servers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Callable, List

import pytest

from orchestrator.commands.fifo import Queue
from orchestrator.keepalived.events import Event, parse_line
from orchestrator.lock import RunLock

from . import orchtest as t

# --- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ('INSTANCE "VI_1" MASTER 100', Event("INSTANCE", "VI_1", "MASTER")),
    ('GROUP "G1" BACKUP', Event("GROUP", "G1", "BACKUP")),
    ("INSTANCE VI_1 FAULT 0", Event("INSTANCE", "VI_1", "FAULT")),
    ('INSTANCE "a name" STOP 100', Event("INSTANCE", "a name", "STOP")),
])
def test_parse_line_events(line, expected):
    assert parse_line(line) == (expected, "")


@pytest.mark.parametrize("line, why", [
    ("garbage", "malformed"),
    ('INSTANCE "VI_1"', "malformed"),
    ('INSTANCE "" MASTER 100', "malformed"),
    ('INSTANCE "VI_1" MASTER x100', "malformed"),
    ('INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100', "ignored"),
    ('VS "10.0.0.1:80" UP', "ignored"),
])
def test_parse_line_rejects(line, why):
    event, reason = parse_line(line)
    assert event is None and reason.startswith(why)


def test_queue_keeps_the_newest_state_per_instance_in_order_of_last_line():
    q = Queue()
    for e in (Event("INSTANCE", "VI_1", "BACKUP"), Event("INSTANCE", "VI_2", "MASTER"),
              Event("INSTANCE", "VI_1", "FAULT"), Event("INSTANCE", "VI_1", "MASTER")):
        q.add(e)
    assert q.pending() == [Event("INSTANCE", "VI_2", "MASTER"), Event("INSTANCE", "VI_1", "MASTER")]
    assert [(a.state, b.state) for a, b in q.dropped] == [("BACKUP", "FAULT"), ("FAULT", "MASTER")]
    assert q.pop() == Event("INSTANCE", "VI_2", "MASTER") and len(q) == 1


# --- real processes ---------------------------------------------------------------------


class FifoReader:
    """`orch notify-fifo` running in the background, its log in a file."""

    def __init__(self, cfg: str, node: str, fifo: Path, log: Path) -> None:
        self.fifo, self.log = fifo, log
        self.argv = [t.ORCH, "-c", cfg, "--node", node, "notify-fifo", str(fifo)]
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT)
        wait_for(lambda: fifo.exists() and "reading keepalived events" in self.text(), what="the reader to start")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def write(self, *lines: str) -> None:
        """One write() of all lines: queued together, as keepalived's burst would be."""
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            os.write(fd, "".join(line + "\n" for line in lines).encode())
        finally:
            os.close(fd)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


@pytest.fixture
def readers():
    started: List[FifoReader] = []

    def start(cfg: str, node: str, fifo: Path, log: Path) -> FifoReader:
        reader = FifoReader(cfg, node, fifo, log)
        started.append(reader)
        return reader

    yield start
    for r in started:
        r.kill()


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ends(state: str) -> List[dict]:
    return [r for r in t.journal(state) if r.get("phase") == "end"]


@pytest.mark.mariadb
def test_burst_is_coalesced_into_one_run_of_the_last_state(cluster, tmp_path, readers):
    s1, s2, cfg, state = cluster
    fifo = tmp_path / "keepalived.fifo"
    reader = readers(cfg, "server2", fifo, tmp_path / "fifo.log")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    s1.kill()
    reader.write('INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" FAULT 100', 'INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: ends(state), what="the MASTER run's journal record")
    wait_for(lambda: "done (exit" in reader.text(), what="the run's end")
    time.sleep(0.5)  # nothing else may follow
    begins = [r for r in t.journal(state) if r.get("phase") == "begin"]
    assert [r["event"] for r in begins] == ["MASTER"] and ends(state)[-1]["result"] == "act"
    assert not t.read_only(s2)
    text = reader.text()
    assert text.count("notify-fifo: handling") == 1, text
    assert 'INSTANCE "VI_1" BACKUP skipped: superseded by INSTANCE "VI_1" FAULT' in text
    assert 'INSTANCE "VI_1" FAULT skipped: superseded by INSTANCE "VI_1" MASTER' in text
    assert "decision (MASTER on server2): promoting server2" in text
    assert reader.stop() == 0
    t.assert_no_secrets(text)


@pytest.mark.mariadb
def test_events_in_order_across_writers_malformed_lines_skipped(cluster, tmp_path, readers):
    """Each writer closes the FIFO (keepalived restarting); the reader opens it again and
    the state follows the last event of every burst."""
    s1, s2, cfg, state = cluster
    fifo = tmp_path / "keepalived.fifo"
    reader = readers(cfg, "server1", fifo, tmp_path / "fifo.log")
    reader.write("garbage", 'INSTANCE "VI_1" BOGUS 100', "x" * 300)
    wait_for(lambda: reader.text().count("malformed") >= 2 and "BOGUS" in reader.text(), what="the bad lines logged")
    assert not t.read_only(s1) and t.journal(state) == [], "bad lines change nothing"
    reader.write('INSTANCE "VI_1" BACKUP 100')  # a new writer after the first closed
    wait_for(lambda: t.read_only(s1), what="server1 fenced by BACKUP")
    wait_for(lambda: reader.text().count("done (exit") == 1, what="the BACKUP run's end")
    reader.write('INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" MASTER 100')  # ends MASTER
    wait_for(lambda: reader.text().count("done (exit") == 2, what="the MASTER run's end")
    assert not t.read_only(s1) and t.read_only(s2)
    reader.write('INSTANCE "VI_1" MASTER 100', 'INSTANCE "VI_1" BACKUP 100')  # ends BACKUP
    wait_for(lambda: reader.text().count("done (exit") == 3, what="the last BACKUP run's end")
    assert t.read_only(s1)
    text = reader.text()
    assert "line 'garbage' malformed" in text and "BOGUS is not one orch acts on" in text
    assert text.count("the writer closed") >= 3
    events = [r["event"] for r in t.journal(state) if r.get("phase") == "begin"]
    assert events == ["BACKUP", "MASTER", "BACKUP"], events
    assert reader.stop() == 0


@pytest.mark.mariadb
def test_sigterm_finishes_the_event_in_progress_then_exits_0(cluster, tmp_path, readers):
    s1, s2, cfg, state = cluster
    fifo = tmp_path / "keepalived.fifo"
    reader = readers(cfg, "server2", fifo, tmp_path / "fifo.log")
    s1.kill()
    os.makedirs(state, exist_ok=True)
    lock = RunLock(state, timeout=5)
    with lock:  # another orch run holds the run lock: the MASTER waits for it
        reader.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: "handling INSTANCE" in reader.text(), what="the event to start")
        reader.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert reader.proc.poll() is None, "it must finish the event in progress"
    assert reader.proc.wait(30) == 0
    assert ends(state)[-1]["event"] == "MASTER" and ends(state)[-1]["result"] == "act"
    assert not t.read_only(s2)
    assert "stopped (signal 15)" in reader.text()


def test_sigterm_while_idle_exits_0(tmp_path, readers):
    cfg = t.write_config(tmp_path / "orch.yaml", {
        "cluster": "test", "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": 1}, "server2": {"host": "127.0.0.1", "port": 2}},
        "mysql": {"user": "orch", "password": "pw-secret"}, "replication": {"user": "repl", "password": "pw-secret"},
        "state_dir": str(tmp_path / "state"), "keepalived": {"vip_check": False},
    })
    fifo = tmp_path / "k.fifo"
    os.mkfifo(fifo, 0o600)  # an existing FIFO is used as it is
    reader = readers(cfg, "server1", fifo, tmp_path / "fifo.log")
    started = time.monotonic()
    assert reader.stop() == 0 and time.monotonic() - started < 5
    assert "stopped (signal 15)" in reader.text()


def test_fifo_removed_under_the_reader_is_made_again(tmp_path, readers):
    """keepalived may remove the FIFO it created when it stops: the reader makes it again."""
    cfg = t.write_config(tmp_path / "orch.yaml", {
        "cluster": "test", "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": 1}, "server2": {"host": "127.0.0.1", "port": 2}},
        "mysql": {"user": "orch", "password": "pw-secret", "connect_timeout": 1},
        "replication": {"user": "repl", "password": "pw-secret"},
        "state_dir": str(tmp_path / "state"), "keepalived": {"vip_check": False},
    })
    fifo = tmp_path / "k.fifo"
    reader = readers(cfg, "server1", fifo, tmp_path / "fifo.log")
    fifo.unlink()
    wait_for(lambda: fifo.exists() and "removed or replaced" in reader.text(), timeout=15, what="the FIFO made again")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    reader.write('INSTANCE "VI_1" BACKUP 100')  # both servers down: safe, incomplete
    wait_for(lambda: 'INSTANCE "VI_1" BACKUP done (exit 3)' in reader.text(), what="the event handled")
    assert reader.stop() == 0


@pytest.mark.parametrize("setup, message", [
    ("file", "exists and is not a FIFO"),
    ("nodir", "does not exist"),
])
def test_bad_fifo_path_is_a_one_line_error(tmp_path, setup, message):
    cfg = t.write_config(tmp_path / "orch.yaml", {
        "cluster": "test", "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": 1}, "server2": {"host": "127.0.0.1", "port": 2}},
        "mysql": {"user": "orch", "password": "pw"}, "replication": {"user": "repl", "password": "pw"},
        "state_dir": str(tmp_path / "state"), "keepalived": {"vip_check": False},
    })
    path = tmp_path / "f"
    if setup == "file":
        path.write_text("keep me\n")
    else:
        path = tmp_path / "missing" / "f"
    r = t.orch(cfg, None, "notify-fifo", str(path), timeout=20)
    assert r.code == 2, r
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    if setup == "file":
        assert path.read_text() == "keep me\n"


def test_bad_config_is_an_error_before_reading(tmp_path):
    config = tmp_path / "orch.yaml"
    config.write_text("cluster: x\n")
    r = t.orch(str(config), None, "notify-fifo", str(tmp_path / "f"), timeout=20)
    assert r.code == 1 and "nodes: missing" in r.stderr, r
    assert not (tmp_path / "f").exists(), "nothing created"
