"""The command line: keepalived's notify call parses as the whole parser parses it."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError


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
    ["notify", "INSTANCE", "VI_1", "MASTER", "--dry-run", "100"],  # argparse: 100 unrecognized
    ["notify", "INSTANCE", "--dry-run", "VI_1", "MASTER"],
    ["--config=/etc/orch/orch.yaml", "notify", "INSTANCE", "VI_1", "MASTER"],
    ["--conf", "/etc/orch/orch.yaml", "notify", "INSTANCE", "VI_1", "MASTER"],  # abbreviated
    ["-c/etc/orch/orch.yaml", "notify", "INSTANCE", "VI_1", "MASTER"],
    ["-c", "-x", "notify", "INSTANCE", "VI_1", "MASTER"],
    ["notify", "INSTANCE", "VI_1", "MASTER", "-1"],
    ["notify", "INSTANCE", "VI_1", "MASTER", "100", "--dry-run", "--dry-run"],
    ["notify", "", "", ""],
    ["-vv", "notify", "INSTANCE", "VI_1", "MASTER"],
    ["notify", "INSTANCE", "VI_1", "MASTER", "--", "100"],
])
def test_notify_parses_as_the_whole_parser_parses_it(argv):
    from orchestrator import cli

    assert outcome(cli.parse_args, argv) == outcome(cli.build_parser().parse_args, argv)


def test_notify_calls_read_without_argparse_parse_as_argparse_parses_them():
    """Thousands of calls made of keepalived's words and of what could go wrong around them:
    wherever the notify reader answers at all (it leaves any doubt to argparse), argparse
    answers the same; and it does answer keepalived's own calls."""
    import random

    from orchestrator import cli

    words = ["-c", "--config", "--node", "-v", "--verbose", "notify", "INSTANCE", "GROUP", "VI_1", "MASTER",
             "100", "--dry-run", "-1", "/etc/orch/orch.yaml", "server1", "", "status", "--config=x", "--", "-x"]
    values = ["INSTANCE", "GROUP", "VI_1", "MASTER", "100", "server1", "", "notify", "-1", "--dry-run"]
    rng = random.Random(20261126)
    answered = 0
    for n in range(4000):
        prefix = [rng.choice(words) for _ in range(rng.randrange(0, 5))]
        if n % 2:  # mostly keepalived-shaped
            tail = [rng.choice(values) for _ in range(rng.randrange(2, 6))]
        else:
            tail = [rng.choice(words) for _ in range(rng.randrange(0, 7))]
        argv = prefix + (["notify"] if rng.random() < 0.8 else []) + tail
        fast = cli.parse_notify_call(list(argv))
        if fast is not None:
            answered += 1
            assert vars(fast) == outcome(cli.build_parser().parse_args, argv), argv
    assert answered > 100
    for argv in (["-c", "/etc/orch/orch.yaml", "--node", "server1", "notify", "INSTANCE", "VI_1", "MASTER", "100"],
                 ["-c", "/etc/orch/orch.yaml", "notify", "GROUP", "G1", "BACKUP", "0"],
                 ["notify", "INSTANCE", "VI_1", "FAULT"]):
        assert cli.parse_notify_call(argv) is not None, argv


def test_help_and_version_come_from_the_whole_parser(capsys):
    from orchestrator import cli

    assert outcome(cli.parse_args, ["--help", "notify", "INSTANCE", "VI_1", "MASTER"]) == "exit 0"
    assert "bootstrap" in capsys.readouterr().out  # every command listed
    assert outcome(cli.parse_args, ["--version", "notify"]) == "exit 0"
    assert capsys.readouterr().out.startswith("orch ")
