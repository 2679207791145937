"""One CLI grammar: global options after the command, a description and a help for every
option of every command (what each override skips), --format json where a command reports,
the status table's width, shell completion and the man page built from the parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import cli, errors
from orchestrator.argv import build_parser, subcommands
from orchestrator.commands.manpage import bash_completion, man_page

from . import orchtest as t


def good_config(tmp_path: Path) -> str:
    return t.write_config(tmp_path / "orch.yaml", {
        "self": "server1", "nodes": {"server1": {"host": "127.0.0.1", "port": 1}, "server2": {"host": "127.0.0.1", "port": 2}},
        "mysql": {"user": "orch", "password": "pw-secret-1"}, "replication": {"user": "repl", "password": "pw-secret-2"},
        "keepalived": {"vip_check": False}, "state_dir": str(tmp_path / "state")})


@pytest.mark.parametrize("argv, config, node, verbose", [
    (["status", "-c", "F"], "F", None, False),
    (["status", "--config", "F", "--node", "server2"], "F", "server2", False),
    (["-c", "F", "status", "--node", "server2", "-v"], "F", "server2", True),
    (["-c", "F", "--node", "server1", "status"], "F", "server1", False),  # before the command: kept
    (["history", "--since", "2h", "-c", "F"], "F", None, False),
    (["promote", "--dry-run", "-c", "F"], "F", None, False),
])
def test_global_options_are_accepted_after_the_command_too(argv, config, node, verbose):
    args = cli.parse_args(argv)
    assert (args.config, args.node, args.verbose) == (config, node, verbose)


def test_status_with_the_config_after_the_command_reads_that_file(tmp_path):
    """Through the real command: -c after the subcommand is the file read (a missing one: exit 2, named)."""
    missing = str(tmp_path / "missing.yaml")
    r = subprocess.run([t.ORCH, "status", "-c", missing], capture_output=True, text=True, timeout=30)
    assert r.returncode == errors.EXIT_USAGE and f"cannot read the config file {missing} (-c)" in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([t.ORCH, "check-config", "-c", good_config(tmp_path), "--format", "json"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert set(doc) == {"valid", "path", "problems", "warnings", "cluster", "self", "flavor", "nodes", "atlas"}
    assert doc["valid"] is True and doc["self"] == "server1" and [n["name"] for n in doc["nodes"]] == ["server1", "server2"]
    assert "pw-secret" not in r.stdout


def test_check_config_json_lists_every_problem_and_exits_1(tmp_path):
    bad = t.write_config(tmp_path / "bad.yaml", {"self": "server1", "nodes": {"server1": {"host": "127.0.0.1", "port": "x"}},
                                                 "mysql": {"user": "orch", "password": "pw-secret-1"}})
    r = t.orch(bad, None, "check-config", "--format", "json")
    assert r.code == errors.EXIT_FAILED, r
    doc = json.loads(r.stdout)
    assert doc["valid"] is False and len(doc["problems"]) >= 2 and doc["path"] == bad
    assert any("nodes.server1.port" in p for p in doc["problems"]), doc
    assert "pw-secret" not in r.output


def test_every_command_has_a_description_and_every_option_a_help():
    for name, sub in subcommands(build_parser()).items():
        assert sub.description, f"orch {name} --help has no description line"
        for action in sub._actions:
            assert action.help, f"orch {name}: {action.option_strings or action.dest} has no help"


def test_promote_names_each_override_after_the_gate_it_skips(capsys):
    assert cli.main(["promote", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--ignore-catchup skips the catch-up gate" in text
    assert "--ignore-anti-flapping skips the anti-flapping block" in text
    assert "--force deprecated: both --ignore-catchup and --ignore-anti-flapping" in text
    assert "--yes, -y skips the confirmation prompt (and nothing else)" in text
    args = cli.parse_args(["promote", "--ignore-catchup"])
    assert (args.ignore_catchup, args.ignore_anti_flapping, args.force) == (True, False, False)


@pytest.mark.parametrize("argv", [
    ["promote", "--format", "json"], ["demote", "--format", "json"], ["ack", "--format", "json"],
    ["switchover", "--format", "json"], ["maintain", "--once", "--format", "json"],
    ["history", "--since", "yesterday"], ["history", "--format", "xml"],
])
def test_bad_format_or_since_is_one_line_exit_2_and_nothing_done(tmp_path, argv):
    cfg = good_config(tmp_path)
    r = t.orch(cfg, None, *argv)
    assert r.code == errors.EXIT_USAGE, r
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r
    assert not (tmp_path / "state").exists()


def test_deprecated_force_warns_in_one_line(tmp_path):
    r = t.orch(good_config(tmp_path), None, "promote", "--force", "--dry-run")
    assert "warning: --force is deprecated" in r.stderr, r
    assert len([line for line in r.stderr.splitlines() if "deprecated" in line]) == 1


def test_completion_and_man_page_list_every_command_and_option():
    parser = build_parser()
    script, page = bash_completion(parser), man_page(parser, date="2026-01-01")
    commands = subcommands(parser)
    assert {"history", "status", "promote", "completion", "man"} <= set(commands)
    for name, sub in commands.items():
        assert f"        {name}) COMPREPLY" in script, name
        assert f".SS {name.replace('-', chr(92) + '-')}\n" in page, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in script.split(f"        {name}) ", 1)[1].split("\n", 1)[0], (name, option)
    assert "\\-\\-ignore\\-anti\\-flapping" in page and "\\-\\-ignore\\-catchup" in page
    for code in errors.MEANING:
        assert f".TP\n{code}\n" in page
    assert set(errors.MEANING) == {v for k, v in vars(errors).items() if k.startswith("EXIT_")}


def test_the_completion_script_completes_in_bash(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = tmp_path / "orch.bash"
    r = subprocess.run([t.ORCH, "completion", "bash"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    script.write_text(r.stdout)

    def complete(*words: str) -> list:
        line = " ".join(["orch", *words])
        probe = (f"source {script}; COMP_WORDS=(orch {' '.join(words)}); COMP_CWORD={len(words)}; "
                 f"COMP_LINE='{line}'; _orch; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out
        return out.stdout.split()

    assert complete("hi") == ["history"]
    assert complete("promote", "--ign") == ["--ignore-catchup", "--ignore-anti-flapping"]
    assert complete("history", "--format", "j") == ["json"]


def test_man_page_renders(tmp_path):
    r = subprocess.run([t.ORCH, "man"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(".TH ORCH 1"), r
    man = shutil.which("man")
    if man is None:
        return
    page = tmp_path / "orch.1"
    page.write_text(r.stdout)
    shown = subprocess.run([man, "-l", str(page)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"})
    assert shown.returncode == 0 and "ignore-anti-flapping" in shown.stdout and "warning" not in shown.stderr, shown


def test_status_table_wraps_long_cells_and_shows_the_vip_holder():
    from orchestrator.commands.status import render_table

    error = "Lost connection to server at 'handshake: reading initial communication packet', system error: 110 " * 3
    unreachable = {"name": "server2", "address": "10.0.0.2:3306", "reachable": False, "error": error}
    master = {"name": "server1", "address": "10.0.0.1:3306", "reachable": True, "version": "10.11.6-MariaDB", "role": "master",
              "read_only": False, "executed_gtids": ",".join(f"{i}-1-{i * 1000}" for i in range(12)), "errant_gtids": "",
              "replication": None}
    journal = [{"time": "2026-01-01T00:00:00.000Z", "id": "r1", "node": "server1", "event": "MASTER", "phase": "begin",
                "reason": "promoting server1: " + "a long reason " * 20}]
    vip = {"address": "10.0.0.100", "this_host_holds": True, "holder": "server1", "why": ""}
    text = render_table([master, unreachable], journal, "test", vip, width=120)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, "\n".join(line for line in lines if len(line) > 120)
    assert any(line.startswith("holds VIP 10.0.0.100") and "YES (this host)" in line for line in lines), text
    flat = " ".join(text.split())
    assert "NO: Lost connection" in flat and "system error: 110" in flat  # wrapped, not cut
    assert "0-1-0,1-1-1000" in text.replace("\n", "").replace(" ", "")
    not_held = render_table([master, unreachable], [], "test", {**vip, "this_host_holds": False, "holder": "not this host"})
    assert "no (not this host)" in not_held
    unknown = render_table([master, unreachable], [], "test", {"address": None, "this_host_holds": None, "holder": None,
                                                               "why": "keepalived.vip_check is off"})
    assert "unknown (keepalived.vip_check is off)" in unknown


def test_the_cli_page_documents_the_json_keys_the_code_writes():
    import re

    from orchestrator import history
    from orchestrator.plan import Plan

    readme = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    section = readme.split("\n## orch history\n", 1)[1].split("\n#", 1)[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", section, re.M)) == history.KEYS
    plans = readme.split("every `--dry-run` plan", 1)[1].split("\n\n", 1)[0]
    keys = set(Plan("x").as_dict()) | {"command", "node", "dry_run"}
    assert all(f"`{key}`" in plans for key in keys | {"step", "description"}), plans


@pytest.mark.parametrize("argv", [
    ["history"], ["history", "--format", "json"], ["status", "--format", "json"], ["check", "--format", "json"],
    ["check-config", "--format", "json"], ["doctor", "--format", "json"], ["promote", "--dry-run", "--format", "json"],
])
def test_a_missing_config_file_is_bad_input_for_every_reporting_command(tmp_path, argv):
    missing = str(tmp_path / "missing.yaml")
    r = subprocess.run([t.ORCH, *argv, "-c", missing], capture_output=True, text=True, timeout=30)
    assert r.returncode == errors.EXIT_USAGE and r.stdout == "", r
    assert r.stderr.strip().splitlines() == [f"orch: cannot read the config file {missing} (-c): No such file or directory (see orch --help)"]
