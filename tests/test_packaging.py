"""A regular (non-editable) pip install ships the hooks and the lab's files.

The wheel is built from a copy of this tree and installed with --no-deps into a fresh
venv; its dependencies come from the dev venv's site-packages through a .pth path line
(offline, fast). Everything then runs from a cwd outside the source tree.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".git")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin directory of a fresh venv holding a wheel of this tree."""
    root = tmp_path_factory.mktemp("pip-install")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=IGNORED)
    wheels = root / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{build.stdout}\n{build.stderr}")
    shutil.rmtree(source)  # the install must not lean on a source tree
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies, from the dev venv (a path line: its editable-install hooks are not run).
    Path(purelib, "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.startswith("atlas_ha_orch-"), wheel.name  # our distribution name, not PyPI's other project
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                              "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.fail(f"pip install failed:\n{install.stdout}\n{install.stderr}")
    return venv / "bin"


def run(argv, tmp_path, timeout=60, **env):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": "", **env})


def test_the_hooks_are_console_scripts(installed, tmp_path):
    for name in ("orch", "orch-keepalived-notify", "orch-check-mysql"):
        assert (installed / name).is_file() and os.access(installed / name, os.X_OK), name
    r = run([installed / "orch-check-mysql", tmp_path / "missing.cnf"], tmp_path)
    assert r.returncode != 0 and "missing.cnf" in r.stderr, r
    r = run([installed / "orch-keepalived-notify"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("usage: orch-keepalived-notify") and r.stderr.count("\n") == 1, r


def test_notify_runs_the_installed_orch(installed, tmp_path):
    """The hook finds the orch next to it (not /usr/local/bin's) and logs where it is told."""
    log = tmp_path / "notify.log"
    r = run([installed / "orch-keepalived-notify", "-c", tmp_path / "absent.yaml", "--log", log,
             "INSTANCE", "VI_1", "BACKUP", "100"], tmp_path)
    assert r.returncode != 0 and r.stdout == "" and r.stderr == "", r
    text = log.read_text()
    assert "absent.yaml" in text and "orch: " in text, text


def test_the_lab_finds_its_files_outside_the_source_tree(installed, tmp_path):
    code = ("import json; from orchestrator.lab.hosts import CONF_DIR, HOOKS_DIR; import orchestrator; "
            "print(json.dumps([str(CONF_DIR), str(HOOKS_DIR), orchestrator.__file__]))")
    r = run([installed / "python", "-c", code], tmp_path)
    assert r.returncode == 0, r
    conf, hooks, package = map(Path, json.loads(r.stdout))
    assert not str(package).startswith(str(REPO)), "imported the source tree, not the installed package"
    assert conf.parent == hooks.parent == Path(package).parent / "_shipped"
    for name in ("keepalived-server1.conf", "keepalived-server2.conf", "keepalived-fast-server1.conf",
                 "keepalived-fast-server2.conf", "orch.yaml"):
        assert (conf / name).read_text() == (REPO / "conf" / name).read_text(), name
    for name in ("keepalived-notify", "check-mysql"):
        assert (hooks / name).read_bytes() == (REPO / "hooks" / name).read_bytes(), name


@pytest.mark.netns
def test_orch_lab_up_from_the_pip_install(installed, tmp_path):
    """The whole namespace lab (real keepalived running the packaged hooks) from the install."""
    from orchestrator.lab import netns

    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab_dir = tmp_path / "lab"
    orch = installed / "orch"
    try:
        up = run([orch, "lab", "up", "--mode", "netns", "--dir", lab_dir], tmp_path, timeout=300)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        status = run([orch, "lab", "status", "--dir", lab_dir], tmp_path)
        assert status.returncode == 0 and "holds VIP" in status.stdout and "health: ok" in status.stdout, \
            f"{status.stdout}\n{status.stderr}"
        # keepalived ran the packaged notify hook, which ran the installed orch
        assert "orch notify MASTER promoted it" in up.stdout, up.stdout
    finally:
        down = run([orch, "lab", "down", "--dir", lab_dir], tmp_path)
        assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"


# The distribution is atlas-ha-orch: "atlas-orchestrator" on PyPI is someone else's project, so
# no file may tell anyone to install that name from an index. (The pattern is spelled in
# pieces so that this file does not match itself.)
OLD_NAME = "atlas" + "[-_.]" + "orchestrator"
FROM_INDEX = re.compile(r"\bpip3?\b[^\n]*?\binstall\b[^\n]*?(?<![\w./-])" + OLD_NAME + r"(?![\w/-])", re.IGNORECASE)
SKIPPED_DIRS = {".venv", "build", "dist", "__pycache__", ".pytest_cache", ".git"}


def text_files(root: Path):
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts) or not path.is_file():
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def test_the_pattern_finds_an_install_of_the_old_name():
    old = "atlas" + "-orchestrator"
    for line in (f"/opt/orch/bin/pip install {old}   # or: pip install .", f"python3 -m pip install -U '{old}[test]'",
                 f"pip3 install {old.replace('-', '_')}==0.1"):
        assert FROM_INDEX.search(line), line
    for line in (f"WORKDIR /opt/{old}", "pip install .", f"# {old}: failover for the pair", "pip install atlas-ha-orch"):
        assert not FROM_INDEX.search(line), line


def test_no_file_tells_to_pip_install_the_old_name():
    found = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for path, text in text_files(REPO) for m in FROM_INDEX.finditer(text)]
    assert found == [], "\n".join(found)


def test_the_distribution_name_is_ours():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^name = "atlas-ha-orch"$', text, re.MULTILINE), text
