"""Interpret a Plan's steps. The only place that turns decisions into SQL and Atlas effects.

Database steps run in order and the first failure stops the plan (a failed fence must
never be followed by SetWritable). Atlas steps run after the database steps and are
best effort: their failures are logged and journaled, and the maintainer retries them.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from . import flavors
from .config import Config
from .db import Server
from .errors import DOWN, DatabaseError, OrchError, Refused
from .flavors import BLOCKERS_QUERY, KILL_CONNECTION, LOCK_WAIT_TIMEOUT
from .model import ClusterView, ThreadState
from .observe import holds_address, observe_node, read_node
from .plan import (
    ATLAS_STEPS, AtlasStep, CatchUp, ChangeSource, Fence, NodeStep, Plan, PreserveRelayLog, Recheck, ResetReplica,
    RunResult, SetWritable, StartReplica, StartSqlThread, Step, StepResult, StopReplica, StopSqlThread,
)

log = logging.getLogger(__name__)

WAIT_SLICE = 1.0  # seconds per wait call, so a replication error is noticed within a second
# A fence that waited too long: lock wait timeout (server side) or no answer (client side).
BLOCKED_CODES = (1205, 2013)
UNREADABLE_REPLICA_METADATA = 1201  # "Could not initialize master info structure" (a torn master.info)
# Runs a plan's Atlas steps (atlas/apply.py unless the caller brings its own connections).
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


_READS = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|EXPLAIN|DESCRIBE|DESC|HELP)\b", re.I | re.S)
_WRITING_SELECT = re.compile(r"\b(INTO\s+(OUTFILE|DUMPFILE|@)|FOR\s+UPDATE|LOCK\s+IN\s+SHARE\s+MODE)\b", re.I)


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
        atlas_runner: Optional[AtlasRunner] = None,
    ) -> None:
        self.cfg = cfg
        self.servers = servers
        self.atlas_runner = atlas_runner
        # The observed versions decide the flavor; only a node unseen at observe time is asked.
        self._flavors: Dict[str, flavors.Flavor] = {}
        if view is not None:
            for node in (view.me, view.peer):
                if node.reachable:
                    self._flavors[node.name] = flavors.get(node.flavor, node.version)

    def run(self, plan: Plan) -> RunResult:
        results: List[StepResult] = []
        db_steps = [s for s in plan.steps if not isinstance(s, ATLAS_STEPS)]
        atlas_steps = [s for s in plan.steps if isinstance(s, ATLAS_STEPS)]
        for i, step in enumerate(db_steps):
            start = time.monotonic()
            try:
                detail = self._do(step)
                results.append(StepResult(type(step).__name__, step.describe(), "warning" if detail.startswith("warning") else "ok", detail, _ms(start)))
                log.info("step %d/%d done: %s%s", i + 1, len(db_steps), step.describe(), f" ({detail})" if detail else "")
            except OrchError as exc:
                results.append(StepResult(type(step).__name__, step.describe(), "failed", str(exc), _ms(start)))
                log.error("step %d/%d failed: %s: %s", i + 1, len(db_steps), step.describe(), exc)
                for rest in db_steps[i + 1:] + atlas_steps:
                    results.append(StepResult(type(rest).__name__, rest.describe(), "skipped", "an earlier step failed"))
                return RunResult(results, exc)
        if atlas_steps:
            results += self._atlas(atlas_steps)
        return RunResult(results)

    # ------------------------------------------------------------------ steps

    def _do(self, step: Step) -> str:
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
        statement = ONE_STATEMENT.get(type(step))
        if statement is not None and isinstance(step, NodeStep):
            server = self.servers[step.node]
            server.execute(statement(self._flavor(server)), why=step.describe())
            return ""
        raise OrchError(f"unknown step {step!r}")

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
        try:
            return self._fence_once(server, seconds)
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
                    raise Refused(f"{text}; {step.node} stays read-only (orch promote --force overrides)")
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


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)

