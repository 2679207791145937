"""The maintainer's pass: observe, gather the facts, choose (pure), run the chosen plan.

One pass = observe both servers and every Atlas once, ask ``pass_choice.choose_action``
what to do (its docstring has the order), and run only that plan, under the run lock and
only if no other orch run acted since the pass observed. What watches the passes (the
Prometheus metrics now) registers as a listener: it is told of every view observed and of
every pass's end, and a listener that fails never stops the maintainer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Sequence, TextIO, Tuple

from .config import Config
from .errors import CatchUpRefused, LockBusy, Refused, TokenRefused
from .lock import RunLock
from .model import ClusterView
from .pass_choice import PassChoice, PassFacts, Refusal, choose_action, refusal_key, still_refused
from .plan import REFUSED, AtlasStep, Plan, StepResult

if TYPE_CHECKING:  # the Atlas client is imported only where an Atlas is configured
    from .atlas.client import AtlasAdmin

log = logging.getLogger("orchestrator.maintain")

FAST_INTERVAL = 1.0  # seconds between passes while a replica is out of Atlas or a rejoin is due
DUPLICATE_CHECK_EVERY = 10.0  # seconds between ARP duplicate-VIP checks while nothing is wrong


@dataclass(frozen=True)
class PassResult:
    """How one pass ended, for the listeners."""

    changes: int  # changes made (planned, in a dry run)
    seconds: float  # how long the pass took
    choice: Optional[PassChoice] = None  # what it chose (None: it chose nothing, e.g. a handed-over event still waiting)
    error: Optional[BaseException] = None  # what it raised (the scheduler logs it)
    dry_run: bool = False


class PassListener(Protocol):
    """What watches the maintainer (the metrics; next the HTTP API and the lease keeper): told
    of every view it observes and of every pass's end, on the maintainer's thread. Reads only:
    a listener that raises is logged and the maintainer goes on."""

    def on_view(self, view: ClusterView) -> None: ...

    def on_pass(self, result: PassResult) -> None: ...


def track_file_facts(cfg: Config) -> Tuple[str, Optional[float]]:
    """keepalived.track_file's value and the seconds since orch last wrote 0 to it (("", None) without one)."""
    # The one import of the track-file helpers here.
    from .keepalived.track import last_handback_age, read_track_file

    path = cfg.keepalived.track_file
    return (read_track_file(path), last_handback_age(cfg.state_dir)) if path else ("", None)


class Maintainer:
    """The long-running (or ``--once``) reconcile loop's state: open connections, the last
    sentence said, the refusals being throttled, and the listeners."""

    def __init__(self, cfg: Config) -> None:
        from .atlas.observe import admin_for
        from .db import open_servers

        self.cfg = cfg
        # Short reads (mysql.read_timeout): a peer behind a dead link must not stall a pass for long.
        self.servers = open_servers(cfg)
        self.admins: Dict[str, AtlasAdmin] = {a.name: admin_for(a) for a in cfg.atlas}
        self.last_reason = ""
        self.last_arp_check = -DUPLICATE_CHECK_EVERY
        self.refused: Dict[str, Refusal] = {}  # refusal_key -> its last refusal
        self.pending = False  # something to re-check soon: the loop runs every FAST_INTERVAL
        self.on_pending_change: Optional[Callable[[bool], None]] = None
        self.last_view: Optional[ClusterView] = None  # what the last pass saw (--once: its exit code)
        self.listeners: List[PassListener] = []
        self.was_paused = False  # the last pass saw maintenance mode in force
        self.dry_run_format = "table"  # how a dry pass prints its plan (orch maintain --dry-run --format)

    def close(self) -> None:
        for s in self.servers.values():
            s.close()
        for a in self.admins.values():
            a.close()

    def add_listener(self, listener: PassListener) -> None:
        """Tell ``listener`` of every view observed (``on_view``) and every pass's end (``on_pass``)."""
        self.listeners.append(listener)

    def _tell(self, method: str, value: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, method)(value)
            except Exception:  # a listener never stops the maintainer
                log.exception("maintain: %s.%s failed", type(listener).__name__, method)

    def observe(self, dry_run: bool = False) -> ClusterView:
        """Both servers (at once) and every Atlas, without the run lock (a notify must never
        wait for a maintainer talking to an unreachable peer)."""
        from .observe import observe
        from .receipts import stamp

        # With how long ago each replica last received from its source (remembered across passes;
        # a dry run reads that memory and writes nothing).
        view = stamp(observe(self.cfg, self.servers, atlas=True, admins=self.admins), self.cfg.state_dir, save=not dry_run)
        self.last_view = view
        self._tell("on_view", view)
        return view

    def run_pass(self, dry_run: bool = False, out: "TextIO | None" = None) -> int:
        """One reconcile pass; returns the number of changes made (or planned)."""
        started = time.monotonic()
        changes, choice, error = 0, None, None
        try:
            changes, choice = self._pass(dry_run, out)
            return changes
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._tell("on_pass", PassResult(changes, time.monotonic() - started, choice, error, dry_run))

    def _pass(self, dry_run: bool, out: "TextIO | None") -> Tuple[int, Optional[PassChoice]]:
        from .journal import Journal
        from .pending import waiting

        journal = Journal(self.cfg.state_dir)
        marker = journal.marker()
        if waiting(self.cfg.state_dir) and not dry_run:
            return self._run_handed_over()
        view = self.observe(dry_run)
        self._say_pause(view)
        track, handback_age = track_file_facts(self.cfg)
        facts = PassFacts(track=track, handback_age=handback_age, vip_elsewhere=self._vip_elsewhere(view))
        choice = choose_action(view, self.cfg, facts)
        if choice.asks_witness:
            from .observe import witness_reachable

            choice = choose_action(view, self.cfg, replace(facts, witness=witness_reachable(self.cfg.failover.witness),
                                                          witness_asked=True))
        self._say_noticed(choice, dry_run)
        self._set_pending(choice.recheck_soon)
        assert choice.atlas is not None
        for w in choice.atlas.warnings:
            log.warning("%s", w)
        if choice.action is not None and choice.action[1].outcome == REFUSED:
            # Refused on every pass while it lasts: loud each time, never silently dropped.
            log.error("maintain: %s", choice.action[1].reason)
        else:
            self._say(choice.said, choice.acting)
        if dry_run:
            if out is not None:
                self.show_dry_run(out, choice.plan)
            return len(choice.plan.steps), choice
        if choice.action is None and not choice.atlas.steps:
            return 0, choice
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(RunLock(self.cfg.state_dir, timeout=0.5))
            except LockBusy as exc:
                log.info("pass skipped: %s", exc)
                return 0, choice
            if journal.marker() != marker:
                log.info("pass skipped: another orch run acted since this pass observed; observing again next pass")
                return 0, choice
            return self._execute(choice.plan, view, choice.event), choice

    def _say_pause(self, view: ClusterView) -> None:
        """Maintenance mode coming or going (orch pause/resume, a --for that ran out), once."""
        pause = view.paused
        if (pause is not None) != self.was_paused:
            self.was_paused = pause is not None
            if pause is not None:
                log.warning("maintain: maintenance mode: %s; only fences of this node run until it ends", pause.describe())
            else:
                log.warning("maintain: maintenance mode over (%s): automatic actions again",
                            view.pause.describe() if view.pause is not None else "no pause on record")

    def show_dry_run(self, out: "TextIO", plan: Plan) -> None:
        """A dry pass's plan: text, or one JSON object (``dry_run_format`` "json", orch maintain --dry-run --format json)."""
        if self.dry_run_format == "json":
            import json

            out.write(json.dumps({"command": "maintain", "node": self.cfg.self_name, "dry_run": True, **plan.as_dict()},
                                 indent=2) + "\n")
        else:
            out.write(plan.render() + "\ndry run: nothing changed\n")

    def _say(self, reason: str, acting: bool) -> None:
        import re

        # Said again when it changes, not when only its numbers do (a pause's age, a lag).
        if re.sub(r"\d+(\.\d+)?", "#", reason) != re.sub(r"\d+(\.\d+)?", "#", self.last_reason) or acting:
            (log.warning if reason.startswith("paused (") or ": paused (" in reason else log.info)("maintain: %s", reason)
        else:
            log.debug("maintain: %s", reason)
        self.last_reason = reason

    def _say_noticed(self, choice: PassChoice, dry_run: bool) -> None:
        """Anomalies left alone on purpose, loudly; a split brain that cannot be resolved is an alert."""
        from .invariants import SPLIT_BRAIN

        for event, plan in choice.noticed:
            (log.error if event == SPLIT_BRAIN else log.warning)("maintain: %s", plan.reason)
            if event == SPLIT_BRAIN and self.cfg.alerts is not None and not dry_run:
                from .alerts import after_run  # deduplicated: one alert per alerts.dedup_seconds, not one per pass
                from .journal import new_run_id

                after_run(self.cfg, {"id": new_run_id(), "node": self.cfg.self_name, "event": SPLIT_BRAIN, "by": "maintain",
                                     "result": plan.outcome, "reason": plan.reason, "steps": []})

    def _set_pending(self, pending: bool) -> None:
        if pending != self.pending:
            self.pending = pending
            if self.on_pending_change is not None:
                self.on_pending_change(pending)

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
        from .observe import vip_answered_elsewhere

        ka = self.cfg.keepalived
        macs = vip_answered_elsewhere(ka.interface, ka.vip, self.cfg.me.host)
        if macs:
            log.error("maintain: DUPLICATE VIP: another host answers ARP for VIP %s on %s (MAC %s): two hosts hold the VIP",
                      ka.vip, ka.interface, ", ".join(macs))
        return macs

    def _run_handed_over(self) -> Tuple[int, Optional[PassChoice]]:
        """Decide and run a handed-over keepalived event under the run lock, on a fresh view."""
        from .pending import take

        with contextlib.ExitStack() as held:
            try:
                held.enter_context(RunLock(self.cfg.state_dir, timeout=0.5))
            except LockBusy as exc:
                log.info("handed-over event waits: %s", exc)
                self._set_pending(True)
                return 0, None
            record = take(self.cfg.state_dir)
            if record is None:
                return 0, None
            event = record["event"]
            log.warning("maintain: running the %s event a notify handed over (run %s)", event, record.get("run", "?"))
            view = self.observe()
            choice = choose_action(view, self.cfg, PassFacts(handed_over=event))
            return self._execute(choice.plan, view, choice.event), choice

    def _execute(self, plan: Plan, view: ClusterView, event: str) -> int:
        """Run a plan through the shared executor and journal; the number of changes made."""
        from .atlas.apply import run_atlas_steps
        from .runs import RunContext, execute_plan
        from .journal import new_run_id

        def atlas_runner(cfg: Config, steps: Sequence[AtlasStep]) -> List[StepResult]:
            return run_atlas_steps(cfg, steps, self.admins)

        key = refusal_key(event, plan)
        last = self.refused.get(key)
        if still_refused(last, time.monotonic(), view, self.cfg):
            # Refused a moment ago (an anti-flapping block, a rewind that cannot be proven, a
            # failing pre hook, no witness): said loudly every pass, but tried again (and
            # journaled, and hooks run) only every REFUSAL_RETRY_EVERY seconds, or as soon as
            # this pass shows its reason gone (a catch-up that timed out is done now).
            assert last is not None
            log.error("maintain: %s: still refused: %s", plan.reason, last.why)
            return 0
        run = RunContext(self.cfg, event, new_run_id(), self.servers, view, time.monotonic(), atlas_runner=atlas_runner, by="maintain")
        _, result = execute_plan(run, plan)
        if plan.outcome == REFUSED or isinstance(result.error, Refused):
            self.refused[key] = Refusal(time.monotonic(), str(result.error) if result.error else plan.reason,
                                        isinstance(result.error, CatchUpRefused), isinstance(result.error, TokenRefused))
        else:
            self.refused.pop(key, None)
        return sum(1 for r in result.results if r.result == "ok" and r.step != "Persist")
