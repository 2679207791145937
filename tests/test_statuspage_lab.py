"""The status page and the failover timeline in a real browser, from a real lab.

``orch lab up`` (loopback: two real mariadbd, Atlas stand-ins, real hooks and
maintainers), ``orch lab failover``; then each host's ``orch status --format json`` and
``orch history --format json`` rendered by ``orchestrator.statuspage.render`` and the
timeline page ``orch lab failover`` wrote next to its narration, both loaded in headless
Chromium: the rendered DOM must show the roles, the VIP holder and the timeline's entries,
and a screenshot of each is saved in the test's directory (its path printed after the run
and recorded as the test's ``screenshot`` property). The namespace lab's variant (a VIP
and a client writing through it) is tests/test_statuspage_netns.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from orchestrator import statuspage

from . import chromium
from . import orchtest as t

pytestmark = pytest.mark.mariadb

SHOTS: List[str] = []  # screenshot paths, printed after the module's tests


def orch_lab(*args: str, timeout: float = 240) -> t.Result:
    argv = [t.ORCH, "lab", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return t.Result(argv, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory, request):
    """A loopback lab after one ``orch lab failover``: (lab dir, the failover's output)."""
    chromium.require()
    workdir = tmp_path_factory.mktemp("page") / "lab"
    up = orch_lab("up", "--dir", str(workdir), "--mode", "loopback")
    try:
        assert up.code == 0, up
        failover = orch_lab("failover", "--dir", str(workdir))
        assert failover.code == 0, failover
        yield workdir, failover
    finally:
        down = orch_lab("down", "--dir", str(workdir))
        t.write_report(request, "status page screenshots (loopback lab):", SHOTS)
        assert down.code == 0, down


def documents(workdir: Path, host: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    cfg = str(workdir / host / "orch.yaml")
    status = t.orch(cfg, None, "status", "--format", "json")
    assert status.code == 0, status
    history = t.orch(cfg, None, "history", "--format", "json")
    assert history.code == 0, history
    return json.loads(status.stdout), json.loads(history.stdout)


def load(html_file: Path, tmp_path: Path, record_property: Any, name: str) -> chromium.Element:
    """The page in Chromium: its DOM (parsed) after scripts ran, and a screenshot saved."""
    url = html_file.as_uri()
    dom = chromium.dump_dom(url, tmp_path)
    png = chromium.screenshot(url, tmp_path / f"{name}.png", tmp_path)
    record_property("screenshot", str(png))
    SHOTS.append(f"{name}: {png}")
    return chromium.parse(dom)


def assert_self_contained(html: str) -> None:
    """No resource from elsewhere: no src, no link, no url(), no import; one inline script at most."""
    assert not re.search(r"\ssrc\s*=", html), "a src attribute"
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html), "an external address"
    assert html.count("<script") <= 1


def test_status_page_of_the_new_master_in_chromium(lab_run, tmp_path, record_property):
    workdir, _ = lab_run
    status, history = documents(workdir, "server2")
    html = statuspage.render(status, history)
    assert_self_contained(html)
    t.assert_no_secrets(html)
    page = tmp_path / "status-server2.html"
    page.write_text(html)
    root = load(page, tmp_path, record_property, "status-server2")

    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server2": "master", "server1": "replica"}, roles
    assert "off (writable)" in root.one("div", data_node="server2").text()
    assert "ON (read-only)" in root.one("div", data_node="server1").text()
    arrow = root.one("div", class_="arrow")
    assert (arrow.attrs.get("data-from"), arrow.attrs.get("data-to")) == ("server2", "server1")
    # The loopback lab has no VIP (keepalived.vip is one of its named overrides): the page says so.
    vip = root.one(id="vip")
    assert vip.attrs["data-holder"] == "unknown" and "no keepalived.vip configured" in vip.text()
    atlas = root.one("section", id="backends").text()
    assert "Atlas local" in atlas and "server1" in atlas

    failovers = root.find_all("div", class_="failover")
    assert len(failovers) == 1, [f.attrs for f in failovers]
    f = failovers[0]
    assert (f.attrs["data-promoted"], f.attrs["data-old"], f.attrs["data-kind"]) == ("server2", "server1", "failover")
    known = {m.attrs["data-key"]: m.attrs["data-known"] for m in f.find_all("tr", class_="milestone")}
    # The FAULT is in server1's journal, not on this host's page; the rest is here.
    assert known == {"fault": "no", "vip": "yes", "opened": "yes", "rejoined": "yes"}, known
    marks = {m.attrs["data-mark"] for m in f.find_all("g", class_="mark")}
    assert marks == {"VIP moved", "writes opened", "old master rejoined"}, marks
    assert [lane.attrs["data-lane"] for lane in f.find_all("g", class_="lane")] == ["orch on server2"]
    assert "MASTER act" in [s.attrs["data-label"] for s in f.find_all("g", class_="span")]
    durations = {row.find_all("th")[0].text(): row.find_all("td")[0].text() for row in f.find_all("tr", class_="duration")}
    assert re.fullmatch(r"\d+\.\d\ds", durations["writes opened to old master rejoined"]), durations
    assert durations["fault seen to VIP moved"] == "unknown"
    entries = root.find_all("tr", class_="entry")
    assert entries and any("MASTER" in e.text() for e in entries)


def test_status_page_of_the_old_master_in_chromium(lab_run, tmp_path, record_property):
    workdir, _ = lab_run
    status, history = documents(workdir, "server1")
    page = tmp_path / "status-server1.html"
    page.write_text(statuspage.render(status, history))
    root = load(page, tmp_path, record_property, "status-server1")
    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server1": "replica", "server2": "master"}, roles
    arrow = root.one("div", class_="arrow")
    assert (arrow.attrs.get("data-from"), arrow.attrs.get("data-to")) == ("server2", "server1")
    # The lab runs without anti-flapping (failover.block_seconds 0, a named override), so no
    # promotion row replicates here: this host's history has its FAULT and its rejoin only.
    assert root.find_all("div", class_="failover") == []
    assert root.one(id="no-failovers")
    events = " ".join(e.text() for e in root.find_all("tr", class_="entry"))
    assert "FAULT" in events and ("REJOIN" in events or "BACKUP" in events), events


def test_orch_lab_failover_writes_its_timeline_next_to_its_narration(lab_run, tmp_path, record_property):
    workdir, failover = lab_run
    found = re.search(r"^timeline: (\S+)$", failover.stdout, re.M)
    narration = re.search(r"^narration: (\S+)$", failover.stdout, re.M)
    assert found and narration, failover.stdout
    html_file, text_file = Path(found.group(1)), Path(narration.group(1))
    assert html_file.parent == text_file.parent == workdir and html_file.stem == text_file.stem
    assert "kill -9 mysqld on server1" in text_file.read_text()
    html = html_file.read_text()
    assert_self_contained(html)
    assert "<script" not in html  # a saved run does not refresh
    t.assert_no_secrets(html)
    root = load(html_file, tmp_path, record_property, "lab-failover")

    assert root.one(id="verdict").text() == "healed"
    assert root.one(id="two-writers").attrs["data-count"] == "0"
    f = root.one("div", class_="failover")
    assert (f.attrs["data-promoted"], f.attrs["data-old"]) == ("server2", "server1")
    lanes = [lane.attrs["data-lane"] for lane in f.find_all("g", class_="lane")]
    assert lanes == ["read_only server1", "read_only server2", "VIP holder", "orch on server1", "orch on server2"], lanes

    def labels(lane: str) -> List[str]:
        return [s.attrs["data-label"] for s in f.one("g", data_lane=lane).find_all("g", class_="span")]

    # read_only of both servers as sampled: server1 writable, down, back read-only; server2 read-only, then writable.
    assert labels("read_only server1")[0] == "writable" and "not answering" in labels("read_only server1")
    assert labels("read_only server1")[-1] == "read-only"
    assert labels("read_only server2")[0] == "read-only" and labels("read_only server2")[-1] == "writable"
    assert labels("VIP holder")[0] == "server1" and labels("VIP holder")[-1] == "server2"
    assert any(x.startswith("FAULT") for x in labels("orch on server1"))
    assert any(x.startswith("MASTER act") for x in labels("orch on server2"))
    known = {m.attrs["data-key"]: m.attrs["data-known"] for m in f.find_all("tr", class_="milestone")}
    assert known == {"fault": "yes", "vip": "yes", "opened": "yes", "rejoined": "yes"}, known
    durations = {row.find_all("th")[0].text(): row.find_all("td")[0].text() for row in f.find_all("tr", class_="duration")}
    assert all(re.fullmatch(r"\d+\.\d\ds", v) for v in durations.values()), durations
    decisions = {(d.attrs["data-node"], d.find_all("td")[3].text()) for d in root.find_all("tr", class_="decision")}
    assert ("server1", "FAULT") in decisions and ("server2", "MASTER") in decisions, decisions
    assert "kill -9 mysqld on server1" in root.one("section", id="narration").text()
