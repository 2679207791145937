"""Entry point: parse arguments and dispatch to ``commands/<name>.py``. Nothing else.

Imports are deferred so that the keepalived notify path loads only what it uses: its
arguments are read without argparse (see parse_args), and the whole parser is in argv.py.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, TextIO

from .errors import EXIT_BUG, EXIT_INTERRUPTED, OrchError, UsageError

if TYPE_CHECKING:
    import argparse


def build_parser() -> "argparse.ArgumentParser":
    """The whole parser (argv.build_parser)."""
    from .argv import build_parser

    return build_parser()


class Arguments:
    """What argparse's Namespace is for the notify call: attributes, compared by value."""

    def __init__(self, **kwargs: object) -> None:
        self.__dict__.update(kwargs)

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Arguments({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


# keepalived's notify hook, as conf/ and hooks/ run it: global options with a value, flags.
_GLOBAL_VALUES = {"-c": "config", "--config": "config", "--node": "node"}
_GLOBAL_FLAGS = ("-v", "--verbose")


def parse_notify_call(args: "List[str]") -> "Optional[Arguments]":
    """keepalived's call, ``[-c FILE] [--node NAME] [-v] notify TYPE NAME STATE [PRIORITY]
    [--dry-run]``, read without argparse (importing and building it is ~4 ms of the hook's
    start-up); None for anything else or any doubt (an abbreviated or ``=`` option, a value
    or positional starting with ``-``, --dry-run among the positionals), which the whole
    parser then answers exactly as it always has. tests/test_cli.py holds the two equal."""
    values: Dict[str, Optional[str]] = {"config": None, "node": None}
    verbose = False
    i = 0
    while i < len(args) and args[i] != "notify":
        arg = args[i]
        if arg in _GLOBAL_VALUES and i + 1 < len(args) and not args[i + 1].startswith("-"):
            values[_GLOBAL_VALUES[arg]] = args[i + 1]
            i += 2
        elif arg in _GLOBAL_FLAGS:
            verbose = True
            i += 1
        else:
            return None
    rest = args[i + 1:]
    if i >= len(args):
        return None
    dry_run = False
    while rest and rest[-1] == "--dry-run":
        dry_run = True
        rest = rest[:-1]
    if not 3 <= len(rest) <= 4 or any(a.startswith("-") for a in rest):
        return None
    return Arguments(config=values["config"], node=values["node"], verbose=verbose, command="notify",
                     type=rest[0], name=rest[1], state=rest[2], priority=rest[3] if len(rest) == 4 else None,
                     dry_run=dry_run, format="table")


def parse_args(argv: "Optional[List[str]]") -> "argparse.Namespace":
    """Parse the command line: keepalived's notify call without argparse, anything else (or
    any doubt, such as --help or an error) with the whole parser."""
    args = sys.argv[1:] if argv is None else list(argv)
    parsed = parse_notify_call(args)
    if parsed is not None:
        return parsed  # type: ignore[return-value]
    return build_parser().parse_args(args)


def parse_notify(args: "argparse.Namespace") -> None:
    """Validate keepalived's arguments; raise UsageError naming the bad one."""
    from .keepalived.events import notify_call_error

    why = notify_call_error(args.type, args.state, args.priority)
    if why:
        raise UsageError(f"orch notify: {why}")


def main(argv: "Optional[List[str]]" = None, stdout: "Optional[TextIO]" = None, stdin: "Optional[TextIO]" = None) -> int:
    """Run one command; output to ``stdout`` and questions from ``stdin`` (default: the
    process's, as they are when called)."""
    return _dispatch(argv, stdout or sys.stdout, stdin or sys.stdin)


def _dispatch(argv: "Optional[List[str]]", stdout: "TextIO", stdin: "TextIO") -> int:
    import logging

    from . import logs

    try:
        args = parse_args(argv)
        logs.setup(args.verbose)
        if args.command == "notify":
            # keepalived's hook lives about a second: no cyclic-garbage passes over every module it
            # imports (~5 ms of a failover); a long wait still collects, 50,000 allocations apart.
            gc.set_threshold(50_000, 10, 10)
            parse_notify(args)
            from .commands.roles import notify

            return notify(args, stdout)
        if args.command in ("promote", "demote"):
            from .commands.roles import operator

            return operator(args, stdout, stdin)
        if args.command == "switchover":
            from .commands.switchover import switchover

            return switchover(args, stdout, stdin)
        if args.command == "ack":
            from .commands.ack import ack

            return ack(args, stdout, stdin)
        if args.command in ("pause", "resume"):
            from .commands import pause as pausing

            return (pausing.pause if args.command == "pause" else pausing.resume)(args, stdout, stdin)
        if args.command == "status":
            from .commands.status import status

            return status(args, stdout)
        if args.command == "fleet":
            from .commands.etcd_report import fleet

            return fleet(args, stdout)
        if args.command == "history":
            from .commands.history import history

            return history(args, stdout)
        if args.command == "completion":
            from .commands.manpage import completion

            return completion(args, stdout)
        if args.command == "man":
            from .commands.manpage import man

            return man(args, stdout)
        if args.command == "check-config":
            from .commands.check import check_config

            return check_config(args, stdout)
        if args.command == "check":
            from .commands.check import health_check, replica_check

            return replica_check(args, stdout) if args.replica else health_check(args, stdout)
        if args.command == "maintain":
            from .commands.maintain import maintain

            return maintain(args, stdout)
        if args.command == "notify-fifo":
            from .commands.fifo import notify_fifo

            return notify_fifo(args, stdout)
        if args.command == "doctor":
            from .commands.doctor import doctor

            return doctor(args, stdout)
        if args.command == "bootstrap":
            from .commands.bootstrap import bootstrap

            return bootstrap(args, stdout, stdin)
        if args.command == "watch-mysqld":
            from .commands.watch import watch_mysqld

            return watch_mysqld(args, stdout)
        if args.command == "lab":
            from .commands.lab import lab

            return lab(args, stdout)
        raise UsageError(f"orch: unknown command {args.command!r}")
    except OrchError as exc:
        text = logs.redact(str(exc), logs.current_secrets())
        print(f"orch: error: {text}" if not isinstance(exc, UsageError) else f"{text} (see orch --help)", file=sys.stderr)
        logs.to_syslog(logging.ERROR, f"orch: error: {text}")  # stderr may go nowhere (keepalived)
        logging.getLogger("orchestrator").debug("error", exc_info=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse --help / --version
        return int(exc.code or 0)
    except Exception:
        logging.getLogger("orchestrator").exception("unexpected error (a bug: please report it with this traceback)")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
