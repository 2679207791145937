"""HAProxy (conf/haproxy.cfg, Debian's haproxy) in front of the namespace lab, each server checked
through orch's HTTP API, drilled with real clients: a writer through the VIP and one through
HAProxy's write port side by side, a reader through its read port.

kill -9 of the master's mariadbd, a hung master (SIGSTOP), and a switchover asked on the
replica's host (its orch asks the master's over POST /switchover). Each drill: no
acknowledged write lost; HAProxy's writer back (its outage is reported against the VIP's:
bench/haproxy); no write through HAProxy reaches a read-only server after HAProxy's writer is
back (error 1290 only inside the window measured); the reader through HAProxy stops less
than half as long as the writes through the VIP (a kill, a hang: the replica lives). Also: every endpoint answers for each role on both hosts
of the lab, and orch switchover/pause/resume work from either host; HAProxy's write and read
backends (haproxy.stats_sockets) in orch status, orch lab status and the served status page (in
headless Chromium) before and after a kill -9 failover, and a socket out of reach reported.
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

from .orchtest import LabHolder, held_lab, write_report

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    return netns.unavailable_reason() or haproxy.unavailable_reason()


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("haproxy"), mariadb_template, haproxy=True), skip_reason()) as h:
        yield h


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


# --- HAProxy's backends in orch status, orch lab status and the status page -----------------------


def haproxy_rows(lab: Any, doc: Any) -> dict:
    """(role, server) -> status of the one HAProxy in a status document."""
    (proxy,) = doc["haproxy"]
    assert proxy["socket"] == str(haproxy.socket_path(lab)) and proxy["reachable"] is True, proxy
    assert proxy["error"] == "", proxy
    return {(b["role"], b["server"]): b["status"] for b in proxy["backends"]}


def page_rows(lab: Any, host: str, tmp_path: Path, name: str) -> dict:
    """GET / from ``host``'s orch (the page as served, HAProxy read by its HTTP server) rendered
    by headless Chromium: (role, server) -> data-status of the HAProxy rows."""
    from . import chromium
    from .test_statuspage_lab import assert_self_contained

    h = lab.hosts[host]

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{h.address}:9105/", timeout=5) as resp:
            return resp.read().decode("utf-8")

    html = netns.in_netns(lab.client_ns, fetch, 60)
    assert_self_contained(html)
    assert API_TOKEN not in html
    page = tmp_path / f"{name}.html"
    page.write_text(html)
    root = chromium.parse(chromium.dump_dom(page.as_uri(), tmp_path))
    chromium.screenshot(page.as_uri(), tmp_path / f"{name}.png", tmp_path)
    (block,) = root.find_all("div", class_="haproxy")
    assert block.attrs["data-haproxy"] == str(haproxy.socket_path(lab)) and block.attrs["data-reachable"] == "yes"
    return {(r.attrs["data-role"], r.attrs["data-server"]): r.attrs["data-status"]
            for r in block.find_all("tr", class_="haproxy-server")}


def expected_rows(master: str, replica: str, replica_down: bool = False) -> dict:
    """conf/haproxy.cfg's servers as HAProxy judges them: the master up for writes, the replica
    for reads; a backup line per server follows its write check (MAINT while tracked down)."""
    return {("write", master): "UP", ("write", replica): "DOWN",
            ("read", master): "DOWN", ("read", replica): "DOWN" if replica_down else "UP",
            ("read", f"{master}-master"): "UP", ("read", f"{replica}-master"): "DOWN"}


def test_haproxy_backends_in_status_lab_status_and_the_page_across_a_failover(holder, tmp_path):
    lab = holder.healthy()
    old = lab.master()
    new = lab.peer_of(old)
    from . import chromium

    chromium.require()
    seen: dict = {}

    def settled(host: str, want: dict) -> bool:
        done = run_orch(lab, host, "status", "--format", "json", timeout=60)
        seen[host] = haproxy_rows(lab, json.loads(done.stdout))
        return seen[host] == want

    want = expected_rows(old, new)
    wait_for("orch status on both hosts to show HAProxy's backends", lambda: settled(old, want) and settled(new, want), 20,
             detail=lambda: str(seen))
    table = run_orch(lab, old, "status")
    assert f"haproxy {haproxy.socket_path(lab)}:\n  write backend write: {old} UP (L7OK), {new} DOWN (L7STS)\n" in table.stdout, table.stdout
    flat = " ".join(table.stdout.split())  # long lines wrap at the table's width
    assert f"read backend read: {old} DOWN (L7STS), {new} UP (L7OK), {old}-master UP backup, {new}-master DOWN backup" in flat, flat
    lab_status = subprocess.run([orch_bin(), "lab", "status", "--dir", str(lab.workdir)], capture_output=True, text=True,
                                timeout=60)
    assert f"    write backend write: {old} UP (L7OK), {new} DOWN (L7STS)\n" in lab_status.stdout, lab_status.stdout + lab_status.stderr
    wait_for("the page's HAProxy rows", lambda: page_rows(lab, old, tmp_path, "before") == want, 20,
             detail=lambda: str(page_rows(lab, old, tmp_path, "before")))

    # kill -9 of the master's mariadbd: keepalived moves the VIP, orch promotes the replica,
    # HAProxy follows orch's /master and /replica answers.
    lab.kill_mysqld(old)
    try:
        after = expected_rows(new, old, replica_down=True)  # the old master's server is down: it answers neither
        wait_for(f"{new} to be the master", lambda: lab.master() == new, 60)
        wait_for("HAProxy (through orch status on the new master) to send writes to it", lambda: settled(new, after), 30,
                 detail=lambda: str(seen))
        got: dict = {}

        def page_settled() -> bool:
            got.update(page_rows(lab, new, tmp_path, "after-failover"))
            return got == after

        wait_for("the new master's page to show HAProxy after the failover", page_settled, 20, detail=lambda: str(got))
        # GET /status: the same entries, read by the HTTP server's own thread, with their age.
        code, doc = api(lab, new, "/status")
        assert code == 200 and haproxy_rows(lab, doc) == after, doc.get("haproxy")
        assert 0 <= doc["haproxy"][0]["age"] < 5, doc["haproxy"]  # refreshed every second
    finally:
        lab.start_mysqld(old)
    lab.wait_healthy(90)
    wait_for("HAProxy to send reads to the old master again", lambda: settled(new, expected_rows(new, old)), 30,
             detail=lambda: str(seen))


def test_an_unreachable_haproxy_is_reported_never_fatal(holder, tmp_path):
    """HAProxy's socket gone (HAProxy stopped): orch status still answers, with the reading's error."""
    lab = holder.healthy()
    sock = haproxy.socket_path(lab)
    moved = sock.with_name("haproxy.sock.away")
    os.rename(sock, moved)  # HAProxy keeps running; only its socket is out of reach
    try:
        done = run_orch(lab, lab.master(), "status", "--format", "json", timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        (proxy,) = json.loads(done.stdout)["haproxy"]
        assert proxy["reachable"] is False and "No such file or directory" in proxy["error"], proxy
        table = run_orch(lab, lab.master(), "status")
        assert table.returncode == 0 and f"haproxy {sock}: UNREACHABLE: cannot read show stat" in table.stdout, table.stdout
    finally:
        os.rename(moved, sock)
