"""A planned switchover in the namespace lab: ``orch switchover`` run on the master's host
while a client writes through the VIP, timed from outside.

Used by ``orch lab switchover`` (narrated), tests/test_switchover.py and bench/switchover.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from orchestrator.lab import LabError
from orchestrator.lab.base import Lab, Narrator
from orchestrator.lab.probes import Sampler, row_ids
from orchestrator.lab.proc import orch_bin, run, tail

# The client retries a refused or unanswered connect after 50 ms (bench/failover's choice):
# the window measured is the cluster's, not a stuck connect's.
CLIENT_CONNECT_TIMEOUT = 0.05


@dataclass
class Round:
    """One switchover under a writer, as seen from outside (CLOCK_MONOTONIC seconds)."""

    old_master: str
    new_master: str
    exit_code: int = -1
    output: str = ""
    started: float = 0.0  # orch switchover launched
    took: float = 0.0  # the command's duration
    window: float = 0.0  # longest gap between two acknowledged writes during the switchover
    window_from: float = 0.0  # the last acknowledged write before that gap
    window_to: float = 0.0  # the first one after it
    fenced: Optional[float] = None  # first read_only sample showing the old master fenced
    vip_moved: Optional[float] = None  # the VIP seen on the new master's host
    writable: Optional[float] = None  # first read_only sample showing the new master writable
    acked: int = 0
    lost: List[int] = field(default_factory=list)
    healed: float = 0.0  # seconds after the command until the cluster was healthy again
    both_writable: int = 0  # samples with both servers writable (must be 0)


def _watch_vip(lab: Lab, new: str, stop: threading.Event, box: List[float]) -> None:
    while not stop.is_set():
        try:
            if lab.vip_holders() == [new]:
                box.append(time.monotonic())
                return
        except Exception:  # a namespace call that failed: try again
            pass
        stop.wait(0.01)


def _longest_gap(times: List[float], start: float, end: float) -> Tuple[float, float, float]:
    """(gap, from, to): the longest gap between consecutive acks around [start, end]."""
    before = [t for t in times if t < start]
    prev = before[-1] if before else start
    best = (0.0, prev, prev)
    for t in (t for t in times if t >= start):
        if t - prev > best[0]:
            best = (t - prev, prev, t)
        prev = t
        if t > end:
            break
    return best


def switchover_round(lab: Lab, name: str, timeout: float = 60) -> Round:
    """Run ``orch switchover --yes`` on the master's host under a writer through the VIP.

    Requires a healthy lab (semi-sync on); leaves it healthy again (or raises LabError).
    """
    return operator_round(lab, name, ("switchover", "--yes"), timeout=timeout)


def operator_round(lab: Lab, name: str, command: Tuple[str, ...], on_replica: bool = False, timeout: float = 60,
                   during: Optional[Callable[[str, str], Any]] = None, after: Optional[Callable[[str, str], Any]] = None) -> Round:
    """Run an operator command (``orch switchover``, ``promote``, ``demote``...) on the master's
    host (or the replica's) under a writer through the VIP, timed from outside: the write-block
    window, acknowledged rows lost, samples with both servers writable. ``during(old, new)``
    runs just before the command (a fault), ``after(old, new)`` right after it (its end).

    Requires a healthy lab (semi-sync on); leaves it healthy again (or raises LabError).
    """
    if lab.mode != "netns":
        raise LabError("a switchover goes through keepalived: it needs the namespace lab (orch lab up --mode netns)")
    lab.wait_healthy(30)
    old = lab.master()
    if old is None:
        raise LabError("no single VIP holder")
    new = lab.peer_of(old)
    host = lab.hosts[new if on_replica else old]
    rnd = Round(old, new)
    writer = lab.writer(name, connect_timeout=CLIENT_CONNECT_TIMEOUT)
    sampler = Sampler(lab.dbs, interval=0.02)
    stop = threading.Event()
    vip: List[float] = []
    watcher = threading.Thread(target=_watch_vip, args=(lab, new, stop, vip), daemon=True)
    try:
        writer.start()
        sampler.start()
        time.sleep(0.5)
        watcher.start()
        argv = ["ip", "netns", "exec", host.netns or "", orch_bin(), "-c", str(host.file("orch.yaml")), *command]
        if during is not None:
            during(old, new)
        rnd.started = time.monotonic()
        try:
            done = run(argv, timeout=timeout, check=False)
        finally:
            if after is not None:
                after(old, new)
        end = time.monotonic()
        rnd.took = end - rnd.started
        rnd.exit_code, rnd.output = done.returncode, (done.stdout or "") + (done.stderr or "")
        deadline = time.monotonic() + 10
        while not writer.acked_since(end) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        stop.set()
        writer.stop()
        sampler.stop()
    acked = writer.acked()
    rnd.acked = len(acked)
    rnd.window, rnd.window_from, rnd.window_to = _longest_gap(sorted(a[1] for a in acked), rnd.started, end)
    rnd.vip_moved = vip[0] if vip else None
    for t, row in sampler.samples:
        if t < rnd.started:
            continue
        if rnd.fenced is None and row.get(old) == 1:
            rnd.fenced = t
        if rnd.writable is None and row.get(new) == 0:
            rnd.writable = t
        if row.get(old) == 0 and row.get(new) == 0:
            rnd.both_writable += 1
    rnd.healed = lab.wait_healthy(40, [a[0] for a in acked], sampler)
    master = lab.master()
    rnd.new_master = master or ""
    if master is not None:
        rnd.lost = sorted({a[0] for a in acked} - row_ids(lab.dbs[master]))
    return rnd


def narrate(lab: Lab, out: Any) -> bool:
    """orch lab switchover: one switchover under a writer, told step by step."""
    if lab.mode != "netns":
        out.write("orch lab switchover needs the namespace lab: the switchover goes through keepalived's track file, and the\n"
                  "loopback lab has no keepalived (orch lab up --mode netns, as root with keepalived installed)\n")
        return False
    problems = lab.health()
    if problems:
        out.write("the lab is not healthy, so a switchover would show nothing useful:\n  " + "\n  ".join(problems) + "\n")
        return False
    old = lab.master() or ""
    new = lab.peer_of(old)
    out.write(f"{old} is the master and holds the VIP; {new} replicates from it. A client in the client namespace inserts a\n"
              f"row every few ms through the VIP. On {old}'s host: orch switchover --yes\n")
    try:
        rnd = switchover_round(lab, "switchover")
    except LabError as exc:
        out.write(f"the cluster did not heal: {exc}\n")
        return False
    n = Narrator(out)
    n.t0 = rnd.started
    events = [(rnd.started, f"orch switchover starts on {old} (run lock held: this host's maintainer and notify runs wait)")]
    if rnd.fenced is not None:
        events.append((rnd.fenced, f"{old} is fenced (read_only=1): the client's writes fail from here on"))
    if rnd.vip_moved is not None:
        events.append((rnd.vip_moved, f"the VIP is on {new}: orch wrote 1 to keepalived's track file once {new} had applied "
                                      f"everything {old} executed; keepalived on {old} went FAULT, {new} took over"))
    if rnd.writable is not None:
        events.append((rnd.writable, f"{new} is writable: its MASTER event (orch notify) promoted it, already caught up"))
    if rnd.window_to:
        events.append((rnd.window_to, f"the client's first acknowledged write after the switch: writes were blocked "
                                      f"{rnd.window:.3f}s (last ack before at {rnd.window_from - rnd.started:+.3f}s)"))
    events.append((rnd.started + rnd.took, f"orch switchover exits {rnd.exit_code}: track file back to 0, {old} replicates from {new}"))
    for at, text in sorted(events):
        n.say(text, at)
    out.write("orch switchover's output:\n")
    for line in rnd.output.splitlines():
        if " orchestrator" not in line:  # its log lines (stderr) are in the journal; the plan and results are shown
            out.write(f"  | {line}\n")
    if rnd.exit_code != 0:
        out.write(f"the switchover failed (exit {rnd.exit_code}); {tail(lab.hosts[old].file('maintain.log'), 3)}\n")
        return False
    n.note(f"healed {rnd.healed:.1f}s after the command: {old} is a read-only replica of {new}, GTID sets equal, semi-sync back on, "
           f"{old} back in both Atlas stand-ins")
    n.note(f"{rnd.acked} acknowledged inserts, {len(rnd.lost)} missing on {new}; both servers writable in "
           f"{rnd.both_writable} of the read_only samples (every 20 ms)")
    return not rnd.lost and rnd.both_writable == 0
