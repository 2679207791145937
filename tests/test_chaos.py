"""A randomized fault test (a small Jepsen-style loop) on a real semi-synchronous MariaDB pair.

Each server runs on its own host, a network namespace (tests/chaos.py draws the
topology). The test plays keepalived: it moves the VIP between the two hosts with
``ip addr`` and runs ``orch notify INSTANCE VI_1 STATE PRIORITY`` inside the host whose
keepalived changed state, as the notify hook would: MASTER on the host taking the VIP,
BACKUP (or FAULT) on the one giving it up, in random order, sometimes late, sometimes
twice. Both orch configs set ``keepalived.vip``, so orch can tell a stale event from a
real one. A writer in a client namespace inserts numbered rows through the VIP and
records every id whose commit returned OK; a write that errors is unacknowledged.
`orch maintain --once` runs on each host every ``maintainer.interval`` (1 s).

The faults, one at a time, each healed before the next one starts:

- kill -9 of the master's mariadbd (keepalived notices after 1-2 s: FAULT there, the
  VIP moves, MASTER on the peer), restarted after 2-6 s, BACKUP once its check passes;
- kill -9 of the replica's mariadbd (FAULT, restart, BACKUP);
- SIGSTOP of the replica for 1-6 s (FAULT past keepalived's detection, BACKUP after
  SIGCONT), and of the master for 1-2.3 s, shorter than keepalived's detection;
- STOP SLAVE, STOP SLAVE IO_THREAD or STOP SLAVE SQL_THREAD on the replica for 1-6 s,
  then START SLAVE; in 40% of the cases a switchover to that replica meanwhile;
- a long write on the master through the VIP (an INSERT ... SELECT or UPDATE sleeping
  1-6 s inside the statement, which holds off ``SET GLOBAL read_only``; or a transaction
  sleeping before its COMMIT); in half the cases a switchover meanwhile;
- a planned switchover (keepalived restarted on the master), plain or with the old
  master killed or SIGSTOPped for 1-6 s right after it gave the VIP up;
- storms of events on both hosts at once.

Throughout, a noise thread fires stale MASTER events on the host without the VIP, stale
BACKUP events on the VIP holder, repeated events, and extra maintainer passes.

What the schedule deliberately leaves out, because no two-node pair survives it:

- At most one node is faulty at a time. A fault that hits the master (a kill, a
  switchover, stopped replication that may end in a switchover, a long write) starts
  only when the master is writable with semi-sync on and its peer replicates from it
  with both threads running, i.e. when the peer holds every acknowledged write. A kill
  of the master while its replica is stopped or behind loses acknowledged writes on any
  pair. If that state does not come within 8 s, the round does something else.
- The VIP never moves away from a SIGSTOPped master. The writes in flight on it commit
  when it resumes, after its peer took over: a forked history that no acknowledged write
  is part of, which orch rightly refuses to replicate over (errant GTIDs), and only a
  rebuild heals. So the master is paused only for less than keepalived's detection
  time, and after a switchover only once writes can no longer reach it.
- No network partition (docs/concepts.md, Limits).

Checked, with the seed and the full event history printed on any failure:

1. [acked] every acknowledged id (the writer's and the long writes') is on the final master;
2. [two writers] read_only of both servers, sampled every 50 ms, never shows both
   writable for longer than one maintainer interval plus 1 s;
3. [convergence] within CONVERGE_TIMEOUT of the last fault's heal, with only maintainer
   passes running (and the keepalived events still in flight): the VIP holder is
   writable with no replication configured, its peer is read-only and replicates from
   it with IO and SQL threads running, a write through the VIP is acknowledged, and
   once the writer stops both servers report the same gtid_binlog_pos and
   gtid_current_pos. No extra notify is sent: keepalived sends each event once, and the
   maintainer is what repairs a refused or lost one;
4. [orch crash]/[orch hung] no orch run exits with 2 or 70, or runs past 60 s.

ORCH_CHAOS_SEED picks the seed (random and printed otherwise); ORCH_CHAOS_SECONDS the
length of the fault phase (default 45, so the test takes about a minute). A seed
reproduces the schedule, not every thread interleaving.
"""

from __future__ import annotations

import functools
import os
import random
import time
import traceback
from typing import List, Optional, Tuple

import pytest

from orchestrator.lab.probes import Sampler, row_ids
from orchestrator.lab.proc import tail

from . import chaos
from .chaos import MAINTAINER_INTERVAL, Chaos, ChaosLab, History

DEFAULT_SECONDS = 45.0
CONVERGE_TIMEOUT = 25.0
SAMPLE_INTERVAL = 0.05
TWO_WRITERS_BOUND = MAINTAINER_INTERVAL + 1.0


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    return chaos.unavailable_reason()


def chaos_seed() -> int:
    text = os.environ.get("ORCH_CHAOS_SEED", "").strip()
    return int(text) if text else random.SystemRandom().randrange(2**31)


def chaos_seconds() -> float:
    text = os.environ.get("ORCH_CHAOS_SECONDS", "").strip()
    return float(text) if text else DEFAULT_SECONDS


# ---------------------------------------------------------------------------- checks


def role_problems(lab: ChaosLab, master: str) -> List[str]:
    """What still differs from 'the VIP holder writes, its peer is a running read-only replica of it'."""
    replica = lab.peer_of(master)
    problems = []
    holders = lab.vip_holders()
    if holders != [master]:
        problems.append(f"the VIP is on {holders or 'no host'}, the test put it on {master}")
    states = lab.servers()
    m, r = states[master], states[replica]
    if not m.up or m.read_only:
        problems.append(f"{master} holds the VIP but is not writable: {m.describe()}")
    elif m.source:
        # mariadbd starts configured replication at boot: the master would follow its replica.
        problems.append(f"{master} is the writable master but still has replication configured: {m.describe()}")
    if not r.up:
        problems.append(f"{replica} does not answer: {r.describe()}")
    elif not r.read_only:
        problems.append(f"{replica} is writable too: {r.describe()}")
    elif r.source != lab.address(master) or not r.replicating:
        problems.append(f"{replica} is not replicating from {master} ({lab.address(master)}) with both threads: {r.describe()}")
    return problems


def gtids_of(lab: ChaosLab, name: str) -> dict:
    try:
        return lab.gtids(name)
    except Exception as exc:  # down: the roles check says so too
        unreadable = f"(unreadable: {exc})"
        return {"binlog_pos": unreadable, "current_pos": unreadable}


def converge(lab: ChaosLab, driver: Chaos, writer, history: History) -> Tuple[List[str], str]:
    """Invariant 3; returns (problems, a summary of how it went)."""
    t_stop = time.monotonic()
    deadline = t_stop + CONVERGE_TIMEOUT
    master = driver.holder or driver.last_holder
    history.add("chaos", f"faults stopped, every one healed; the VIP stays on {master}; "
                         f"{CONVERGE_TIMEOUT:g}s to converge with maintainer passes only")
    while True:
        problems = role_problems(lab, master)
        acked = writer.acked_since(t_stop)
        if not problems and acked:
            break
        if time.monotonic() > deadline:
            if not acked:
                problems.append(f"no write through the VIP was acknowledged since the faults stopped "
                                f"(writer: {tail(writer.log_path, 2)})")
            return [f"[convergence] not converged {CONVERGE_TIMEOUT:g}s after the faults stopped: " + "; ".join(problems)], ""
        time.sleep(0.2)
    t_roles = time.monotonic()
    history.add("chaos", f"roles converged after {t_roles - t_stop:.1f}s: {master} writable with the VIP, "
                         f"{lab.peer_of(master)} replicating from it; stopping the writer")
    writer.stop()
    driver.wait_runs(max(0.0, deadline - time.monotonic()))
    while True:
        gtids = {name: gtids_of(lab, name) for name in lab.hosts}
        a, b = gtids.values()
        same = a["binlog_pos"] == b["binlog_pos"] and a["current_pos"] == b["current_pos"]
        problems = role_problems(lab, master)
        if same and not problems:
            break
        if time.monotonic() > deadline:
            described = "; ".join(f"{n} gtid_binlog_pos {g['binlog_pos']!r} gtid_current_pos {g['current_pos']!r}"
                                  for n, g in gtids.items())
            found = problems + ([] if same else [f"GTIDs differ: {described}"])
            return [f"[convergence] {CONVERGE_TIMEOUT:g}s after the faults stopped: " + "; ".join(found)], ""
        time.sleep(0.1)
    done = time.monotonic() - t_stop
    history.add("chaos", f"converged {done:.1f}s after the faults stopped: GTIDs equal ({a['binlog_pos']})")
    return [], f"converged {done:.1f}s after the faults stopped (roles after {t_roles - t_stop:.1f}s)"


def acked_problems(lab: ChaosLab, driver: Chaos, acked: List[Tuple[int, float]], history: History) -> List[str]:
    """Invariant 1 on the final master (the VIP holder)."""
    master = driver.holder or driver.last_holder
    long_ids = {w.row_id: w for w in driver.long_writes if w.acked and w.row_id is not None}
    wanted = {i for i, _ in acked} | set(long_ids)
    try:
        present = row_ids(lab.dbs[master])
    except Exception as exc:
        return [f"[acked] cannot read the rows of the final master {master}: {exc}"]
    missing = sorted(wanted - present)
    if not missing:
        return []
    when = dict(acked)
    try:
        elsewhere = row_ids(lab.dbs[lab.peer_of(master)])
    except Exception:
        elsewhere = set()
    shown = ", ".join(
        f"{i} (acked {history.rel(when[i]) if i in when else 'by a long write'}"
        f"{', present on ' + lab.peer_of(master) if i in elsewhere else ''})" for i in missing[:10])
    return [f"[acked] {len(missing)} of {len(wanted)} acknowledged ids are missing on the final master {master}: {shown}"]


def two_writer_problems(samples, history: History) -> Tuple[List[str], float]:
    """Invariant 2; every window goes into the history too. Returns (problems, longest window)."""
    windows = chaos.both_writable_windows(samples, SAMPLE_INTERVAL)
    problems = []
    for first, last, count in windows:
        history.add("sampler", f"both servers writable in {count} sample(s) from {history.rel(first)} "
                               f"to {history.rel(last)} ({last - first:.2f}s)", at=first)
        if last - first > TWO_WRITERS_BOUND:
            problems.append(f"[two writers] both servers writable for {last - first:.2f}s, from {history.rel(first)} "
                            f"to {history.rel(last)} (bound {TWO_WRITERS_BOUND:g}s: maintainer interval "
                            f"{MAINTAINER_INTERVAL:g}s + 1s)")
    return problems, max((b - a for a, b, _ in windows), default=0.0)


# ---------------------------------------------------------------------------- the checker itself


def test_a_both_writable_window_ends_only_at_a_read_only_sample():
    w, r, gone = {"server1": 0, "server2": 0}, {"server1": 0, "server2": 1}, {"server1": 0, "server2": None}
    samples = [(0.0, r), (1.0, w), (1.05, gone), (1.1, w), (1.15, r), (2.0, w), (2.05, r), (3.0, gone), (3.05, w)]
    windows = [(round(a, 3), round(b, 3), n) for a, b, n in chaos.both_writable_windows(samples, 0.05)]
    assert windows == [(1.0, 1.15, 2), (2.0, 2.05, 1), (3.05, 3.1, 1)]
    assert chaos.both_writable_windows([(0.0, r), (0.05, gone)], 0.05) == []


# ---------------------------------------------------------------------------- the test


@pytest.mark.netns
def test_random_faults_lose_no_acknowledged_write_and_converge(request, tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    mariadb_template = request.getfixturevalue("mariadb_template")  # after the skip: it runs the installer
    seed, seconds = chaos_seed(), chaos_seconds()
    print(f"chaos: seed {seed}, {seconds:g}s of faults "
          f"(ORCH_CHAOS_SEED={seed} ORCH_CHAOS_SECONDS={seconds:g} reproduces the schedule)")
    workdir = tmp_path_factory.mktemp("chaos")
    history = History()
    lab = ChaosLab(workdir, mariadb_template)
    driver: Optional[Chaos] = None
    writer = None
    sampler: Optional[Sampler] = None
    problems: List[str] = []
    final_state: List[str] = []
    summary = ""
    acked: List[Tuple[int, float]] = []
    longest = 0.0
    try:
        lab.up()
        history.start()  # history times count from the start of the fault phase
        history.add("chaos", f"seed {seed}: server1 writable master holding VIP {chaos.VIP}, server2 its semi-sync replica")
        driver = Chaos(lab, history, seed)
        sampler = Sampler(lab.dbs, SAMPLE_INTERVAL).start()
        writer = lab.writer().start()
        driver.start_background()
        driver.run(seconds)
        driver.stop_noise()
        found, summary = converge(lab, driver, writer, history)
        problems += found
        writer.stop()
        acked = writer.acked()
        problems += acked_problems(lab, driver, acked, history)
    except Exception as exc:
        problems.append(f"[error] {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        try:
            final_state = lab.describe()
            for name in lab.hosts:
                final_state += [f"    {name} error.log: {line}" for line in lab.error_log_tail(name, 4)]
        except Exception as exc:
            final_state = [f"(cannot describe the cluster: {exc})"]
        if driver is not None:
            driver.stop_background()
            if not driver.wait_runs(chaos.ORCH_TIMEOUT + 5):
                problems.append("[orch hung] orch runs still going at teardown")
            problems += driver.problems()
        if writer is not None:
            writer.stop()
            acked = acked or writer.acked()
        if sampler is not None:
            sampler.stop()
            found, longest = two_writer_problems(sampler.samples, history)
            problems += found
        problems += [f"[teardown] {p}" for p in lab.down()]
    (workdir / "history.txt").write_text(history.render(collapse=False) + "\n")
    stats = driver.stats if driver is not None else None
    long_writes = driver.long_writes if driver is not None else []
    facts = [
        f"seed {seed}, {seconds:g}s of faults, {sum(stats.faults.values()) if stats else 0} rounds: "
        + (", ".join(f"{k} x{v}" for k, v in sorted(stats.faults.items())) if stats else "-"),
        f"{len(acked)} acknowledged inserts by the writer, "
        f"{sum(1 for w in long_writes if w.acked)} of {len(long_writes)} long writes acknowledged",
        f"longest both-writable window {longest:.2f}s (bound {TWO_WRITERS_BOUND:g}s); {summary or 'not converged'}",
        "orch exit codes: " + (", ".join(f"{label} -> {code}: {n}" for (label, code), n in sorted(
            stats.exits.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1]))) if stats else "-"),
    ]
    if stats is not None and stats.skipped_gates:
        facts.append(f"{stats.skipped_gates} round(s) found the pair not safe for a fault on the master within 8 s")
    print("\n".join(facts))
    if problems:
        report = [
            f"chaos test failed with seed {seed} (rerun: ORCH_CHAOS_SEED={seed} ORCH_CHAOS_SECONDS={seconds:g} "
            f".venv/bin/python -m pytest -p no:cacheprovider tests/test_chaos.py)",
            "broken:", *(f"  {p}" for p in problems),
            "facts:", *(f"  {f}" for f in facts),
            "cluster at the end:", *(f"  {line}" for line in final_state),
            f"history (times from the start of the fault phase; uncollapsed in {workdir / 'history.txt'}):",
            history.render(),
        ]
        pytest.fail("\n".join(report), pytrace=False)
