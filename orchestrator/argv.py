"""The whole command line: argparse, every command and its options (see cli.parse_args)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, NoReturn, Optional

from . import __version__
from .errors import UsageError


def terminal_width() -> int:
    """What shutil.get_terminal_size() gives argparse: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ is not None else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, sized without shutil.

    argparse builds a formatter for every add_argument and imports shutil (with bz2, lzma,
    fnmatch) for its width: ~3 ms of every command's start-up, for help it rarely prints.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: Optional[int] = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, terminal_width() - 2 if width is None else width)

    def _split_lines(self, text: str, width: int) -> "list[str]":
        # Never inside an option's name: "--ignore-anti-" / "flapping" reads as two words.
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def port_number(text: str) -> int:
    """A TCP port (0: off) for argparse."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def duration(text: str) -> float:
    """orch pause --for: seconds, or 30m, 2h, 1d (orchestrator/pause.py's parse_duration)."""
    from .pause import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_global_options(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """-c, --node, -v: before the command, and after it too (``orch status -c FILE``).

    After the command they default to SUPPRESS, so that one given before it is kept
    (argparse copies a subcommand's defaults over the main parser's values)."""
    default: Any = argparse.SUPPRESS if after_command else None
    parser.add_argument("-c", "--config", default=default, help="config file (default $ORCH_CONFIG or /etc/orch/orch.yaml)")
    parser.add_argument("--node", default=default, help="this host's node name (overrides 'self'; also $ORCH_NODE)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if after_command else False,
                        help="debug logging")


def add_format(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help=f"table (default) or json{what} (schemas: docs/cli.md)")


def add_plan_options(parser: argparse.ArgumentParser, confirm: bool = True) -> None:
    """--dry-run [--format json] and --yes: what every command that runs a plan takes."""
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="with --dry-run: the plan as text (default) or json (reason, outcome, warnings, steps)")
    if confirm:
        parser.add_argument("--yes", "-y", action="store_true", help="skips the confirmation prompt (and nothing else)")


def build_parser() -> Parser:
    """The whole parser (keepalived's notify call is read without it: cli.parse_notify_call)."""
    p = Parser(prog="orch", description="Failover orchestrator for a two-node MySQL/MariaDB + keepalived + Atlas pair.")
    add_global_options(p)
    p.add_argument("--version", action="version", version=f"orch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    n = sub.add_parser("notify", help="keepalived notify entry point: TYPE NAME STATE [PRIORITY]")
    n.add_argument("type", metavar="TYPE", help="INSTANCE or GROUP")
    n.add_argument("name", metavar="NAME", help="VRRP instance or group name")
    n.add_argument("state", metavar="STATE", help="MASTER, BACKUP, FAULT, STOP or DELETED")
    n.add_argument("priority", metavar="PRIORITY", nargs="?", help="VRRP priority (ignored)")
    add_plan_options(n, confirm=False)

    pr = sub.add_parser("promote", help="make this node (or NODE, through its host's orch) the writable master (what MASTER does)")
    pr.add_argument("target", metavar="NODE", nargs="?", default=None,
                    help="the node to promote (default: this host's); another node: its host's orch runs the command "
                         "(POST /promote to its HTTP API)")
    pr.add_argument("--ignore-catchup", action="store_true",
                    help="skips the catch-up gate: promote although this node has not applied everything it received "
                         "(within failover.catchup_timeout), its SQL thread stopped on an error, or the two have "
                         "diverged (the peer's extra transactions are lost); never skips the fence")
    pr.add_argument("--ignore-anti-flapping", action="store_true",
                    help="skips the anti-flapping block: promote although the last automatic failover is younger than "
                         "failover.block_seconds and not acknowledged (records an operator promotion, which ends it)")
    pr.add_argument("--force", action="store_true",
                    help="deprecated: both --ignore-catchup and --ignore-anti-flapping (it does not skip the prompt: that is --yes)")
    add_plan_options(pr)

    d = sub.add_parser("demote", help="fence this node (or NODE, through its host's orch) and replicate from the peer (what BACKUP does)")
    d.add_argument("target", metavar="NODE", nargs="?", default=None,
                   help="the node to demote (default: this host's); another node: its host's orch runs the command "
                        "(POST /demote to its HTTP API)")
    add_plan_options(d)
    d.add_argument("--rewind", action="store_true", help="roll back this node's errant GTIDs (saved first under state_dir/rewind/), then rejoin (MariaDB)")

    so = sub.add_parser("switchover", help="planned switchover through keepalived: this node (the master) hands over to the peer")
    so.add_argument("--to", metavar="NODE", default=None, help="the node to switch to (the peer; checked)")
    add_plan_options(so)

    ak = sub.add_parser("ack", help="acknowledge the latest automatic promotion: lift the anti-flapping block")
    add_plan_options(ak)

    pa = sub.add_parser("pause", help="maintenance mode: no automatic promotion, rejoin, rewind, semi-sync switch, hand-over or Atlas change")
    pa.add_argument("--for", dest="duration", type=duration, metavar="DURATION", default=None,
                    help="end the pause by itself after DURATION (90, 30m, 2h, 1d; default: until orch resume)")
    pa.add_argument("--reason", metavar="TEXT", default="", help="why (shown in orch status, journaled, alerted)")
    pa.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    pa.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    rs = sub.add_parser("resume", help="end maintenance mode: automatic actions again")
    rs.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    rs.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    s = sub.add_parser("status", help="both nodes' role, replication and GTIDs, the VIP holder, and the last journal entries")
    add_format(s)

    hi = sub.add_parser("history", help="promotions, switchovers, refusals, fences, rewinds and acks: the cluster-wide "
                                        "record and this host's journal, newest first")
    hi.add_argument("--since", metavar="WHEN", default=None,
                    help="only entries since WHEN: a duration back from now (30m, 2h, 1d, 1w) or an ISO time (UTC unless it says)")
    add_format(hi, ": a list of entries")

    fl = sub.add_parser("fleet", help="every cluster publishing under etcd.prefix: token holder, master, replica, lag, last failover")
    add_format(fl, ": a list of clusters")

    cc = sub.add_parser("check-config", help="validate the configuration and exit")
    add_format(cc)

    c = sub.add_parser("check", help="health check for keepalived's vrrp_script: exit 0 when this node's server answers")
    c.add_argument("--timeout", type=float, default=1.0, help="seconds (default 1)")
    c.add_argument("--replica", action="store_true",
                   help="exit 0 only on a healthy read-only replica (for LVS MISC_CHECK): threads, lag, errant GTIDs")
    add_format(c)

    m = sub.add_parser("maintain", help="reconcile Atlas read-only backends with the replica's health")
    m.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    m.add_argument("--dry-run", action="store_true", help="print what a pass would do, change nothing")
    m.add_argument("--format", choices=("table", "json"), default="table",
                   help="with --dry-run: the plan as text (default) or json (reason, outcome, warnings, steps)")
    m.add_argument("--metrics-port", type=port_number, metavar="PORT", default=None,
                   help="serve Prometheus metrics on this TCP port (default maintainer.metrics_port; 0: off)")

    nf = sub.add_parser("notify-fifo", help="read keepalived's notify_fifo: events in order, each as notify handles it")
    nf.add_argument("fifo", metavar="FIFO", help="the FIFO keepalived's notify_fifo writes (created, mode 0600, if missing)")

    dr = sub.add_parser("doctor", help="check everything this pair needs to fail over safely: pass / warn / fail")
    add_format(dr)
    dr.add_argument("--keepalived-config", metavar="PATH", default=None, help="also check this keepalived.conf")

    bs = sub.add_parser("bootstrap", help="make an empty server the read-only GTID replica of the server with the data")
    add_plan_options(bs)
    bs.add_argument("--repl-host", metavar="HOST", default=None,
                    help="host part of the replication account it creates (default: the peer's address)")

    w = sub.add_parser("watch-mysqld", help="write keepalived's track file the instant mysqld exits (the fast profile)")
    w.add_argument("--pid-file", required=True, help="the server's pid file (absolute path)")
    w.add_argument("--track-file", required=True, help="keepalived track file to write: 1 when no server runs, 0 while one does")

    lab = sub.add_parser("lab", help="a local sandbox cluster: up, status, failover, down")
    lab.add_argument("action", choices=("up", "status", "failover", "switchover", "down"), help="what to do with the lab")
    lab.add_argument("--dir", default=None, help="lab directory (default /tmp/orch-lab)")
    lab.add_argument("--mode", choices=("auto", "netns", "loopback"), default="auto", help="network namespaces or loopback addresses")
    lab.add_argument("--haproxy", action="store_true",
                     help="up: also run HAProxy (conf/haproxy.cfg) beside the clients, checking each server through orch's HTTP API")
    lab.add_argument("--etcd", action="store_true", help="up: also a three-member etcd (one member in each host's namespace, "
                                                        "one beside the witness) and the write token (docs/etcd.md)")
    lab.add_argument("--etcd-tls", action="store_true", help="up: --etcd with the members serving clients over TLS "
                                                            "(--client-cert-auth; a throwaway CA in the lab's directory)")

    co = sub.add_parser("completion", help="print a shell completion script built from this parser")
    co.add_argument("shell", choices=("bash",), help="the shell (bash; zsh loads it with bashcompinit)")

    sub.add_parser("man", help="print the orch(1) man page (roff) built from this parser")

    finish_commands(sub)
    return p


def finish_commands(sub: Any) -> None:
    """Every subcommand: its help as the description line of its --help, and the global options."""
    for action in sub._choices_actions:
        parser = sub.choices[action.dest]
        if not parser.description:
            parser.description = action.help
        add_global_options(parser, after_command=True)


def subcommands(parser: argparse.ArgumentParser) -> "Dict[str, argparse.ArgumentParser]":
    """The parser's subcommands by name (completion, man page)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
