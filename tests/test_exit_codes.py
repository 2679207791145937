"""The exit codes: docs/cli.md's one table equals the EXIT_* constants, and each code is seen
through the CLI (real servers where a code needs them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import pytest

from orchestrator import errors
from orchestrator.lab import mariadb as lab

from . import orchtest as t

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "cli.md"


def readme_table() -> Dict[str, int]:
    text = CLI_PAGE.read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(EXIT_\w+)` \| .+ \|$", section, re.M)
    assert rows, "docs/cli.md lost its exit code table"
    return {name: int(code) for code, name in rows}


def constants() -> Dict[str, int]:
    return {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}


def test_readme_table_is_the_constants():
    assert readme_table() == constants()
    # One table: no other "Exit codes:" list of numbers elsewhere in the README or the docs.
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        assert len(re.findall(r"(?m)^Exit codes: \d", page.read_text())) == 0, page


def test_only_the_constants_are_returned_by_commands():
    """Every command returns a named code (maintain's run_pass, which counts changes, is orchestrator/maintainer.py)."""
    root = ROOT / "orchestrator"
    files = [root / "cli.py", root / "errors.py"] + sorted((root / "commands").glob("*.py"))
    literal = re.compile(r"^\s*return (\d+)(\s*$| if .* else \d+$)|sys\.exit\(\d|exit_code = \d", re.M)
    found = []
    for path in files:
        for m in literal.finditer(path.read_text()):
            line = path.read_text()[:m.start()].count("\n") + 1
            found.append(f"{path.name}:{line}: {m.group(0).strip()}")
    allowed = {"doctor.py"}  # doctor's _weight() parses a number
    assert [f for f in found if f.split(":")[0] not in allowed] == []


# --- each code through the CLI ---------------------------------------------------------------


def test_ok_and_bad_input(tmp_path):
    good = t.write_config(tmp_path / "orch.yaml", {
        "self": "server1", "nodes": {"server1": {"host": "127.0.0.1", "port": 1}, "server2": {"host": "127.0.0.1", "port": 2}},
        "mysql": {"user": "orch", "password": "pw1"}, "replication": {"user": "repl", "password": "pw2"},
        "keepalived": {"vip_check": False}, "state_dir": str(tmp_path / "state")})
    assert t.orch(good, None, "check-config").code == errors.EXIT_OK
    for argv, says in [
        ((str(tmp_path / "missing.yaml"), None, "check-config"), "cannot read the config file"),
        ((str(tmp_path / "missing.yaml"), None, "status"), "cannot read the config file"),
        ((str(tmp_path / "missing.yaml"), "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100"), "cannot read the config file"),
        ((good, "server3", "status"), "--node server3 is not one of nodes (server1, server2)"),
        ((good, "server3", "notify", "INSTANCE", "VI_1", "MASTER", "100"), "--node server3 is not one of nodes"),
        ((good, None, "status", "--bogus"), "unrecognized arguments"),
        ((good, None, "frobnicate"), "invalid choice"),
        ((good, None, "notify", "INSTANCE", "VI_1", "MASTRE"), "STATE must be one of"),
    ]:
        r = t.orch(*argv)
        assert r.code == errors.EXIT_USAGE and says in r.stderr, (argv, r)
        assert "Traceback" not in r.stderr, r
    r = t.orch(good, None, "status", env={"ORCH_NODE": "server9"})
    assert r.code == errors.EXIT_USAGE and "ORCH_NODE server9 is not one of nodes" in r.stderr, r
    r = t.orch(str(tmp_path / "missing.yaml"), None, "check-config")
    assert len(r.stderr.strip().splitlines()) == 1, r
    assert not (tmp_path / "state").exists()
    # A config file that says something wrong is a failed check (1), every problem listed.
    bad = tmp_path / "bad.yaml"
    bad.write_text("self: server1\nnodes: {server1: {host: h, port: x}, server2: {host: h}}\n")
    r = t.orch(str(bad), None, "check-config")
    assert r.code == errors.EXIT_FAILED and "nodes.server1.port: expected an integer" in r.stderr, r


def test_maintain_once_that_reached_neither_server_fails(tmp_path):
    cfg = t.write_config(tmp_path / "orch.yaml", {
        "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": lab.free_port()}, "server2": {"host": "127.0.0.1", "port": lab.free_port()}},
        "mysql": {"user": "orch", "password": "pw1", "connect_timeout": 1}, "replication": {"user": "repl", "password": "pw2"},
        "keepalived": {"vip_check": False}, "state_dir": str(tmp_path / "state")})
    for mode in ("--once", "--dry-run"):
        r = t.orch(cfg, None, "maintain", mode)
        assert r.code == errors.EXIT_FAILED and "reached neither server" in r.stderr, r


@pytest.mark.mariadb
def test_refused_incomplete_and_maintain_once_on_a_real_pair(cluster, tmp_path):
    s1, s2, cfg, state = cluster
    r = t.orch(cfg, None, "maintain", "--once")
    assert r.code == errors.EXIT_OK, r
    # 3: BACKUP on server2 while its peer does not answer: fenced, waiting for the peer.
    d = t.config_dict(s1, s2, state, self="server2")
    d["nodes"]["server1"]["port"] = lab.free_port()
    nopeer = t.write_config(tmp_path / "nopeer.yaml", d)
    r = t.orch(nopeer, None, "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == errors.EXIT_INCOMPLETE, r
    # 1: server2 has a transaction its master lacks: its rejoin is refused, nothing changed.
    s2.sql("INSERT INTO test.t VALUES (7, 'errant')")  # root bypasses read_only
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", "demote", "--yes")
    assert r.code == errors.EXIT_FAILED and "errant" in r.output.lower(), r
    assert t.snapshot(s1, s2) == before


def test_bug_and_interrupt_codes(monkeypatch, tmp_path, capsys):
    """70 and 130 need a bug or a Ctrl-C: the dispatcher is given one."""
    from orchestrator import cli
    from orchestrator.commands import check

    def bug(args, out):
        raise ZeroDivisionError("a bug")

    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "check_config", bug)
    assert cli.main(["-c", str(tmp_path / "x.yaml"), "check-config"]) == errors.EXIT_BUG
    monkeypatch.setattr(check, "check_config", interrupted)
    assert cli.main(["-c", str(tmp_path / "x.yaml"), "check-config"]) == errors.EXIT_INTERRUPTED
    assert "orch: interrupted" in capsys.readouterr().err
