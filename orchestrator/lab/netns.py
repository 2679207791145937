"""Two hosts, a client and a switch in network namespaces, with real keepalived.

Topology (every interface and address lives in namespaces this module creates; the
host's own interfaces, routes and sysctls are never touched)::

    orchlab-<id>-br   bridge br0 with ports vh1, vh2, vcl; 10.213.0.254 on br0 is the witness (gateway)
    orchlab-<id>-h1   eth0 10.213.0.1/24   mariadbd server1, keepalived, Atlas stand-in, orch maintain
    orchlab-<id>-h2   eth0 10.213.0.2/24   mariadbd server2, keepalived, Atlas stand-in, orch maintain
    orchlab-<id>-cl   eth0 10.213.0.10/24  application traffic to the VIP 10.213.0.100

keepalived runs conf/keepalived-serverN.conf with the VIP, paths and notify hook
rewritten for the lab; its scripts are copies of hooks/keepalived-notify and
hooks/check-mysql in a root-owned 0755 directory under /run/orch-lab (keepalived's
enable_script_security refuses scripts in directories others can write, like /tmp).
The first host is started and becomes MASTER before the second starts: two
simultaneous starts both go MASTER for a moment.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import secrets
import shutil
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from orchestrator.lab import LabError, mariadb
from orchestrator.lab.base import Lab, Narrator, orch_outcomes, who_promoted, who_repointed
from orchestrator.lab.hosts import (APP_CREDENTIALS, ATLAS_ADMIN, CONF_DIR, HOOKS_DIR, LAB_OVERRIDES, NAMES, Host, Override,
                                   named_override, track_file, write_host_files)
from orchestrator.lab.probes import Sampler
from orchestrator.lab.report import Recording, VipWatch
from orchestrator.lab.proc import Proc, log_size, orch_bin, run, spawn, tail, wait_for
from orchestrator.lab.traffic import Writer, create_app_schema

T = TypeVar("T")

PREFIX = "orchlab"
SUBNET = "10.213.0"
VIP = f"{SUBNET}.100"
CLIENT_ADDRESS = f"{SUBNET}.10"
WITNESS = f"{SUBNET}.254"  # the bridge's own address: the gateway both hosts ping
PREFIXLEN = 24
MYSQL_PORT = 3306
ATLAS_ADMIN_PORT = 2345
RUN_ROOT = Path("/run/orch-lab")
KEEPALIVED = os.environ.get("ORCH_LAB_KEEPALIVED") or shutil.which("keepalived") or "/usr/sbin/keepalived"
IFACE = "eth0"
CLONE_NEWNET = 0x40000000
NOTIFY_MODES = ("hook", "noop")
PROFILES = ("default", "fast")  # conf/keepalived-<name>.conf, conf/keepalived-fast-<name>.conf
ETCD = os.environ.get("ORCH_LAB_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
ETCD_CLIENT_SUBNET = "10.213.1"  # the members' client URLs (orch lab up --etcd)
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380

_STATE_LINE = re.compile(r"\((\w+)\) Entering (MASTER|BACKUP|FAULT) STATE")
_libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- availability


def unavailable_reason() -> Optional[str]:
    """Why the namespace lab cannot run here, or None when it can (creates and deletes a probe namespace)."""
    if os.geteuid() != 0:
        return "the namespace lab needs root (network namespaces, keepalived)"
    if not os.access(KEEPALIVED, os.X_OK):
        return f"keepalived not found at {KEEPALIVED} (apt-get install keepalived)"
    if not shutil.which("ip"):
        return "the ip command is missing (apt-get install iproute2)"
    if not os.access(mariadb.MARIADBD, os.X_OK):
        return f"{mariadb.MARIADBD} not found (apt-get install mariadb-server)"
    return namespace_unavailable(f"{PREFIX}-probe-{os.getpid()}")


def namespace_unavailable(probe: str) -> Optional[str]:
    """Why no network namespace can be made here, or None: creates ``probe``, configures it, deletes it."""
    try:
        run(["ip", "netns", "add", probe], timeout=10)
    except Exception as exc:  # no permission: a container without CAP_SYS_ADMIN, for instance
        return f"cannot create a network namespace: {exc}"
    try:
        run(["ip", "-n", probe, "link", "set", "lo", "up"], timeout=10)
    except Exception as exc:
        return f"cannot configure a network namespace: {exc}"
    finally:
        run(["ip", "netns", "del", probe], timeout=10, check=False)
    return None


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 30) -> T:
    """Run ``fn`` in a thread that joined ``netns``: sockets it opens live in that namespace.

    setns(CLONE_NEWNET) changes only the calling thread, so the rest of the process
    stays where it was; the thread ends with the call.
    """
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"call in netns {netns} still running after {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def holds_address(netns: str, address: str) -> bool:
    from orchestrator.observe import holds_address as local

    return in_netns(netns, lambda: local(address), 5)


def secure_dir(path: Path) -> None:
    """Create ``path`` (0755) and check that root owns it and every parent and no one else can write them."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    for part in [path, *path.parents]:
        st = part.stat()
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid != 0 or writable:
            raise LabError(f"{part} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}: "
                           f"keepalived's enable_script_security would refuse scripts below it")


# --------------------------------------------------------------------------- keepalived config


BRIDGE_MAC = "02:00:0a:d5:00:fe"  # locally administered; the witness (gateway) answers with it


def fifo_path(host: Host) -> Path:
    """Where keepalived's vrrp_notify_fifo (the fast profile's) writes on this host."""
    return host.file("state") / "keepalived.fifo"


def render_keepalived(name: str, hooks: Path, host: Host, notify_hook: Path, profile: str = "default",
                      fifo: bool = True) -> str:
    """conf/keepalived-<name>.conf (fast profile: keepalived-fast-<name>.conf) with the lab's VIP
    and paths. Fails if a replaced token is missing. A file whose events go to a FIFO
    (vrrp_notify_fifo) gets the host's FIFO path, or, with ``fifo=False`` (the benchmark's
    floor: no orch), the no-op hook as its notify script instead."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    source = CONF_DIR / (f"keepalived-{name}.conf" if profile == "default" else f"keepalived-{profile}-{name}.conf")
    text = source.read_text()
    fifo_line = re.search(r"^\s*vrrp_notify_fifo (\S+)\n", text, re.M)
    if fifo_line and not fifo:
        text = text.replace(fifo_line.group(0), "")
        text = re.sub(r"^(\s*)# no notify line:[^\n]*\n", lambda m: f'{m.group(1)}notify "{notify_hook}"\n', text, count=1, flags=re.M)
    replacements = [
        ("/usr/local/lib/orch/check-mysql", str(hooks / "check-mysql")),
        ("/etc/orch/check.cnf", str(host.file("check.cnf"))),
        ("10.0.0.100/24", f"{VIP}/{PREFIXLEN}"),
        ("10.0.0.254", WITNESS),
        ("/var/lib/orch/keepalived.track", str(track_file(host))),
    ]
    if profile == "fast":
        replacements.append(("/var/lib/orch/mysqld.track", str(mysqld_track_file(host))))
    if fifo_line and fifo:
        replacements.append((fifo_line.group(1), str(fifo_path(host))))
    if "/usr/local/lib/orch/keepalived-notify" in text or not fifo_line:
        replacements += [
            ("/usr/local/lib/orch/keepalived-notify", str(notify_hook)),
            ("/etc/orch/orch.yaml", str(host.file("orch.yaml"))),
            ("/var/log/orch/notify.log", str(host.file("notify.log"))),
            ("/usr/local/bin/orch", orch_bin()),
        ]
    for token, value in replacements:
        if token not in text:
            raise LabError(f"{source}: expected {token!r} (the lab replaces it); was the file edited?")
        if re.search(r"\s", value):
            raise LabError(f"lab path {value!r} contains whitespace; keepalived would split it")
        text = text.replace(token, value)
    return f"# generated by orchestrator.lab.netns from {source}\n" + text


def mysqld_track_file(host: Host) -> Path:
    """The fast profile's track file that orch watch-mysqld writes on this host."""
    return host.file("state") / "mysqld.track"


# --------------------------------------------------------------------------- the lab


class NetnsLab(Lab):
    """The two-host lab in network namespaces. ``up()`` builds it, ``down()`` removes all of it."""

    mode = "netns"

    def __init__(self, workdir: str, lab_id: Optional[str] = None, template: Optional[str] = None,
                 notify: str = "hook", persistent: bool = False, profile: str = "default",
                 overrides: Optional[Mapping[str, Override]] = None, haproxy: bool = False, etcd: bool = False,
                 etcd_tls: bool = False) -> None:
        """``overrides``: the lab's departures from conf/orch.yaml (default LAB_OVERRIDES; a subset
        of it, see hosts.overrides_except, runs those keys as shipped). ``haproxy``: also run
        conf/haproxy.cfg in the client namespace (orchestrator/lab/haproxy.py). ``etcd``: a
        three-member etcd cluster (one member in each host's namespace, one beside the witness)
        and the etcd: section in both hosts' orch.yaml (the write token, docs/etcd.md). ``etcd_tls``:
        the members serve clients over TLS with --client-cert-auth, orch uses etcd.cacert/cert/key
        (orchestrator/lab/etcd_tls.py); implies ``etcd``."""
        self.etcd = etcd or etcd_tls
        self.etcd_tls = etcd_tls
        if notify not in NOTIFY_MODES:
            raise ValueError(f"notify must be one of {NOTIFY_MODES}")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}")
        self.profile = profile
        self.haproxy = haproxy
        self.overrides = dict(LAB_OVERRIDES if overrides is None else overrides)
        lab_id = lab_id or secrets.token_hex(3)
        workdir = str(Path(workdir).absolute())
        hosts = [
            Host(name, i, str(Path(workdir) / name), f"{SUBNET}.{i}", MYSQL_PORT, ATLAS_ADMIN_PORT, netns=f"{PREFIX}-{lab_id}-h{i}")
            for i, name in enumerate(NAMES, 1)
        ]
        super().__init__(workdir, hosts, lab_id, persistent)
        self.template = template
        self.notify = notify
        self.bridge_ns = f"{PREFIX}-{lab_id}-br"
        self.client_ns = f"{PREFIX}-{lab_id}-cl"
        self.run_dir = RUN_ROOT / lab_id
        self.namespaces = [self.bridge_ns, *(h.netns for h in hosts if h.netns), self.client_ns]

    @classmethod
    def from_state(cls, state: Dict[str, Any], hosts: List[Host]) -> "NetnsLab":
        lab = cls(state["workdir"], state["id"], state.get("template"), state.get("notify", "hook"), state.get("persistent", False),
                  state.get("profile", "default"),
                  {k: named_override(k) for k in state.get("overrides", LAB_OVERRIDES)}, haproxy=state.get("haproxy", False),
                  etcd=state.get("etcd", False), etcd_tls=state.get("etcd_tls", False))
        return lab

    def extra_state(self) -> Dict[str, Any]:
        return {"template": self.template, "notify": self.notify, "profile": self.profile, "overrides": sorted(self.overrides),
                "haproxy": self.haproxy,
                "etcd": self.etcd,
                "etcd_tls": self.etcd_tls,
                "namespaces": self.namespaces,
                "run_dir": str(self.run_dir), "vip": VIP, "client_ns": self.client_ns}

    def save(self) -> None:
        super().save()
        # A copy where cleanup_stale() finds labs whose creator died without tearing down.
        if self.run_dir.is_dir():
            (self.run_dir / "lab.json").write_text((self.workdir / "lab.json").read_text())

    # -- build --------------------------------------------------------------------

    def _up(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for host in self.hosts.values():
            shutil.rmtree(host.path, ignore_errors=True)  # a new cluster every time; the template datadir stays
        secure_dir(self.run_dir)
        self.save()  # before the first namespace exists, so teardown always finds it
        hooks = self.run_dir / "hooks"
        hooks.mkdir(mode=0o755, exist_ok=True)
        for script in ("keepalived-notify", "check-mysql"):
            shutil.copyfile(HOOKS_DIR / script, hooks / script)
            os.chmod(hooks / script, 0o755)
        noop = hooks / "noop-notify"
        noop.write_text("#!/bin/sh\n# the benchmark's VRRP floor: a notify hook that does nothing\nexit 0\n")
        os.chmod(noop, 0o755)
        self._network()
        self.progress(f"namespaces {', '.join(self.namespaces)} and bridge ready")
        template = self.template or mariadb.create_template(str(self.workdir / "template" / "data"))
        if self.etcd_tls:
            from .etcd_tls import make_pki

            make_pki(self.workdir / "etcd-pki", [(name, client) for name, _, _, client in self.etcd_members()])
        for host in self.hosts.values():
            write_host_files(host, self.hosts[self.peer_of(host.name)], vip=VIP, witness=WITNESS, interface=IFACE,
                             overrides=self.overrides, etcd=self.etcd_endpoints() if self.etcd else (),
                             haproxy_socket=self._haproxy_socket(), etcd_tls=self.etcd_pki().orch_settings() if self.etcd_tls else None)
        if self.etcd:
            self.start_etcd(timeout)
        mariadb.start_together(self.dbs.values(), template)
        self.save()
        self.progress("mariadbd running on both hosts, both read-only")
        if self.etcd and self.notify == "hook":
            # The write token: a promotion takes it only under a lease orch maintain keeps alive,
            # so the maintainers run before keepalived's first MASTER (both servers read-only, no VIP).
            for host in self.hosts.values():
                self.start_maintainer(host)
            wait_for("both maintainers to hold an etcd lease",
                     lambda: all((h.file("state") / "etcd-lease.json").exists() for h in self.hosts.values()), timeout,
                     detail=lambda: "; ".join(tail(h.file("maintain.log"), 2) for h in self.hosts.values()))
        for host in self.hosts.values():
            self.start_atlas(host)
            self._write_keepalived_conf(host)
            if self.profile == "fast":
                self.start_watcher(host)
        h1, h2 = self.hosts["server1"], self.hosts["server2"]
        if self.notify == "noop":
            self._up_without_orch(h1, h2, timeout)
            return
        self.start_keepalived(h1)
        wait_for("server1 to become MASTER, take the VIP and be promoted by orch",
                 lambda: self.vip_holders() == ["server1"] and self.servers()["server1"].read_only is False, timeout,
                 detail=lambda: f"keepalived: {self.keepalived_state(h1)}; notify.log: {tail(h1.file('notify.log'), 4)}")
        self.progress("server1 is MASTER, holds the VIP and is writable (orch notify MASTER promoted it)")
        self.start_keepalived(h2)
        wait_for("server2 to become BACKUP and replicate from server1",
                 lambda: self.keepalived_state(h2) == "BACKUP" and self.servers()["server2"].replicating, timeout,
                 detail=lambda: f"keepalived: {self.keepalived_state(h2)}; {self.servers()['server2'].describe()}; "
                                f"notify.log: {tail(h2.file('notify.log'), 4)}")
        self.progress(f"server2 is BACKUP and replicates from server1 ({who_repointed(h2)})")
        create_app_schema(self.dbs["server1"])
        for host in self.hosts.values():
            if not self.etcd:
                self.start_maintainer(host)
        self.wait_healthy(timeout)
        self.progress("orch maintain added server2 to both Atlas stand-ins as read-only backend")
        if self.haproxy:
            from orchestrator.lab import haproxy

            haproxy.start(self, timeout)
            self.progress(f"HAProxy (conf/haproxy.cfg) in {self.client_ns}: writes on 127.0.0.1:{haproxy.WRITE_PORT} to the "
                          f"server whose orch answers /master, reads on :{haproxy.READ_PORT} to those answering /replica")

    def _haproxy_socket(self) -> str:
        """HAProxy's stats socket for haproxy.stats_sockets ("" without HAProxy). A UNIX socket is
        a file: orch in the hosts' namespaces reads the client namespace's HAProxy through it."""
        if not self.haproxy:
            return ""
        from orchestrator.lab import haproxy

        return str(haproxy.socket_path(self))

    # -- etcd (orch lab up --etcd) ---------------------------------------------------

    def etcd_members(self) -> List[Tuple[str, str, str, str]]:
        """(member name, namespace, peer address, client address): one in each host's namespace,
        one in the bridge's beside the witness. Clients use addresses of their own (ETCD_CLIENT_SUBNET)
        so that a drill can cut a host from etcd alone, its database traffic untouched."""
        members = [(f"etcd-{h.name}", h.netns or "", h.address, f"{ETCD_CLIENT_SUBNET}.{h.index}") for h in self.hosts.values()]
        members.append(("etcd-witness", self.bridge_ns, WITNESS, f"{ETCD_CLIENT_SUBNET}.254"))
        return members

    def etcd_endpoints(self) -> Tuple[str, ...]:
        return tuple(self.etcd_url(client) for _, _, _, client in self.etcd_members())

    def etcd_url(self, client: str) -> str:
        return f"{'https' if self.etcd_tls else 'http'}://{client}:{ETCD_CLIENT_PORT}"

    def etcd_pki(self) -> Any:
        """--etcd-tls: the lab's CA and certificates (orchestrator/lab/etcd_tls.py)."""
        from .etcd_tls import EtcdPki

        return EtcdPki(self.workdir / "etcd-pki")

    def etcd_settings(self, timeout: float = 2.0) -> Any:
        """An etcd: section for a client of the lab's etcd (the tests' own reads), TLS included."""
        from orchestrator.config import Etcd

        return Etcd(endpoints=self.etcd_endpoints(), timeout=timeout, **(self.etcd_pki().orch_settings() if self.etcd_tls else {}))

    def _etcd_open(self, url: str, data: Optional[bytes], timeout: float) -> Any:
        import urllib.request

        req = urllib.request.Request(url, data=data) if data is not None else url
        return urllib.request.urlopen(req, timeout=timeout, context=self.etcd_pki().ssl_context() if self.etcd_tls else None)

    def start_etcd(self, timeout: float = 30, names: Optional[List[str]] = None, state: str = "new") -> None:
        """Start the members (all, or ``names``), each in its namespace, and wait until each answers."""
        cluster = ",".join(f"{name}=http://{peer}:{ETCD_PEER_PORT}" for name, _, peer, _ in self.etcd_members())
        for name, ns, peer, client in self.etcd_members():
            if names is not None and name not in names:
                continue
            data = self.workdir / name
            argv = [ETCD, "--name", name, "--data-dir", str(data),
                    "--listen-client-urls", self.etcd_url(client),
                    "--advertise-client-urls", self.etcd_url(client),
                    "--listen-peer-urls", f"http://{peer}:{ETCD_PEER_PORT}",
                    "--initial-advertise-peer-urls", f"http://{peer}:{ETCD_PEER_PORT}",
                    "--initial-cluster", cluster, "--initial-cluster-state", state,
                    "--initial-cluster-token", f"orchlab-{self.lab_id}", "--pre-vote"]
            if self.etcd_tls:
                argv += self.etcd_pki().member_flags(name)
            self.procs[f"etcd.{name}"] = spawn(argv, self.workdir / f"{name}.log", self.workdir / f"{name}.pid", ns)
        self.save()
        for name, ns, _, client in self.etcd_members():
            if names is None or name in names:
                log_file = self.workdir / f"{name}.log"
                wait_for(f"etcd member {name} to answer", functools.partial(self.etcd_healthy, ns, client), timeout,
                         detail=functools.partial(tail, log_file, 3))
        self.progress("etcd running: " + ", ".join(m[0] for m in self.etcd_members() if names is None or m[0] in names))

    def etcd_healthy(self, ns: str, client: str) -> bool:
        def ask() -> bool:
            try:
                with self._etcd_open(self.etcd_url(client) + "/health", None, 1) as r:
                    return b'"true"' in r.read()
            except OSError:
                return False

        return in_netns(ns, ask, 5)

    def etcd_proc(self, name: str) -> Proc:
        return self.procs[f"etcd.{name}"]

    def etcd_leader(self) -> str:
        """The member name the members agree leads (asked from the witness's namespace)."""
        import json

        def ask() -> str:
            ids: Dict[str, str] = {}
            leader = ""
            for name, _, _, client in self.etcd_members():
                try:
                    with self._etcd_open(self.etcd_url(client) + "/v3/maintenance/status", b"{}", 1) as r:
                        status = json.loads(r.read())
                    ids[str(status["header"]["member_id"])] = name
                    leader = str(status.get("leader", "")) or leader
                except (OSError, KeyError, ValueError):
                    continue
            return ids.get(leader, "")

        return in_netns(self.bridge_ns, ask, 10)

    def etcd_move_leader(self, name: str) -> None:
        """Make member ``name`` the etcd leader (etcdctl move-leader, asked from the witness's namespace)."""
        import json

        client = next(c for n, _, _, c in self.etcd_members() if n == name)

        def member_id() -> int:
            with self._etcd_open(self.etcd_url(client) + "/v3/maintenance/status", b"{}", 2) as r:
                return int(json.loads(r.read())["header"]["member_id"])

        if self.etcd_leader() == name:
            return
        target = in_netns(self.bridge_ns, member_id, 10)
        run(["ip", "netns", "exec", self.bridge_ns, "etcdctl", "--endpoints", ",".join(self.etcd_endpoints()),
             *(self.etcd_pki().etcdctl_flags() if self.etcd_tls else []), "move-leader", f"{target:x}"], timeout=20)
        wait_for(f"etcd member {name} to lead", lambda: self.etcd_leader() == name, 10)

    def isolate_hosts(self, isolated: bool) -> None:
        """Cut the two hosts from each other only: both still reach the witness (and its etcd
        member) and the client (the bridge's port isolation: isolated ports do not talk to each other)."""
        for host in self.hosts.values():
            run(["bridge", "-n", self.bridge_ns, "link", "set", "dev", f"vh{host.index}", "isolated", "on" if isolated else "off"])

    def cut_from_etcd(self, host: Host, cut: bool) -> None:
        """The host's orch cannot reach etcd (its own member frozen, the others' client addresses
        unroutable from it); its database and VRRP traffic untouched."""
        own = f"etcd-{host.name}"
        self.etcd_proc(own).send(signal.SIGSTOP if cut else signal.SIGCONT)
        for name, _, _, client in self.etcd_members():
            if name != own:
                run(["ip", "-n", host.netns or "", "route", "add" if cut else "del", "prohibit", f"{client}/32"], check=cut)

    def _up_without_orch(self, h1: Host, h2: Host, timeout: float) -> None:
        """The benchmark's floor: keepalived with a notify hook that does nothing, so the lab sets roles itself."""
        s1, s2 = self.dbs["server1"], self.dbs["server2"]
        s1.sql("SET GLOBAL read_only = 0")
        mariadb.start_replication(s2, s1)
        create_app_schema(s1)
        self.start_keepalived(h1)
        wait_for("server1 to become MASTER and take the VIP", lambda: self.vip_holders() == ["server1"], timeout)
        self.start_keepalived(h2)
        wait_for("server2 to become BACKUP", lambda: self.keepalived_state(h2) == "BACKUP", timeout)
        self.progress("keepalived with a no-op notify hook: server1 holds the VIP, server2 is BACKUP (no orch)")

    def _network(self) -> None:
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        br = self.bridge_ns
        # A fixed MAC: a bridge otherwise takes its lowest port's, so a port put back after a
        # partition drill could change the witness's (the gateway's) MAC under the hosts' ARP
        # caches, and their witness pings would fail for seconds, as no real gateway does.
        run(["ip", "-n", br, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge"])
        run(["ip", "-n", br, "link", "set", "br0", "up"])
        run(["ip", "-n", br, "addr", "add", f"{WITNESS}/{PREFIXLEN}", "dev", "br0"])
        ends = [(h.netns, f"vh{h.index}", h.address) for h in self.hosts.values()] + [(self.client_ns, "vcl", CLIENT_ADDRESS)]
        for end_ns, port, address in ends:
            assert end_ns is not None  # every host of a netns lab has its namespace
            # Both ends are created directly in their namespaces: nothing appears in the host's.
            run(["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", IFACE, "netns", end_ns])
            run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", end_ns, "addr", "add", f"{address}/{PREFIXLEN}", "dev", IFACE])
            run(["ip", "-n", end_ns, "link", "set", IFACE, "up"])
        if self.etcd:  # the etcd members' client addresses (a subnet of their own on the same links)
            run(["ip", "-n", br, "addr", "add", f"{ETCD_CLIENT_SUBNET}.254/{PREFIXLEN}", "dev", "br0"])
            for h in self.hosts.values():
                run(["ip", "-n", h.netns or "", "addr", "add", f"{ETCD_CLIENT_SUBNET}.{h.index}/{PREFIXLEN}", "dev", IFACE])

    def _write_keepalived_conf(self, host: Host) -> None:
        hooks = self.run_dir / "hooks"
        hook = hooks / ("keepalived-notify" if self.notify == "hook" else "noop-notify")
        conf = self.run_dir / f"keepalived-{host.name}.conf"
        text = render_keepalived(host.name, hooks, host, hook, self.profile, fifo=self.notify == "hook")
        conf.write_text(text)
        os.chmod(conf, 0o644)
        if "vrrp_notify_fifo" in text:
            self.start_fifo_reader(host)

    # -- keepalived ---------------------------------------------------------------

    def start_watcher(self, host: Host) -> None:
        """orch watch-mysqld for the fast profile: the track file follows this host's mariadbd."""
        argv = [orch_bin(), "watch-mysqld", "--pid-file", self.dbs[host.name].pid_file, "--track-file", str(mysqld_track_file(host))]
        self.procs[f"{host.name}.watch"] = spawn(argv, host.file("watch.log"), host.file("watch.pid"), host.netns)
        self.save()

    def start_fifo_reader(self, host: Host) -> None:
        """orch notify-fifo: keepalived's events from its FIFO, one reader per host, started
        before keepalived (it creates the FIFO); its log is the host's notify.log."""
        fifo = fifo_path(host)
        argv = [orch_bin(), "-c", str(host.file("orch.yaml")), "notify-fifo", str(fifo)]
        self.procs[f"{host.name}.fifo"] = spawn(argv, host.file("notify.log"), host.file("fifo.pid"), host.netns)
        self.save()
        wait_for(f"orch notify-fifo on {host.name} to create {fifo}", fifo.exists, 10,
                 detail=lambda: tail(host.file("notify.log"), 3))

    def start_keepalived(self, host: Host) -> None:
        base = self.run_dir / host.name
        argv = [
            KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "--use-file", str(self.run_dir / f"keepalived-{host.name}.conf"),
            "--pid", f"{base}.keepalived.pid", "--vrrp_pid", f"{base}.vrrp.pid", "--checkers_pid", f"{base}.checkers.pid",
        ]
        self.procs[f"{host.name}.keepalived"] = spawn(argv, host.file("keepalived.log"), host.file("keepalived.launch.pid"), host.netns)
        self.save()

    def keepalived_procs(self, host: Host) -> List[Proc]:
        """keepalived's parent (recorded) and its VRRP child (from its pid file), while alive."""
        found = []
        parent = self.procs.get(f"{host.name}.keepalived")
        if parent is not None and parent.alive():
            found.append(parent)
            try:
                child = Proc.of(int((self.run_dir / f"{host.name}.vrrp.pid").read_text().strip()))
            except (OSError, ValueError):
                child = None
            if child is not None and _parent_pid(child.pid) == parent.pid:
                found.append(child)
        return found

    def kill_keepalived(self, host: Host) -> List[int]:
        """SIGKILL keepalived (VRRP child, then parent): a crash, so the VIP is not released.

        The child goes first: it gets SIGTERM when its parent dies and would then leave
        gracefully (priority 0 advert, STOP notify), which is not a crash.
        """
        procs = list(reversed(self.keepalived_procs(host)))
        for p in procs:
            p.send(signal.SIGKILL)
        for p in procs:
            p.wait_exit(5)
        # Killed, they may stay zombies for a while (whoever reaps orphans here may be slow),
        # and keepalived refuses to start while a pid in its pid files exists ("daemon is
        # already running"): a crash leaves no pid files a restart must honour.
        base = self.run_dir / host.name
        for suffix in ("keepalived.pid", "vrrp.pid", "checkers.pid"):
            Path(f"{base}.{suffix}").unlink(missing_ok=True)
        return [p.pid for p in procs]

    def keepalived_state(self, host: Host) -> str:
        """The last state keepalived logged (MASTER, BACKUP, FAULT), or 'down'/'starting'."""
        if not self.keepalived_procs(host):
            return "down"
        try:
            text = host.file("keepalived.log").read_text(errors="replace")
        except OSError:
            return "starting"
        # The log accumulates across restarts: only lines after the last start count.
        start = text.rfind("Starting Keepalived")
        states = _STATE_LINE.findall(text[start:] if start >= 0 else text)
        return states[-1][1] if states else "starting"

    def host_tags(self, host: Host) -> List[str]:
        return [f"keepalived {self.keepalived_state(host)}"]

    def status_lines(self) -> List[str]:
        lines = super().status_lines()
        if self.haproxy:
            from orchestrator.lab import haproxy

            lines += [f"  {line}" for line in haproxy.status_lines(self)]
        return lines

    def daemon_problems(self) -> List[str]:
        """Also a keepalived still in FAULT: not healed, since leaving FAULT fires BACKUP, which
        fences and re-points its node (a drill's next step would race with that)."""
        problems = super().daemon_problems()
        for host in self.hosts.values():
            if self.keepalived_state(host) == "FAULT":
                problems.append(f"[keepalived] {host.name}'s keepalived is in FAULT: its BACKUP event (fence, re-point) is still to come")
        return problems

    # -- faults -------------------------------------------------------------------

    def link(self, host: Host, up: bool) -> None:
        run(["ip", "-n", host.netns or "", "link", "set", IFACE, "up" if up else "down"])

    def detach_port(self, host: Host, detached: bool) -> None:
        """Pull the host's port out of the bridge (or put it back): a partition with the carrier up."""
        run(["ip", "-n", self.bridge_ns, "link", "set", f"vh{host.index}", "nomaster" if detached else "master"]
            + ([] if detached else ["br0"]))

    def freeze_keepalived(self, host: Host, frozen: bool) -> List[int]:
        """SIGSTOP (or SIGCONT) keepalived's processes: a frozen keepalived keeps its VIP and sends nothing."""
        procs = self.keepalived_procs(host)
        for p in procs:
            p.send(signal.SIGSTOP if frozen else signal.SIGCONT)
        return [p.pid for p in procs]

    def freeze_host(self, host: Host, frozen: bool) -> List[int]:
        """SIGSTOP (or SIGCONT) every process in the host's namespace (mariadbd, keepalived,
        orch, the Atlas stand-in): a paused VM or a stalled live migration. The kernel still
        answers (ARP, TCP handshakes), nothing above it does."""
        ns = host.netns or ""
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
            except ProcessLookupError:
                pass
        return pids

    def freeze_mysqld(self, name: str, frozen: bool) -> int:
        """SIGSTOP (or SIGCONT) a mariadbd: its port accepts connections, nothing answers."""
        pid = self.dbs[name].pid or 0
        if pid:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        return pid

    def local_writer(self, host: Host, name: str) -> Writer:
        """A writer on the host itself, to its own server (stranded there when the host is cut off)."""
        return Writer(host.address, MYSQL_PORT, self.workdir, host.file("app.pass"), netns=host.netns, name=name)

    # -- observation ----------------------------------------------------------------

    def vip_holders(self) -> List[str]:
        return [h.name for h in self.hosts.values() if holds_address(h.netns or "", VIP)]

    def atlas_backends(self, host: Host) -> Optional[List[Tuple[int, str, str, str]]]:
        from orchestrator.atlas.client import AtlasAdmin
        from orchestrator.errors import AtlasError

        def query() -> Optional[List[Tuple[int, str, str, str]]]:
            try:
                with AtlasAdmin(host.atlas_host, host.atlas_port, ATLAS_ADMIN.user, ATLAS_ADMIN.password, timeout=2.0) as admin:
                    return [(b.ndx, b.address, b.state, b.type) for b in admin.backends()]
            except AtlasError:
                return None

        return in_netns(host.netns or "", query, 10)

    def writer(self, name: str = "writer", pause: float = 0.002, select: bool = False, connect_timeout: float = 0.25) -> Writer:
        any_host = self.hosts["server1"]
        return Writer(VIP, MYSQL_PORT, self.workdir, any_host.file("app.pass"), netns=self.client_ns, pause=pause, name=name,
                      select=select, connect_timeout=connect_timeout)

    # -- the sandbox's failover -----------------------------------------------------

    def failover(self, out: Any, timeout: float = 30) -> bool:
        """kill -9 the master's mysqld with a client writing through the VIP; narrate until healed."""
        problems = self.health()
        if problems:
            out.write("the lab is not healthy, so a failover would show nothing useful:\n  " + "\n  ".join(problems) + "\n")
            return False
        old, new = self.master() or "", ""
        new = self.peer_of(old)
        oh, nh = self.hosts[old], self.hosts[new]
        offsets = {h.name: log_size(h.file("notify.log")) for h in self.hosts.values()}
        n = Narrator(out)
        out.write(f"{old} is the master and holds the VIP {VIP}; {new} replicates from it.\n"
                  f"A client in netns {self.client_ns} inserts a row every few ms through the VIP as user "
                  f"{APP_CREDENTIALS.user}.\n")
        writer = self.writer("failover")
        sampler = Sampler(self.dbs)
        # The timeline (report.py): read_only samples, the VIP holder every 50 ms, the client's writes.
        rec = self.recording = Recording(self.mode, tuple(self.hosts), old, new, read_only=sampler.samples)
        vip_watch = VipWatch(rec, self.vip_holders)
        try:
            writer.start()
            sampler.start()
            vip_watch.__enter__()
            time.sleep(0.5)
            t0 = n.start()
            pid = self.kill_mysqld(old)
            rec.fault_at, rec.fault_text = t0, f"kill -9 mysqld on {old} (pid {pid})"
            n.say(f"kill -9 mysqld on {old} (pid {pid})")
            wait_for(f"keepalived on {old} to enter FAULT", lambda: self.keepalived_state(oh) == "FAULT", timeout)
            rec.fault_seen_at, rec.fault_seen_text = time.monotonic(), f"keepalived on {old} entered FAULT (the lab watched its state)"
            n.say(f"keepalived on {old}: FAULT (the health check hooks/check-mysql failed twice, 1 s apart): it gives up the VIP")
            t_vip = wait_for(f"the VIP to move to {new}", lambda: self.vip_holders() == [new] and time.monotonic(), timeout, interval=0.01)
            n.say(f"keepalived on {new}: MASTER, VIP {VIP} is on {new} now; keepalived runs the notify hook", t_vip)
            wait_for(f"{new} to become writable", lambda: self.servers()[new].read_only is False, timeout, interval=0.01,
                     detail=lambda: tail(nh.file("notify.log"), 3))
            n.say(f"{new} is writable: {who_promoted(nh)} applied its relay log, reset replication, set read_only=0")
            first = wait_for("writes through the VIP to succeed again", lambda: writer.acked_since(t_vip), timeout, interval=0.01,
                             detail=lambda: tail(writer.log_path, 3))
            before = [a for a in writer.acked() if a[1] < t0]
            gap = first[0][1] - (before[-1][1] if before else t0)
            n.say(f"writes through the VIP succeed again: the client saw {gap:.2f}s without a successful insert", first[0][1])
            self.start_mysqld(old)
            n.say(f"mysqld on {old} started again: it comes back read-only (read_only=ON in its my.cnf)")
            wait_for(f"keepalived on {old} to enter BACKUP", lambda: self.keepalived_state(oh) == "BACKUP", timeout)
            n.say(f"keepalived on {old}: BACKUP (the check passed twice; nopreempt keeps the VIP on {new})")
            wait_for(f"{old} to replicate from {new}",
                     lambda: self.servers()[old].replicating and self.servers()[old].source == nh.backend, timeout,
                     detail=lambda: self.servers()[old].describe())
            n.say(f"{old} replicates from {new}: {who_repointed(oh)} (GTID auto-positioning)")
            writer.stop()
            acked = [a[0] for a in writer.acked()]
            self.wait_healthy(timeout, acked, sampler)
            st = self.servers()[new]
            n.say(f"healed: GTID sets equal ({st.gtid_binlog_state}); orch maintain put {old} ({oh.backend}) back "
                  f"in both Atlas stand-ins as read-only backend")
            n.note(f"{len(acked)} acknowledged inserts, all present on {new}; never two writable servers "
                   f"({len(sampler.samples)} read_only samples of both, every 50 ms)")
            rec.healed = True
            return True
        except LabError as exc:
            out.write(f"the cluster did not heal: {exc}\n")
            return False
        finally:
            writer.stop()
            sampler.stop()
            vip_watch.__exit__()
            rec.ended = time.monotonic()
            rec.acked = [a[1] for a in writer.acked()]
            out.write("orch's decisions (each host's notify.log):\n")
            for h in self.hosts.values():
                for line in orch_outcomes(h.file("notify.log"), offsets[h.name]):
                    out.write(f"  {h.name} {line}\n")

    # -- teardown -----------------------------------------------------------------

    def down(self) -> None:
        """Stop every process we started (by PID), then whatever still runs in our namespaces, then delete them."""
        problems = []
        try:
            for host in self.hosts.values():
                self.kill_keepalived(host)  # first, and without STOP events that would start orch runs
            self.stop_processes()
        except Exception as exc:  # keep going: the namespaces must go in any case
            problems.append(str(exc))
        existing = set(run(["ip", "netns", "list"], check=False).stdout.split())
        for ns in self.namespaces:
            if ns not in existing:
                continue
            # Anything still inside a namespace of ours was started by this lab (a notify run, a client).
            problems += remove_namespace(ns)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.procs = {}
        if (self.workdir / "lab.json").exists():
            (self.workdir / "lab.json").unlink()
        if problems:
            raise LabError("teardown incomplete: " + "; ".join(problems))


def cleanup_stale(verbose: Callable[[str], None] = lambda text: None) -> List[str]:
    """Tear down labs whose creating process died without doing it (an aborted test run).

    Labs started by ``orch lab up`` are persistent and left alone.
    """
    removed: List[str] = []
    if not RUN_ROOT.is_dir():
        return removed
    import json

    for state_file in RUN_ROOT.glob("*/lab.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if state.get("persistent") or _pid_alive(int(state.get("owner", 0))):
            continue
        lab = NetnsLab.from_state(state, [Host(**h) for h in state["hosts"]])
        lab.adopt(state)
        verbose(f"removing stale lab {lab.lab_id} (creator pid {state.get('owner')} is gone)")
        try:
            lab.down()
        except LabError as exc:
            verbose(str(exc))
        removed.append(lab.lab_id)
    return removed


def _parent_pid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _pid_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


def remove_namespace(ns: str) -> List[str]:
    """SIGKILL what still runs inside ``ns`` (only we start processes there), then delete it.

    Returns the problems met (empty when it is gone).
    """
    problems = []
    deadline = time.monotonic() + 10
    while True:
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
        strays = [p for p in (Proc.of(pid) for pid in pids) if p is not None]
        if not strays:
            break
        if time.monotonic() > deadline:
            problems.append(f"processes {[p.pid for p in strays]} survive in {ns}")
            break
        for p in strays:
            p.send(signal.SIGKILL)
        time.sleep(0.05)
    result = run(["ip", "netns", "del", ns], check=False)
    if result.returncode != 0:
        problems.append(f"ip netns del {ns}: {result.stderr.strip()}")
    return problems
