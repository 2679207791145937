"""hooks/keepalived-notify: what keepalived executes."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from . import orchtest as t

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "keepalived-notify"


def test_hook_is_safe_for_enable_script_security():
    mode = HOOK.stat().st_mode
    assert mode & stat.S_IXUSR and not mode & (stat.S_IWGRP | stat.S_IWOTH)


@pytest.mark.mariadb
def test_hook_runs_notify_with_its_config_and_logs(cluster, tmp_path):  # noqa: F811
    s1, s2, cfg, state = cluster
    log = tmp_path / "logs" / "notify.log"
    s1.kill()
    # keepalived runs scripts with an almost empty environment: no PATH, no ORCH_*.
    proc = subprocess.run(
        [str(HOOK), "-c", cfg, "--node", "server2", "--orch", t.ORCH, "--log", str(log), "INSTANCE", "VI_1", "MASTER", "100"],
        env={}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == "", "everything goes to the log"
    text = log.read_text()
    assert "decision (MASTER on server2): promoting server2" in text and "MASTER act in" in text
    assert not t.read_only(s2)
    assert stat.S_IMODE(os.stat(log).st_mode) & 0o077 == 0
    t.assert_no_secrets(text)


def test_hook_passes_bad_arguments_through(tmp_path):
    log = tmp_path / "notify.log"
    proc = subprocess.run([str(HOOK), "-c", str(tmp_path / "none.yaml"), "--orch", t.ORCH, "--log", str(log), "INSTANCE", "VI_1", "BOGUS"],
                          env={}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "STATE must be one of" in log.read_text()


@pytest.mark.mariadb
def test_hook_promotes_with_an_unopenable_log_and_an_unwritable_journal(cluster, tmp_path):  # noqa: F811
    """Bookkeeping never blocks the failover: the log and the journal fail, the promotion happens."""
    s1, s2, cfg, state = cluster
    os.makedirs(os.path.join(state, "journal.jsonl"))  # unwritable even for root
    log = tmp_path / "notify.log"
    log.mkdir()  # cannot be opened for appending
    s1.kill()
    proc = subprocess.run(
        [str(HOOK), "-c", cfg, "--node", "server2", "--orch", t.ORCH, "--log", str(log), "INSTANCE", "VI_1", "MASTER", "100"],
        env={}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert not t.read_only(s2)
    err = proc.stderr
    assert f"keepalived-notify: WARNING: cannot open log {log}; orch logs to syslog and stderr instead" in err
    assert f"keepalived-notify could not open its log {log}" in err, "orch repeats it, so syslog has it too"
    assert "decision (MASTER on server2): promoting server2" in err and "MASTER act in" in err
    assert err.count("journal unwritable") == 2 and "the failover goes on" in err
    t.assert_no_secrets(err)
