"""HAProxy (conf/haproxy.cfg, Debian's haproxy) in front of the namespace lab, each server checked
through orch's HTTP API, drilled with real clients: a writer through the VIP and one through
HAProxy's write port side by side, a reader through its read port.

kill -9 of the master's mariadbd, a hung master (SIGSTOP), and a switchover asked on the
replica's host (its orch asks the master's over POST /switchover). Each drill: no
acknowledged write lost; HAProxy's writer back (its outage is reported against the VIP's:
bench/haproxy); no write through HAProxy reaches a read-only server after HAProxy's writer is
back (error 1290 only inside the window measured); the reader through HAProxy stops less
than half as long as the writes through the VIP (a kill, a hang: the replica lives). Also: every endpoint answers for each role on both hosts
of the lab, and orch switchover/pause/resume work from either host.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from orchestrator.lab import haproxy, netns
from orchestrator.lab.hosts import API_TOKEN
from orchestrator.lab.proc import orch_bin, wait_for

from .orchtest import LabHolder, write_report

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    return netns.unavailable_reason() or haproxy.unavailable_reason()


class HaproxyHolder(LabHolder):
    def build(self) -> Any:
        self.builds += 1
        lab = netns.NetnsLab(str(self.root / f"lab{self.builds}"), template=self.template, haproxy=True)
        lab.up()
        self.lab = lab
        return lab


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    netns.cleanup_stale()
    h = HaproxyHolder(tmp_path_factory.mktemp("haproxy"), mariadb_template)
    yield h
    h.down()


def api(lab: Any, host: str, path: str, method: str = "GET", body: Optional[dict] = None, token: str = "",
        timeout: float = 2.0) -> Tuple[int, Any]:
    """A request to ``host``'s orch API from the client namespace (as HAProxy sends its checks)."""
    h = lab.hosts[host]

    def call() -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{h.address}:9105{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return netns.in_netns(lab.client_ns, call, timeout + 120)


def run_orch(lab: Any, host: str, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    h = lab.hosts[host]
    argv = ["ip", "netns", "exec", h.netns or "", orch_bin(), "-c", str(h.file("orch.yaml")), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_endpoints_answer_for_each_role_on_both_hosts(holder):
    lab = holder.healthy()
    master = lab.master()
    replica = lab.peer_of(master)
    assert api(lab, master, "/master")[0] == 200 and api(lab, master, "/replica")[0] == 503
    assert api(lab, replica, "/master")[0] == 503 and api(lab, replica, "/replica")[0] == 200
    for host in (master, replica):
        code, doc = api(lab, host, "/health")
        assert code == 200 and doc["node"] == host, doc
        code, doc = api(lab, host, "/status")
        assert code == 200 and doc["self"] == host and {n["role"] for n in doc["nodes"]} == {"master", "replica"}, doc
        code, doc = api(lab, host, "/history")
        assert code == 200 and isinstance(doc, list)
        assert api(lab, host, "/pause", "POST", {})[0] == 401
        code, doc = api(lab, host, "/metrics".replace("/metrics", "/nothing"))
        assert code == 404
    states = haproxy.server_states(lab)
    assert states[("write", master)] == "UP" and states[("write", replica)].startswith("DOWN"), states
    assert states[("read", replica)] == "UP" and states[("read", master)].startswith("DOWN"), states


DOCS = ("docs/http-api.md", "docs/haproxy.md")
STEP = re.compile(r"^[ \t]*```bash (?:http|haproxy)-step=(\w+)\n(.*?)^[ \t]*```", re.M | re.S)
EXPECT = re.compile(r"\s+# -> (.*)$")


def doc_steps() -> List[Tuple[str, str, str]]:
    """(document, where, command line) of every tested block, in order: docs/http-api.md's and
    docs/haproxy.md's fenced blocks whose info string is ``bash http-step=WHERE`` or
    ``bash haproxy-step=WHERE`` (WHERE: client, server1 or server2)."""
    out = []
    for doc in DOCS:
        for where, body in STEP.findall((ROOT / doc).read_text()):
            out += [(doc, where, line.strip()) for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return out


def test_the_documented_commands_run_as_written(holder):
    """Each command of the two pages, in the namespace it names, with the lab's addresses and
    paths for the documented ones; a line ending in ``# -> TEXT`` must print TEXT."""
    lab = holder.healthy()
    if lab.master() != "server1":  # the pages show server1 as the master
        done = run_orch(lab, lab.master(), "switchover", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        lab.wait_healthy(30)
    steps = doc_steps()
    assert {w for _, w, _ in steps} == {"client", "server1", "server2"} and len(steps) >= 12, steps
    venv_bin = str(Path(orch_bin()).parent)
    for doc, where, line in steps:
        expect = EXPECT.search(line)
        command = EXPECT.sub("", line)
        for i, h in enumerate(lab.hosts.values(), 1):
            command = re.sub(rf"\b10\.0\.0\.{i}\b(?![.\d])", h.address, command)
        command = command.replace("/run/haproxy/orch-admin.sock", str(haproxy.socket_path(lab)))
        command = command.replace("/etc/haproxy/haproxy.cfg", str(Path(lab.run_dir) / "haproxy.cfg"))
        ns = lab.client_ns
        env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
        if where != "client":
            h = lab.hosts[where]
            ns = h.netns
            command = command.replace("/etc/orch/", f"{h.path}/")
            env["ORCH_CONFIG"] = str(h.file("orch.yaml"))
        done = subprocess.run(["ip", "netns", "exec", ns, "bash", "-e", "-o", "pipefail", "-c", command],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, f"{doc} ({where}): {line}\n{done.stdout}{done.stderr}"
        if expect:
            assert expect.group(1).strip() in done.stdout, f"{doc} ({where}): {line}\nprinted: {done.stdout}"
        assert API_TOKEN not in done.stdout + done.stderr


def test_pause_and_resume_from_either_host(holder):
    lab = holder.healthy()
    master = lab.master()
    replica = lab.peer_of(master)
    done = run_orch(lab, replica, "pause", "--reason", "http drill", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    # /status is the maintainer's last pass (one maintainer.interval old at most).
    wait_for("both hosts' /status to show the pause", lambda: all(
        api(lab, h, "/status")[1]["maintenance"]["paused"] is True for h in (master, replica)), 10)
    # Over the API, authenticated, on the other host.
    code, doc = api(lab, master, "/resume", "POST", {"by": "drill"}, token=API_TOKEN, timeout=60)
    assert code == 200 and doc["exit_code"] == 0, doc
    wait_for("both hosts to see the resume", lambda: all(
        api(lab, h, "/status")[1]["maintenance"]["paused"] is False for h in (master, replica)), 10)


def report(request, drill: haproxy.Drill) -> None:
    write_report(request, f"HAProxy drill: {drill.fault}", [drill.line()])


def check(drill: haproxy.Drill) -> None:
    assert drill.lost == [], f"acknowledged writes lost: {drill.lost[:5]}"
    assert drill.haproxy_outage > 0 and drill.vip_outage > 0
    if drill.read_only_window is not None:
        # A write refused as read-only only before HAProxy's writer was back.
        assert drill.read_only_window[1] <= drill.haproxy_back, drill.line()
    if drill.fault == "switchover":  # nobody is without a role for long: the VIP's window is the floor
        assert drill.read_gap <= max(drill.vip_outage, drill.haproxy_outage), drill.line()
    else:
        # The replica lives through the fault: reads stop only around its promotion, far
        # shorter than the writes' outage through the VIP measured in the same run.
        assert drill.read_gap < drill.vip_outage / 2, drill.line()


def test_kill_9_of_the_master_through_haproxy(holder, request):
    lab = holder.healthy()
    drill = haproxy.run_drill(lab, "kill", "hap-kill")
    report(request, drill)
    check(drill)


def test_hung_master_through_haproxy(holder, request):
    lab = holder.healthy()
    drill = haproxy.run_drill(lab, "hang", "hap-hang")
    report(request, drill)
    check(drill)


def test_switchover_asked_on_the_replica_host_through_haproxy(holder, request):
    """orch switchover on the replica's host: its orch asks the master's (POST /switchover)."""
    lab = holder.healthy()
    old = lab.master()
    drill = haproxy.run_drill(lab, "switchover", "hap-switch")
    report(request, drill)
    assert f"{old} is the master: its orch runs the switchover" in drill.output, drill.output
    assert "switchover done" in drill.output, drill.output
    assert lab.master() == drill.new
    check(drill)
    # And back, from the master's own host this time (it runs there).
    done = run_orch(lab, drill.new, "switchover", "--yes")
    assert done.returncode == 0 and "its orch runs" not in done.stdout, done.stdout + done.stderr
    assert lab.master() == old
