"""The status page and ``orch lab failover``'s timeline from the namespace lab, in headless
Chromium: real keepalived moves the VIP, a client writes through it during the failover.

Run under ``flock /tmp/orch-netns.lock``. What the loopback lab cannot show is checked
here: the VIP holder (this host holds it, per ``orch status`` run inside the new master's
namespace), the client's write gap, and the VIP lane of the timeline.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from orchestrator import statuspage
from orchestrator.lab import netns
from orchestrator.lab.proc import orch_bin
from orchestrator.lab.sandbox import load_lab

from . import chromium
from . import orchtest as t
from .test_statuspage_lab import assert_self_contained, orch_lab

pytestmark = pytest.mark.netns

SHOTS: List[str] = []


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory, request):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    chromium.require()
    workdir = tmp_path_factory.mktemp("page-netns") / "lab"
    up = orch_lab("up", "--dir", str(workdir), "--mode", "netns")
    try:
        assert up.code == 0, up
        failover = orch_lab("failover", "--dir", str(workdir))
        assert failover.code == 0, failover
        yield workdir, failover
    finally:
        down = orch_lab("down", "--dir", str(workdir))
        t.write_report(request, "status page screenshots (namespace lab):", SHOTS)
        assert down.code == 0, down


def orch_in(workdir: Path, host: str, *args: str) -> Any:
    """orch on a lab host: inside its namespace, with its config (as the host would run it)."""
    lab = load_lab(str(workdir))
    assert lab is not None
    h = lab.hosts[host]
    argv = ["ip", "netns", "exec", h.netns or "", orch_bin(), "-c", str(h.file("orch.yaml")), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def load(html_file: Path, tmp_path: Path, record_property: Any, name: str) -> chromium.Element:
    url = html_file.as_uri()
    dom = chromium.dump_dom(url, tmp_path)
    png = chromium.screenshot(url, tmp_path / f"{name}.png", tmp_path)
    record_property("screenshot", str(png))
    SHOTS.append(f"{name}: {png}")
    return chromium.parse(dom)


def test_status_page_of_the_vip_holder(lab_run, tmp_path, record_property):
    workdir, _ = lab_run
    status = orch_in(workdir, "server2", "status", "--format", "json")
    history = orch_in(workdir, "server2", "history", "--format", "json")
    html = statuspage.render(status, history)
    assert_self_contained(html)
    t.assert_no_secrets(html)
    page = tmp_path / "status-server2.html"
    page.write_text(html)
    root = load(page, tmp_path, record_property, "netns-status-server2")
    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server2": "master", "server1": "replica"}, roles
    vip = root.one(id="vip")
    assert vip.attrs["data-holder"] == "server2" and netns.VIP in vip.text()
    assert "holds the VIP" in root.one("div", data_node="server2").text()
    (f,) = root.find_all("div", class_="failover")
    assert (f.attrs["data-promoted"], f.attrs["data-old"]) == ("server2", "server1")
    known = {m.attrs["data-key"]: m.attrs["data-known"] for m in f.find_all("tr", class_="milestone")}
    assert known["vip"] == known["opened"] == "yes", known

    # The old master's host: not the VIP holder; the promotion reaches it only through the
    # record, which the lab leaves off (failover.block_seconds 0), so its page shows its runs.
    status = orch_in(workdir, "server1", "status", "--format", "json")
    page = tmp_path / "status-server1.html"
    page.write_text(statuspage.render(status, orch_in(workdir, "server1", "history", "--format", "json")))
    root = load(page, tmp_path, record_property, "netns-status-server1")
    assert root.one(id="vip").attrs["data-holder"] == "not this host"
    assert root.one("div", data_node="server1").attrs["data-role"] == "replica"


def test_lab_failover_timeline_shows_the_clients_write_gap_and_the_vip(lab_run, tmp_path, record_property):
    workdir, failover = lab_run
    found = re.search(r"^timeline: (\S+)$", failover.stdout, re.M)
    assert found, failover.stdout
    html_file = Path(found.group(1))
    assert html_file.with_suffix(".txt").exists()
    html = html_file.read_text()
    assert_self_contained(html)
    t.assert_no_secrets(html)
    root = load(html_file, tmp_path, record_property, "netns-lab-failover")
    assert root.one(id="verdict").text() == "healed"
    assert root.one(id="two-writers").attrs["data-count"] == "0"
    f = root.one("div", class_="failover")
    lanes = [lane.attrs["data-lane"] for lane in f.find_all("g", class_="lane")]
    assert lanes[:4] == ["client writes", "read_only server1", "read_only server2", "VIP holder"], lanes

    def labels(lane: str) -> List[str]:
        return [s.attrs["data-label"] for s in f.one("g", data_lane=lane).find_all("g", class_="span")]

    gaps = [x for x in labels("client writes") if x.startswith("no write for")]
    assert gaps, labels("client writes")
    vip = labels("VIP holder")
    assert vip[0] == "server1" and vip[-1] == "server2", vip
    known = {m.attrs["data-key"]: m.attrs["data-known"] for m in f.find_all("tr", class_="milestone")}
    assert set(known.values()) == {"yes"}, known
    durations = {row.find_all("th")[0].text(): row.find_all("td")[0].text() for row in f.find_all("tr", class_="duration")}
    gap = durations["client saw no acknowledged write"]
    assert re.fullmatch(r"\d+\.\d\ds", gap), durations
    # The narration measured the same gap from the same acknowledgements.
    said = re.search(r"the client saw (\d+\.\d\d)s without a successful insert", failover.stdout)
    assert said and abs(float(said.group(1)) - float(gap[:-1])) <= 0.05, (said, gap)
    marks = {m.attrs["data-mark"] for m in f.find_all("g", class_="mark")}
    assert {"fault", "VIP moved", "writes opened", "writes acknowledged again", "old master rejoined"} <= marks, marks


def test_monitoring_doc_scrape_check_against_a_lab_host(lab_run):
    """docs/monitoring.md's curl, from the lab's client namespace to server1's address."""
    from .test_docs_pages import blocks, environment, substitute

    workdir, _ = lab_run
    lab = load_lab(str(workdir))
    assert lab is not None and lab.mode == "netns"
    check = substitute(blocks("monitoring.md")[1], {"10.0.0.1": lab.hosts["server1"].address})
    proc = subprocess.run(["ip", "netns", "exec", lab.client_ns, "bash", "-e", "-o", "pipefail", "-c", check],
                          capture_output=True, text=True, timeout=60, env=environment(), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert 'orch_node_read_only{node="server1"} 1.0' in lines and 'orch_node_read_only{node="server2"} 0.0' in lines, lines
    assert "orch_holds_vip 0.0" in lines, lines  # server1 is the old master: server2 holds the VIP
    assert any(line.startswith("orch_maintainer_last_pass_timestamp_seconds ") for line in lines), lines


def served_page(lab: Any, host: str, tmp_path: Path, name: str) -> Tuple[Path, float]:
    """GET / of ``host``'s orch, fetched from the lab's client namespace: the saved page, and
    how long the answer took."""
    h = lab.hosts[host]
    out = tmp_path / f"{name}.html"
    argv = ["ip", "netns", "exec", lab.client_ns, "curl", "-s", "-f", "-m", "20", "-o", str(out), "-w", "%{time_total}",
            f"http://{h.address}:9105/"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, float(proc.stdout)


def test_the_served_page_merges_the_other_hosts_fault(lab_run, tmp_path, record_property):
    """GET / on the new master's host merges the old master's history (its GET /history): the
    FAULT recorded on the old master's host is seen, marked with its host; with that host's orch
    frozen, the page still comes at once and says its history is not merged."""
    workdir, _ = lab_run
    lab = load_lab(str(workdir))
    assert lab is not None
    html, took = served_page(lab, "server2", tmp_path, "served-server2")
    assert_self_contained(html.read_text())
    t.assert_no_secrets(html.read_text())
    root = load(html, tmp_path, record_property, "netns-served-server2")
    note = root.one(id="peer-history")
    assert (note.attrs["data-host"], note.attrs["data-merged"]) == ("server1", "yes"), note.text()
    (f,) = root.find_all("div", class_="failover")
    fault = f.one("tr", data_key="fault")
    assert fault.attrs["data-known"] == "yes" and "server1: FAULT run" in fault.text(), fault.text()
    hosts = {row.attrs["data-host"] for row in root.find_all("tr", class_="entry")}
    assert hosts == {"server1", "server2"}, hosts

    # server1's orch frozen (its port accepts, nothing answers): the page says so, within the deadline.
    proc = lab.procs["server1.maintain"]
    assert proc.send(signal.SIGSTOP)
    try:
        html, took = served_page(lab, "server2", tmp_path, "served-server2-peer-frozen")
        root = load(html, tmp_path, record_property, "netns-served-server2-peer-frozen")
        health = subprocess.run(["ip", "netns", "exec", lab.client_ns, "curl", "-s", "-m", "2", "-o", "/dev/null", "-w",
                                 "%{http_code}", f"http://{lab.hosts['server2'].address}:9105/health"],
                                capture_output=True, text=True, timeout=10, check=False)
    finally:
        proc.send(signal.SIGCONT)
    note = root.one(id="peer-history")
    assert note.attrs["data-merged"] == "no" and "no answer within 1s" in note.text(), note.text()
    assert root.one("div", class_="failover").one("tr", data_key="fault").attrs["data-known"] == "no"
    assert took < 5.0, took  # the 1 s deadline, plus this host's own history read
    assert health.stdout == "200", health
