"""Maintenance mode end to end in the namespace lab: real keepalived, real hooks, a live writer.

orch pause on the replica's host (the row goes to the writable master and replicates);
kill -9 the master's mariadbd: keepalived moves the VIP and sends MASTER on the replica's
host, which does not promote (journaled as paused, with what it would have done), nor does
its maintainer; orch resume (kept on that host: no server is writable) lets the maintainer
promote the VIP holder; no acknowledged row is lost, never two writers; then the old master
comes back and, once the resume is carried to the databases, rejoins.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Dict, List

import pytest

from orchestrator.lab import LabError, netns
from orchestrator.lab.probes import Sampler, row_ids
from orchestrator.lab.proc import orch_bin, tail, wait_for

from .orchtest import LabHolder, held_lab

pytestmark = pytest.mark.netns

STILL_READ_ONLY = 5.0  # seconds after the VIP moved that the paused VIP holder must stay read-only
HEAL_TIMEOUT = 40


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("pause"), mariadb_template)) as h:
        yield h


def run_orch(lab: netns.NetnsLab, host: str, *args: str) -> subprocess.CompletedProcess:
    h = lab.hosts[host]
    argv = ["ip", "netns", "exec", h.netns or "", orch_bin(), "-c", str(h.file("orch.yaml")), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def journal(lab: netns.NetnsLab, host: str) -> List[Dict[str, Any]]:
    path = lab.hosts[host].file("state") / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_paused_vip_holder_does_not_promote_until_resume(holder):
    lab = holder.healthy()
    old = lab.master()
    assert old, "no single VIP holder at the start"
    new = lab.peer_of(old)
    writer = lab.writer("pause-drill")
    sampler = Sampler(lab.dbs)
    try:
        wait_for(f"{old}'s semi-synchronous replication to be on", lambda: lab.semisync_on(old), HEAL_TIMEOUT)
        writer.start()
        sampler.start()

        done = run_orch(lab, new, "pause", "--reason", "pause drill", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"record on {old} (orch_meta.pause, replicated)" in done.stdout
        wait_for(f"the pause row to replicate to {new}",
                 lambda: lab.dbs[new].query_value("SELECT COUNT(*) FROM orch_meta.pause WHERE kind = 'pause'") == 1, 10)
        for host in (old, new):  # both hosts see it
            status = run_orch(lab, host, "status")
            assert "maintenance: PAUSED" in status.stdout and "pause drill" in status.stdout, status.stdout

        time.sleep(0.3)
        t0 = time.monotonic()
        lab.kill_mysqld(old)
        wait_for(f"the VIP to move to {new}", lambda: new in lab.vip_holders(), 30, interval=0.05)
        t_vip = time.monotonic()
        while time.monotonic() - t_vip < STILL_READ_ONLY:
            assert lab.servers()[new].read_only, f"{new} was opened while paused"
            time.sleep(0.1)
        paused_runs = [r for r in journal(lab, new) if r.get("event") == "MASTER" and r.get("phase") == "end"
                       and r.get("result") == "paused"]
        begin = [r for r in journal(lab, new) if r.get("event") == "MASTER" and r.get("phase") == "begin"
                 and r.get("outcome") == "paused"]
        assert paused_runs and begin, tail(lab.hosts[new].file("notify.log"), 30)
        assert "would have: promoting" in begin[-1]["reason"] and any("writable" in w for w in begin[-1]["withheld"])
        assert "paused (" in tail(lab.hosts[new].file("maintain.log"), 200)

        # Resume on the VIP holder's host: no server is writable, so it is kept there; its maintainer promotes.
        done = run_orch(lab, new, "resume", "--yes")
        assert done.returncode == 0 and "on this host only" in done.stdout, done.stdout + done.stderr
        t_resume = time.monotonic()
        wait_for(f"{new} to be promoted by its maintainer after orch resume", lambda: not lab.servers()[new].read_only,
                 30, interval=0.05, detail=lambda: tail(lab.hosts[new].file("maintain.log"), 20))
        promoted = time.monotonic()
        wait_for(f"writes through the VIP to succeed on {new}", lambda: writer.acked_since(promoted), 30, interval=0.05)

        # The resume was handed to the other host's orch too (HTTP API). Whether its row reached the
        # databases depends on whether it ran after the promotion (a single writable server to hold
        # it) or before (kept on that host): in the second case the pause is still the latest row
        # there and a second resume carries it; in the first there is nothing left to resume.
        status = run_orch(lab, new, "status")
        done = run_orch(lab, new, "resume", "--yes")
        if "the databases still hold a pause" in status.stdout:
            assert done.returncode == 0 and f"record on {new} (orch_meta.pause, replicated)" in done.stdout, done.stdout + done.stderr
        else:
            assert f"maintenance: off; latest: resumed by root on {old}" in status.stdout, status.stdout
            assert done.returncode == 0 and "nothing to resume" in done.stdout, done.stdout + done.stderr
        latest = lab.dbs[new].query_value("SELECT kind FROM orch_meta.pause ORDER BY at DESC, run_id DESC LIMIT 1")
        assert latest == "resume", latest

        lab.start_mysqld(old)
        time.sleep(0.3)
        writer.stop()
        acked = [a[0] for a in writer.acked()]
        lab.wait_healthy(HEAL_TIMEOUT, acked, sampler)
        missing = set(acked) - row_ids(lab.dbs[new])
        assert not missing, f"acknowledged rows lost: {sorted(missing)[:10]}"
        assert not sampler.both_writable(), "two writable servers seen"
        kinds = [r.get("event") for r in journal(lab, new) if r.get("phase") == "end"]
        assert "PAUSE" in kinds and kinds.count("RESUME") in (1, 2)
        print(f"pause drill: VIP moved {t_vip - t0:.2f}s after the kill; promoted {promoted - t_resume:.2f}s after resume; "
              f"acked {len(acked)}")
    except LabError as exc:
        pytest.fail(f"pause drill: {exc}{lab.logs_hint()}", pytrace=False)
    finally:
        writer.stop()
        sampler.stop()
        for host in lab.hosts:  # leave the lab unpaused for whoever comes next
            run_orch(lab, host, "resume", "--yes")
