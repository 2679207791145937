"""The commands docs/status-page.md and docs/monitoring.md show, run as written.

Every ```bash block of the two pages is run with ``bash -e -o pipefail`` by a test: here,
or (monitoring.md's scrape check, which needs the hosts' metrics ports) in
tests/test_statuspage_netns.py. Nothing of the commands is copied; what the tests change
is named in ``SUBSTITUTIONS`` (paths, so a test never touches a real sandbox or
/etc/prometheus) and the environment (the venv's bin first on PATH; ``ORCH_CONFIG`` for
the commands that read orch's default config).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from . import chromium

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent


def blocks(page: str) -> List[str]:
    """The ```bash blocks of docs/<page>, in document order."""
    text = (DOCS / page).read_text()
    return re.findall(r"^```bash\n(.*?)^```$", text, re.M | re.S)


def substitute(block: str, values: Dict[str, str]) -> str:
    for old, new in values.items():
        block = block.replace(old, new)
    return block


def bash(block: str, cwd: Path, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{block}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def environment(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("ORCH_CONFIG", None)
    env.update(extra)
    return env


def test_every_bash_block_of_the_two_pages_is_run_by_a_test():
    """status-page.md: the lab, the snapshot, the lab's end (here); monitoring.md: the
    install and check (here), the scrape check (tests/test_statuspage_netns.py)."""
    assert [b.splitlines()[0].split()[:3] for b in blocks("status-page.md")] == [
        ["orch", "lab", "up"], ["orch", "status", "--format"], ["orch", "lab", "down"]]
    assert [b.splitlines()[0].split()[:2] for b in blocks("monitoring.md")] == [["install", "-d"], ["curl", "-fsS"]]


@pytest.mark.mariadb
def test_status_page_doc_commands(tmp_path):
    chromium.require()
    lab_dir = tmp_path / "orch-lab"
    values = {"/tmp/orch-lab": str(lab_dir), "/opt/orch/bin/python": sys.executable}
    lab, snapshot, down = (substitute(b, values) for b in blocks("status-page.md"))
    work = tmp_path / "work"
    work.mkdir()
    try:
        out = bash(lab, work, environment()).stdout
        timeline = re.search(r"^timeline: (\S+)$", out, re.M)
        assert timeline and Path(timeline.group(1)).exists() and Path(timeline.group(1)).parent == lab_dir, out
        assert Path(timeline.group(1)).with_suffix(".txt").exists()
        # The snapshot, as on the new master's host (orch's default config there).
        out = bash(snapshot, work, environment(ORCH_CONFIG=str(lab_dir / "server2" / "orch.yaml"))).stdout
        assert sorted(out.split()) == ['data-role="master"', 'data-role="replica"'], out
        root = chromium.parse(chromium.dump_dom((work / "status.html").as_uri(), tmp_path))
        roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
        assert roles == {"server2": "master", "server1": "replica"}
    finally:
        bash(down, work, environment())
    assert not (lab_dir / "lab.json").exists()


def test_monitoring_doc_install_and_check(tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus; ./dev setup installs it)")
    etc = tmp_path / "etc-prometheus"
    install = substitute(blocks("monitoring.md")[0], {"/etc/prometheus": str(etc)})
    out = bash(install, REPO, environment()).stdout
    assert "SUCCESS" in out and "1 rule files found" in out, out
    prom = yaml.safe_load((etc / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["db1.example.com:9105", "db2.example.com:9105"]
    assert (etc / "orch-alerts.yml").read_text() == (REPO / "conf" / "orch-alerts.yml").read_text()
    assert (REPO / "conf" / "prometheus.yml").read_text().count("10.0.0.1:9105") == 1  # the checkout is untouched
