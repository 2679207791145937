"""notify (keepalived), promote and demote: observe -> decide -> execute under the run lock."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, TextIO

from ..config import Config
from ..decide import BACKUP, MASTER, decide
from ..errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, LockBusy, OrchError, UsageError
from ..lock import RunLock
from ..plan import NOOP
from .common import RunContext, confirmed, ensure_state_dir, execute_plan, json_needs_dry_run, load_config, new_run, show_plan

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("orchestrator")


def _run(args: argparse.Namespace, event: str, out: TextIO, stdin: "TextIO | None", operator: bool) -> int:
    started = time.monotonic()
    json_needs_dry_run(args, args.command)
    cfg = load_config(args)
    run_id = new_run(cfg)
    if not operator and cfg.keepalived.instance and args.name != cfg.keepalived.instance:
        log.info("no action: %s %s %s is not VRRP %s", args.type, args.name, event, cfg.keepalived.instance)
        return EXIT_OK
    from ..db import open_servers
    from ..observe import observe

    dry_run = getattr(args, "dry_run", False)
    lock = RunLock(cfg.state_dir, cfg.failover.lock_timeout)
    with contextlib.ExitStack() as held:
        # A dry run writes nothing in state_dir (no lock file, no hand-over): it only reads.
        if not dry_run:
            ensure_state_dir(cfg)
            try:
                held.enter_context(lock)
            except LockBusy as exc:
                if operator:
                    raise
                return _hand_over(cfg, event, run_id, exc)
        if lock.waited > 0.05:
            log.info("waited %.2fs for another orch run to finish", lock.waited)
        servers = open_servers(cfg)
        try:
            # The anti-flapping record and the witness: MASTER only.
            view = observe(cfg, servers, promotions=event == MASTER, witness=event == MASTER)
            plan = decide(view, event, cfg, force=getattr(args, "force", False), operator=operator, rewind=getattr(args, "rewind", False),
                          ignore_catchup=getattr(args, "ignore_catchup", False),
                          ignore_anti_flapping=getattr(args, "ignore_anti_flapping", False))
            log.info("decision (%s on %s): %s", event, cfg.self_name, plan.reason)
            if dry_run or operator:
                show_plan(out, plan, args, args.command, cfg.self_name)
            if dry_run:
                return plan.exit_code
            if operator and plan.outcome != NOOP and plan.steps and not confirmed(out, stdin, args.yes):
                return EXIT_FAILED
            run = RunContext(cfg, event, run_id, servers, view, started, out=out if operator else None)
            return execute_plan(run, plan)[0]
        finally:
            for s in servers.values():
                s.close()


def _hand_over(cfg: Config, event: str, run_id: str, exc: LockBusy) -> int:
    """keepalived sends an event once: one that cannot get the run lock is never dropped."""
    from ..pending import hand_over

    try:
        where = hand_over(cfg.state_dir, event, run_id)
    except OSError as oexc:
        log.critical("%s; and the %s event could not be handed to the maintainer (%s): run orch %s by hand",
                     exc, event, oexc, "promote" if event == MASTER else "demote")
        return EXIT_FAILED
    log.error("%s: the %s event is handed to the maintainer (%s), which decides it on its next pass", exc, event, where)
    return EXIT_INCOMPLETE


def notify(args: argparse.Namespace, out: TextIO) -> int:
    """keepalived's generic notify: TYPE NAME STATE [PRIORITY]."""
    return _run(args, args.state, out, None, operator=False)


def notify_event(args: argparse.Namespace, type_: str, name: str, state: str, out: TextIO) -> int:
    """One keepalived event read from elsewhere (notify-fifo): exactly what ``orch notify`` does."""
    import argparse

    event = argparse.Namespace(**{**vars(args), "type": type_, "name": name, "state": state, "priority": None})
    return _run(event, state, out, None, operator=False)


def operator(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """orch promote / orch demote [NODE]: the MASTER / BACKUP plans, confirmed by a person; for
    another node, its host's orch runs the command (POST /promote, /demote: ``ask_peer``)."""
    event = MASTER if args.command == "promote" else BACKUP
    if getattr(args, "force", False):
        import sys

        print("orch promote: warning: --force is deprecated: it means both --ignore-catchup and --ignore-anti-flapping; "
              "name the gate to skip (--yes skips the prompt)", file=sys.stderr)
    target = getattr(args, "target", None)
    if target is not None:
        json_needs_dry_run(args, args.command)
        cfg = load_config(args)
        if acting_host(cfg, target, args.command) != cfg.self_name:
            body = {"ignore_catchup": bool(getattr(args, "ignore_catchup", False)),
                    "ignore_anti_flapping": bool(getattr(args, "ignore_anti_flapping", False)),
                    "force": bool(getattr(args, "force", False))} if event == MASTER else {"rewind": bool(args.rewind)}
            return ask_peer(cfg, args, out, stdin, args.command, body)
    return _run(args, event, out, stdin, operator=True)


def acting_host(cfg: Config, target: str, command: str) -> str:
    """The node whose host runs ``orch <command> <target>``: the target itself, validated
    (UsageError naming the choices; a command the HTTP API runs is never handed on again)."""
    import os

    from ..http_client import VIA_API

    names = [n.name for n in cfg.nodes]
    if target not in names:
        raise UsageError(f"orch {command}: {target!r} is not a node of this cluster ({', '.join(names)})")
    if target != cfg.self_name and os.environ.get(VIA_API):
        raise UsageError(f"orch {command}: {target!r} is not this node ({cfg.self_name}); asked through the HTTP API, "
                         f"orch acts only here")
    return target


def ask_peer(cfg: Config, args: argparse.Namespace, out: TextIO, stdin: "TextIO | None", command: str,
             options: Dict[str, Any]) -> int:
    """``orch <command>`` run by the peer's host (POST /<command> to its orch): with --dry-run,
    its plan; else its plan first (a dry run there), this host's confirmation, then the command
    there with --yes. Its output and exit code are this command's; the peer cannot be asked
    (no API, no token, refused, unreachable): one line, exit 1, nothing changed."""
    from ..http_client import NoAnswer, api_unavailable

    peer = cfg.peer.name
    dry_run = bool(getattr(args, "dry_run", False))
    why = api_unavailable(cfg)
    if why:
        raise OrchError(f"orch {command} {peer}: {peer}'s host must run it, and this host cannot ask its orch: {why} "
                        f"(run orch {command} on {peer}'s host)")
    if not dry_run and not args.yes and (stdin is None or not stdin.isatty()):  # before asking anything of the peer
        raise UsageError("orch: refusing to act without confirmation: stdin is not a terminal (use --yes)")
    try:
        return _ask_peer(cfg, args, out, stdin, command, options, dry_run)
    except NoAnswer:
        raise
    except OrchError as exc:
        if isinstance(exc, UsageError):
            raise
        raise OrchError(f"{exc}; run orch {command} on {peer}'s host") from None


def _ask_peer(cfg: Config, args: argparse.Namespace, out: TextIO, stdin: "TextIO | None", command: str,
              options: Dict[str, Any], dry_run: bool) -> int:
    from ..http_client import call_peer
    from .pause import operator_name

    peer = cfg.peer.name
    timeout = cfg.failover.lock_timeout + cfg.failover.catchup_timeout + PEER_MARGIN
    body: Dict[str, Any] = {**options, "by": operator_name(), "from": cfg.self_name}
    if getattr(args, "format", "table") != "json":  # --format json: the peer's JSON alone
        out.write(f"{peer}'s host runs orch {command} (POST /{command} to its orch)\n")
    if dry_run:
        answer = call_peer(cfg, command, {**body, "dry_run": True, "format": getattr(args, "format", "table")}, timeout)
        if answer.plan is not None:  # --format json: the plan alone (its log lines stay out of the JSON)
            import json

            out.write(json.dumps(answer.plan, indent=2) + "\n")
        else:
            answer.show(out, sys.stderr)
        return answer.exit_code
    if not args.yes:
        preview = call_peer(cfg, command, {**body, "dry_run": True, "format": "json"}, timeout)
        if preview.plan is None:
            preview.show(out, sys.stderr)
            return preview.exit_code or EXIT_FAILED
        out.write(render_plan(preview.plan) + "\n")
        if preview.plan.get("outcome") == NOOP or not preview.plan.get("steps"):
            return int(preview.plan.get("exit_code", preview.exit_code))
        if not confirmed(out, stdin, False):
            return EXIT_FAILED
    answer = call_peer(cfg, command, {**body, "dry_run": False}, timeout)
    answer.show(out, sys.stderr)
    log.info("%s's orch ran %s: exit %d", peer, command, answer.exit_code)
    return answer.exit_code


PEER_MARGIN = 60.0  # seconds beyond the lock wait and the catch-up that the peer's command may take


def render_plan(doc: Dict[str, Any]) -> str:
    """A plan as a peer's ``--dry-run --format json`` printed it, as Plan.render() shows one."""
    lines = [f"plan ({doc.get('node', '?')}): {doc.get('reason', '')}"]
    lines += [f"  warning: {w}" for w in doc.get("warnings") or ()]
    steps = doc.get("steps") or []
    lines += [f"  {i}. {s.get('description', s.get('step', '?'))}" for i, s in enumerate(steps, 1)] or ["  (no steps)"]
    return "\n".join(lines)
