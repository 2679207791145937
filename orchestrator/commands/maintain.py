"""orch maintain: reconcile every Atlas's read-only backends with the replica's health.

The pass itself is orchestrator/maintainer.py. `--once` runs one pass (cron); otherwise
APScheduler runs a pass every `maintainer.interval` seconds in the foreground, keeping
connections open between passes (every FAST_INTERVAL while something is to re-check soon).
"""

from __future__ import annotations

import argparse
import logging
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..maintainer import FAST_INTERVAL, Maintainer
from .common import ensure_state_dir, load_config, new_run

log = logging.getLogger("orchestrator.maintain")


def maintain(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "metrics_port", None) and (args.once or args.dry_run):
        raise UsageError("orch maintain: --metrics-port serves the long-running maintainer; not with --once or --dry-run")
    if getattr(args, "format", "table") == "json" and not args.dry_run:
        raise UsageError("orch maintain: --format json goes with --dry-run")
    cfg = load_config(args)
    new_run(cfg)
    if not args.dry_run:  # a dry run writes nothing in state_dir
        ensure_state_dir(cfg)
    if not cfg.atlas:
        log.warning("no atlas configured: nothing to maintain")
    m = Maintainer(cfg)
    m.dry_run_format = getattr(args, "format", "table")
    try:
        if args.once or args.dry_run:
            m.run_pass(dry_run=args.dry_run, out=out)
            seen = m.last_view
            if seen is not None and not seen.me.reachable and not seen.peer.reachable:
                # From cron nobody reads the log: the exit code says that nothing was kept.
                log.error("maintain: reached neither server (%s: %s; %s: %s): nothing checked or kept",
                          seen.me.name, seen.me.error, seen.peer.name, seen.peer.error)
                return EXIT_FAILED
            return EXIT_OK
        from apscheduler.schedulers.blocking import BlockingScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines a pass otherwise
        keeper = start_lease_keeper(m, cfg)
        metrics_port = cfg.maintainer.metrics_port if getattr(args, "metrics_port", None) is None else args.metrics_port
        api = None
        if metrics_port:
            from ..http_server import serve_http  # prometheus_client: the long-running maintainer only

            api = serve_http(m, cfg, metrics_port, keeper)  # metrics and the HTTP API (docs/http-api.md)

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
        try:
            scheduler.start()
        finally:
            if api is not None:
                api.close()
        return EXIT_OK
    finally:
        m.close()


def start_lease_keeper(m: Maintainer, cfg):
    """etcd: configured: keep this host's lease alive beside the passes (orchestrator/lease.py)."""
    if cfg.etcd is None:
        return None
    from ..fence import self_fence
    from ..journal import Journal
    from ..lease import LeaseKeeper
    from ..runs import journal_append

    journal = Journal(cfg.state_dir)

    def record(entry):
        journal_append(journal, entry)

    from ..observe import observe_quickly

    keeper = LeaseKeeper(cfg, lambda why: self_fence(cfg, why), record, fresh_view=lambda: observe_quickly(cfg))
    m.add_listener(keeper)
    keeper.start()
    log.info("token: keeping this host's etcd lease alive (ttl %ds, renewed every %gs)", cfg.etcd.ttl, cfg.etcd.ttl / 5)
    return keeper


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
