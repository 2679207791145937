"""Interpret a Plan's steps. The only place that turns decisions into SQL and Atlas effects.

Database steps run in order and the first failure stops the plan (a failed fence must
never be followed by SetWritable). Atlas steps run after the database steps and are
best effort: their failures are logged and journaled, and the maintainer retries them.
SET OFFLINE of the read/write backend (ATLAS_FIRST) runs before the database steps (one
connection attempt per Atlas, bounded by its admin timeout); SET ONLINE runs once the
master is writable, even when a later database step fails.
"""

from __future__ import annotations

import logging
import math
import re
import time

from . import flavors
from .config import Config
from .db import Server
from .errors import DOWN, CatchUpRefused, DatabaseError, OrchError, Refused
from .flavors import BLOCKERS_QUERY, KILL_CONNECTION, LOCK_WAIT_TIMEOUT
from .lazy import Pattern
from .model import ClusterView, ThreadState
from .observe import holds_address, observe_node, read_node
from .plan import (
    ATLAS_FIRST, ATLAS_STEPS, AtlasStep, AwaitPromotion, AwaitVip, CatchUp, RecordSwitchover, ChangeSource, Fence, HandOver, NodeStep, Plan, PreserveRelayLog, Recheck, ResetReplica,
    AckLocally, RecordPromotion, Rewind, RunHook, RunResult, SemiSyncReplica, SemiSyncWait, SetRwOffline, SetRwOnline, SetWritable, StartReplica, StartSqlThread, Step, StepResult,
    StopReplica, StopSqlThread,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

WAIT_SLICE = 1.0  # seconds per wait call, so a replication error is noticed within a second
# A fence that waited too long: lock wait timeout (server side) or no answer (client side).
BLOCKED_CODES = (1205, 2013)
UNREADABLE_REPLICA_METADATA = 1201  # "Could not initialize master info structure" (a torn master.info)
# Runs a plan's Atlas steps (atlas/apply.py unless the caller brings its own connections).
if TYPE_CHECKING:
    AtlasRunner = Callable[[Config, Sequence[AtlasStep]], List[StepResult]]
# Steps that are one statement of the node's flavor.
ONE_STATEMENT: Dict[type, Callable[[flavors.Flavor], str]] = {
    StartSqlThread: lambda f: f.start_sql_thread,
    StartReplica: lambda f: f.start_replica,
    StopSqlThread: lambda f: f.stop_sql_thread,
    StopReplica: lambda f: f.stop_replica,
    ResetReplica: lambda f: f.reset_replica,
}


def statement_digest(info: Any) -> str:
    """A statement's shape without its values (literals become ?), and a short hash of it."""
    text = str(info or "")
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "?", text)
    text = re.sub(r"\b\d+(?:\.\d+)?\b", "?", text)
    text = " ".join(text.split())
    import hashlib  # deferred: only a fence that kills pays for it

    return f"{hashlib.sha1(text.encode()).hexdigest()[:12]} {text[:100]!r}"


_READS = Pattern(r"^\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|EXPLAIN|DESCRIBE|DESC|HELP)\b", re.I | re.S)
_WRITING_SELECT = Pattern(r"\b(INTO\s+(OUTFILE|DUMPFILE|@)|FOR\s+UPDATE|LOCK\s+IN\s+SHARE\s+MODE)\b", re.I)


def may_block_fence(info: Any) -> bool:
    """Whether a running statement can hold SET GLOBAL read_only back (a write may; a plain read cannot)."""
    text = str(info or "")
    if not text.strip():
        return True  # between statements of a transaction, or not shown: it may be committing
    if _READS.match(text) and not _WRITING_SELECT.search(text):
        return False
    return True


def session_text(row: Dict[str, Any]) -> str:
    """id, user, host and statement digest of a processlist row (never the statement's values)."""
    return f"id {row.get('id')} user {row.get('user')!r} host {row.get('host')!r} ({row.get('command')} for {row.get('time')}s) digest {statement_digest(row.get('info'))}"


class Executor:
    def __init__(
        self, cfg: Config, servers: Mapping[str, Server], view: Optional[ClusterView] = None,
        atlas_runner: Optional[AtlasRunner] = None, run_id: str = "",
    ) -> None:
        self.cfg = cfg
        self.servers = servers
        self.atlas_runner = atlas_runner
        self.run_id = run_id  # hooks' ORCH_RUN_ID and the anti-flapping record's key
        # The observed versions decide the flavor; only a node unseen at observe time is asked.
        self._flavors: Dict[str, flavors.Flavor] = {}
        if view is not None:
            for node in (view.me, view.peer):
                if node.reachable:
                    self._flavors[node.name] = flavors.get(node.flavor, node.version)

    def run(self, plan: Plan) -> RunResult:
        results: List[StepResult] = []
        # Pre hooks run before anything changes (Atlas included); post hooks last, after Atlas
        # lets writes through: a slow hook must not hold them.
        pre = [s for s in plan.steps if isinstance(s, RunHook) and not s.post]
        post = [s for s in plan.steps if isinstance(s, RunHook) and s.post]
        db_steps = [s for s in plan.steps if not isinstance(s, ATLAS_STEPS) and not isinstance(s, RunHook)]
        atlas_steps = [s for s in plan.steps if isinstance(s, ATLAS_STEPS) and not isinstance(s, ATLAS_FIRST)]
        first = [s for s in plan.steps if isinstance(s, ATLAS_FIRST)]
        for i, hook in enumerate(pre):
            start = time.monotonic()
            try:
                results.append(StepResult(type(hook).__name__, hook.describe(), "ok", self._run_hook(hook), _ms(start)))
            except OrchError as exc:
                results.append(StepResult(type(hook).__name__, hook.describe(), "failed", str(exc), _ms(start)))
                log.error("%s", exc)
                for rest in pre[i + 1:] + first + db_steps + atlas_steps + post:
                    results.append(StepResult(type(rest).__name__, rest.describe(), "skipped", "a pre hook failed"))
                return RunResult(results, exc)
        if first:
            results += self._atlas(first)  # no safe writer from here on: Atlas must not find one by itself
        opened = False
        stopping = ""  # a node whose replication was still stopping after its writes opened
        applier_stopped = set()  # nodes whose SQL thread this run stopped (before opening writes)
        for i, step in enumerate(db_steps):
            start = time.monotonic()
            if stopping and isinstance(step, ResetReplica) and step.node == stopping:
                results.append(StepResult(type(step).__name__, step.describe(), "skipped", "replication still stopping"))
                continue
            try:
                detail = self._do(step)
                opened = opened or isinstance(step, SetWritable)
                if isinstance(step, StopSqlThread):
                    applier_stopped.add(step.node)
                results.append(StepResult(type(step).__name__, step.describe(), "warning" if detail.startswith("warning") else "ok", detail, _ms(start)))
                log.info("step %d/%d done: %s%s", i + 1, len(db_steps), step.describe(), f" ({detail})" if detail else "")
            except OrchError as exc:
                if opened and isinstance(step, (StopReplica, ResetReplica)) and step.node in applier_stopped:
                    # Writes are open and the SQL thread stopped before they did: an IO thread still
                    # connecting to a vanished old master (packets dropped, or a frozen host) can hold
                    # STOP SLAVE past read_timeout. Not a failed promotion: the run says what it left,
                    # and the maintainer removes the replication configuration on a later pass.
                    stopping = step.node
                    detail = (f"warning: writes are open, {step.node}'s replication is still stopping ({exc}); its SQL "
                              f"thread stopped before writes opened, so nothing more is applied; the maintainer removes it")
                    results.append(StepResult(type(step).__name__, step.describe(), "warning", detail, _ms(start)))
                    log.warning("step %d/%d: %s: %s", i + 1, len(db_steps), step.describe(), detail)
                    continue
                results.append(StepResult(type(step).__name__, step.describe(), "failed", str(exc), _ms(start)))
                log.error("step %d/%d failed: %s: %s", i + 1, len(db_steps), step.describe(), exc)
                # Writes are open although a later step failed: Atlas must let them through.
                online = [s for s in atlas_steps if isinstance(s, SetRwOnline)] if opened else []
                after = post if opened else []  # the promotion happened: its post hooks run
                for rest in db_steps[i + 1:] + [s for s in atlas_steps if s not in online] + [s for s in post if s not in after]:
                    results.append(StepResult(type(rest).__name__, rest.describe(), "skipped", "an earlier step failed"))
                if online:
                    results += self._atlas(online)
                results += self._online_if_opened(first)
                results += self._post_hooks(after)
                return RunResult(results, exc)
        if atlas_steps:
            results += self._atlas(atlas_steps)
        # After the fence, never before it: a peer that stops answering must not delay it.
        results += self._online_if_opened(first)
        results += self._post_hooks(post)
        return RunResult(results)

    def _online_if_opened(self, offline: Sequence[Step]) -> List[StepResult]:
        """At the end of a run whose offline named a peer (``unless_open``): the peer read once
        more; writable now (its MASTER event opened it, perhaps setting the writer online
        before this offline landed) -> the writer back online in the same Atlases.
        Unreadable: left offline (the maintainer keeps the invariant)."""
        peers = {s.unless_open for s in offline if isinstance(s, SetRwOffline) and s.unless_open}
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
                return self._atlas([SetRwOnline(s.atlas, s.address, f"{name} opened for writes meanwhile")
                                    for s in offline if isinstance(s, SetRwOffline) and s.unless_open == name])
        return []

    def _post_hooks(self, steps: Sequence[RunHook]) -> List[StepResult]:
        results = []
        for step in steps:
            start = time.monotonic()
            detail = self._run_hook(step)
            results.append(StepResult(type(step).__name__, step.describe(), "warning" if detail.startswith("warning") else "ok", detail, _ms(start)))
        return results

    # ------------------------------------------------------------------ steps

    def _do(self, step: Step) -> str:
        if isinstance(step, RunHook):
            return self._run_hook(step)
        if isinstance(step, RecordPromotion):
            return self._record_promotion(step)
        if isinstance(step, AckLocally):
            from .promotions import write_local_ack

            try:
                return write_local_ack(step.state_dir, step.acks, self.run_id)
            except OSError as exc:
                raise OrchError(f"cannot write the acknowledgement in {step.state_dir}: {exc.strerror or exc}") from None
        if isinstance(step, Rewind):
            from . import rewind  # only when a Rewind runs

            return rewind.perform(self.cfg, self.servers, step, self._flavor(self.servers[step.node]))
        if isinstance(step, Fence):
            return self._fence(step.node)
        if isinstance(step, SetWritable):
            return self._set_read_only(step.node, fenced=False)
        if isinstance(step, CatchUp):
            return self._catch_up(step)
        if isinstance(step, PreserveRelayLog):
            return self._preserve_relay_log(step.node)
        if isinstance(step, Recheck):
            return self._recheck(step)
        if isinstance(step, ChangeSource):
            return self._change_source(step)
        if isinstance(step, HandOver):
            detail = write_track_file(step.path, step.give_up)
            self._record_handover(step)
            return detail
        if isinstance(step, AwaitPromotion):
            return self._await_promotion(step)
        if isinstance(step, AwaitVip):
            return self._await_vip(step)
        if isinstance(step, RecordSwitchover):
            from .promotions import SWITCHOVER, record

            return record(self.servers[step.node], SWITCHOVER, step.candidate, self.run_id or _run_id())
        if isinstance(step, SemiSyncWait):
            return self._semisync_wait(step)
        if isinstance(step, SemiSyncReplica):
            return self._semisync_replica(step.node)
        if isinstance(step, StartReplica) and self.cfg.failover.semi_sync:
            self._semisync_replica_setting(step.node)
        statement = ONE_STATEMENT.get(type(step))
        if statement is not None and isinstance(step, NodeStep):
            server = self.servers[step.node]
            server.execute(statement(self._flavor(server)), why=step.describe())
            return ""
        raise OrchError(f"unknown step {step!r}")

    def _record_handover(self, step: HandOver) -> None:
        import os

        from .statefile import replace_json

        try:
            replace_json(os.path.join(self.cfg.state_dir, HANDOVER_RECORD), {"value": "1" if step.give_up else "0", "at": time.time()})
        except OSError as exc:
            log.warning("cannot record the hand-over in %s: %s", self.cfg.state_dir, exc.strerror or exc)

    def _run_hook(self, step: RunHook) -> str:
        """Run one hook; a failed pre hook raises Refused (nothing changed yet), a post hook's
        failure is a warning. The detail (exit code, time, output tail) is journaled."""
        from . import hooks

        env = hooks.environment({**dict(step.context), "ORCH_RUN_ID": self.run_id}, step.phase)
        run = hooks.run_hook(step.argv, env, step.timeout, self.cfg.secrets)
        if run.ok:
            return run.summary()
        if step.post:
            log.warning("%s hook %s: %s", step.phase, step.argv[0], run.summary())
            return f"warning: {run.summary()}"
        raise Refused(f"{step.phase} hook {step.argv[0]} {run.summary()}: aborted before anything changed")

    def _record_promotion(self, step: RecordPromotion) -> str:
        """Anti-flapping record: best effort, a failure to record never fails the promotion."""
        from .promotions import record

        if step.kind == "ack":
            return record(self.servers[step.node], step.kind, step.node, self.run_id or _run_id(), step.acks)
        try:
            return record(self.servers[step.node], step.kind, step.node, self.run_id or _run_id(), step.acks)
        except DatabaseError as exc:
            log.warning("%s: promotion not recorded for anti-flapping: %s (the next automatic promotion will not be blocked)",
                        step.node, exc)
            return f"warning: not recorded: {exc}"

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

    def _semisync_replica(self, name: str) -> str:
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

    def _flavor(self, server: Server) -> flavors.Flavor:
        name = server.node.name
        if name not in self._flavors:
            self._flavors[name] = flavors.get(self.cfg.flavor, str(server.value("SELECT VERSION()")))
        return self._flavors[name]

    def _set_read_only(self, name: str, fenced: bool, timeout: Optional[float] = None) -> str:
        """Fence (read_only on) or open (off) a server, then re-read and verify it."""
        server = self.servers[name]
        flavor = self._flavor(server)
        statements = flavor.fence_statements if fenced else flavor.unfence_statements
        for sql in statements:
            server.execute(sql, why=f"fence {name}" if fenced else f"{name} is the master", timeout=timeout)
        state = read_node(server, flavor.name)
        if flavor.is_fenced(state) != fenced or state.read_only != fenced:
            raise DatabaseError(f"{server.label}: read_only={int(state.read_only)} after {'; '.join(statements)}")
        return f"read_only={int(fenced)} verified"

    def _fence(self, name: str) -> str:
        """Fence within failover.fence_timeout; past it, kill the client sessions it waits behind, once.

        SET GLOBAL read_only waits for running writes (a 60 s UPDATE holds it 60 s): the
        session's lock_wait_timeout bounds that wait on the server, the read timeout bounds
        a server that does not answer at all.
        """
        server = self.servers[name]
        seconds = self.cfg.failover.fence_timeout
        ended = self._end_semisync_waiters(server) if self.cfg.failover.semi_sync else []
        waiters = f"; ended {len(ended)} commit(s) waiting for a semi-sync acknowledgement: " + "; ".join(ended) if ended else ""
        try:
            return self._fence_once(server, seconds) + waiters
        except DatabaseError as exc:
            if exc.kind == DOWN or exc.code not in BLOCKED_CODES:
                raise
            log.warning("fence %s: not done within %gs (%s): killing the client sessions it waits behind", name, seconds, exc)
        hint = "(the orch account needs PROCESS to see other users' sessions and CONNECTION ADMIN to kill them)"
        try:
            killed = self._kill_blockers(server)
        except DatabaseError as exc:
            raise DatabaseError(f"{exc} {hint}", exc.kind, exc.code) from None
        try:
            detail = self._fence_once(server, seconds)
        except DatabaseError as exc:
            what = f"after killing {len(killed)} session(s)" if killed else f"no blocking client session was visible to kill {hint}"
            raise DatabaseError(f"{exc}; {what}", exc.kind, exc.code) from None
        return f"{detail} after killing {len(killed)} blocking session(s): " + "; ".join(killed) if killed else detail

    def _fence_once(self, server: Server, seconds: float) -> str:
        server.execute(LOCK_WAIT_TIMEOUT, (max(1, math.ceil(seconds)),), why="bound the fence's wait for running writes",
                       timeout=seconds + 1)
        return self._set_read_only(server.node.name, fenced=True, timeout=seconds + 1)

    def _end_semisync_waiters(self, server: Server) -> List[str]:
        """When a commit waits for a semi-sync acknowledgement, kill the writing sessions before fencing.

        SET GLOBAL read_only waits behind them, and a node being fenced must not have them
        acknowledged afterwards: each client gets an error (its connection is closed), so no
        such commit was ever acknowledged; the transactions stay in this node's binlog (a
        replica applies them, or they are an unacknowledged tail a rewind may roll back).
        """
        from .flavors import SEMISYNC_WAIT_STATE

        ended = []
        try:
            rows = server.query(BLOCKERS_QUERY, timeout=self.cfg.failover.fence_timeout + 1)
        except DatabaseError as exc:
            if exc.kind == DOWN:
                raise
            log.warning("fence %s: cannot list sessions waiting for a semi-sync acknowledgement: %s", server.node.name, exc)
            return []
        if not any(str(row.get("state") or "").startswith(SEMISYNC_WAIT_STATE) for row in rows):
            return []
        # One commit waits for the acknowledgement; the others of its group queue behind it
        # in other states: every writing session goes, as the fence deadline would do anyway.
        for row in rows:
            if not may_block_fence(row.get("info")):
                continue
            text = session_text(row)
            try:
                server.execute(KILL_CONNECTION, (int(row["id"]),),
                               why=f"its commit waits for a semi-sync acknowledgement while {server.node.name} is fenced: {text}")
            except DatabaseError as exc:
                if exc.code == 1094:
                    continue
                raise
            log.warning("fence %s: ended session %s (its commit was never acknowledged)", server.node.name, text)
            ended.append(text)
        return ended

    def _kill_blockers(self, server: Server) -> List[str]:
        """Kill every client session running a statement (never replication or system threads)."""
        killed = []
        for row in server.query(BLOCKERS_QUERY):
            if not may_block_fence(row.get("info")):
                continue
            text = session_text(row)
            try:
                server.execute(KILL_CONNECTION, (int(row["id"]),), why=f"it blocks fencing {server.node.name}: {text}")
            except DatabaseError as exc:
                if exc.code == 1094:  # "Unknown thread id": it ended by itself
                    continue
                raise
            log.warning("fence %s: killed session %s", server.node.name, text)
            killed.append(text)
        return killed

    def _preserve_relay_log(self, name: str) -> str:
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

    def _catch_up(self, step: CatchUp) -> str:
        server = self.servers[step.node]
        flavor = self._flavor(server)
        deadline = time.monotonic() + step.timeout
        me = read_node(server, flavor.name)
        targets = []
        if me.replica is not None and me.replica.retrieved:
            targets.append(("its relay log", me.replica.retrieved))
        if step.peer:
            # Read after the peer was fenced: nothing can be added to it any more.
            peer = read_node(self.servers[step.peer], self.cfg.flavor)
            targets.append((f"{step.peer}'s executed GTIDs", peer.binlog_pos))
        waited = []
        for label, target in targets:
            while True:
                missing = flavor.missing(target, me)
                if not missing:
                    break
                r = me.replica
                problem = ""
                if r is None or not r.configured:
                    problem = f"{step.node} has no replication to apply {missing} with"
                elif r.sql_error:
                    problem = f"{step.node}'s SQL thread stopped on error {r.last_sql_errno}: {r.last_sql_error}"
                elif r.sql is not ThreadState.RUNNING:
                    problem = f"{step.node}'s SQL thread is {r.sql.value}"
                elif step.peer and r.io is ThreadState.STOPPED and r.last_io_error:
                    problem = f"{step.node}'s IO thread stopped: {r.last_io_error}"
                remaining = deadline - time.monotonic()
                if not problem and remaining <= 0:
                    problem = f"catch-up timed out after {step.timeout:g}s"
                if problem:
                    text = f"{problem}: {label} not applied, missing {missing}"
                    if step.force:
                        log.warning("--force: promoting anyway although %s", text)
                        return f"warning: forced although {text}"
                    raise CatchUpRefused(f"{text}; {step.node} stays read-only (orch promote --force overrides)")
                wait = min(WAIT_SLICE, max(remaining, 0.01))
                sql, args = flavor.wait_statement(missing, wait)
                server.value(sql, args, timeout=wait + server.read_timeout)
                me = read_node(server, flavor.name)
            waited.append(label)
        return "applied " + " and ".join(waited) if waited else "nothing to apply"

    def _atlas(self, steps: Sequence[AtlasStep]) -> List[StepResult]:
        if self.atlas_runner is None:
            from .atlas.apply import run_atlas_steps

            self.atlas_runner = run_atlas_steps
        try:
            return self.atlas_runner(self.cfg, steps)
        except Exception as exc:  # Atlas must never fail the database failover
            log.error("Atlas steps failed: %s (the maintainer retries)", exc)
            return [StepResult(type(s).__name__, s.describe(), "failed", str(exc)) for s in steps]


def write_track_file(path: str, give_up: bool) -> str:
    """Write keepalived's track file in place (keepalived re-reads it when it is modified)."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b"1\n" if give_up else b"0\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OrchError(f"cannot write keepalived's track file {path}: {exc.strerror or exc}") from None
    return "written"


def read_track_file(path: str) -> str:
    """The track file's value ("" when it does not exist or cannot be read)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(32).strip()
    except OSError:
        return ""


HANDOVER_RECORD = "handover.json"  # in state_dir: when orch last wrote the track file, and what


def last_handback_age(state_dir: str) -> Optional[float]:
    """Seconds since orch last wrote 0 to the track file (the VIP had left after a hand-over)."""
    import json
    import os

    try:
        with open(os.path.join(state_dir, HANDOVER_RECORD), encoding="utf-8") as fh:
            record = json.load(fh)
        if record.get("value") != "0":
            return None
        return max(0.0, time.time() - float(record["at"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _run_id() -> str:
    from .journal import new_run_id

    return new_run_id()


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)

