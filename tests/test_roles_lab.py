"""orch promote NODE, orch demote NODE and orch ack from the other host, in the namespace lab:
real keepalived, real mariadbd, each host's orch maintain serving the HTTP API.

Run under ``flock /tmp/orch-netns.lock``. One drill, each step checked on the real state:

1. from the replica's host, ``orch demote MASTER --dry-run`` prints the master host's plan
   and changes nothing; a wrong token (401) and a closed port are one line, exit 1, nothing
   changed;
2. kill -9 of the master's mariadbd: the automatic failover to the replica; ``orch ack`` on
   the old master's host (its server down) writes the acknowledgement on the new master;
3. ``orch pause``; the old master's server comes back, fenced, not rejoined (paused); from
   the new master's host, ``orch demote OLD --yes``: the old master's host points it at the
   new master; its journal says who asked, from which node and address;
4. kill -9 of the new master's mariadbd (paused: the VIP moves, nobody is promoted); from
   that host, ``orch promote OLD --yes``: the old master's host promotes it (writable, VIP);
5. resume, the other server back: the lab heals.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from orchestrator.lab import LabError, netns
from orchestrator.lab.hosts import overrides_except
from orchestrator.lab.proc import orch_bin, tail, wait_for

from .orchtest import LabHolder, held_lab

pytestmark = pytest.mark.netns

HEAL_TIMEOUT = 40


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    # Anti-flapping as shipped (failover.block_seconds 3600): orch ack has a failover to acknowledge.
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("roles"), mariadb_template,
                                    overrides=overrides_except(["failover.block_seconds"]))) as h:
        yield h


def run_orch(lab: netns.NetnsLab, host: str, *args: str, config: Optional[Path] = None) -> subprocess.CompletedProcess:
    h = lab.hosts[host]
    argv = ["ip", "netns", "exec", h.netns or "", orch_bin(), "-c", str(config or h.file("orch.yaml")), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


def run_at_terminal(lab: netns.NetnsLab, host: str, answer: str, *args: str) -> subprocess.CompletedProcess:
    """orch on ``host`` with a terminal (script(1) gives it a pty) that types ``answer``."""
    h = lab.hosts[host]
    command = " ".join(shlex.quote(a) for a in ["ip", "netns", "exec", h.netns or "", orch_bin(), "-c",
                                                str(h.file("orch.yaml")), *args])
    return subprocess.run(["script", "-qec", command, "/dev/null"], input=answer, capture_output=True, text=True,
                          timeout=120, check=False)


def journal(lab: netns.NetnsLab, host: str) -> List[Dict[str, Any]]:
    path = lab.hosts[host].file("state") / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ends(lab: netns.NetnsLab, host: str, event: str) -> List[Dict[str, Any]]:
    return [r for r in journal(lab, host) if r.get("event") == event and r.get("phase") == "end"]


def variant(lab: netns.NetnsLab, host: str, name: str, **http: Any) -> Path:
    """A copy of ``host``'s orch.yaml with http (or maintainer) settings changed."""
    h = lab.hosts[host]
    doc = yaml.safe_load(h.file("orch.yaml").read_text())
    for key, value in http.items():
        section, _, field = key.partition("__")
        doc.setdefault(section, {})[field] = value
    path = h.file(f"orch-{name}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def test_promote_demote_and_ack_from_the_other_host(holder):
    lab = holder.healthy()
    old = lab.master()
    assert old, "no single VIP holder at the start"
    new = lab.peer_of(old)
    try:
        # 1. A dry run from the replica's host: the master host's plan, nothing changed.
        done = run_orch(lab, new, "demote", old, "--dry-run")
        assert f"{old}'s host runs orch demote" in done.stdout and "dry run: nothing changed" in done.stdout, done.stdout + done.stderr
        done = run_orch(lab, new, "promote", old, "--dry-run", "--format", "json")
        plan = json.loads(done.stdout)
        assert plan["node"] == old and plan["dry_run"] is True and done.returncode == plan["exit_code"], done.stdout
        # A wrong token: 401, one line, exit 1; a closed port: one line, exit 1; nothing changed.
        bad = lab.hosts[new].file("wrong.token")
        bad.write_text("not-the-lab-token-0123456789\n")
        bad.chmod(0o600)
        done = run_orch(lab, new, "demote", old, "--yes", config=variant(lab, new, "badtoken", http__token_file=str(bad)))
        assert done.returncode == 1 and "HTTP 401" in done.stderr and "nothing changed" in done.stderr, done.stdout + done.stderr
        assert len([line for line in done.stderr.splitlines() if "error" in line]) == 1, done.stderr
        done = run_orch(lab, new, "demote", old, "--yes", config=variant(lab, new, "closed", maintainer__metrics_port=9))
        assert done.returncode == 1 and "cannot ask" in done.stderr and "nothing asked" in done.stderr, done.stdout + done.stderr
        done = run_orch(lab, new, "demote", old)  # no terminal, no --yes: bad input, nothing asked of the other host
        assert done.returncode == 2 and "stdin is not a terminal (use --yes)" in done.stderr, done.stdout + done.stderr
        assert f"asking {old}'s orch" not in done.stderr, done.stderr
        done = run_orch(lab, new, "demote", "server9", "--yes")
        assert done.returncode == 2 and "not a node of this cluster" in done.stderr, done.stderr
        assert not lab.servers()[old].read_only and lab.vip_holders() == [old], "the refused requests changed something"
        assert not [r for r in journal(lab, old) if r.get("asked")], "a refused request was journaled as run"

        # 2. The automatic failover; orch ack on the old master's host (its server down).
        lab.kill_mysqld(old)
        wait_for(f"{new} to be promoted", lambda: lab.vip_holders() == [new] and lab.servers()[new].read_only is False, 30,
                 interval=0.1)
        done = run_orch(lab, old, "ack", "--yes")
        assert done.returncode == 0 and "acknowledging the failover promotion" in done.stdout, done.stdout + done.stderr
        acked = lab.dbs[new].query_value(
            "SELECT COUNT(*) FROM orch_meta.promotions p JOIN orch_meta.promotions a ON a.kind = 'ack' AND a.acks = p.run_id "
            "WHERE p.kind = 'failover' AND p.node = %s", (new,))
        assert acked == 1, acked
        assert ends(lab, old, "ACK")[-1]["result"] == "act"

        # 3. Paused, the old master comes back fenced and not rejoined; demoted from the new master's host.
        done = run_orch(lab, old, "pause", "--reason", "roles drill", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for("the pause row to reach the new master", lambda: lab.dbs[new].query_value(
            "SELECT kind FROM orch_meta.pause ORDER BY at DESC, run_id DESC LIMIT 1") == "pause", 10)
        lab.start_mysqld(old)
        wait_for(f"{old} to be up and read-only", lambda: lab.servers()[old].up and lab.servers()[old].read_only is True, 30,
                 detail=lambda: tail(lab.hosts[old].file("maintain.log"), 20))
        assert not lab.servers()[old].replicating, "rejoined while paused"
        # Without --yes: the old master host's plan is shown, confirmed at this terminal (a pty), then run there.
        done = run_at_terminal(lab, new, "y\n", "demote", old)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{old}'s host runs orch demote" in done.stdout and f"plan ({old}):" in done.stdout, done.stdout
        assert "proceed? [y/N]" in done.stdout and "result: act" in done.stdout, done.stdout
        state = lab.servers()[old]
        assert state.read_only and state.source == lab.hosts[new].backend, state
        wait_for(f"{old} to replicate from {new}", lambda: lab.servers()[old].replicating, 20)
        run = ends(lab, old, "BACKUP")[-1]
        assert run["result"] == "act" and run["asked"]["by"] and run["asked"]["from"] == new and run["asked"]["address"] == lab.hosts[new].address, run

        # orch history on the asking host merges the acting host's journal (its GET /history).
        done = run_orch(lab, new, "history", "--format", "json")
        assert done.returncode == 0, done.stderr
        merged = {(e["run_id"], e["host"]) for e in json.loads(done.stdout)}
        assert (run["id"], old) in merged, sorted(merged)[-10:]

        # 4. The new master's server dies (paused: nobody promotes); promoted from its host.
        lab.kill_mysqld(new)
        wait_for(f"the VIP to move to {old}", lambda: lab.vip_holders() == [old], 30, interval=0.1)
        assert lab.servers()[old].read_only, "promoted while paused"
        done = run_orch(lab, new, "promote", old, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{old}'s host runs orch promote" in done.stdout and "result: act" in done.stdout, done.stdout
        # As a command run here: the result on stdout, the other host's log lines on stderr.
        assert "orch[" not in done.stdout and "orch[" in done.stderr, done.stdout + done.stderr
        assert lab.servers()[old].read_only is False and lab.vip_holders() == [old]
        run = ends(lab, old, "MASTER")[-1]
        assert run["result"] == "act" and run["asked"]["from"] == new and run["asked"]["address"] == lab.hosts[new].address, run

        # 5. Resume; the other server back: healed.
        done = run_orch(lab, old, "resume", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        lab.start_mysqld(new)
        lab.wait_healthy(HEAL_TIMEOUT)
    except LabError as exc:
        pytest.fail(f"roles drill: {exc}{lab.logs_hint()}", pytrace=False)
    finally:
        for host in lab.hosts:  # leave the lab unpaused for whoever comes next
            run_orch(lab, host, "resume", "--yes")


def _children(pid: int, word: str) -> List[int]:
    """The PIDs whose parent is ``pid`` and whose command line has ``word``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name (field 2) may hold spaces
        if ppid == pid and word.encode() in cmdline:
            found.append(int(entry))
    return found


def test_a_switchover_survives_a_restart_of_the_maintainer_running_it(holder):
    """orch switchover on the replica's host: the master's orch runs it (POST /switchover) as a
    child of its maintainer. That maintainer's process group is sent SIGTERM and the maintainer
    started again while the switchover is in flight: the switchover, in a session of its own
    and writing to a file, finishes all the same, under its run lock; the asking host says it
    got no answer (exit 3) and where to look. (systemd's side, KillMode=process in
    conf/orch-maintain.service, is checked by tests/test_conf_files.py: no systemd here.)

    A switchover takes a fraction of a second, less than a maintainer may take to stop: to
    keep it in flight whatever the machine's speed, its process is stopped (SIGSTOP, as a slow
    catch-up would hold it) as soon as the maintainer has started it, and continued once the
    maintainer has stopped. It is in a session of its own: the signal to the maintainer's
    process group does not reach it."""
    lab = holder.healthy()
    old = lab.master()
    assert old, "no single VIP holder at the start"
    new = lab.peer_of(old)
    h = lab.hosts[old]
    maintainer = lab.procs[f"{old}.maintain"]
    # The maintainer leads its own process group (the lab starts it with setsid): the whole
    # group is signalled, as a control-group kill would reach every process it started.
    assert maintainer.alive() and os.getpgid(maintainer.pid) == maintainer.pid
    before = {r["id"] for r in journal(lab, old) if r.get("event") == "SWITCHOVER"}
    asking = subprocess.Popen(["ip", "netns", "exec", lab.hosts[new].netns or "", orch_bin(), "-c",
                               str(lab.hosts[new].file("orch.yaml")), "switchover", "--yes"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    held: List[int] = []
    try:
        def hold() -> bool:
            held.extend(_children(maintainer.pid, "switchover"))
            for pid in held:
                os.kill(pid, signal.SIGSTOP)
            return bool(held)

        wait_for("the maintainer to start the POSTed switchover", hold, 30, interval=0.002)
        assert len(held) == 1, held
        assert os.getsid(held[0]) == held[0], "the switchover is not in a session of its own"
        os.killpg(maintainer.pid, signal.SIGTERM)
        wait_for(f"{old}'s maintainer to stop", lambda: not maintainer.alive(), 15, interval=0.05)
        assert Path(f"/proc/{held[0]}").exists(), "the switchover died with its maintainer"
        in_flight = not [r for r in journal(lab, old) if r.get("event") == "SWITCHOVER" and r["id"] not in before
                         and r.get("phase") == "end"]
        assert in_flight, "the switchover had ended before the maintainer was stopped: nothing shown"
        lab.start_maintainer(h)  # systemd's restart
        os.kill(held.pop(), signal.SIGCONT)
        out, err = asking.communicate(timeout=120)
        assert asking.returncode == 3 and "may still be running there" in out + err, (asking.returncode, out, err)

        def begun() -> Optional[str]:
            got = [r["id"] for r in journal(lab, old) if r.get("event") == "SWITCHOVER" and r.get("phase") == "begin"
                   and r["id"] not in before]
            return got[0] if got else None

        wait_for("the switchover to begin", lambda: begun() is not None, 30, interval=0.05)
        run_id = begun()

        def ended() -> Optional[Dict[str, Any]]:
            return next((r for r in journal(lab, old) if r.get("id") == run_id and r.get("phase") == "end"), None)

        wait_for("the switchover to end", lambda: ended() is not None, 60, interval=0.1)
        end = ended()
        assert end is not None and end["result"] == "act", end
        assert end["asked"]["from"] == new, end
        assert lab.vip_holders() == [new] and lab.servers()[new].read_only is False
        wait_for(f"{old} to replicate from {new}", lambda: lab.servers()[old].replicating
                 and lab.servers()[old].source == lab.hosts[new].backend, 20)
        # The output of the command whose maintainer stopped is kept for the operator.
        left = list((h.file("state") / "api-runs").glob("*-switchover.stdout"))
        assert left and any("switchover done" in p.read_text() for p in left), left
        lab.wait_healthy(HEAL_TIMEOUT)
    except LabError as exc:
        pytest.fail(f"maintainer restart drill: {exc}{lab.logs_hint()}", pytrace=False)
    finally:
        for pid in held:  # a failed step leaves nothing stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if asking.poll() is None:
            asking.kill()
            asking.wait()
