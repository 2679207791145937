"""A lab host: its names, ports and addresses, and the files its daemons run with.

Every lab host gets an orch config, password files, an Atlas config and the health
check's client defaults, written by :func:`write_host_files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from orchestrator.lab import mariadb
from orchestrator.semisync import NO_FALLBACK_MS
from orchestrator.shipped import CONF_DIR, HOOKS_DIR  # the source tree's, or the installed package's copies

REPO = Path(__file__).resolve().parents[2]
NAMES = ("server1", "server2")
CLUSTER = "orchlab"
VRRP_INSTANCE = "VI_1"
ATLAS_ADMIN = mariadb.Credentials("admin", "atlas-admin-pw")  # lab-only dummy credentials
# The application's account. It must not hold READ ONLY ADMIN (GRANT ALL includes it in
# MariaDB >= 10.11): read_only does not stop such an account, so the orch account, which
# has ALL, wrote into a fenced replica through the VIP when the drills used it.
APP_CREDENTIALS = mariadb.Credentials("app", "app-secret-pw")
DRILL_TABLE = ("test", "drill")

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


def write_host_files(host: Host, peer: Host, vip: str = "", rw_backend: str = "", ro_backends: Iterable[str] = (),
                     witness: str = "127.0.0.1", interface: str = "") -> None:
    """orch.yaml, password files, the Atlas config and the health check's client defaults.

    Atlas's read-write backend is the VIP (``rw_backend`` where there is none); orch
    manages only the read-only backends, so the lab starts with none and lets
    ``orch maintain`` add the replica.
    """
    import yaml

    host.path.mkdir(parents=True, exist_ok=True)
    host.file("state").mkdir(mode=0o700, exist_ok=True)  # keepalived creates the track file in it
    write_secret(host.file("mysql.pass"), mariadb.ORCH_CREDENTIALS.password)
    write_secret(host.file("repl.pass"), mariadb.REPL_CREDENTIALS.password)
    write_secret(host.file("atlas.pass"), ATLAS_ADMIN.password)
    write_secret(host.file("app.pass"), APP_CREDENTIALS.password)
    cfg: Dict[str, Any] = {
        "cluster": CLUSTER,
        "flavor": "auto",
        "self": host.name,
        "nodes": {h.name: {"host": h.address, "port": h.port} for h in sorted((host, peer), key=lambda h: h.index)},
        "mysql": {"user": mariadb.ORCH_CREDENTIALS.user, "password_file": "mysql.pass", "connect_timeout": 1},
        "replication": {"user": mariadb.REPL_CREDENTIALS.user, "password_file": "repl.pass"},
        # block_seconds 0: drills and the chaos test fail over back and forth within minutes (anti-flapping would refuse)
        "failover": {"catchup_timeout": 10, "lock_timeout": 30, "semi_sync": True, "witness": witness, "block_seconds": 0},
        "state_dir": str(host.file("state")),
        # the loopback lab has no VIP: nothing to tell stale events by
        "keepalived": {"instance": VRRP_INSTANCE, **({"vip": vip} if vip else {"vip_check": False}),
                       **({"track_file": str(track_file(host)), "interface": interface} if interface else {})},
        "atlas": [{
            "name": f"atlas-{host.name}",
            "admin": {"host": host.atlas_host, "port": host.atlas_port, "user": ATLAS_ADMIN.user, "password_file": "atlas.pass"},
            "config_file": str(host.file("atlas.cnf")),
        }],
        "maintainer": {"interval": 1, "max_lag": 10},
    }
    config = host.file("orch.yaml")
    config.write_text(f"# {host.name} in the orch lab (written by orchestrator.lab)\n" + yaml.safe_dump(cfg, sort_keys=False))
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
