"""orch maintain: reconcile every Atlas's read-only backends with the replica's health.

One pass = observe both servers and every Atlas once, decide (pure), apply only the
difference. `--once` runs one pass (cron); otherwise APScheduler runs a pass every
`maintainer.interval` seconds in the foreground, keeping connections open between passes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from ..config import Config
from ..errors import EXIT_FAILED, CatchUpRefused, LockBusy, Refused, UsageError
from ..lock import RunLock
from ..plan import NOOP, REFUSED
from .common import ensure_state_dir, load_config, new_run

if TYPE_CHECKING:
    from ..atlas.client import AtlasAdmin
    from ..model import ClusterView
    from ..plan import AtlasStep, Plan, StepResult

log = logging.getLogger("orchestrator.maintain")

FAST_INTERVAL = 1.0  # seconds between passes while a replica is out of Atlas or a rejoin is due
REFUSAL_RETRY_EVERY = 60.0  # seconds between two runs (and journal records) of a plan that was refused
DUPLICATE_CHECK_EVERY = 10.0  # seconds between ARP duplicate-VIP checks while nothing is wrong


class Maintainer:
    def __init__(self, cfg: Config) -> None:
        from ..atlas.observe import admin_for
        from ..db import open_servers

        self.cfg = cfg
        # Short reads (mysql.read_timeout): a peer behind a dead link must not stall a pass for long.
        self.servers = open_servers(cfg)
        self.admins: Dict[str, AtlasAdmin] = {a.name: admin_for(a) for a in cfg.atlas}
        self.last_reason = ""
        self.last_arp_check = -DUPLICATE_CHECK_EVERY
        # refusal_key -> (when, why, a catch-up's: retried once caught up) of its last refusal
        self.refused: Dict[str, Tuple[float, str, bool]] = {}
        self.pending = False  # something to re-check soon: the loop runs every FAST_INTERVAL
        self.on_pending_change: Optional[Callable[[bool], None]] = None
        self.last_view: Optional[ClusterView] = None  # what the last pass saw (--once: its exit code)

    def close(self) -> None:
        for s in self.servers.values():
            s.close()
        for a in self.admins.values():
            a.close()

    def observe(self, dry_run: bool = False) -> ClusterView:
        """Both servers (at once) and every Atlas, without the run lock (a notify must never
        wait for a maintainer talking to an unreachable peer)."""
        from ..observe import observe
        from ..receipts import stamp

        # With how long ago each replica last received from its source (remembered across passes;
        # a dry run reads that memory and writes nothing).
        view = stamp(observe(self.cfg, self.servers, atlas=True, admins=self.admins), self.cfg.state_dir, save=not dry_run)
        self.last_view = view
        return view

    def _say(self, reason: str, acting: bool) -> None:
        if reason != self.last_reason or acting:
            log.info("maintain: %s", reason)
        else:
            log.debug("maintain: %s", reason)
        self.last_reason = reason

    def _set_pending(self, pending: bool) -> None:
        if pending != self.pending:
            self.pending = pending
            if self.on_pending_change is not None:
                self.on_pending_change(pending)

    def run_pass(self, dry_run: bool = False, out: "TextIO | None" = None) -> int:
        """One reconcile pass; returns the number of changes made (or planned).

        In order, the first that applies: a keepalived event handed over by a notify that
        could not get the run lock; the invariants (the VIP holder is the writable master,
        nobody else writes); an unfinished rejoin of this node; Atlas's read-only backends.
        """
        from ..invariants import SEMISYNC, SPLIT_BRAIN, decide_invariant
        from ..journal import Journal
        from ..pending import waiting
        from ..plan import ACT, REFUSED
        from ..reconcile import decide_maintain, decide_rejoin, replica_out

        journal = Journal(self.cfg.state_dir)
        marker = journal.marker()
        if waiting(self.cfg.state_dir) and not dry_run:
            return self._run_handed_over()
        view = self.observe(dry_run)
        from ..trackfile import last_handback_age, read_track_file

        path = self.cfg.keepalived.track_file
        track, handback_age = (read_track_file(path), last_handback_age(self.cfg.state_dir)) if path else ("", None)
        repair = decide_invariant(view, self.cfg, self._vip_elsewhere(view), track, handback_age)
        if repair is not None and repair[1].outcome == NOOP:
            # An anomaly left alone on purpose; a split brain it cannot resolve is an alert.
            (log.error if repair[0] == SPLIT_BRAIN else log.warning)("maintain: %s", repair[1].reason)
            if repair[0] == SPLIT_BRAIN and self.cfg.alerts is not None and not dry_run:
                from ..alerts import after_run  # deduplicated: one alert per alerts.dedup_seconds, not one per pass
                from ..journal import new_run_id

                after_run(self.cfg, {"id": new_run_id(), "node": self.cfg.self_name, "event": SPLIT_BRAIN, "by": "maintain",
                                     "result": NOOP, "reason": repair[1].reason, "steps": []})
            repair = None
        if repair is None:
            semi = self._decide_semisync(view)
            if semi is not None and semi.outcome == NOOP:
                log.warning("maintain: %s", semi.reason)  # an isolated master's writers wait: loud every pass
            elif semi is not None:
                repair = (SEMISYNC, semi)
        rejoin = decide_rejoin(view, self.cfg) if repair is None else None
        plan = decide_maintain(view, self.cfg)
        action = None  # (event, plan) taking precedence over the Atlas plan
        if repair is not None:
            action = repair
        elif rejoin is not None and rejoin.outcome == ACT:
            action = ("REJOIN", rejoin)
        self._set_pending(replica_out(view, self.cfg) or action is not None)
        for w in plan.warnings:
            log.warning("%s", w)
        if action is not None and action[1].outcome == REFUSED:
            # Refused on every pass while it lasts: loud each time, never silently dropped.
            log.error("maintain: %s", action[1].reason)
        else:
            self._say(action[1].reason if action is not None else (rejoin.reason if rejoin is not None else plan.reason),
                      action is not None or plan.outcome != NOOP)
        chosen = action[1] if action is not None else plan
        if dry_run:
            if out is not None:
                out.write(chosen.render() + "\ndry run: nothing changed\n")
            return len(chosen.steps)
        if action is None and not plan.steps:
            return 0
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(RunLock(self.cfg.state_dir, timeout=0.5))
            except LockBusy as exc:
                log.info("pass skipped: %s", exc)
                return 0
            if journal.marker() != marker:
                log.info("pass skipped: another orch run acted since this pass observed; observing again next pass")
                return 0
            if action is not None:
                return self._execute(action[1], view, action[0])
            return self._execute(plan, view, "MAINTAIN")

    def _vip_elsewhere(self, view: ClusterView) -> "Tuple[str, ...] | None":
        """The ARP duplicate check (keepalived.interface) while this host holds the VIP.

        When both servers are writable the decision needs it: run now. Otherwise it only
        watches (every DUPLICATE_CHECK_EVERY seconds, in the background, so that arping's
        second never delays a pass) and logs another host answering for the VIP loudly.
        """
        ka = self.cfg.keepalived
        if not ka.interface or view.holds_vip is not True:
            return None
        if view.me.writable and view.peer.writable:
            return self._arp_check()
        now = time.monotonic()
        if now - self.last_arp_check >= DUPLICATE_CHECK_EVERY:
            self.last_arp_check = now
            import threading

            threading.Thread(target=self._arp_check, name="duplicate-vip-check", daemon=True).start()
        return None

    def _arp_check(self) -> "Tuple[str, ...] | None":
        from ..observe import vip_answered_elsewhere

        ka = self.cfg.keepalived
        macs = vip_answered_elsewhere(ka.interface, ka.vip, self.cfg.me.host)
        if macs:
            log.error("maintain: DUPLICATE VIP: another host answers ARP for VIP %s on %s (MAC %s): two hosts hold the VIP",
                      ka.vip, ka.interface, ", ".join(macs))
        return macs

    def _decide_semisync(self, view: ClusterView) -> "Plan | None":
        """The semi-sync policy's plan; pings the witness only when the decision needs it."""
        from ..invariants import decide_semisync, needs_witness
        from ..observe import witness_reachable

        witness = witness_reachable(self.cfg.failover.witness) if needs_witness(view, self.cfg) else None
        return decide_semisync(view, self.cfg, witness)

    def _run_handed_over(self) -> int:
        """Decide and run a handed-over keepalived event under the run lock, on a fresh view."""
        from ..invariants import decide_pending
        from ..pending import take

        with contextlib.ExitStack() as held:
            try:
                held.enter_context(RunLock(self.cfg.state_dir, timeout=0.5))
            except LockBusy as exc:
                log.info("handed-over event waits: %s", exc)
                self._set_pending(True)
                return 0
            record = take(self.cfg.state_dir)
            if record is None:
                return 0
            event = record["event"]
            log.warning("maintain: running the %s event a notify handed over (run %s)", event, record.get("run", "?"))
            view = self.observe()
            return self._execute(decide_pending(view, self.cfg, event), view, event)

    def _execute(self, plan: Plan, view: ClusterView, event: str) -> int:
        """Run a plan through the shared executor and journal; the number of changes made."""
        from ..atlas.apply import run_atlas_steps
        from ..invariants import caught_up
        from ..journal import new_run_id
        from .common import RunContext, execute_plan

        def atlas_runner(cfg: Config, steps: Sequence[AtlasStep]) -> List[StepResult]:
            return run_atlas_steps(cfg, steps, self.admins)

        key = refusal_key(event, plan)
        quiet = self.refused.get(key)
        if quiet is not None and time.monotonic() - quiet[0] < REFUSAL_RETRY_EVERY and not (quiet[2] and caught_up(view, self.cfg)):
            # Refused a moment ago (an anti-flapping block, a rewind that cannot be proven, a
            # failing pre hook, no witness): said loudly every pass, but tried again (and
            # journaled, and hooks run) only every REFUSAL_RETRY_EVERY seconds, or as soon as
            # this pass shows its reason gone (a catch-up that timed out is done now).
            log.error("maintain: %s: still refused: %s", plan.reason, quiet[1])
            return 0
        run = RunContext(self.cfg, event, new_run_id(), self.servers, view, time.monotonic(), atlas_runner=atlas_runner, by="maintain")
        _, result = execute_plan(run, plan)
        if plan.outcome == REFUSED or isinstance(result.error, Refused):
            self.refused[key] = (time.monotonic(), str(result.error) if result.error else plan.reason,
                                 isinstance(result.error, CatchUpRefused))
        else:
            self.refused.pop(key, None)
        return sum(1 for r in result.results if r.result == "ok" and r.step != "Persist")


def refusal_key(event: str, plan: Plan) -> str:
    """What makes two refused plans the same refusal: the event and the reason, its numbers
    masked (an anti-flapping block's "promoted 12s ago" changes every pass)."""
    import re

    return f"{event} " + re.sub(r"\d+(\.\d+)?", "#", plan.reason)


def maintain(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "metrics_port", None) and (args.once or args.dry_run):
        raise UsageError("orch maintain: --metrics-port serves the long-running maintainer; not with --once or --dry-run")
    cfg = load_config(args)
    new_run(cfg)
    if not args.dry_run:  # a dry run writes nothing in state_dir
        ensure_state_dir(cfg)
    if not cfg.atlas:
        log.warning("no atlas configured: nothing to maintain")
    m = Maintainer(cfg)
    try:
        if args.once or args.dry_run:
            m.run_pass(dry_run=args.dry_run, out=out)
            seen = m.last_view
            if seen is not None and not seen.me.reachable and not seen.peer.reachable:
                # From cron nobody reads the log: the exit code says that nothing was kept.
                log.error("maintain: reached neither server (%s: %s; %s: %s): nothing checked or kept",
                          seen.me.name, seen.me.error, seen.peer.name, seen.peer.error)
                return EXIT_FAILED
            return 0
        from apscheduler.schedulers.blocking import BlockingScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines a pass otherwise
        metrics_port = cfg.maintainer.metrics_port if getattr(args, "metrics_port", None) is None else args.metrics_port
        if metrics_port:
            from ..metrics import instrument  # prometheus_client: the long-running maintainer only

            instrument(m, cfg, metrics_port)

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
