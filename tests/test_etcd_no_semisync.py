"""docs/etcd.md's promise to an operator who runs the write token without semi-sync: when
etcd cannot be reached the master fences itself before its lease can run out (nothing
vouches for its writes), no failover happens, and once etcd answers again the maintainer
re-opens the same master (its VIP holder rule takes the token again). With semi-sync as
shipped the master is never fenced (tests/test_etcd_drills.py, drill 5), so this module opts
in to one override (hosts.OPT_IN_OVERRIDES: failover.semi_sync off) in the namespace lab with
a real three-member etcd and real keepalived; anti-flapping and the maintainer's interval run
as shipped (the re-opening is the maintainer's, at its shipped 5 s)."""

from __future__ import annotations

import signal
import time
from typing import List

import pytest

from orchestrator.lab.hosts import SHIPPED_TIMING, overrides_except, with_opt_in
from orchestrator.lab.probes import Sampler, row_ids
from orchestrator.lab.proc import wait_for
from orchestrator.token import renew_every

from .orchtest import LabHolder, held_lab, write_report
from .test_etcd_drills import CONVERGE_SECONDS, TTL, journal_events, skip_reason, token_holder
from .test_partitions import longest_two_writers

pytestmark = pytest.mark.netns

FROZEN_SECONDS = 8.0  # longer than the lease: it may run out in etcd while every member is frozen


@pytest.fixture(scope="module")
def report(request):
    lines: List[str] = []
    yield lines
    write_report(request, "etcd without semi-sync (seconds):", lines)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mariadb_template):
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("etcd-nosemi"), mariadb_template, "default", etcd=True,
                                    overrides=with_opt_in("failover.semi_sync", base=overrides_except(SHIPPED_TIMING))), skip_reason()) as h:
        lab = h.healthy()
        wait_for("the master to hold the write token", lambda: token_holder(lab) == lab.master(), 20)
        yield lab


def test_etcd_frozen_whole_fences_the_master_and_it_reopens_once_etcd_is_back(lab, report):
    """Every member SIGSTOPped (ports open, no answer) for 8 s under writes through the VIP: the
    master fences itself within the lease (its last renewal + ttl), the replica never opens,
    and within 30 s of the thaw the same master is writable again, holding the token, with
    every acknowledged row; never two writers."""
    master = lab.master()
    assert master and not lab.expects_semisync()
    replica = lab.peer_of(master)
    assert not lab.semisync_on(master), "semi-sync is on although this lab's orch.yaml turns it off"
    since = time.time()
    members = [m[0] for m in lab.etcd_members()]
    writer = lab.writer("etcd-nosemi").start()
    sampler = Sampler(lab.dbs).start()
    frozen = thawed = fenced = 0.0
    try:
        time.sleep(1.0)
        frozen = time.monotonic()
        for name in members:
            assert lab.etcd_proc(name).send(signal.SIGSTOP), f"{name} is not running"
        try:
            wait_for(f"[fence] {master} to fence itself while etcd is frozen",
                     lambda: lab.servers()[master].read_only is True, TTL + 1.0, interval=0.05)
            fenced = time.monotonic() - frozen
            time.sleep(max(0.0, FROZEN_SECONDS - fenced))
        finally:
            for name in members:
                lab.etcd_proc(name).send(signal.SIGCONT)
        thawed = time.monotonic()
        wait_for(f"[reopened] {master} to be writable again after etcd came back",
                 lambda: lab.servers()[master].read_only is False, CONVERGE_SECONDS, interval=0.05)
        reopened = time.monotonic() - thawed
        at = time.monotonic()
        wait_for("[converged] writes through the VIP to succeed again", lambda: writer.acked_since(at), 10, interval=0.05)
        time.sleep(0.3)
    finally:
        writer.stop()
        sampler.stop()
    acked = sorted({a[0] for a in writer.acked()})
    lab.wait_healthy(CONVERGE_SECONDS, acked)
    held = wait_for("[token] the master to hold the write token again", lambda: token_holder(lab) == master, CONVERGE_SECONDS,
                    interval=0.2)
    during = [a for a in writer.acked() if frozen + fenced + 0.5 <= a[1] < thawed]
    events = journal_events(lab, since)
    report.append(f"etcd frozen whole {FROZEN_SECONDS:g}s, semi-sync off: {master} fenced itself +{fenced:.2f}s after the "
                  f"freeze, writable again +{reopened:.2f}s after the thaw; {replica} never opened; acked {len(acked)}; "
                  f"{master}'s token events: " + ", ".join(e for e in events[master] if e.startswith("token")))
    # The last renewal came at most one renewal interval before the freeze: the lease runs out
    # in etcd no sooner than ttl - renew_every(ttl) after it.
    assert fenced < TTL - renew_every(TTL), f"fenced {fenced:.2f}s after the freeze: the lease could have run out first"
    assert not during, f"{len(during)} write(s) acknowledged through the VIP while {master} was fenced and etcd frozen"
    assert "token-self-fence" in events[master], events[master]
    assert held and lab.master() == master, "the VIP moved: a failover happened without etcd"
    assert all(row.get(replica) != 0 for _, row in sampler.samples), f"{replica} was opened while etcd was frozen"
    assert longest_two_writers(sampler) == 0.0
    assert not set(acked) - row_ids(lab.dbs[master])
