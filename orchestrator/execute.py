"""Interpret a Plan's steps: the failure policy, and each step type's handler.

A plan's steps come in phase order (plan.py: Plan sorts them by the phase each step
class declares), and run() walks them in that order:
- PRE_HOOK: a failing pre hook aborts the plan before anything changed;
- ATLAS_FIRST: SET OFFLINE of the read/write backend, before the database steps (one
  connection attempt per Atlas, bounded by its admin timeout);
- DATABASE: in order; the first failure stops the plan (a failed fence must never be
  followed by SetWritable). One exception: replication still stopping after the opening,
  on a node whose SQL thread the run stopped before it, is a warning;
- ATLAS: best effort; their failures are logged and journaled, and the maintainer
  retries them. Once writes are open, SetRwOnline runs even when a later database step
  failed. Each Atlas phase's steps go to the Atlas runner together (one connection per Atlas);
- POST_HOOK: last, best effort, and only once writes opened when a step failed.
A step that declares itself best effort (plan.py) turns its failure into a warning.

What runs SQL: every statement goes through db.Server. Plan steps reach the servers from
here and the modules this calls: fence.py (read_only on or off, verified), catchup.py
(the catch-up wait), antiflap.py (the anti-flapping record) and, for a Rewind step only,
rewind.py. Outside plans, observe.py reads the view (as orch doctor and orch check-mysql
read), and orch bootstrap (commands/bootstrap.py) runs its own setup statements (accounts,
seeding) on a pair that has no failover to run yet. Atlas is reached through
atlas/apply.py, keepalived's track file through keepalived/track.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, cast

from . import flavors
from .catchup import catch_up
from .config import Config
from .db import Server
from .errors import DOWN, DatabaseError, OrchError, Refused
from .fence import fence, set_read_only
from .model import ClusterView, ThreadState
from .observe import holds_address, observe_node, read_node
from .plan import (
    ATLAS_FIRST, ATLAS_PHASES, POST_HOOK, PRE_HOOK, AckLocally, AtlasStep, AwaitPromotion, AwaitVip, CatchUp, ChangeSource,
    Fence, HandOver, PauseLocally, Plan, PreserveRelayLog, Recheck, RecordPause, RecordPromotion, RecordSwitchover, ResetReplica, Rewind, RunHook,
    RunResult, SemiSyncReplica, SemiSyncWait, SetRwOffline, SetRwOnline, SetWritable, StartReplica, StartSqlThread, Step,
    StepResult, StopReplica, StopSqlThread, MarkRewind, AcquireToken, ReleaseToken, HandOverToken,
)

log = logging.getLogger(__name__)

UNREADABLE_REPLICA_METADATA = 1201  # "Could not initialize master info structure" (a torn master.info)
# Runs a plan's Atlas steps (atlas/apply.py unless the caller brings its own connections).
AtlasRunner = Callable[[Config, Sequence[AtlasStep]], List[StepResult]]


class _Run:
    """What one run has done so far: the executor's failure policy reads it."""

    def __init__(self, total: int) -> None:
        self.total = total  # the plan's number of steps (the log's "step i/n")
        self.results: List[StepResult] = []
        self.error: Optional[OrchError] = None  # the failure that stopped the plan
        self.skip_why = ""  # the skipped steps' detail once it stopped
        self.opened = False  # SetWritable succeeded: writes are open
        self.applier_stopped: Set[str] = set()  # nodes whose SQL thread this run stopped
        self.stopping = ""  # a node whose replication was still stopping after its writes opened
        self.offline: List[SetRwOffline] = []  # the SET OFFLINE steps that ran
        self.offline_checked = False

    def skip(self, step: Step, why: str) -> None:
        self.results.append(StepResult(type(step).__name__, step.describe(), "skipped", why))


class Executor:
    def __init__(
        self, cfg: Config, servers: Mapping[str, Server], view: Optional[ClusterView] = None,
        atlas_runner: Optional[AtlasRunner] = None, run_id: str = "",
    ) -> None:
        self.cfg = cfg
        self.servers = servers
        self.atlas_runner = atlas_runner
        self.run_id = run_id  # hooks' ORCH_RUN_ID and the anti-flapping record's key
        self._rewind_marks: Dict[str, str] = {}  # node -> the name of the rewind mark this run holds
        # The observed versions decide the flavor; only a node unseen at observe time is asked.
        self._flavors: Dict[str, flavors.Flavor] = {}
        if view is not None:
            for node in (view.me, view.peer):
                if node.reachable:
                    self._flavors[node.name] = flavors.get(node.flavor, node.version)

    def run(self, plan: Plan) -> RunResult:
        """Run the plan's steps in its order under the failure policy (the module's docstring)."""
        try:
            return self._run(plan)
        finally:
            self._release_rewind_marks()

    def _run(self, plan: Plan) -> RunResult:
        steps = plan.steps
        run = _Run(len(steps))
        i = 0
        while i < len(steps):
            phase = steps[i].phase
            end = i + 1
            while end < len(steps) and steps[end].phase == phase:
                end += 1
            if phase is POST_HOOK:
                self._undo_offline(run)
            if phase in ATLAS_PHASES:
                self._atlas_phase(steps[i:end], run)
            else:
                for n in range(i, end):
                    self._step(n, steps[n], run)
            i = end
        self._undo_offline(run)
        return RunResult(run.results, run.error)

    def _step(self, n: int, step: Step, run: _Run) -> None:
        """Run one step (not an Atlas one) and record its result, or skip it."""
        if run.error is not None and not (run.opened and step.phase is POST_HOOK):
            run.skip(step, run.skip_why)  # once writes opened, the promotion happened: its post hooks run
            return
        if run.stopping and isinstance(step, ResetReplica) and step.node == run.stopping:
            run.skip(step, "replication still stopping")
            return
        start = time.monotonic()
        what = f"step {n + 1}/{run.total}"
        try:
            detail = self._do(step)
        except OrchError as exc:
            if step.best_effort:
                detail = f"warning: {exc}"
                run.results.append(StepResult(type(step).__name__, step.describe(), "warning", detail, _ms(start)))
                log.warning("%s (best effort): %s: %s", what, step.describe(), exc)
                return
            if run.opened and isinstance(step, (StopReplica, ResetReplica)) and step.node in run.applier_stopped:
                # Writes are open and the SQL thread stopped before they did: an IO thread still
                # connecting to a vanished old master (packets dropped, or a frozen host) can hold
                # STOP SLAVE past read_timeout. Not a failed promotion: the run says what it left,
                # and the maintainer removes the replication configuration on a later pass.
                run.stopping = step.node
                detail = (f"warning: writes are open, {step.node}'s replication is still stopping ({exc}); its SQL "
                          f"thread stopped before writes opened, so nothing more is applied; the maintainer removes it")
                run.results.append(StepResult(type(step).__name__, step.describe(), "warning", detail, _ms(start)))
                log.warning("%s: %s: %s", what, step.describe(), detail)
                return
            run.results.append(StepResult(type(step).__name__, step.describe(), "failed", str(exc), _ms(start)))
            log.error("%s failed: %s: %s", what, step.describe(), exc)
            run.error = exc
            run.skip_why = "a pre hook failed" if step.phase is PRE_HOOK else "an earlier step failed"
            return
        run.opened = run.opened or isinstance(step, SetWritable)
        if isinstance(step, StopSqlThread):
            run.applier_stopped.add(step.node)
        run.results.append(StepResult(type(step).__name__, step.describe(), "warning" if detail.startswith("warning") else "ok",
                                      detail, _ms(start)))
        log.info("%s done: %s%s", what, step.describe(), f" ({detail})" if detail else "")

    def _atlas_phase(self, steps: Sequence[Step], run: _Run) -> None:
        """One Atlas phase's steps, to the Atlas runner at once. After a failure only SetRwOnline
        runs, once writes are open (Atlas must let them through); the rest is skipped."""
        due = list(steps)
        if run.error is not None:
            due = [s for s in steps if run.opened and isinstance(s, SetRwOnline)]
            for step in steps:
                if step not in due:
                    run.skip(step, run.skip_why)
        if not due:
            return
        run.results += self._atlas(cast(Sequence[AtlasStep], due))  # the Atlas phases hold only Atlas steps
        if steps[0].phase is ATLAS_FIRST:  # no safe writer from here on: Atlas must not find one by itself
            run.offline += [s for s in due if isinstance(s, SetRwOffline)]

    def _undo_offline(self, run: _Run) -> None:
        """Once, after the Atlas steps: an offline that named a peer (``unless_open``) is undone
        when that peer is writable now (its MASTER event opened it, perhaps setting the writer
        online before this offline landed). Read after the fence, never before it: a peer that
        stops answering must not delay it. Unreadable: left offline (the maintainer keeps the invariant)."""
        if run.offline_checked:
            return
        run.offline_checked = True
        offline = run.offline
        peers = {s.unless_open for s in offline if s.unless_open}
        for name in sorted(peers):
            server = self.servers.get(name)
            if server is None:
                continue
            try:
                open_now = int(server.value("SELECT @@global.read_only", timeout=1.0)) == 0
            except (DatabaseError, TypeError, ValueError):
                continue
            if open_now:
                log.info("%s is writable now (its MASTER event opened it): the read/write backend goes back online", name)
                run.results += self._atlas([SetRwOnline(s.atlas, s.address, f"{name} opened for writes meanwhile")
                                            for s in offline if s.unless_open == name])
                return

    # ------------------------------------------------------------------ steps

    def _do(self, step: Step) -> str:
        """Run one step through its handler (HANDLERS); its detail, "warning: ..." for a warning."""
        handler = HANDLERS.get(type(step))
        if handler is None:
            raise OrchError(f"unknown step {step!r}")
        return handler(self, step)

    def _fence(self, step: Fence) -> str:
        server = self.servers[step.node]
        return fence(server, self._flavor(server), self.cfg.failover.fence_timeout, self.cfg.failover.semi_sync)

    def _set_writable(self, step: SetWritable) -> str:
        server = self.servers[step.node]
        return set_read_only(server, self._flavor(server), fenced=False)

    def _catch_up(self, step: CatchUp) -> str:
        server = self.servers[step.node]
        peer = self.servers[step.peer] if step.peer else None
        return catch_up(step, server, self._flavor(server), peer, self.cfg.flavor)

    def _one_statement(self, step: Any) -> str:
        """A step that is one statement of the node's flavor (STATEMENTS)."""
        server = self.servers[step.node]
        server.execute(STATEMENTS[type(step)](self._flavor(server)), why=step.describe())
        return ""

    def _start_replica(self, step: StartReplica) -> str:
        if self.cfg.failover.semi_sync:
            self._semisync_replica_setting(step.node)
        return self._one_statement(step)

    def _hand_over(self, step: HandOver) -> str:
        from .keepalived.track import record_handover, write_track_file  # only a hand-over writes it

        detail = write_track_file(step.path, step.give_up)
        record_handover(self.cfg.state_dir, step.give_up)
        return detail

    def _record_switchover(self, step: RecordSwitchover) -> str:
        from .promotions import SWITCHOVER, record

        return record(self.servers[step.node], SWITCHOVER, step.candidate, self.run_id or _run_id())

    def _ack_locally(self, step: AckLocally) -> str:
        from .promotions import write_local_ack

        try:
            return write_local_ack(step.state_dir, step.acks, self.run_id)
        except OSError as exc:
            raise OrchError(f"cannot write the acknowledgement in {step.state_dir}: {exc.strerror or exc}") from None

    def _record_pause(self, step: RecordPause) -> str:
        from .pauses import record

        return record(self.servers[step.node], step.kind, self.cfg.self_name, self.run_id or _run_id(), step.seconds, step.reason, step.by)

    def _pause_locally(self, step: PauseLocally) -> str:
        from .pauses import write_local

        try:
            return write_local(step.state_dir, step.kind, self.cfg.self_name, self.run_id or _run_id(), step.seconds, step.reason, step.by)
        except OSError as exc:
            raise OrchError(f"cannot write the maintenance record in {step.state_dir}: {exc.strerror or exc}") from None

    def _acquire_token(self, step: AcquireToken) -> str:
        from . import lease  # etcd: configured

        def peer_fenced() -> str:
            """The peer re-read now: fenced (or down with its lease run out: then etcd took the key).
            On a connection of its own: lease.acquire runs this in a thread beside its polls."""
            shared = self.servers.get(step.peer)
            if shared is None:
                return ""
            server = Server(shared.node, shared.account)
            try:
                peer = observe_node(server, self.cfg.flavor)
            finally:
                server.close()
            if peer.reachable and flavors.get(peer.flavor, peer.version).is_fenced(peer):
                return f"{step.peer} re-read fenced"
            return ""

        return lease.acquire(self.cfg, step, peer_fenced)

    def _release_token(self, step: ReleaseToken) -> str:
        from . import lease

        return lease.release(self.cfg, step)

    def _hand_over_token(self, step: HandOverToken) -> str:
        from . import lease

        return lease.hand_over(self.cfg, step)

    def _rewind(self, step: Rewind) -> str:
        from . import rewind  # only when a Rewind runs

        try:
            return rewind.perform(self.cfg, self.servers, step, self._flavor(self.servers[step.node]))
        finally:
            self._release_rewind_marks(step.node)

    def _mark_rewind(self, step: MarkRewind) -> str:
        """Take the rewind mark on the node (a named lock the peer's orch sees in its observation,
        flavors' gtid_query): while this run holds it and the node's binlog state is unchanged,
        the peer does not take the node's errant transactions for newer history. Released when
        the rewind ends or the run does; a lost connection releases it too."""
        server = self.servers[step.node]
        query = self._flavor(server).rewind_mark_query
        if query is None:
            return "no mark: this flavor has no rewind"
        name = str(server.value(query))
        if not server.take_lock(name, step.describe()):
            raise OrchError(f"{step.node}: the rewind mark is held by another session (another rewind of it is running)")
        self._rewind_marks[step.node] = name
        return ""

    def _release_rewind_marks(self, node: str = "") -> None:
        for name_of in [n for n in self._rewind_marks if not node or n == node]:
            self.servers[name_of].release_lock(self._rewind_marks.pop(name_of))

    def _run_hook(self, step: RunHook) -> str:
        """Run one hook; a failed pre hook raises Refused (nothing changed yet), a post hook's
        failure is a warning. The detail (exit code, time, output tail) is journaled."""
        from . import hooks

        env = hooks.environment({**dict(step.context), "ORCH_RUN_ID": self.run_id}, step.event)
        run = hooks.run_hook(step.argv, env, step.timeout, self.cfg.secrets)
        if run.ok:
            return run.summary()
        if step.post:
            log.warning("%s hook %s: %s", step.event, step.argv[0], run.summary())
            return f"warning: {run.summary()}"
        raise Refused(f"{step.event} hook {step.argv[0]} {run.summary()}: aborted before anything changed")

    def _record_promotion(self, step: RecordPromotion) -> str:
        """Anti-flapping record; best effort but for an acknowledgement (RecordPromotion.best_effort)."""
        from .promotions import record

        try:
            return record(self.servers[step.node], step.kind, step.node, self.run_id or _run_id(), step.acks)
        except DatabaseError as exc:
            if not step.best_effort:
                raise
            raise OrchError(f"not recorded: {exc} (the next automatic promotion will not be blocked)") from None

    def _semisync_wait(self, step: SemiSyncWait) -> str:
        """Switch a master's semi-sync wait. Best effort (a warning, never a failed plan): a
        promotion must not stop short of opening writes because of it."""
        from . import semisync

        server = self.servers[step.node]
        flavor = self._flavor(server)
        recorded = ""
        if not step.on:
            # Recorded before it takes effect: a crash in between leaves "off" on record,
            # which only ever makes a rewind more cautious.
            recorded = self._semisync_record(step, semisync)
        try:
            for sql, args in flavor.semisync_wait(step.on, semisync.NO_FALLBACK_MS):
                server.execute(sql, args, why=step.describe())
        except DatabaseError as exc:
            if exc.kind == DOWN:
                raise
            log.warning("%s: semi-sync wait not switched %s: %s", step.node, "on" if step.on else "off", exc)
            return f"warning: not switched: {exc}"
        if step.on:
            recorded = self._semisync_record(step, semisync)
        return f"wait {'on' if step.on else 'off'}" + (f"; {recorded}" if recorded else "")

    def _semisync_record(self, step: SemiSyncWait, semisync: Any) -> str:
        try:
            semisync.write_record(self.cfg.state_dir, step.on, step.why, step.node)
            return ""
        except OSError as exc:
            log.critical("%s: could not record the semi-sync switch in %s: %s; an automatic rewind cannot trust the record",
                         step.node, self.cfg.state_dir, exc.strerror or exc)
            return f"not recorded ({exc.strerror or exc})"

    def _semisync_replica_setting(self, name: str) -> None:
        """Before replication starts: acknowledge as a semi-sync replica, and do not wait as a
        master (best effort). A replica's own master-side wait, with no replica of its own and
        no fallback, would block its applier at the first replicated commit for good."""
        server = self.servers[name]
        flavor = self._flavor(server)
        try:
            server.execute(flavor.semisync_replica_on, why=f"{name} acknowledges what it receives (failover.semi_sync)")
            if str(server.query(flavor.semisync_query)[0].get("enabled")).upper() in ("1", "ON"):
                self._semisync_wait(SemiSyncWait(name, False, f"{name} becomes a replica: its own wait would block its applier"))
        except DatabaseError as exc:
            if exc.kind == DOWN:
                raise
            log.warning("%s: cannot set up the semi-sync replica side: %s", name, exc)

    def _semisync_replica(self, step: SemiSyncReplica) -> str:
        name = step.node
        server = self.servers[name]
        flavor = self._flavor(server)
        server.execute(flavor.semisync_replica_on, why=f"{name} acknowledges what it receives (failover.semi_sync)")
        for sql in flavor.restart_io_thread:
            server.execute(sql, why=f"the semi-sync replica side takes effect when {name}'s IO thread starts")
        return ""

    def _change_source(self, step: ChangeSource) -> str:
        server = self.servers[step.node]
        flavor = self._flavor(server)
        acct = self.cfg.replication
        why = f"replicate from {step.source} ({step.host}:{step.port}) as {acct.user}"
        try:
            for sql, args in flavor.change_source(step.host, step.port, acct.user, acct.password):
                server.execute(sql, args, why=why)
            return ""
        except DatabaseError as exc:
            if exc.code != UNREADABLE_REPLICA_METADATA:
                raise
            # A crash while the server wrote master.info leaves it torn: SHOW SLAVE STATUS
            # shows nothing and every CHANGE MASTER fails until the metadata is reset.
            # Nothing is lost: the node is being (re-)pointed anyway, with GTIDs.
            log.warning("%s: replication metadata unreadable (%s): resetting it and pointing again", step.node, exc)
        server.execute(flavor.reset_replica, why=f"{step.node}'s replication metadata is unreadable")
        for sql, args in flavor.change_source(step.host, step.port, acct.user, acct.password):
            server.execute(sql, args, why=why)
        return "replication metadata was unreadable: reset, then pointed"

    def _preserve_relay_log(self, step: PreserveRelayLog) -> str:
        name = step.node
        server = self.servers[name]
        flavor = self._flavor(server)
        me = read_node(server, flavor.name)
        r = me.replica
        if r is None or not r.configured or r.io is not ThreadState.STOPPED or r.sql is not ThreadState.STOPPED:
            return "a replication thread runs: the relay log is not at risk"
        statements = flavor.preserve_relay_log(r)
        for sql, args in statements:
            server.execute(sql, args, why=f"keep {name}'s relay log ({r.relay_log_file}:{r.relay_log_pos}, unapplied {flavor.unapplied(me)})")
        return f"applying from {r.relay_log_file}:{r.relay_log_pos}" if statements else "the relay log survives START SQL_THREAD here"

    def _recheck(self, step: Recheck) -> str:
        """Open writes only on a state just read: the VIP is still here, the peer still read-only."""
        if step.vip and not holds_address(step.vip):
            raise Refused(f"VIP {step.vip} left this host while {step.node} caught up; {step.node} stays read-only")
        if not step.peer:
            return "VIP still here"
        server = self.servers[step.peer]
        peer = observe_node(server, self.cfg.flavor)
        if peer.down:
            return f"{step.peer} went down meanwhile ({peer.error})"
        if not peer.reachable:
            raise Refused(f"cannot re-check {step.peer} ({peer.error}); {step.node} stays read-only")
        if not flavors.get(peer.flavor, peer.version).is_fenced(peer):
            raise Refused(f"{step.peer} was opened for writes meanwhile; {step.node} stays read-only")
        return f"{step.peer} still read-only" + (", VIP still here" if step.vip else "")

    def _await_promotion(self, step: AwaitPromotion) -> str:
        """Poll (every 20 ms) until the VIP left this host and the node is writable; Refused past the timeout."""
        server = self.servers[step.node]
        started = time.monotonic()
        deadline = started + step.timeout
        vip_left: Optional[float] = None if step.vip else started
        last = ""
        while True:
            now = time.monotonic()
            if vip_left is None and not holds_address(step.vip):
                vip_left = now
            try:
                writable = int(server.value("SELECT @@global.read_only", timeout=1.0)) == 0
                last = "read-only"
            except DatabaseError as exc:
                writable, last = False, f"not observable ({exc})"
            if vip_left is not None and writable:
                moved = f"the VIP left after {vip_left - started:.2f}s, " if step.vip else ""
                return f"{moved}{step.node} writable after {time.monotonic() - started:.2f}s"
            if vip_left is not None and step.vip and step.take_timeout and now - vip_left >= step.take_timeout:
                raise Refused(f"VIP {step.vip} left this host, but {step.node} was not writable {step.take_timeout:g}s later "
                              f"({step.node} is {last}): its keepalived did not take the VIP (frozen or stopped?), or its "
                              f"MASTER event did not promote it")
            if vip_left is None and now - started >= step.leave_timeout:
                raise Refused(f"VIP {step.vip} still on this host {step.leave_timeout:g}s after the track file was written: keepalived "
                              f"did not react (is its track_file {self.cfg.keepalived.track_file} tracked with weight 0? "
                              f"orch doctor --keepalived-config)")
            if now >= deadline:
                where = ("the VIP is still on this host" if vip_left is None else "the VIP has left this host") if step.vip else ""
                raise Refused(f"{step.node} not promoted within {step.timeout:g}s: {where + ', ' if where else ''}{step.node} is {last}")
            time.sleep(0.02)

    def _await_vip(self, step: AwaitVip) -> str:
        """Poll (every 20 ms) until this host holds the VIP again; Refused past the timeout."""
        started = time.monotonic()
        while not holds_address(step.vip):
            if time.monotonic() - started >= step.timeout:
                raise Refused(f"VIP {step.vip} not back on this host within {step.timeout:g}s: keepalived decides now")
            time.sleep(0.02)
        return f"VIP back after {time.monotonic() - started:.2f}s"

    def _flavor(self, server: Server) -> flavors.Flavor:
        name = server.node.name
        if name not in self._flavors:
            self._flavors[name] = flavors.get(self.cfg.flavor, str(server.value("SELECT VERSION()")))
        return self._flavors[name]

    def _atlas(self, steps: Sequence[AtlasStep]) -> List[StepResult]:
        if self.atlas_runner is None:
            from .atlas.apply import run_atlas_steps

            self.atlas_runner = run_atlas_steps
        try:
            return self.atlas_runner(self.cfg, steps)
        except Exception as exc:  # Atlas must never fail the database failover
            log.error("Atlas steps failed: %s (the maintainer retries)", exc)
            return [StepResult(type(s).__name__, s.describe(), "failed", str(exc)) for s in steps]


# Steps that are one statement of the node's flavor.
STATEMENTS: Dict[type, Callable[[flavors.Flavor], str]] = {
    StartSqlThread: lambda f: f.start_sql_thread,
    StartReplica: lambda f: f.start_replica,
    StopSqlThread: lambda f: f.stop_sql_thread,
    StopReplica: lambda f: f.stop_replica,
    ResetReplica: lambda f: f.reset_replica,
}

# Each step type's handler: (executor, step) -> detail. The Atlas steps (ATLAS_PHASES) go to
# the Atlas runner instead (atlas/apply.py); tests/test_execute.py checks that every step type
# in plan.py is one or the other.
HANDLERS: Dict[type, Callable[[Executor, Any], str]] = {
    RunHook: Executor._run_hook,
    Rewind: Executor._rewind,
    MarkRewind: Executor._mark_rewind,
    Fence: Executor._fence,
    PreserveRelayLog: Executor._preserve_relay_log,
    StartSqlThread: Executor._one_statement,
    StartReplica: Executor._start_replica,
    StopSqlThread: Executor._one_statement,
    StopReplica: Executor._one_statement,
    ResetReplica: Executor._one_statement,
    ChangeSource: Executor._change_source,
    CatchUp: Executor._catch_up,
    Recheck: Executor._recheck,
    SemiSyncWait: Executor._semisync_wait,
    SemiSyncReplica: Executor._semisync_replica,
    SetWritable: Executor._set_writable,
    RecordPromotion: Executor._record_promotion,
    HandOver: Executor._hand_over,
    AwaitPromotion: Executor._await_promotion,
    AwaitVip: Executor._await_vip,
    RecordSwitchover: Executor._record_switchover,
    AckLocally: Executor._ack_locally,
    RecordPause: Executor._record_pause,
    PauseLocally: Executor._pause_locally,
    AcquireToken: Executor._acquire_token,
    ReleaseToken: Executor._release_token,
    HandOverToken: Executor._hand_over_token,
}


def _run_id() -> str:
    from .journal import new_run_id

    return new_run_id()


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
