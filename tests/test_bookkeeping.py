"""Bookkeeping (journal, run lock, logs) never blocks a failover; the journal is rotated."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import journal as journal_mod
from orchestrator import lock as lock_mod
from orchestrator import logs
from orchestrator.config import parse
from orchestrator.errors import LockBusy
from orchestrator.journal import Journal
from orchestrator.lock import RunLock
from orchestrator.plan import INCOMPLETE, Plan

from . import orchtest as t

RAW = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "pw1"},
    "replication": {"user": "repl", "password": "pw2"},
    "keepalived": {"vip_check": False},
}


def all_records(j: Journal) -> list:
    """Every record in every file, oldest file first."""
    paths = [j.rotated(n) for n in range(j.keep, 0, -1)] + [j.path]
    out = []
    for p in paths:
        if os.path.exists(p):
            out += [json.loads(line) for line in Path(p).read_bytes().splitlines()]
    return out


# --------------------------------------------------------------------------- journal rotation


def test_journal_rotates_by_size_keeps_a_few_and_tail_spans_files(tmp_path):
    j = Journal(str(tmp_path), max_bytes=1000, keep=3)
    markers = [j.marker()]
    for i in range(60):
        j.append({"id": f"r{i}", "seq": i, "pad": "x" * 40})
        markers.append(j.marker())
    assert all(a != b for a, b in zip(markers, markers[1:])), "the marker must change on every append, rotations included"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["journal.jsonl", "journal.jsonl.1", "journal.jsonl.2", "journal.jsonl.3"], names
    for name in names:
        assert (tmp_path / name).stat().st_size <= 1000
    seqs = [r["seq"] for r in all_records(j)]
    assert seqs == list(range(seqs[0], 60)) and seqs[0] > 0, "the oldest files are dropped, nothing else"
    # tail: newest last, right across rotated files
    assert [r["seq"] for r in j.tail(3)] == [57, 58, 59]
    n_current = len((tmp_path / "journal.jsonl").read_bytes().splitlines())
    assert [r["seq"] for r in j.tail(n_current + 5)] == list(range(60 - n_current - 5, 60))
    assert [r["seq"] for r in j.tail(1000)] == seqs


def test_tail_and_marker_right_after_a_rotation(tmp_path):
    j = Journal(str(tmp_path), max_bytes=10_000)
    j.append({"id": "r1", "phase": "begin"})
    j.append({"id": "r1", "phase": "end"})
    before = j.marker()
    os.rename(j.path, j.rotated(1))  # the instant between a rotation and the next record
    assert [r["phase"] for r in j.tail(10)] == ["begin", "end"]
    assert j.marker() != before
    j.append({"id": "r2", "phase": "begin"})
    assert [r["id"] for r in j.tail(10)] == ["r1", "r1", "r2"]


def test_a_record_larger_than_the_limit_is_still_written(tmp_path):
    j = Journal(str(tmp_path), max_bytes=100)
    j.append({"id": "big", "pad": "y" * 500})
    j.append({"id": "big2", "pad": "y" * 500})
    assert [r["id"] for r in j.tail(5)] == ["big", "big2"]
    assert [r["id"] for r in all_records(j)] == ["big", "big2"]


def test_tail_of_an_unreadable_journal_is_empty_not_a_crash(tmp_path, caplog):
    (tmp_path / "journal.jsonl").mkdir()
    assert Journal(str(tmp_path)).tail(10) == []
    assert "unreadable" in caplog.text


def test_a_stuck_writer_does_not_hold_an_append_up(tmp_path, monkeypatch, caplog):
    import fcntl

    j = Journal(str(tmp_path))
    j.append({"id": "r0"})
    monkeypatch.setattr(journal_mod, "LOCK_WAIT", 0.1)
    fd = os.open(j.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process stuck in its write, as flock sees it
    try:
        j.append({"id": "r1"})
    finally:
        os.close(fd)
    assert [r["id"] for r in j.tail(5)] == ["r0", "r1"]
    assert "another writer held it for more than 0.1s; appending without the lock" in caplog.text


WRITER = textwrap.dedent("""
    import sys
    from orchestrator.journal import Journal
    state, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    j = Journal(state, max_bytes=2048, keep=1000)
    for i in range(n):
        j.append({"id": name, "seq": i, "pad": "z" * (i % 50)})
""")


def test_concurrent_appenders_in_separate_processes_lose_and_tear_nothing(tmp_path):
    writers, per_writer = 6, 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{k}", str(per_writer)])
             for k in range(writers)]
    reader = Journal(str(tmp_path), keep=1000)
    reads = 0
    while any(p.poll() is None for p in procs):  # readers take no lock and must never see garbage
        got = reader.tail(40)
        last = {}
        for r in got:
            assert r["seq"] > last.get(r["id"], -1), f"tail out of order: {got}"
            last[r["id"]] = r["seq"]
        reads += 1
    assert all(p.wait() == 0 for p in procs)
    j = Journal(str(tmp_path), keep=1000)
    records = all_records(j)  # json.loads on every line: a torn line fails here
    assert len(records) == writers * per_writer
    for k in range(writers):
        seqs = [r["seq"] for r in records if r["id"] == f"w{k}"]
        assert seqs == list(range(per_writer)), f"w{k}: lost, duplicated or reordered records"
    assert os.path.exists(j.rotated(5)), "the test did not rotate enough to mean anything"
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2048 + 200, p
    assert reads > 0


# --------------------------------------------------------------------------- journal failures


def run_plan(monkeypatch, tmp_path, plan, fail_on):
    """execute_plan with a journal whose appends number ``fail_on`` (1 = begin, 2 = end) fail."""
    from orchestrator.commands.common import RunContext, execute_plan

    calls = []
    real = Journal.append

    def append(self, record):
        calls.append(record["phase"])
        if len(calls) in fail_on:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, record)

    monkeypatch.setattr(Journal, "append", append)
    cfg = parse({**RAW, "state_dir": str(tmp_path)})
    code, _ = execute_plan(RunContext(cfg, "MASTER", "run-1", {}, None, 0.0), plan)
    return code, calls


@pytest.mark.parametrize("fail_on", [{1}, {2}, {1, 2}], ids=["begin", "end", "both"])
def test_journal_append_failure_is_logged_and_the_run_goes_on(monkeypatch, tmp_path, caplog, fail_on):
    caplog.set_level(logging.INFO)
    code, calls = run_plan(monkeypatch, tmp_path, Plan("waiting for the peer", outcome=INCOMPLETE), fail_on)
    assert code == 3 and calls == ["begin", "end"], "the end record is attempted and the exit code is the plan's"
    unwritable = [r for r in caplog.records if "journal unwritable" in r.getMessage()]
    assert len(unwritable) == len(fail_on) and all(r.levelno == logging.CRITICAL for r in unwritable)
    for r in unwritable:
        assert "No space left on device" in r.getMessage() and "the failover goes on" in r.getMessage()
    phases = {json.loads(r.getMessage().split("record follows: ", 1)[1])["phase"] for r in unwritable}
    assert phases == {("begin", "end")[i - 1] for i in fail_on}, "the lost record goes to the log"
    written = [r["phase"] for r in Journal(str(tmp_path)).tail(5)]
    assert written == [p for i, p in enumerate(["begin", "end"], 1) if i not in fail_on]


def test_ensure_state_dir_failure_is_loud_not_fatal(tmp_path, caplog):
    from orchestrator.commands.common import ensure_state_dir

    (tmp_path / "file").write_text("")
    cfg = parse({**RAW, "state_dir": str(tmp_path / "file" / "state")})
    assert ensure_state_dir(cfg) is False
    assert any(r.levelno == logging.CRITICAL and "the failover goes on" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- run lock fallback


@pytest.fixture
def fallback_dirs(tmp_path, monkeypatch):
    dirs = (str(tmp_path / "run-orch"), str(tmp_path / "shm-orch"))
    monkeypatch.setattr(lock_mod, "FALLBACK_DIRS", dirs)
    return dirs


def test_run_lock_falls_back_outside_an_uncreatable_state_dir(tmp_path, fallback_dirs, caplog):
    (tmp_path / "file").write_text("")
    state = str(tmp_path / "file" / "state")
    with RunLock(state, timeout=1) as held:
        assert held.fallback and held.path == os.path.join(fallback_dirs[0], lock_mod.fallback_name(state))
        assert any(r.levelno == logging.CRITICAL and "locking " + held.path in r.getMessage() for r in caplog.records)
        with pytest.raises(LockBusy):  # a second run of the same cluster falls back to the same lock
            RunLock(state, timeout=0.05).__enter__()
        other = RunLock(str(tmp_path / "file" / "other"), timeout=0.05)
        with other:  # another state_dir: another lock
            assert other.path != held.path
    assert stat_mode(fallback_dirs[0]) == 0o700


def test_run_lock_skips_a_fallback_dir_others_can_write(tmp_path, fallback_dirs):
    os.makedirs(fallback_dirs[0])
    os.chmod(fallback_dirs[0], 0o777)  # someone else's: files could be planted there
    state = str(tmp_path / "absent-parent-file" / "state")
    (tmp_path / "absent-parent-file").write_text("")
    with RunLock(state, timeout=1) as held:
        assert held.path.startswith(fallback_dirs[1] + "/")


def test_run_lock_locks_a_read_only_lock_file_in_place(tmp_path, fallback_dirs, monkeypatch, caplog):
    path = tmp_path / "orch.lock"
    path.write_text("")
    real_open = os.open

    def read_only_fs(p, flags, *args):
        if str(p) == str(path) and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", read_only_fs)
    with RunLock(str(tmp_path), timeout=1) as held:
        assert not held.fallback and held.path == str(path), "a run holding the real lock must still exclude this one"
        with pytest.raises(LockBusy):
            RunLock(str(tmp_path), timeout=0.05).__enter__()
    assert "locking it read-only" in caplog.text
    assert not os.path.exists(fallback_dirs[0])


def stat_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


# --------------------------------------------------------------------------- logrotate


def test_logrotate_config_rotates_the_hook_and_maintainer_logs(tmp_path):
    import shutil

    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None)
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    conf = Path(__file__).resolve().parent.parent / "conf" / "logrotate-orch"
    text = conf.read_text()
    assert "/var/log/orch/notify.log" in text and "/var/log/orch/maintain.log" in text
    here = tmp_path / "conf"
    here.write_text(text.replace("/var/log/orch", str(tmp_path)).replace("su root root", f"su {os.geteuid()} {os.getegid()}")
                    .replace("create 0600 root root", "create 0600"))
    (tmp_path / "notify.log").write_text("a notify run\n")
    (tmp_path / "maintain.log").write_text("a maintainer pass\n")
    proc = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(here)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for name in ("notify.log", "maintain.log"):
        assert (tmp_path / f"{name}.1").read_text().startswith("a "), "delaycompress: the newest old log stays plain"
        assert (tmp_path / name).stat().st_size == 0 and stat_mode(str(tmp_path / name)) == 0o600


# --------------------------------------------------------------------------- syslog


def test_orch_syslog_env_sends_the_log_to_syslog(tmp_path, monkeypatch):
    address = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    monkeypatch.setattr(logs, "SYSLOG_ADDRESS", address)
    monkeypatch.setattr(logs, "_syslog", None)
    monkeypatch.setenv("ORCH_SYSLOG", "1")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        logs.configure_run("run-9", ("secret-pw",), syslog=False)
        logging.getLogger("orchestrator").warning("the failover goes on with secret-pw")
        got = sock.recv(4096).decode()
        assert "run-9" in got and "the failover goes on" in got and "secret-pw" not in got
        logs.to_syslog(logging.ERROR, "orch: error: something")
        assert "orch: error: something" in sock.recv(4096).decode()
    finally:
        root.setLevel(level)
        if logs._syslog is not None:
            root.removeHandler(logs._syslog)
            logs._syslog.close()
        sock.close()


# --------------------------------------------------------------------------- end to end


@pytest.mark.mariadb
def test_notify_master_promotes_with_an_unwritable_journal(cluster):  # noqa: F811
    s1, s2, cfg, state = cluster
    os.makedirs(os.path.join(state, "journal.jsonl"))  # as unwritable as a full disk, even for root
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    assert not t.read_only(s2)
    lines = [line for line in r.stderr.splitlines() if "journal unwritable" in line]
    assert len(lines) == 2 and all("CRITICAL" in line and "the failover goes on" in line for line in lines), r
    assert '"phase": "begin"' in lines[0] and '"phase": "end"' in lines[1]
    assert "MASTER act in" in r.stderr
    t.assert_no_secrets(r.output)
    r = t.orch(cfg, "server2", "status")
    assert r.code != 70 and "Traceback" not in r.output and "unreadable" in r.stderr, r


@pytest.mark.mariadb
def test_notify_master_promotes_when_state_dir_cannot_be_created(cluster, tmp_path):  # noqa: F811
    s1, s2, _, _ = cluster
    (tmp_path / "not-a-dir").write_text("")
    state = str(tmp_path / "not-a-dir" / "state")
    cfg = t.write_config(tmp_path / "nostate.yaml", t.config_dict(s1, s2, state))
    existed = {d for d in lock_mod.FALLBACK_DIRS if os.path.exists(d)}
    s1.kill()
    try:
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 0, r
        assert not t.read_only(s2)
        assert f"state_dir {state} unusable" in r.stderr and "run lock" in r.stderr and "locking /" in r.stderr, r
        assert r.stderr.count("journal unwritable") == 2
    finally:
        for d in lock_mod.FALLBACK_DIRS:
            try:
                os.unlink(os.path.join(d, lock_mod.fallback_name(state)))
            except FileNotFoundError:
                pass
            if d not in existed and os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)  # leave the host as it was


def test_journal_module_defaults_are_sane():
    assert journal_mod.MAX_BYTES >= 1024 * 1024 and journal_mod.KEEP >= 2
    j = Journal("/nonexistent-state")
    assert j.marker() == (0, 0, 0) and j.tail() == []
