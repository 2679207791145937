"""The command line: keepalived's notify call parses as the whole parser parses it."""

from __future__ import annotations

import sys

import pytest

from orchestrator.errors import UsageError


@pytest.fixture(autouse=True)
def no_cli_left_behind():
    """cli.main binds sys.stdout as its default when the module is first imported, and other
    tests (test_config) read what it prints from their capsys: import it here only for a while."""
    loaded = "orchestrator.cli" in sys.modules
    yield
    if not loaded:
        sys.modules.pop("orchestrator.cli", None)


def outcome(parse, argv):
    try:
        return vars(parse(argv))
    except UsageError as exc:
        return f"UsageError: {exc}"
    except SystemExit as exc:
        return f"exit {exc.code}"


@pytest.mark.parametrize("argv", [
    ["-c", "/etc/orch/orch.yaml", "--node", "server1", "notify", "INSTANCE", "VI_1", "MASTER", "100"],
    ["notify", "GROUP", "G", "FAULT"],
    ["-v", "notify", "INSTANCE", "VI_1", "BACKUP", "--dry-run"],
    ["-c", "notify", "notify", "INSTANCE", "VI_1", "MASTER"],  # a config file named notify
    ["-c", "notify", "status"],  # ... and another command
    ["notify", "INSTANCE", "VI_1", "MASTER", "100", "extra"],
    ["notify", "-v", "INSTANCE", "VI_1", "MASTER"],
    ["notify", "INSTANCE"],
    ["notify"],
    ["--node", "notify"],
])
def test_notify_parses_as_the_whole_parser_parses_it(argv):
    from orchestrator import cli

    assert outcome(cli.parse_args, argv) == outcome(cli.build_parser().parse_args, argv)


def test_help_and_version_come_from_the_whole_parser(capsys):
    from orchestrator import cli

    assert outcome(cli.parse_args, ["--help", "notify", "INSTANCE", "VI_1", "MASTER"]) == "exit 0"
    assert "bootstrap" in capsys.readouterr().out  # every command listed
    assert outcome(cli.parse_args, ["--version", "notify"]) == "exit 0"
    assert capsys.readouterr().out.startswith("orch ")


def test_only_builds_one_command():
    from orchestrator import cli

    parser = cli.build_parser(only="notify")
    assert vars(parser.parse_args(["notify", "INSTANCE", "VI_1", "MASTER"]))["state"] == "MASTER"
    with pytest.raises(UsageError, match="invalid choice"):
        parser.parse_args(["status"])
