"""The lab without root or keepalived: two mariadbd on 127.0.0.1 ports, an Atlas stand-in each.

There is no VIP and no keepalived. The lab plays keepalived's part itself, with the
same pieces keepalived would use: it runs hooks/check-mysql every second (fall 2,
rise 2) and delivers the events through hooks/keepalived-notify, so failover goes
through exactly the notify code the namespace lab and production use. "Holds the
VIP" means "the lab delivered MASTER to it last".
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from orchestrator.lab import LabError, mariadb
from orchestrator.lab.base import Lab, Narrator
from orchestrator.lab.hosts import ATLAS_ADMIN, HOOKS_DIR, NAMES, VRRP_INSTANCE, Host, write_host_files
from orchestrator.lab.probes import Sampler
from orchestrator.lab.report import Recording
from orchestrator.lab.proc import CommandTimeout, orch_bin, run, tail, wait_for
from orchestrator.lab.traffic import Writer, create_app_schema

CHECK_INTERVAL = 1.0  # what keepalived's vrrp_script uses: interval 1, fall 2, rise 2
FALL = 2
RISE = 2
PRIORITY = {"server1": 101, "server2": 100}


class LoopbackLab(Lab):
    mode = "loopback"

    def __init__(self, workdir: str, lab_id: str = "loopback", template: Optional[str] = None, persistent: bool = False,
                 ports: Optional[Dict[str, Tuple[int, int]]] = None) -> None:
        workdir = str(Path(workdir).absolute())
        ports = ports or {}
        taken: List[int] = []
        hosts = []
        for i, name in enumerate(NAMES, 1):
            mysql_port, atlas_port = ports.get(name) or (_free(taken), _free(taken))
            taken += [mysql_port, atlas_port]
            hosts.append(Host(name, i, str(Path(workdir) / name), "127.0.0.1", mysql_port, atlas_port))
        super().__init__(workdir, hosts, lab_id, persistent)
        self.template = template
        self.vrrp_master: Optional[str] = None

    @classmethod
    def from_state(cls, state: Dict[str, Any], hosts: List[Host]) -> "LoopbackLab":
        lab = cls(state["workdir"], state["id"], state.get("template"), state.get("persistent", False),
                  ports={h.name: (h.port, h.atlas_port) for h in hosts})
        lab.vrrp_master = state.get("vrrp_master")
        return lab

    def extra_state(self) -> Dict[str, Any]:
        return {"template": self.template, "vrrp_master": self.vrrp_master}

    # -- keepalived's part ------------------------------------------------------------

    def check(self, host: Host) -> bool:
        """hooks/check-mysql with this host's client defaults: what keepalived's vrrp_script runs."""
        try:
            return run([str(HOOKS_DIR / "check-mysql"), str(host.file("check.cnf"))], timeout=2, check=False).returncode == 0
        except CommandTimeout:
            return False

    def wait_check(self, host: Host, passing: bool, timeout: float = 30) -> float:
        """Run the check every second until it gave ``passing`` RISE/FALL times in a row."""
        needed = RISE if passing else FALL
        started = time.monotonic()
        streak = 0
        while True:
            streak = streak + 1 if self.check(host) == passing else 0
            if streak >= needed:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise LabError(f"the health check on {host.name} did not {'pass' if passing else 'fail'} {needed} times in {timeout:g}s")
            time.sleep(CHECK_INTERVAL)

    def notify(self, host: Host, state: str) -> Tuple[int, str]:
        """Deliver a VRRP event through hooks/keepalived-notify, as keepalived would; (exit code, decision)."""
        log = host.file("notify.log")
        offset = log.stat().st_size if log.exists() else 0
        argv = [str(HOOKS_DIR / "keepalived-notify"), "-c", str(host.file("orch.yaml")), "--node", host.name,
                "--log", str(log), "--orch", orch_bin(), "INSTANCE", VRRP_INSTANCE, state, str(PRIORITY[host.name])]
        code = run(argv, timeout=120, check=False, capture=False).returncode
        if state == "MASTER":
            self.vrrp_master = host.name
            self.save()
        return code, decision_line(log, offset)

    # -- build ------------------------------------------------------------------------

    def _up(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for host in self.hosts.values():
            shutil.rmtree(host.path, ignore_errors=True)  # a new cluster every time; the template datadir stays
        self.save()
        template = self.template or mariadb.create_template(str(self.workdir / "template" / "data"))
        h1, h2 = self.hosts["server1"], self.hosts["server2"]
        write_host_files(h1, h2, rw_backend=h1.backend)  # no VIP: Atlas's writer backend is the first master
        write_host_files(h2, h1, rw_backend=h1.backend)
        mariadb.start_together(self.dbs.values(), template)
        self.save()
        self.progress(f"mariadbd running: server1 on 127.0.0.1:{h1.port}, server2 on 127.0.0.1:{h2.port}, both read-only")
        for host in self.hosts.values():
            self.start_atlas(host)
        code, decision = self.notify(h1, "MASTER")
        if code != 0 or self.servers()["server1"].read_only is not False:
            raise LabError(f"orch notify MASTER on server1 did not promote it (exit {code}): {decision or tail(h1.file('notify.log'), 4)}")
        self.progress(f"server1 gets MASTER (no keepalived here: the lab delivers the event): {decision}")
        code, decision = self.notify(h2, "BACKUP")
        wait_for("server2 to replicate from server1", lambda: self.servers()["server2"].replicating, timeout,
                 detail=lambda: f"{self.servers()['server2'].describe()}; notify.log: {tail(h2.file('notify.log'), 4)}")
        self.progress(f"server2 gets BACKUP: {decision}")
        create_app_schema(self.dbs["server1"])
        for host in self.hosts.values():
            self.start_maintainer(host)
        self.wait_healthy(timeout)
        self.progress("orch maintain added server2 to both Atlas stand-ins as read-only backend")

    def down(self) -> None:
        self.stop_processes()
        self.procs = {}
        state = self.workdir / "lab.json"
        if state.exists():
            state.unlink()

    # -- the sandbox's failover -----------------------------------------------------

    def failover(self, out: Any, timeout: float = 30) -> bool:
        """kill -9 the master's mysqld, play keepalived's part, narrate until healed."""
        problems = self.health()
        if problems:
            out.write("the lab is not healthy, so a failover would show nothing useful:\n  " + "\n  ".join(problems) + "\n")
            return False
        old = self.master() or ""
        new = self.peer_of(old)
        oh, nh = self.hosts[old], self.hosts[new]
        out.write(f"{old} is the master; {new} replicates from it. No keepalived in loopback mode: the lab runs the\n"
                  f"health check (hooks/check-mysql) every second and delivers keepalived's events through hooks/keepalived-notify.\n")
        n = Narrator(out)
        sampler = Sampler(self.dbs)
        # The timeline (report.py): no keepalived here, so the VIP moves when the lab says so.
        rec = self.recording = Recording(self.mode, tuple(self.hosts), old, new, read_only=sampler.samples)
        rec.vip_seen(self.vip_holders())
        try:
            sampler.start()
            wait_for("the first read_only samples", lambda: sampler.samples, 5)  # the timeline starts before the fault
            n.start()
            pid = self.kill_mysqld(old)
            rec.fault_at, rec.fault_text = time.monotonic(), f"kill -9 mysqld on {old} (pid {pid})"
            n.say(f"kill -9 mysqld on {old} (pid {pid})")
            self.wait_check(oh, passing=False, timeout=timeout)
            rec.fault_seen_at, rec.fault_seen_text = time.monotonic(), f"the health check failed twice on {old} (keepalived's FAULT)"
            n.say(f"the health check failed twice on {old}: keepalived would enter FAULT and give up the VIP")
            rec.vip_seen([])
            code, decision = self.notify(oh, "FAULT")
            n.say(f"{old} FAULT -> orch: {decision} (exit {code})")
            rec.vip_seen([new])
            code, decision = self.notify(nh, "MASTER")
            n.say(f"{new} MASTER -> orch: {decision} (exit {code})")
            if self.servers()[new].read_only is not False:
                raise LabError(f"{new} is not writable after MASTER: {tail(nh.file('notify.log'), 4)}")
            n.say(f"{new} is writable")
            self.start_mysqld(old)
            n.say(f"mysqld on {old} started again: it comes back read-only (read_only=ON in its my.cnf)")
            self.wait_check(oh, passing=True, timeout=timeout)
            code, decision = self.notify(oh, "BACKUP")
            n.say(f"the check passed twice on {old}: BACKUP -> orch: {decision} (exit {code})")
            self.wait_healthy(timeout, sampler=sampler)
            st = self.servers()[new]
            n.say(f"healed: {old} replicates from {new}, GTID sets equal ({st.gtid_binlog_state}), and orch maintain "
                  f"put {old} ({oh.backend}) back in both Atlas stand-ins as read-only backend")
            n.note(f"never two writable servers ({len(sampler.samples)} read_only samples of both, every 50 ms)")
            rec.healed = True
            return True
        except LabError as exc:
            out.write(f"the cluster did not heal: {exc}\n")
            return False
        finally:
            sampler.stop()
            rec.ended = time.monotonic()

    # -- observation ----------------------------------------------------------------

    def vip_holders(self) -> List[str]:
        return [self.vrrp_master] if self.vrrp_master else []

    def atlas_backends(self, host: Host) -> Optional[List[Tuple[int, str, str, str]]]:
        from orchestrator.atlas.client import AtlasAdmin
        from orchestrator.errors import AtlasError

        try:
            with AtlasAdmin(host.atlas_host, host.atlas_port, ATLAS_ADMIN.user, ATLAS_ADMIN.password, timeout=2.0) as admin:
                return [(b.ndx, b.address, b.state, b.type) for b in admin.backends()]
        except AtlasError:
            return None

    def writer(self, name: str = "writer", pause: float = 0.002, select: bool = False, connect_timeout: float = 0.25) -> Writer:
        master = self.hosts[self.master() or "server1"]
        return Writer(master.address, master.port, self.workdir, master.file("app.pass"), pause=pause, name=name, select=select,
                      connect_timeout=connect_timeout)

    def host_tags(self, host: Host) -> List[str]:
        return ["VRRP master (lab-delivered)"] if host.name == self.vrrp_master else []


def decision_line(log: Path, offset: int) -> str:
    """The last 'decision (...)' sentence orch logged after ``offset``."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line.split("): ", 1)[-1] for line in lines if "decision (" in line]
    return found[-1] if found else ""


def _free(taken: List[int]) -> int:
    while True:
        port = mariadb.free_port()
        if port not in taken:
            return port

