"""Hooks: argv lists without a shell, ORCH_* context in a minimal environment, a pre hook
that fails or times out aborts the promotion (killed with its process group), post hooks
best effort, every run journaled."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator import hooks
from orchestrator.config import parse
from orchestrator.decide import MASTER, decide
from orchestrator.errors import ConfigError
from orchestrator.model import ClusterView, NodeState
from orchestrator.plan import Fence, RunHook, SetWritable

from . import orchtest as t

BASE = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "x-secret"}, "replication": {"user": "repl", "password": "y-secret"},
    "keepalived": {"vip_check": False}, "failover": {"block_seconds": 0},
}


def problems(hooks_section) -> str:
    with pytest.raises(ConfigError) as e:
        parse({**BASE, "hooks": hooks_section})
    return str(e.value)


def test_config():
    c = parse({**BASE, "hooks": {"timeout": 3, "pre_failover": [["/bin/true", "a b"]], "post_switchover": [["/bin/echo"]]}})
    assert c.hooks.timeout == 3 and c.hooks.pre_failover == (("/bin/true", "a b"),) and c.hooks.post_switchover == (("/bin/echo",),)
    assert parse(BASE).hooks.pre_failover == () and parse(BASE).hooks.timeout == 10
    assert "hooks.pre_failovr: unknown key" in problems({"pre_failovr": []})
    assert "hooks.pre_failover: expected a list" in problems({"pre_failover": "/bin/true"})
    assert "hooks.post_failover[0]: expected a non-empty list" in problems({"post_failover": [[]]})
    assert "hooks.post_failover[1]: expected a non-empty list" in problems({"post_failover": [["/bin/true"], ["/bin/x", 3]]})
    assert "hooks.pre_failover[0][0]: expected an absolute program path" in problems({"pre_failover": [["notify-ticket"]]})
    assert "hooks.timeout: expected a number" in problems({"timeout": "10s"})
    c = parse({**BASE, "hooks": {"pre_failover": [["/nonexistent/hook"]]}})
    assert any("hooks.pre_failover[0]: /nonexistent/hook is missing or not executable: every promotion would be refused" in w
               for w in c.warnings)


def node(name: str, ro: bool, reachable: bool = True) -> NodeState:
    n = int(name[-1])
    if not reachable:
        return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=False, error="connection refused")
    return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version="10.11.6-MariaDB", flavor="mariadb",
                     server_id=n, read_only=ro, executed="0-1-5", binlog_pos="0-1-5", binlog_state="0-1-5")


def test_promotion_plan_runs_pre_hooks_before_anything_changes_and_post_hooks_last():
    c = parse({**BASE, "hooks": {"timeout": 4, "pre_failover": [["/bin/a"], ["/bin/b"]], "post_failover": [["/bin/c"]]}})
    plan = decide(ClusterView(me=node("server1", True), peer=node("server2", False)), MASTER, c)
    steps = plan.steps
    assert [type(s) for s in steps[:3]] == [RunHook, RunHook, Fence], plan.render()
    assert steps[0].argv == ("/bin/a",) and steps[0].timeout == 4 and not steps[0].post
    assert isinstance(steps[-1], RunHook) and steps[-1].post and steps.index(SetWritable("server1")) < len(steps) - 1
    ctx = dict(steps[0].context)
    assert ctx["ORCH_NEW_MASTER"] == "server1" and ctx["ORCH_OLD_MASTER"] == "server2" and ctx["ORCH_EVENT"] == "pre_failover"
    assert ctx["ORCH_REASON"] == plan.reason
    # No hooks: no steps (and nothing imported on the notify path).
    assert not any(isinstance(s, RunHook) for s in decide(ClusterView(me=node("server1", True), peer=node("server2", False)), MASTER,
                                                         parse(BASE)).steps)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_run_hook_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    argv = ["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; sleep 300"]
    started = time.monotonic()
    run = hooks.run_hook(argv, {"PATH": hooks.SAFE_PATH}, 0.5)
    assert time.monotonic() - started < 3
    assert run.timed_out and not run.ok and "timed out after 0.5s" in run.error and "started" in run.output
    assert wait_gone(int(pidfile.read_text())), "the hook's child outlived the timeout"


def test_run_hook_result_and_redaction():
    run = hooks.run_hook(["/bin/sh", "-c", "echo the x-secret is here; exit 4"], {"PATH": hooks.SAFE_PATH}, 5, ("x-secret",))
    assert run.exit_code == 4 and run.error == "failed: exit 4" and "x-secret" not in run.output and "***" in run.output
    assert hooks.run_hook(["/nonexistent/x"], {}, 5).error.startswith("cannot run /nonexistent/x")
    # A child left in the background holding the output does not make a finished hook wait.
    started = time.monotonic()
    run = hooks.run_hook(["/bin/sh", "-c", "sleep 3 & echo done"], {"PATH": hooks.SAFE_PATH}, 10)
    assert run.ok and run.output == "done" and time.monotonic() - started < 2


def test_run_hooks_for_switchover(tmp_path, monkeypatch):
    """The entry point orch switchover uses: a pre phase stops at the first failure."""
    monkeypatch.setenv("MYSQL_PWD", "inherited-secret")
    out = tmp_path / "env"
    c = parse({**BASE, "hooks": {"pre_switchover": [["/bin/sh", "-c", f"env > {out}"], ["/bin/false"], ["/bin/true"]]}})
    result = hooks.run_hooks(c, "pre_switchover", {"ORCH_NEW_MASTER": "server2", "ORCH_RUN_ID": "r1"})
    assert not result.ok and len(result.runs) == 2 and result.runs[1].error == "failed: exit 1"
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["ORCH_EVENT"] == "pre_switchover" and env["ORCH_NEW_MASTER"] == "server2" and "MYSQL_PWD" not in env
    assert hooks.run_hooks(parse(BASE), "post_switchover", {}).ok


# --------------------------------------------------------------------------- real servers


def hook_config(cluster, tmp_path: Path, **hooks_section) -> str:
    s1, s2, _, state = cluster
    d = t.config_dict(s1, s2, state)
    d["hooks"] = hooks_section
    return t.write_config(tmp_path / "orch-hooks.yaml", d)


def hook_steps(state: str):
    end = t.journal(state)[-1]
    assert end["phase"] == "end"
    return end, [s for s in end["steps"] if s["step"] == "RunHook"]


@pytest.mark.mariadb
def test_hanging_pre_hook_is_killed_at_its_timeout_and_the_promotion_aborted(cluster, tmp_path):
    s1, s2, _, state = cluster
    pidfile = tmp_path / "child.pid"
    cfg = hook_config(cluster, tmp_path, timeout=1, pre_failover=[["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; sleep 300"]])
    s1.kill()
    started = time.monotonic()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1, r
    assert time.monotonic() - started < 10
    assert t.read_only(s2), "the node stays fenced"
    assert "pre_failover hook /bin/sh timed out after 1s" in r.output and "aborted" in r.output
    assert wait_gone(int(pidfile.read_text())), "the hook's child outlived the timeout"
    end, runs = hook_steps(state)
    assert end["result"] == "refused" and runs[0]["result"] == "failed" and "killed with its process group" in runs[0]["detail"]
    assert all(s["result"] == "skipped" for s in end["steps"] if s["step"] in ("SetWritable", "CatchUp"))


@pytest.mark.mariadb
def test_failing_pre_hook_aborts_the_promotion(cluster, tmp_path):
    s1, s2, _, state = cluster
    cfg = hook_config(cluster, tmp_path, pre_failover=[["/bin/sh", "-c", "echo no change window >&2; exit 3"]])
    before = t.snapshot(s2)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1, r
    assert t.snapshot(s2) == before and t.read_only(s2) and not t.read_only(s1), "nothing changed, the live master not fenced"
    _, runs = hook_steps(state)
    assert runs[0]["result"] == "failed" and "exit 3" in runs[0]["detail"] and "no change window" in runs[0]["detail"]


@pytest.mark.mariadb
def test_post_hook_sees_the_context_and_no_secret(cluster, tmp_path):
    s1, s2, _, state = cluster
    env_file = tmp_path / "env"
    marker = tmp_path / "pre-ran"
    cfg = hook_config(cluster, tmp_path, pre_failover=[["/bin/sh", "-c", f"echo ok > {marker}"]],
                      post_failover=[["/bin/sh", "-c", f"env > {env_file}; echo posted"], ["/bin/false"]])
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100",
               env={"MYSQL_PWD": t.SECRETS[0], "ORCH_SECRET_TOKEN": "tok-12345"})
    assert r.code == 0, r  # a failing post hook is a warning only
    assert not t.read_only(s2) and marker.exists()
    text = env_file.read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    end, runs = hook_steps(state)
    assert env["ORCH_EVENT"] == "post_failover" and env["ORCH_CLUSTER"] == "test" and env["ORCH_NODE"] == "server2"
    assert env["ORCH_OLD_MASTER"] == "server1" and env["ORCH_NEW_MASTER"] == "server2" and env["ORCH_RUN_ID"] == end["id"]
    assert env["ORCH_REASON"].startswith("promoting server2")
    assert set(env) <= {"PATH", "LANG", "PWD", "SHLVL", "_", "ORCH_EVENT", "ORCH_CLUSTER", "ORCH_NODE", "ORCH_OLD_MASTER",
                        "ORCH_NEW_MASTER", "ORCH_RUN_ID", "ORCH_REASON"}, sorted(env)
    t.assert_no_secrets(text, extra=("tok-12345",))
    assert [r_["result"] for r_ in runs] == ["ok", "ok", "warning"], runs
    assert "exit 0" in runs[1]["detail"] and "posted" in runs[1]["detail"] and "exit 1" in runs[2]["detail"]
    assert end["result"] == "act"
    # Post hooks ran after everything else (Atlas included).
    assert [s["step"] for s in end["steps"]][-2:] == ["RunHook", "RunHook"]
    assert os.environ.get("ORCH_SECRET_TOKEN") is None


def test_a_failing_pre_hook_stops_the_plan_before_atlas_too():
    """Nothing changes, Atlas's read/write backend included: a live master keeps its writes."""
    from orchestrator.execute import Executor
    from orchestrator.plan import Plan, SetRwOffline, SetRwOnline

    calls = []
    c = parse(BASE)
    plan = Plan("promoting server1", (SetRwOffline("local"), RunHook("pre_failover", ("/bin/false",), 5), Fence("server2"),
                                      SetWritable("server1"), SetRwOnline("local"), RunHook("post_failover", ("/bin/true",), 5)))
    result = Executor(c, {}, atlas_runner=lambda cfg, steps: calls.append(steps) or []).run(plan)
    assert calls == [] and result.error is not None and "aborted before anything changed" in str(result.error)
    assert [r.result for r in result.results] == ["failed", "skipped", "skipped", "skipped", "skipped", "skipped"]
