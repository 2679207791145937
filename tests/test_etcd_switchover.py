"""orch switchover with the write token (docs/etcd.md), in the namespace lab with a real
three-member etcd, real keepalived (shipped confs, default profile), a writer through the VIP
and read_only sampled on both servers every 20 ms:

- there and back: the token is handed to the new master (the key names it, under the lease its
  host's keeper renews), never two writable servers, nothing acknowledged lost, and both hosts'
  journals record the hand-over (the old master's SWITCHOVER run handed it over, the new
  master's MASTER run found it its own);
- a candidate cut from etcd (it could not take the token): refused before anything is fenced,
  nothing changes (the master never read-only, token and VIP where they were).

Run under `flock /tmp/orch-netns.lock`."""

from __future__ import annotations

import json
import time
from typing import List, Optional

import pytest

from orchestrator.lab import netns
from orchestrator.lab.proc import wait_for

from .orchtest import LabHolder, held_lab, write_report
from .test_etcd_drills import lab, skip_reason, token_holder  # noqa: F401  (lab: the fixture)

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("etcd-switchover"), mariadb_template, "default", etcd=True),
                  skip_reason()) as h:
        yield h


@pytest.fixture(scope="module")
def report(request):
    lines: List[str] = []
    yield lines
    write_report(request, "switchover with the etcd write token (seconds):", lines)


def ask_etcd(lab: netns.NetnsLab, what):
    """Ask etcd from the witness's namespace (reached whatever a drill cut)."""
    from orchestrator.etcd import EtcdClient

    return netns.in_netns(lab.bridge_ns, lambda: what(EtcdClient(lab.etcd_settings(2.0))), 10)


def token_kv(lab: netns.NetnsLab):
    return ask_etcd(lab, lambda c: c.get("/orch/atlas-ha/token"))


def host_lease(lab: netns.NetnsLab, name: str) -> int:
    """The lease this host's keeper renews (state_dir/etcd-lease.json)."""
    return int(json.loads((lab.hosts[name].file("state") / "etcd-lease.json").read_text())["lease"])


def named_lease_left(lab: netns.NetnsLab, name: str) -> Optional[int]:
    """Seconds left of the lease host ``name`` names in etcd (None: it names none)."""
    def read(c):
        kv = c.get(f"/orch/atlas-ha/lease/{name}")
        return None if kv is None else c.time_to_live(int(kv.value))

    return ask_etcd(lab, read)


def records(lab: netns.NetnsLab, name: str) -> List[dict]:
    path = lab.hosts[name].file("state") / "journal.jsonl"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out.append(rec)
    return out


def steps_of(recs: List[dict], event: str, step: str) -> List[dict]:
    return [s for r in recs if r.get("event") == event and r.get("phase") == "end"
            for s in r.get("steps") or [] if s.get("step") == step]


def test_switchover_hands_the_token_to_the_new_master_and_back(lab, report):
    from orchestrator.lab.switchover import switchover_round

    for i in range(2):  # there and back
        old = lab.master()
        assert old and token_holder(lab) == old
        new = lab.peer_of(old)
        before_old = len(records(lab, old))
        before_new = len(records(lab, new))
        rnd = switchover_round(lab, f"etcd-switch-{i}")
        assert rnd.exit_code == 0, rnd.output
        assert rnd.lost == [], f"acknowledged rows lost: {rnd.lost[:10]}\n{rnd.output}"
        assert rnd.both_writable == 0, "two writable servers in a sample"
        assert rnd.new_master == new and lab.master() == new
        # The token: the key names the new master, under the lease its host's keeper renews.
        kv = token_kv(lab)
        assert kv is not None and kv.value == new, kv
        assert kv.lease == host_lease(lab, new), (kv, host_lease(lab, new))
        first = ask_etcd(lab, lambda c: c.time_to_live(kv.lease))
        time.sleep(2.0)
        second = ask_etcd(lab, lambda c: c.time_to_live(kv.lease))
        assert first >= 3 and second >= 3, f"the new master's lease is not renewed ({first}s, then {second}s left)"
        # Both journals: the old master's switchover handed it over, the new master's MASTER found it its own.
        handed = steps_of(records(lab, old)[before_old:], "SWITCHOVER", "HandOverToken")
        assert handed and handed[-1]["result"] == "ok", handed
        assert f"write token handed over from {old} to {new}" in handed[-1]["detail"], handed
        taken = steps_of(records(lab, new)[before_new:], "MASTER", "AcquireToken")
        assert taken and taken[-1]["result"] == "ok", taken
        assert f"{new} holds the write token already (lease {kv.lease:x})" in taken[-1]["detail"], taken
        report.append(f"{old}->{new}: exit 0, write-block window {rnd.window:.3f}, command {rnd.took:.2f}, "
                      f"{rnd.acked} acked, 0 lost, never two writers; token on {new} under lease {kv.lease:x} "
                      f"({second}s left 2 s later)")


def test_switchover_to_a_candidate_cut_from_etcd_is_refused_and_changes_nothing(lab, report):
    from orchestrator.lab.switchover import operator_round

    old = lab.master()
    assert old
    new = lab.peer_of(old)
    token_before = token_kv(lab)
    assert token_before is not None and token_before.value == old
    track = lab.hosts[old].file("state") / "keepalived.track"
    cut = time.monotonic()
    lab.cut_from_etcd(lab.hosts[new], True)
    try:
        # Its keeper misses two renewals: the lease it names reads 2 s or less (or is gone).
        wait_for(f"{new}'s host lease to go unrenewed", lambda: (named_lease_left(lab, new) or 0) <= 2, 15, interval=0.2)
        waited = time.monotonic() - cut
        rnd = operator_round(lab, "etcd-switch-cut", ("switchover", "--yes"))
    finally:
        lab.cut_from_etcd(lab.hosts[new], False)
    assert rnd.exit_code == 1, rnd.output
    assert f"refusing to switch over from {old} to {new}" in rnd.output, rnd.output
    assert "could not take the write token" in rnd.output, rnd.output
    # Nothing changed: the master never fenced, the candidate never opened, the token and VIP stayed.
    assert rnd.fenced is None, f"{old} was fenced {rnd.fenced - rnd.started:.2f}s after the command"
    assert rnd.writable is None and rnd.both_writable == 0
    assert rnd.lost == [] and rnd.new_master == old and lab.master() == old
    kv = token_kv(lab)
    assert kv is not None and kv.value == old and kv.lease == token_before.lease, (kv, token_before)
    if track.exists():
        assert track.read_text().strip() in ("", "0"), track.read_text()
    refused = [r for r in records(lab, old) if r.get("event") == "SWITCHOVER" and r.get("phase") == "end"]
    assert refused and refused[-1]["result"] == "refused", refused[-1:]
    # The candidate, back in reach of etcd, can take a hand-over again.
    wait_for(f"{new}'s host lease renewed again", lambda: (named_lease_left(lab, new) or 0) >= 3, 20, interval=0.2)
    report.append(f"{old}->{new} with {new} cut from etcd ({waited:.1f}s before): refused, exit 1, {old} never fenced, "
                  f"longest gap between acked writes {rnd.window:.3f}, {rnd.acked} acked, 0 lost, token still {old}'s")
