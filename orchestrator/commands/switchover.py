"""orch switchover: a planned role change through keepalived, so that the VIP and the roles never disagree.

Run on the current master's host. Under the run lock (this host's maintainer and notify
runs wait meanwhile, so nothing here fights the switchover):

1. preflight (pure, :func:`preflight`): the candidate is a healthy replica of this node,
   both threads running, no errant GTIDs; this node is the writable master and holds the
   VIP; keepalived runs here and keepalived.track_file is configured and reads 0; with etcd,
   this node holds the write token (or nobody does) and the candidate's host lease is renewed
   (it could take the token: token.handover_refusal);
2. fence this node (the bounded fence, orchestrator/fence.py);
3. wait until the candidate applied everything this node executed (exact GTIDs,
   failover.catchup_timeout);
4. write 1 to the track file: keepalived puts this node in FAULT and the VIP moves;
5. wait until the VIP left and the candidate is writable (its MASTER event promoted it:
   already caught up, so fast);
6. write 0 (this node takes part again, as BACKUP) and point it at the new master.

A failure before the VIP left (a catch-up that does not finish, a track file that cannot
be written, a keepalived that does not move the VIP) un-fences this node while it still
holds the VIP and the candidate is still read-only, and exits 1 with nothing else changed.
The decisions are pure functions of the observed view; the effects are Executor steps.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, TextIO, Tuple

from ..config import Config
from ..decide import flavor_of, replica_health
from ..errors import EXIT_FAILED, UsageError
from ..lock import RunLock
from ..model import ClusterView, ThreadState
from ..plan import (
    ACT, REFUSED, AwaitPromotion, AwaitVip, CatchUp, ChangeSource, Fence, HandOver, Plan, Recheck, RecordSwitchover, SetWritable, StartReplica,
    Step,
)
from ..token import handover_refusal, handover_steps, open_gate
from .common import RunContext, confirmed, ensure_state_dir, execute_plan, json_needs_dry_run, load_config, new_run, show_plan

log = logging.getLogger("orchestrator")

SWITCHOVER = "SWITCHOVER"
# On top of failover.catchup_timeout: keepalived's move of the VIP (FAULT at once, the peer's
# skew time, at most advert_int) and the candidate's MASTER run (start-up, its run lock).
PROMOTION_MARGIN = 10.0
# keepalived's timing with the shipped profile (advert_int 1 s, priorities 250/249): when this
# node goes FAULT it sends a priority-0 advert and the candidate takes the VIP after its skew
# time, (256 - 249) / 256 * 1 s = 0.03 s; its MASTER run (caught up already) opens it in tenths
# of a second. TAKEOVER_SECONDS: one advert interval + 0.5 s margin for a busy host; past it the
# candidate's keepalived is not taking part and the hand-over is rolled back.
TAKEOVER_SECONDS = 1.5
# The VIP back here once the track file reads 0: this node leaves FAULT as BACKUP and, hearing
# no adverts, becomes MASTER after the master-down interval, 3 * advert_int + skew (3.02 s at
# priority 250): 3 * 1 s + 0.02 s + 1 s margin.
VIP_RETURN_SECONDS = 4.0
LOCK_WAIT = 10.0  # seconds a switchover waits for another orch run on this host


@dataclass(frozen=True)
class LocalFacts:
    """What the preflight needs besides the servers, read on this host."""

    keepalived_running: bool  # a keepalived process runs on this host
    track: str  # keepalived.track_file's value now ("" when missing or unreadable)
    candidate_lease: Optional[float] = None  # etcd: seconds left of the candidate host's lease (None: none named)
    candidate_lease_error: str = ""  # etcd: why that lease could not be read


def candidate_name(cfg: Config, to: Optional[str]) -> str:
    """The node to switch to: ``--to`` validated (UsageError naming the choices), or the peer."""
    names = [n.name for n in cfg.nodes]
    if to is None:
        return cfg.peer.name
    if to == cfg.self_name:
        raise UsageError(f"orch switchover: --to {to!r} is this node; name the other one ({cfg.peer.name})")
    if to not in names:
        raise UsageError(f"orch switchover: --to {to!r} is not a node of this cluster ({', '.join(names)})")
    return to


def preflight(view: ClusterView, cfg: Config, facts: LocalFacts) -> Tuple[List[str], List[str]]:
    """(problems, warnings) before a switchover from this node to its peer. Pure.

    The peer host's keepalived cannot be seen from here: the candidate being a reachable,
    healthy replica is what is checked; a keepalived that does not take the VIP is caught
    later (the VIP does not move, or no one promotes the candidate) and rolled back.
    """
    me, cand = view.me, view.peer
    problems: List[str] = []
    warnings: List[str] = []
    ka = cfg.keepalived
    if not ka.track_file:
        problems.append("keepalived.track_file is not configured: orch cannot ask keepalived to move the VIP "
                        "(configure it, and a track_file with weight 0 in keepalived.conf)")
    elif facts.track not in ("", "0"):
        problems.append(f"keepalived's track file {ka.track_file} reads {facts.track!r}, not 0: a hand-over is already "
                        f"under way (or this node is kept in FAULT)")
    if view.holds_vip is False:
        problems.append(f"{me.name} does not hold VIP {ka.vip}: run the switchover on the master's host")
    elif view.holds_vip is None:
        warnings.append("the VIP is not checked (keepalived.vip_check: false): the switchover cannot see it move "
                        f"and waits for {cand.name} to be writable instead")
    if not facts.keepalived_running:
        text = "keepalived does not run on this host: nothing would move the VIP"
        (problems if view.holds_vip else warnings).append(text)
    if not me.reachable:
        problems.append(f"{me.name}'s server {'answers, but unusably' if me.alive else 'is not reachable'} ({me.error})")
    elif me.read_only:
        problems.append(f"{me.name} is read-only: it is not the master (nothing to switch over)")
    elif me.replica is not None and me.replica.configured:
        problems.append(f"{me.name} is writable but still has replication configured (from "
                        f"{me.replica.source_host}:{me.replica.source_port}): not a clean master")
    no_token = handover_refusal(view, cfg, facts.candidate_lease, facts.candidate_lease_error)
    if no_token:
        problems.append(no_token)
    if not cand.reachable:
        problems.append(f"{cand.name} {'answers, but unusably' if cand.alive else 'is not reachable'} ({cand.error})")
        return problems, warnings
    if not me.reachable:
        return problems, warnings
    r = cand.replica
    if not flavor_of(cand, cfg).is_fenced(cand):
        problems.append(f"{cand.name} is writable: two masters; not switching over")
    elif r is None or not r.configured or not cand.replicates_from(me.host, me.port):
        problems.append(f"{cand.name} does not replicate from {me.name}")
    elif r.io is not ThreadState.RUNNING or r.sql is not ThreadState.RUNNING:
        error = r.last_sql_error or r.last_io_error
        problems.append(f"{cand.name}'s replication threads are not both running (IO {r.io.value}, SQL {r.sql.value})"
                        + (f": {error}" if error else ""))
    else:
        health = replica_health(view, cand, me, cfg, in_atlas=True)
        if health.healthy is not True:
            problems.append(health.reason)
    return problems, warnings


def plan_switchover(view: ClusterView, cfg: Config, facts: LocalFacts) -> Plan:
    """The switchover's plan from this node (the master) to its peer, or a refusal. Pure."""
    me, cand = view.me, view.peer
    problems, warnings = preflight(view, cfg, facts)
    if problems:
        return Plan(f"refusing to switch over from {me.name} to {cand.name}: " + "; ".join(problems),
                    outcome=REFUSED, warnings=tuple(warnings))
    path = cfg.keepalived.track_file
    timeout = cfg.failover.catchup_timeout
    # Anti-flapping: the candidate's MASTER must be seen as this planned promotion (recorded
    # while this node is writable; the catch-up below brings the row to the candidate).
    # The row lets the candidate's MASTER through anti-flapping and maintenance mode (orch pause).
    record: Tuple[Step, ...] = (RecordSwitchover(me.name, cand.name),) if cfg.failover.block_seconds > 0 or view.paused else ()
    steps: Tuple[Step, ...] = record + (
        Fence(me.name),
        CatchUp(cand.name, me.name, timeout),
        *handover_steps(view, cfg),  # the write token (etcd: configured) moves before the VIP
        HandOver(path, True, f"switchover: keepalived gives the VIP to {cand.name}"),
        AwaitPromotion(cand.name, cfg.keepalived.vip if view.holds_vip else "", timeout + PROMOTION_MARGIN,
                       take_timeout=TAKEOVER_SECONDS),
        HandOver(path, False, f"the VIP is on {cand.name}: {me.name} takes part again, as BACKUP"),
        ChangeSource(me.name, cand.name, cand.host, cand.port),
        StartReplica(me.name),
    )
    return Plan(f"switching over from {me.name} to {cand.name}: fence {me.name}, let {cand.name} apply everything "
                f"{me.name} executed, then hand the VIP over through keepalived; {cand.name}'s MASTER event promotes it "
                f"and {me.name} replicates from it", steps, ACT, tuple(warnings))


def plan_abort(view: ClusterView, cfg: Config, why: str, track: str) -> Plan:
    """After a switchover failed: what puts this node back as it was, decided on a fresh view. Pure.

    Un-fence only while this node still holds the VIP (or the VIP is not checked) and the
    candidate is still read-only; once the VIP has left, keepalived and the candidate's
    MASTER event decide, and this node only takes part in VRRP again.
    """
    me, cand = view.me, view.peer
    path = cfg.keepalived.track_file
    steps: List[Step] = []
    if path and track not in ("", "0"):
        steps.append(HandOver(path, False, "switchover aborted: this node takes part in VRRP again"))
    vip_left = view.holds_vip is False
    if vip_left and not (steps and me.reachable and not me.writable and not cand.writable and not cand.alive):
        return Plan(f"switchover aborted ({why}); VIP {cfg.keepalived.vip} has left {me.name}: not un-fencing it "
                    f"(keepalived and {cand.name}'s MASTER event decide now; orch status shows the outcome)",
                    tuple(steps), REFUSED)
    if vip_left:
        # The candidate did not take the VIP: with the track file back at 0, keepalived here
        # takes it back after its master-down interval; then this node opens again.
        steps.append(AwaitVip(cfg.keepalived.vip, VIP_RETURN_SECONDS))
    if not me.reachable or me.writable:
        what = "is writable already" if me.writable else f"cannot be observed ({me.error})"
        return Plan(f"switchover aborted ({why}); {me.name} {what}", tuple(steps), REFUSED)
    if cand.writable or cand.alive:
        what = "is writable" if cand.writable else f"answers, but unusably ({cand.error}): it may be writable"
        return Plan(f"switchover aborted ({why}); {cand.name} {what}: {me.name} stays fenced (orch promote decides)",
                    tuple(steps), REFUSED)
    no_token, token_steps = open_gate(view, cfg)  # a token handed over already comes back (the candidate is fenced)
    if no_token:
        return Plan(f"switchover aborted ({why}); {me.name} stays fenced: {no_token}", tuple(steps), REFUSED)
    steps += token_steps
    steps += [Recheck(me.name, cand.name if cand.reachable else None,
                      cfg.keepalived.vip if view.holds_vip is not None else ""), SetWritable(me.name)]
    where = (f"once keepalived has brought VIP {cfg.keepalived.vip} back ({cand.name} did not take it)" if vip_left
             else "which still holds the VIP")
    return Plan(f"switchover aborted ({why}): un-fencing {me.name}, {where}, nothing else changed", tuple(steps), REFUSED)


# ---------------------------------------------------------------------------- effects


def keepalived_running(proc: str = "/proc") -> bool:
    """Whether a process named keepalived runs on this host (what `pidof keepalived` tells)."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return False
    for pid in entries:
        if not pid.isdigit():
            continue
        try:
            with open(os.path.join(proc, pid, "comm"), encoding="ascii", errors="replace") as fh:
                if fh.read().strip() == "keepalived":
                    return True
        except OSError:
            continue
    return False


def local_facts(cfg: Config) -> LocalFacts:
    from ..keepalived.track import read_track_file

    track = read_track_file(cfg.keepalived.track_file) if cfg.keepalived.track_file else ""
    if cfg.etcd is None:
        return LocalFacts(keepalived_running=keepalived_running(), track=track)
    from ..lease import host_lease_left

    left, error = host_lease_left(cfg, cfg.peer.name)
    return LocalFacts(keepalived_running(), track, left, error)


def run_switchover_hooks(cfg: Config, phase: str, run_id: str, old: str, new: str, reason: str) -> Optional[str]:
    """The one place a switchover runs its hooks (hooks.pre_switchover / hooks.post_switchover).

    Returns why a hook failed (None: all passed, or none configured); each phase that ran a
    hook is journaled (exit code, milliseconds, the tail of its output). A failing pre hook
    aborts the switchover before anything changed; post hooks are best effort.
    """
    if not cfg.hooks.of(phase):
        return None
    from .. import hooks
    from ..journal import Journal
    from .common import journal_append

    context = {"ORCH_EVENT": phase, "ORCH_CLUSTER": cfg.cluster, "ORCH_NODE": cfg.self_name, "ORCH_OLD_MASTER": old,
               "ORCH_NEW_MASTER": new, "ORCH_RUN_ID": run_id, "ORCH_REASON": reason}
    result = hooks.run_hooks(cfg, phase, context)
    journal_append(Journal(cfg.state_dir), {
        "id": run_id, "node": cfg.self_name, "event": SWITCHOVER, "phase": "hooks", "hooks": phase, "result": "ok" if result.ok else "failed",
        "runs": [{"argv": list(r.argv), "exit": r.exit_code, "ms": r.ms, "output": r.output, "error": r.error} for r in result.runs],
    })
    return None if result.ok else result.summary()


VIA_API = "ORCH_VIA_API"  # set by the HTTP API for the command it runs: never handed on again


def master_elsewhere(view: ClusterView, cfg: Config) -> Optional[str]:
    """Pure: the peer's name when the switchover must run on its host (it is the writable
    master, holding the VIP as far as this host can tell, and this node is not); None: run here
    (this node is the master, or there is no master to ask, and the preflight says why)."""
    me, peer = view.me, view.peer
    if me.writable or view.holds_vip is True or not peer.writable:
        return None
    return peer.name


def forward_switchover(cfg: Config, args: argparse.Namespace, out: TextIO, stdin: Optional[TextIO], master: str) -> int:
    """orch switchover on the replica's host: the master's host runs it (POST /switchover to its
    orch), after this host's confirmation; its output and exit code are this command's."""
    from ..http_client import api_unavailable, call_peer
    from .pause import operator_name

    to = getattr(args, "to", None)
    if to == master:
        raise UsageError(f"orch switchover: --to {to!r} is the master; name the node to hand over to ({cfg.self_name})")
    why = api_unavailable(cfg)
    if why:
        out.write(f"{master} is the master: a switchover runs on its host (run orch switchover there, or configure "
                  f"its HTTP API: {why})\n")
        return EXIT_FAILED
    dry_run = bool(getattr(args, "dry_run", False))
    out.write(f"{master} is the master: its orch runs the switchover to {cfg.self_name} (POST /switchover)\n")
    if not dry_run and not confirmed(out, stdin, args.yes):
        return EXIT_FAILED
    body = {"to": cfg.self_name, "dry_run": dry_run, "by": operator_name(), "from": cfg.self_name}
    if dry_run and getattr(args, "format", "table") == "json":
        body["format"] = "json"
    answer = call_peer(cfg, "switchover", body, cfg.failover.catchup_timeout + PROMOTION_MARGIN + 90.0)
    answer.show(out, sys.stderr)
    log.info("%s's orch ran the switchover: exit %d", master, answer.exit_code)
    return answer.exit_code


def switchover(args: argparse.Namespace, out: TextIO, stdin: Optional[TextIO]) -> int:
    """orch switchover [--to NODE] [--dry-run] [--yes]."""
    from ..db import open_servers
    from ..observe import observe

    started = time.monotonic()
    json_needs_dry_run(args, "switchover")
    cfg = load_config(args)
    to = getattr(args, "to", None)
    if to != cfg.self_name:  # --to this node: only from the replica's host (asking the master's)
        candidate_name(cfg, to)  # bad input: one line, exit 2, nothing done
    run_id = new_run(cfg)
    dry_run = getattr(args, "dry_run", False)
    with contextlib.ExitStack() as held:
        servers = open_servers(cfg)
        for server in servers.values():
            held.callback(server.close)
        first = observe(cfg, servers)
        master = master_elsewhere(first, cfg)
        if master is not None and not os.environ.get(VIA_API):
            return forward_switchover(cfg, args, out, stdin, master)
        if to == cfg.self_name:
            candidate_name(cfg, to)
        if not dry_run:  # a dry run writes nothing in state_dir
            ensure_state_dir(cfg)
        # Asked before the run lock is taken: a person thinking at the prompt must not hold
        # up this host's keepalived events. Decided again under the lock, on a fresh view.
        plan = plan_switchover(first, cfg, local_facts(cfg))
        show_plan(out, plan, args, "switchover", cfg.self_name)
        if dry_run:
            log.info("decision (%s on %s, dry run): %s", SWITCHOVER, cfg.self_name, plan.reason)
            return plan.exit_code
        if plan.outcome == ACT and not confirmed(out, stdin, args.yes):
            return EXIT_FAILED
        # Held to the end: this host's maintainer (which would un-fence a fenced VIP holder,
        # or write 0 to the track file once the VIP left) and notify runs wait meanwhile.
        lock = held.enter_context(RunLock(cfg.state_dir, min(LOCK_WAIT, cfg.failover.lock_timeout)))
        if lock.waited > 0.05:
            log.info("waited %.2fs for another orch run to finish", lock.waited)
        started = time.monotonic()  # the run's milliseconds leave the prompt out
        view = observe(cfg, servers)
        again = plan_switchover(view, cfg, local_facts(cfg))
        if again.outcome != plan.outcome or again.steps != plan.steps:
            out.write("re-checked under the run lock, the plan changed:\n" + again.render() + "\n")
        plan = again
        log.info("decision (%s on %s): %s", SWITCHOVER, cfg.self_name, plan.reason)
        old, new = view.me.name, view.peer.name
        if plan.outcome == ACT:
            failed = run_switchover_hooks(cfg, "pre_switchover", run_id, old, new, plan.reason)
            if failed:
                plan = Plan(f"refusing to switch over from {old} to {new}: pre_switchover hook failed: {failed}",
                            outcome=REFUSED, warnings=plan.warnings)
                out.write(f"plan: {plan.reason}\n")
        run = RunContext(cfg, SWITCHOVER, run_id, servers, view, started, out=out)

        def abort(why: str) -> None:
            # Decided on what is there now (a failed fence may have set read_only all the same).
            from ..keepalived.track import read_track_file

            after = observe(cfg, servers)
            track = read_track_file(cfg.keepalived.track_file) if cfg.keepalived.track_file else ""
            undo = plan_abort(after, cfg, why, track)
            log.info("decision (%s on %s): %s", SWITCHOVER, cfg.self_name, undo.reason)
            out.write(undo.render() + "\n")
            execute_plan(RunContext(cfg, SWITCHOVER, run_id, servers, after, time.monotonic(), out=out), undo)

        try:
            code, result = execute_plan(run, plan)
        except KeyboardInterrupt:
            if plan.outcome == ACT:
                log.error("%s interrupted: putting %s back as it was where that is safe", SWITCHOVER, cfg.self_name)
                abort("interrupted")
            raise
        if plan.outcome != ACT:
            return code
        if result.error is not None:
            abort(str(result.error).replace(" (orch promote --ignore-catchup overrides)", ""))
            return EXIT_FAILED
        took = time.monotonic() - started
        out.write(f"switchover done in {took:.2f}s: {new} is the master and holds the VIP, {old} replicates from it\n")
        failed = run_switchover_hooks(cfg, "post_switchover", run_id, old, new, plan.reason)
        if failed:
            log.warning("post_switchover hook failed (best effort): %s", failed)
        return code
    return EXIT_FAILED
