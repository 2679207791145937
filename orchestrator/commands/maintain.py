"""orch maintain: reconcile every Atlas's read-only backends with the replica's health.

One pass = observe both servers and every Atlas once, decide (pure), apply only the
difference. `--once` runs one pass (cron); otherwise APScheduler runs a pass every
`maintainer.interval` seconds in the foreground, keeping connections open between passes.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Dict, TextIO

from ..config import Config
from ..errors import LockBusy
from ..lock import RunLock
from ..plan import NOOP
from .common import ensure_state_dir, load_config, new_run

log = logging.getLogger("orchestrator.maintain")

FAST_INTERVAL = 1.0  # seconds between passes while a replica is out of Atlas or a rejoin is due


class Maintainer:
    def __init__(self, cfg: Config) -> None:
        from ..atlas.observe import admin_for
        from ..db import open_servers

        self.cfg = cfg
        # Short reads: a peer behind a dead link must not stall a pass for long.
        self.servers = open_servers(cfg, read_timeout=max(3.0, cfg.mysql.connect_timeout))
        self.admins: Dict[str, object] = {a.name: admin_for(a) for a in cfg.atlas}
        self.last_reason = ""
        self.pending = False  # something to re-check soon: the loop runs every FAST_INTERVAL
        self.on_pending_change = None

    def close(self) -> None:
        for s in self.servers.values():
            s.close()
        for a in self.admins.values():
            a.close()  # type: ignore[attr-defined]

    def observe(self):
        """Both servers and every Atlas, without the run lock (a notify must never wait
        for a maintainer talking to an unreachable peer)."""
        from ..atlas.observe import observe_atlas
        from ..model import ClusterView
        from ..observe import holds_address, observe_node

        me = observe_node(self.servers[self.cfg.self_name], self.cfg.flavor)
        peer = observe_node(self.servers[self.cfg.peer.name], self.cfg.flavor)
        vip = holds_address(self.cfg.keepalived.vip) if self.cfg.keepalived.vip else None
        return ClusterView(me=me, peer=peer, holds_vip=vip, atlas=observe_atlas(self.cfg, self.admins))

    def _say(self, reason: str, acting: bool) -> None:
        if reason != self.last_reason or acting:
            log.info("maintain: %s", reason)
        else:
            log.debug("maintain: %s", reason)
        self.last_reason = reason

    def run_pass(self, dry_run: bool = False, out: "TextIO | None" = None) -> int:
        """One reconcile pass; returns the number of changes made (or planned)."""
        from ..journal import Journal
        from ..plan import ACT
        from ..reconcile import decide_maintain, decide_rejoin, replica_out

        journal = Journal(self.cfg.state_dir)
        marker = journal.marker()
        view = self.observe()
        rejoin = decide_rejoin(view, self.cfg)
        plan = decide_maintain(view, self.cfg)
        pending = replica_out(view, self.cfg) or (rejoin is not None and rejoin.outcome == ACT)
        if pending != self.pending:
            self.pending = pending
            if self.on_pending_change is not None:
                self.on_pending_change(pending)
        for w in plan.warnings:
            log.warning("%s", w)
        acting = rejoin is not None and rejoin.outcome == ACT
        self._say(rejoin.reason if rejoin is not None else plan.reason, acting or plan.outcome != NOOP)
        if dry_run:
            if out is not None:
                out.write((rejoin or plan).render() + "\ndry run: nothing changed\n")
            return len((rejoin or plan).steps)
        if not acting and not plan.steps:
            return 0
        try:
            lock = RunLock(self.cfg.state_dir, timeout=0.5)
            lock.__enter__()
        except LockBusy as exc:
            log.info("pass skipped: %s", exc)
            return 0
        try:
            if journal.marker() != marker:
                log.info("pass skipped: another orch run acted since this pass observed; observing again next pass")
                return 0
            if acting:
                return self._execute(rejoin, view, "REJOIN")
            return self._execute(plan, view, "MAINTAIN")
        finally:
            lock.__exit__(None, None, None)

    def _execute(self, plan, view, event: str) -> int:
        """Run a plan through the shared executor and journal; the number of changes made."""
        from ..atlas.apply import run_atlas_steps
        from ..journal import new_run_id
        from .common import execute_plan

        def atlas_runner(cfg, steps):
            return run_atlas_steps(cfg, steps, self.admins)

        _, result = execute_plan(self.cfg, plan, event, new_run_id(), self.servers, view, None, time.monotonic(), atlas_runner)
        return sum(1 for r in result.results if r.result == "ok" and r.step != "Persist")


def maintain(args: argparse.Namespace, out: TextIO) -> int:
    cfg = load_config(args)
    new_run(cfg)
    ensure_state_dir(cfg)
    if not cfg.atlas:
        log.warning("no atlas configured: nothing to maintain")
    m = Maintainer(cfg)
    try:
        if args.once or args.dry_run:
            m.run_pass(dry_run=args.dry_run, out=out)
            return 0
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler()
        job = scheduler.add_job(m.run_pass, "interval", seconds=cfg.maintainer.interval, max_instances=1, coalesce=True,
                                next_run_time=_now())
        fast = min(FAST_INTERVAL, cfg.maintainer.interval)

        def reschedule(pending: bool) -> None:
            # While a replica is catching up, notice the moment it is healthy again.
            seconds = fast if pending else cfg.maintainer.interval
            log.debug("maintainer: a pass every %gs", seconds)
            job.reschedule("interval", seconds=seconds)

        m.on_pending_change = reschedule
        _stop_on_sigterm(scheduler)
        log.info("maintainer started: a pass every %gs over %d Atlas", cfg.maintainer.interval, len(cfg.atlas))
        scheduler.start()
        return 0
    finally:
        m.close()


def _now():
    import datetime

    return datetime.datetime.now()


def _stop_on_sigterm(scheduler) -> None:
    import signal

    def stop(signum, frame):
        log.info("maintainer stopping (signal %d)", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
