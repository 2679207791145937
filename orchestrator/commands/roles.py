"""notify (keepalived), promote and demote: observe -> decide -> execute under the run lock."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, TextIO

from ..config import Config
from ..decide import BACKUP, MASTER, decide
from ..errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, LockBusy
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
    """orch promote / orch demote: the MASTER / BACKUP plans, confirmed by a person."""
    event = MASTER if args.command == "promote" else BACKUP
    if getattr(args, "force", False):
        import sys

        print("orch promote: warning: --force is deprecated: it means both --ignore-catchup and --ignore-anti-flapping; "
              "name the gate to skip (--yes skips the prompt)", file=sys.stderr)
    return _run(args, event, out, stdin, operator=True)

