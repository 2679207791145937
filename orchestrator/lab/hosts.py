"""A lab host: its names, ports and addresses, and the files its daemons run with.

Every lab host gets an orch config, password files, an Atlas config and the health
check's client defaults, written by :func:`write_host_files`. The orch config is
conf/orch.yaml as shipped with the lab's addresses, names, ports and paths put in
(SUBSTITUTED) and the few values a test needs otherwise (LAB_OVERRIDES, each with its
reason); tests/test_lab_config.py fails on any other difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from orchestrator.lab import mariadb
from orchestrator.semisync import NO_FALLBACK_MS
from orchestrator.shipped import CONF_DIR, HOOKS_DIR  # the source tree's, or the installed package's copies

REPO = Path(__file__).resolve().parents[2]
NAMES = ("server1", "server2")
VRRP_INSTANCE = "VI_1"
ATLAS_ADMIN = mariadb.Credentials("user", "atlas-admin-pw")  # conf/orch.yaml's user (Atlas's default); a lab-only password
# The application's account. It must not hold READ ONLY ADMIN (GRANT ALL includes it in
# MariaDB >= 10.11): read_only does not stop such an account, so the orch account, which
# has ALL, wrote into a fenced replica through the VIP when the drills used it.
APP_CREDENTIALS = mariadb.Credentials("app", "app-secret-pw")
DRILL_TABLE = ("test", "drill")
API_TOKEN = "lab-api-token-7f3c9a"  # http.token_file's token on both lab hosts (a lab-only secret)

# Lossless semi-synchronous replication on both servers, without fallback (orch's
# failover.semi_sync): a commit is acknowledged to the client only once the replica has
# it in its relay log (AFTER_SYNC), and a master whose replica is gone waits instead of
# acknowledging; orch's maintainer switches the wait off only while the witness answers
# (the replica died, the master is not isolated), a promotion switches it off on the new
# master, and the maintainer back on once the peer has caught up. init_rpl_role=SLAVE
# makes a crashed server drop, during crash recovery, the binlog tail no replica
# acknowledged (MariaDB >= 10.6.19/10.11.9), so an old master does not come back with
# errant GTIDs after a kill -9.
SEMISYNC = {
    "rpl_semi_sync_master_enabled": "OFF",  # orch switches it on on the master (a replica's own wait would block its applier)
    "rpl_semi_sync_slave_enabled": "ON",
    "rpl_semi_sync_master_wait_point": "AFTER_SYNC",
    "rpl_semi_sync_master_wait_no_slave": "ON",
    "rpl_semi_sync_master_timeout": str(NO_FALLBACK_MS),
    "init_rpl_role": "SLAVE",
}


@dataclass
class Host:
    """One lab host: where its server listens and where its files live."""

    name: str
    index: int
    dir: str
    address: str
    port: int
    atlas_port: int
    netns: Optional[str] = None
    atlas_host: str = "127.0.0.1"

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def backend(self) -> str:
        """This server as Atlas lists it."""
        return f"{self.address}:{self.port}"

    def file(self, name: str) -> Path:
        return self.path / name

    def db(self) -> mariadb.MariaDBInstance:
        # read_only in my.cnf: a server that restarts comes back fenced; orch decides who writes.
        options = {"read_only": "ON", "slave_net_timeout": "5", **SEMISYNC}
        if self.netns:
            options["bind_address"] = "0.0.0.0"  # its namespace has only its own address and, at times, the VIP
        return mariadb.MariaDBInstance(
            self.name, str(self.path / "db"), self.port, self.index,
            host=self.address, netns=self.netns, extra_options=options,
        )


def track_file(host: Host) -> Path:
    """keepalived's track_file on this host (orch's keepalived.track_file)."""
    return host.file("state") / "keepalived.track"


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


# --------------------------------------------------------------------------- the orch config

REMOVE = object()  # an override value: the lab leaves the key out


@dataclass(frozen=True)
class Override:
    """A lab value that differs from conf/orch.yaml, and why a test needs it."""

    value: Any
    reason: str
    labs: Tuple[str, ...] = ("netns", "loopback", "chaos")  # the labs it applies to (chaos: tests/chaos.py)


# Every way the labs' orch.yaml differs from conf/orch.yaml, besides where things are
# (SUBSTITUTED below): the namespace lab (drills, partition drills, `orch lab`, the
# benchmarks), the loopback lab and the randomized fault test (tests/chaos.py, "chaos").
# tests/test_lab_config.py fails on any other difference. Keep it short: a value belongs
# here only when a test cannot run with the shipped one.
LAB_OVERRIDES: Dict[str, Override] = {
    "failover.block_seconds": Override(
        0, "the drills, partition drills and the sandbox fail over back and forth within minutes on one cluster "
           "(test_flapping_three_failovers_in_quick_succession three times in a row); anti-flapping would refuse "
           "the second. test_drills.py runs one drill with the shipped 3600."),
    "maintainer.interval": Override(
        1, "the partition drills and the randomized fault test bound two writable servers by one interval + 1 s "
           "and expect convergence within 30 s of a heal; 1 s keeps that bound tight and the drills short (the fault "
           "test also runs its maintainer passes at this cadence). test_drills.py runs one drill with the shipped 5."),
    "log.syslog": Override(
        False, "the lab's daemons log to files in the lab directory; syslog would send every lab run into the "
               "host's journal"),
    "keepalived.vip": Override(
        REMOVE, "the loopback lab has no VIP (and no keepalived): nothing to tell stale events by", ("loopback",)),
    "keepalived.vip_check": Override(
        False, "the loopback lab has no VIP: both servers share one host", ("loopback",)),
    "keepalived.track_file": Override(
        REMOVE, "no keepalived reads a track file: the loopback lab runs none, the randomized fault test plays "
                "keepalived by moving the VIP itself (orch's hand-over, writing 1 and waiting for the VIP to leave, "
                "would never complete)", ("loopback", "chaos")),
    "keepalived.interface": Override(
        REMOVE, "the loopback lab has no VRRP interface (no VIP to check by ARP)", ("loopback",)),
    "atlas": Override(
        REMOVE, "the randomized fault test runs no Atlas: it checks the servers, the VIP and the writer", ("chaos",)),
    "maintainer.metrics_port": Override(
        0, "the loopback lab runs both hosts' maintainers on one host: they cannot both listen on the shipped "
           "port (each namespace lab host has its own)", ("loopback",)),
}

# Values that one test opts in to (hosts.with_opt_in), never a lab's default: a behaviour
# the shipped value hides, which docs promise for operators who change it. Each names its
# test. tests/test_lab_config.py holds them to LAB_OVERRIDES' rules.
OPT_IN_OVERRIDES: Dict[str, Override] = {
    "failover.semi_sync": Override(
        False, "tests/test_etcd_no_semisync.py: docs/etcd.md promises that, without semi-sync, an etcd outage "
               "fences the master and the maintainer re-opens it once etcd answers again; with semi-sync as "
               "shipped the master never fences (the replica vouches for the writes), so only this shows it",
        ("netns",)),
}


def with_opt_in(*keys: str, base: Optional[Mapping[str, Override]] = None) -> Dict[str, Override]:
    """``base`` (LAB_OVERRIDES, or a subset from overrides_except) plus the named OPT_IN_OVERRIDES."""
    unknown = set(keys) - set(OPT_IN_OVERRIDES)
    if unknown:
        raise ValueError(f"not opt-in overrides: {', '.join(sorted(unknown))}")
    return {**(LAB_OVERRIDES if base is None else base), **{k: OPT_IN_OVERRIDES[k] for k in keys}}


def named_override(key: str) -> Override:
    """A recorded override by its key (orch lab commands rebuild a lab from lab.json)."""
    return LAB_OVERRIDES[key] if key in LAB_OVERRIDES else OPT_IN_OVERRIDES[key]


# The values the lab puts in because its hosts live elsewhere than conf/orch.yaml's
# example hosts: addresses, node names, ports and file paths, nothing that changes
# how orch behaves. A dotted key names a value; "nodes" the whole section.
SUBSTITUTED: Dict[str, str] = {
    "self": "this lab host's node name",
    "nodes": "the lab hosts' addresses and ports",
    "mysql.password_file": "a file in the lab host's directory",
    "replication.password_file": "a file in the lab host's directory",
    "failover.witness": "the lab's gateway (the bridge's address; 127.0.0.1 in the loopback lab)",
    "state_dir": "a directory in the lab host's directory",
    "atlas.0.admin.host": "the lab host's Atlas stand-in",
    "atlas.0.admin.port": "the lab host's Atlas stand-in",
    "atlas.0.admin.password_file": "a file in the lab host's directory",
    "atlas.0.config_file": "the Atlas stand-in's config file in the lab host's directory",
    "keepalived.vip": "the lab's VIP",
    "keepalived.track_file": "a file in the lab host's state directory (keepalived's conf names the same)",
    "keepalived.interface": "the lab host's interface",
    "http.token_file": "a file in the lab host's directory (the same token on both hosts)",
    "haproxy.stats_sockets": "the HAProxy lab's stats socket in its run directory (none, as shipped, without HAProxy)",
}

# What a caller passes to run with block_seconds and maintainer.interval as shipped.
SHIPPED_TIMING = ("failover.block_seconds", "maintainer.interval")


def overrides_except(keys: Iterable[str]) -> Dict[str, Override]:
    """LAB_OVERRIDES without ``keys``: those stay exactly as conf/orch.yaml has them."""
    keys = set(keys)
    unknown = keys - set(LAB_OVERRIDES)
    if unknown:
        raise ValueError(f"not lab overrides: {', '.join(sorted(unknown))}")
    return {k: v for k, v in LAB_OVERRIDES.items() if k not in keys}


def shipped_config() -> Dict[str, Any]:
    """conf/orch.yaml as shipped (from the source tree or the installed package)."""
    import yaml

    return yaml.safe_load((CONF_DIR / "orch.yaml").read_text())


def _set(cfg: Dict[str, Any], key: str, value: Any) -> None:
    """Set (or, with REMOVE, drop) a dotted key that conf/orch.yaml has."""
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is REMOVE:
        node.pop(last, None)
    else:
        if last not in node:
            raise KeyError(f"{key}: not in {CONF_DIR / 'orch.yaml'} (the lab only puts in and overrides shipped keys)")
        node[last] = value


def lab_config(host: Host, peer: Host, lab: str, vip: str = "", witness: str = "127.0.0.1", interface: str = "",
               overrides: Optional[Mapping[str, Override]] = None, etcd: Tuple[str, ...] = (),
               haproxy_socket: str = "", etcd_tls: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """conf/orch.yaml for a lab host: SUBSTITUTED keys put in, then the overrides (LAB_OVERRIDES
    unless given) that apply to ``lab`` ("netns", "loopback" or "chaos"). ``etcd``: the lab's
    etcd client URLs (orch lab up --etcd): the optional etcd: section as conf/orch.yaml's
    commented example has it, with the lab's endpoints."""
    cfg = shipped_config()
    values: Dict[str, Any] = {
        "self": host.name,
        "mysql.password_file": "mysql.pass",
        "replication.password_file": "repl.pass",
        "failover.witness": witness,
        "state_dir": str(host.file("state")),
        "atlas.0.admin.host": host.atlas_host,
        "atlas.0.admin.port": host.atlas_port,
        "atlas.0.admin.password_file": "atlas.pass",
        "atlas.0.config_file": str(host.file("atlas.cnf")),
        "keepalived.vip": vip,
        "keepalived.track_file": str(track_file(host)),
        "keepalived.interface": interface,
        "http.token_file": str(host.file("api.token")),
        "haproxy.stats_sockets": [haproxy_socket] if haproxy_socket else [],
    }
    if set(values) | {"nodes"} != set(SUBSTITUTED):
        raise AssertionError("lab_config and SUBSTITUTED disagree")  # one list of what the lab puts in
    cfg["nodes"] = {h.name: {"host": h.address, "port": h.port} for h in sorted((host, peer), key=lambda h: h.index)}
    for key, value in values.items():
        _set(cfg, key, value)
    for key, override in (LAB_OVERRIDES if overrides is None else overrides).items():
        if lab in override.labs:
            _set(cfg, key, override.value)
    if etcd:
        cfg["etcd"] = {"endpoints": list(etcd), "ttl": 5, "prefix": "/orch"}  # conf/orch.yaml's example values
        cfg["etcd"].update(etcd_tls or {})  # orch lab up --etcd-tls: cacert, cert, key
    return cfg


def write_host_files(host: Host, peer: Host, vip: str = "", rw_backend: str = "", ro_backends: Iterable[str] = (),
                     witness: str = "127.0.0.1", interface: str = "",
                     overrides: Optional[Mapping[str, Override]] = None, etcd: Tuple[str, ...] = (),
                     haproxy_socket: str = "", etcd_tls: Optional[Mapping[str, str]] = None) -> None:
    """orch.yaml (:func:`lab_config`), password files, the Atlas config and the health check's client defaults.

    Without a ``vip`` the host belongs to the loopback lab. Atlas's read-write backend is
    the VIP (``rw_backend`` where there is none); orch manages only the read-only
    backends, so the lab starts with none and lets ``orch maintain`` add the replica.
    """
    import yaml

    host.path.mkdir(parents=True, exist_ok=True)
    host.file("state").mkdir(mode=0o700, exist_ok=True)  # keepalived creates the track file in it
    write_secret(host.file("mysql.pass"), mariadb.ORCH_CREDENTIALS.password)
    write_secret(host.file("repl.pass"), mariadb.REPL_CREDENTIALS.password)
    write_secret(host.file("atlas.pass"), ATLAS_ADMIN.password)
    write_secret(host.file("app.pass"), APP_CREDENTIALS.password)
    write_secret(host.file("api.token"), API_TOKEN)
    cfg = lab_config(host, peer, "netns" if vip else "loopback", vip=vip, witness=witness, interface=interface,
                     overrides=overrides, etcd=etcd, haproxy_socket=haproxy_socket, etcd_tls=etcd_tls)
    config = host.file("orch.yaml")
    config.write_text(f"# {host.name} in the orch lab: conf/orch.yaml with the lab's hosts and paths and\n"
                      f"# orchestrator.lab.hosts.LAB_OVERRIDES (written by orchestrator.lab)\n"
                      + yaml.safe_dump(cfg, sort_keys=False))
    os.chmod(config, 0o600)
    rw = f"{vip}:{host.port}" if vip else (rw_backend or host.backend)
    lines = [
        "[mysql-proxy]",
        f"admin-address = {host.atlas_host}:{host.atlas_port}",
        f"admin-username = {ATLAS_ADMIN.user}",
        f"admin-password = {ATLAS_ADMIN.password}",
        f"proxy-backend-addresses = {rw}",
    ]
    ro = list(ro_backends)
    if ro:
        lines.append(f"proxy-read-only-backend-addresses = {','.join(ro)}")
    atlas = host.file("atlas.cnf")
    atlas.write_text("\n".join(lines) + "\n")
    os.chmod(atlas, 0o600)
    # The health check's credentials: a client defaults file, never argv.
    check = host.file("check.cnf")
    check.write_text(
        "[client]\n"
        f"host={host.address}\nport={host.port}\n"
        f"user={mariadb.ORCH_CREDENTIALS.user}\npassword={mariadb.option_value(mariadb.ORCH_CREDENTIALS.password)}\n"
        "connect_timeout=1\n"
    )
    os.chmod(check, 0o600)
