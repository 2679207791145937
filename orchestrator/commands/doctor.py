"""orch doctor: everything that must hold before this pair can fail over safely.

Pure checks take gathered facts and return ``Check`` values (name, pass / warn / fail,
what was seen, the fix in one sentence); one thin gatherer reads both servers, every
Atlas and, when given, keepalived's configuration. Exit 0 when nothing fails.

What differs between MySQL and MariaDB is data in ``flavors/`` (variables, privileges,
where a variable's value came from), keyed by the flavor name observe() reports;
keepalived.conf is parsed and queried by ``keepalived/conf.py``. Here are the checks.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from ..config import Config, Keepalived
from ..errors import EXIT_FAILED, EXIT_OK, DatabaseError, UsageError
from ..flavors import requirements
from ..flavors.common import ON, SEMI_SYNC_NAMES, parse_grants, version_tuple
from ..keepalived import conf
from ..keepalived.health import HealthCheckFacts, run_health_check

if TYPE_CHECKING:
    from ..db import Server
    from ..model import ClusterView, NodeState

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> Dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class ServerFacts:
    """What the gatherer read from one server beyond observe()'s view."""

    name: str
    reachable: bool
    error: str = ""
    flavor: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)  # lower-case name -> value as text
    read_only_origin: str = ""  # config | runtime | default | "" (unknown)
    grants: Tuple[str, ...] = ()  # privilege names on *.* (never the GRANT lines: they hold password hashes)
    grants_error: str = ""
    roles: bool = False  # privileges may also come through roles (not followed)
    repl_login: Optional[str] = None  # None: not tried; "": logged in; else why not


# --- reading variables ----------------------------------------------------------------------


def _semi(variables: Mapping[str, str], what: str) -> Optional[str]:
    """A semi-sync variable under its MySQL 8.0.26+ or older/MariaDB name (None: no plugin)."""
    for name in SEMI_SYNC_NAMES[what]:
        if name in variables:
            return variables[name]
    return None


def _on(value: Optional[str]) -> bool:
    return str(value or "").upper() in ON


# --- server checks -------------------------------------------------------------------------


def _verdict(name: str, ok: bool, passed: str, failed: str, fix: str, status: str = FAIL) -> Check:
    """One setting's check: PASS with what was seen, else ``status`` with why and the fix."""
    return Check(name, PASS, passed) if ok else Check(name, status, failed, fix)


def check_binlog(s: ServerFacts) -> List[Check]:
    """Binary log, GTIDs, log_slave_updates, ROW format with FULL images."""
    v = s.variables
    name = f"{s.name}: "
    out = [_verdict(name + "binary log", _on(v.get("log_bin")), "log_bin=ON",
                    "log_bin is OFF: a replica cannot follow this server", "set log_bin in my.cnf and restart the server")]
    gtids = requirements(s.flavor).GTIDS
    out.append(_verdict(name + "GTIDs", gtids.met(v), gtids.passed, gtids.seen(v), gtids.fix, gtids.status))
    out.append(_verdict(name + "log_slave_updates", _on(v.get("log_replica_updates", v.get("log_slave_updates"))),
                        "replicated transactions are written to the binary log",
                        "OFF: this server's binary log lacks what it replicated, so after a failover the other server cannot catch up from it",
                        "set log_slave_updates=ON (MySQL: log_replica_updates=ON) in my.cnf and restart"))
    fmt = v.get("binlog_format", "")
    out.append(_verdict(name + "binlog_format", fmt.upper() == "ROW", "ROW",
                        f"{fmt or '?'}: a divergent tail can only be rewound from row events",
                        "set binlog_format=ROW in my.cnf (and SET GLOBAL binlog_format=ROW)"))
    image = v.get("binlog_row_image", "")
    out.append(_verdict(name + "binlog_row_image", image.upper() == "FULL", "FULL",
                        f"{image or '?'}: a rewind needs every column's before image",
                        "set binlog_row_image=FULL in my.cnf (and SET GLOBAL binlog_row_image=FULL)"))
    return out


def check_read_only_config(s: ServerFacts, role: str) -> List[Check]:
    """read_only=ON in the server's configuration, so that a restarted server never comes back writable."""
    name = f"{s.name}: read_only in the configuration"
    fix = "put read_only=ON in this server's my.cnf: orch opens the master explicitly"
    value = _on(s.variables.get("read_only"))
    origin = s.read_only_origin
    if origin == "config":
        if value:
            return [Check(name, PASS, "read_only=ON comes from the server's configuration")]
        return [Check(name, FAIL if role == "replica" else WARN, "the configuration sets read_only=OFF: a restarted server comes back writable", fix)]
    if origin == "default":
        return [Check(name, FAIL if role == "replica" else WARN, "the configuration does not set read_only: a restarted server comes back writable", fix)]
    why = "read_only was set at runtime since the server started" if origin == "runtime" else "the server does not say where read_only came from"
    return [Check(name, WARN, f"{why} (read_only={'ON' if value else 'OFF'} now); orch cannot read my.cnf from here", "check that my.cnf has read_only=ON")]


def check_server_ids(a: ServerFacts, b: ServerFacts) -> List[Check]:
    out = []
    ida, idb = a.variables.get("server_id"), b.variables.get("server_id")
    if ida and ida == idb:
        out.append(Check("server_id", FAIL, f"both servers have server_id={ida}: each ignores the other's events",
                         "give each server its own server_id in my.cnf"))
    else:
        out.append(Check("server_id", PASS, f"{a.name}={ida}, {b.name}={idb}"))
    ua, ub = a.variables.get("server_uuid"), b.variables.get("server_uuid")
    if ua and ua == ub:
        out.append(Check("server_uuid", FAIL, f"both servers have server_uuid {ua} (a copied datadir)",
                         "delete auto.cnf on one server and restart it"))
    elif ua or ub:
        out.append(Check("server_uuid", PASS, "distinct"))
    return out


def release_series_mismatch(a: Any, b: Any) -> str:
    """Why two servers' release series (anything with a name and a version: NodeState, a
    bootstrap Side) are a problem for this pair ("" when they are one series).

    Each failover reverses replication, and replication from a newer release series (8.4,
    11.4) to an older one (8.0, 10.11) is not supported by MySQL or MariaDB. Patch levels
    of one series replicate both ways."""
    if not a.version or not b.version or version_tuple(a.version)[:2] == version_tuple(b.version)[:2]:
        return ""
    return (f"{a.name} runs {a.version} and {b.name} {b.version}: each failover reverses replication, and "
            "replication from a newer release series to an older one is not supported")


def check_release_series(view: ClusterView) -> List[Check]:
    a, b = view.me, view.peer
    why = release_series_mismatch(a, b)
    if why:
        return [Check("release series", WARN, why, "run one release series on both servers (a rolling upgrade: upgrade the "
                                                   "replica, switch over to it, then upgrade the other)")]
    return [Check("release series", PASS, f"{a.name} {a.version}, {b.name} {b.version}")]


def check_auto_increment(a: ServerFacts, b: ServerFacts) -> List[Check]:
    """Distinct auto_increment offsets: rows written on both sides (a split brain) do not collide."""
    ia, oa = a.variables.get("auto_increment_increment", "1"), a.variables.get("auto_increment_offset", "1")
    ib, ob = b.variables.get("auto_increment_increment", "1"), b.variables.get("auto_increment_offset", "1")
    seen = f"{a.name}: increment {ia} offset {oa}; {b.name}: increment {ib} offset {ob}"
    fix = "set auto_increment_increment=2 on both and auto_increment_offset=1 on one, 2 on the other (my.cnf)"
    try:
        distinct = int(ia) >= 2 and int(ib) >= 2 and int(oa) != int(ob) and (int(oa) - int(ob)) % min(int(ia), int(ib)) != 0
    except ValueError:
        distinct = False
    if distinct:
        return [Check("auto_increment", PASS, seen)]
    return [Check("auto_increment", WARN, f"{seen}: rows inserted on both servers (a split brain) get the same keys", fix)]


def check_replication_account(servers: Sequence[ServerFacts], view: ClusterView, user: str) -> List[Check]:
    """The replication account exists on both and can log in (a real login from here; the
    replica's IO thread shows the login from the peer)."""
    out = []
    nodes = {view.me.name: view.me, view.peer.name: view.peer}
    for s in servers:
        name = f"{s.name}: replication account"
        other = next(n for n in nodes.values() if n.name != s.name)
        if s.repl_login is None:
            continue
        if s.repl_login:
            out.append(Check(name, FAIL, f"cannot log in as {user}: {s.repl_login}",
                             f"create {user} on {s.name} with REPLICATION SLAVE, for the peer's address, with replication.password"))
            continue
        here = nodes[s.name]
        r = other.replica
        follows = r is not None and other.replicates_from(here.host, here.port)
        if follows and r is not None and r.last_io_error and ("1045" in r.last_io_error or "denied" in r.last_io_error.lower()):
            out.append(Check(name, FAIL, f"{user} logs in from here, but {other.name}'s IO thread is denied: {r.last_io_error}",
                             f"allow {user}@{other.host} (or its network) on {s.name}"))
            continue
        seen = f"{user} logs in from this host"
        if follows and r is not None and r.io.value == "running":
            seen += f", and {other.name} replicates from it"
        out.append(Check(name, PASS, seen))
    return out


def check_privileges(s: ServerFacts, semi_sync: bool) -> List[Check]:
    """Each privilege orch's code needs, against the account's SHOW GRANTS."""
    name = f"{s.name}: orch account privileges"
    if s.grants_error:
        return [Check(name, WARN, f"SHOW GRANTS failed: {s.grants_error}", "check the orch account's grants against docs/install.md (Accounts) by hand")]
    needs = requirements(s.flavor)
    required = list(needs.PRIVILEGES)
    if semi_sync:
        required.append(needs.SEMI_SYNC_PRIVILEGE)
    held = {g.upper() for g in s.grants}
    if "ALL PRIVILEGES" in held or "ALL" in held:
        return [Check(name, PASS, "ALL PRIVILEGES (more than orch needs)")]
    covered = set(needs.SUPER_COVERS) if "SUPER" in held else set()
    missing = [(p, why) for p, why in required if p not in held and p not in covered]
    if not missing:
        return [Check(name, PASS, ", ".join(p for p, _ in required))]
    text = "; ".join(f"{p} ({why})" for p, why in missing)
    status = WARN if s.roles else FAIL
    detail = f"missing {text}" + (" (roles were not followed)" if s.roles else "")
    grant = ", ".join(p for p, _ in missing)
    return [Check(name, status, detail, f"GRANT {grant} ON *.* TO the orch account on {s.name}")]


# --- replication and semi-sync --------------------------------------------------------------


def _roles(view: ClusterView) -> Tuple[Optional[NodeState], Optional[NodeState]]:
    """(master, replica) when exactly one reachable node is writable."""
    nodes = [view.me, view.peer]
    writable = [n for n in nodes if n.writable]
    if len(writable) != 1 or not all(n.reachable for n in nodes):
        return None, None
    master = writable[0]
    return master, next(n for n in nodes if n is not master)


def check_replication(view: ClusterView, cfg: Config) -> List[Check]:
    """One writable master; the other replicates from it, both threads running, lag, errant GTIDs."""
    from ..decide import flavor_of

    nodes = [view.me, view.peer]
    out = []
    for n in nodes:
        if not n.reachable:
            kind = "alive but unusable" if n.alive else "down"
            out.append(Check(f"{n.name}: reachable", FAIL, f"{kind}: {n.error}",
                             "start the server, or fix the orch account's access from this host"))
    if not all(n.reachable for n in nodes):
        return out
    writable = [n for n in nodes if n.writable]
    if len(writable) == 2:
        return out + [Check("roles", FAIL, "both servers are writable (split brain)",
                            "fence the one that does not hold the VIP: orch demote there")]
    if not writable:
        return out + [Check("roles", FAIL, "no server is writable: applications cannot write",
                            "run orch promote on the host that holds the VIP")]
    master, replica = _roles(view)
    assert master is not None and replica is not None
    out.append(Check("roles", PASS, f"{master.name} is the writable master, {replica.name} is read-only"))
    r = replica.replica
    name = f"{replica.name}: replication"
    if r is None or not r.configured:
        return out + [Check(name, FAIL, f"{replica.name} does not replicate", f"run orch demote on {replica.name}")]
    if not replica.replicates_from(master.host, master.port):
        return out + [Check(name, FAIL, f"replicates from {r.source_host}:{r.source_port}, not from {master.name} ({master.host}:{master.port})",
                            f"run orch demote on {replica.name}")]
    if r.running:
        out.append(Check(name + " threads", PASS, f"IO and SQL threads running from {master.name}"))
    else:
        errors = "; ".join(e for e in (r.last_io_error, r.last_sql_error) if e) or "no error reported"
        out.append(Check(name + " threads", FAIL, f"IO thread {r.io.value}, SQL thread {r.sql.value}: {errors}",
                         "fix the error, then START SLAVE (or orch demote) on " + replica.name))
    if r.lag is None:
        out.append(Check(name + " lag", WARN if r.running else FAIL, "lag unknown (a thread is not running)",
                         "get both replication threads running"))
    elif r.lag > cfg.maintainer.max_lag:
        out.append(Check(name + " lag", WARN, f"{r.lag}s behind (maintainer.max_lag is {cfg.maintainer.max_lag}s): a promotion waits for it",
                         "find what slows the replica (long transactions, I/O) before relying on a failover"))
    else:
        out.append(Check(name + " lag", PASS, f"{r.lag}s"))
    flavor = flavor_of(replica, cfg)
    errant = flavor.errant(replica, master)
    if errant:
        out.append(Check(f"{replica.name}: errant GTIDs", FAIL, f"transactions {master.name} lacks: {errant}",
                         "find who wrote them to the replica; remove them (or inject empty ones on the master) before a failover"))
    else:
        out.append(Check(f"{replica.name}: errant GTIDs", PASS, "none"))
    return out


def check_semi_sync(servers: Mapping[str, ServerFacts], view: ClusterView, cfg: Config) -> List[Check]:
    """The config's failover.semi_sync against the servers' semi-sync settings."""
    from ..semisync import NO_FALLBACK_MIN_MS

    master, replica = _roles(view)
    if master is None or replica is None or master.name not in servers or replica.name not in servers:
        return [Check("semi-sync", WARN, "not checked: no single writable master", "")]
    mv, rv = servers[master.name].variables, servers[replica.name].variables
    m_enabled, timeout, wait_point = _semi(mv, "master_enabled"), _semi(mv, "timeout"), _semi(mv, "wait_point")
    r_ack = _semi(rv, "slave_enabled")
    try:
        timeout_ms = int(timeout) if timeout is not None else None
    except ValueError:
        timeout_ms = None
    no_fallback = timeout_ms is not None and timeout_ms >= NO_FALLBACK_MIN_MS
    out = []
    if cfg.failover.semi_sync:
        if m_enabled is None or r_ack is None:
            return [Check("semi-sync", FAIL, "failover.semi_sync is on, but the semi-sync plugin is not loaded",
                          "load the semi-sync plugins on both servers (MySQL) or upgrade to MariaDB 10.3+")]
        if _on(r_ack):
            out.append(Check(f"semi-sync: {replica.name} acknowledges", PASS, "rpl_semi_sync_slave_enabled=ON"))
        else:
            out.append(Check(f"semi-sync: {replica.name} acknowledges", FAIL,
                             "rpl_semi_sync_slave_enabled=OFF: the master waits for acknowledgements that never come",
                             f"SET GLOBAL rpl_semi_sync_slave_enabled=ON on {replica.name} (and in my.cnf on both)"))
        if not _on(_semi(mv, "slave_enabled")):
            out.append(Check(f"semi-sync: {master.name} acknowledges", WARN,
                             "rpl_semi_sync_slave_enabled=OFF: after a failover it would not acknowledge",
                             f"set rpl_semi_sync_slave_enabled=ON in {master.name}'s my.cnf"))
        if _on(m_enabled):
            out.append(Check(f"semi-sync: {master.name} waits", PASS, "rpl_semi_sync_master_enabled=ON"))
        else:
            out.append(Check(f"semi-sync: {master.name} waits", WARN,
                             "rpl_semi_sync_master_enabled=OFF: commits are not acknowledged by the replica (orch switches the wait off while the replica is gone)",
                             "the maintainer switches it on once the replica has caught up; if it stays off, check orch maintain's log"))
        if no_fallback:
            out.append(Check(f"semi-sync: {master.name} fallback", PASS, f"rpl_semi_sync_master_timeout={timeout_ms} ms: no fallback"))
        else:
            out.append(Check(f"semi-sync: {master.name} fallback", WARN,
                             f"rpl_semi_sync_master_timeout={timeout} ms: the master falls back to asynchronous replication on its own, and a rewind cannot trust an unacknowledged tail",
                             f"set rpl_semi_sync_master_timeout to at least {NO_FALLBACK_MIN_MS} on both (orch switches the wait off itself)"))
    else:
        if m_enabled is None or not _on(m_enabled):
            out.append(Check("semi-sync", WARN,
                             "asynchronous replication: a transaction acknowledged by a master that dies before its replica received it is lost",
                             "enable semi-synchronous replication (docs/install.md: rpl_semi_sync_master_enabled, rpl_semi_sync_slave_enabled, AFTER_SYNC)"))
        elif no_fallback:
            out.append(Check("semi-sync", FAIL,
                             f"{master.name} waits for acknowledgements without fallback (timeout {timeout_ms} ms) but failover.semi_sync is off: writes hang once the replica goes away and nothing switches the wait off",
                             "set failover.semi_sync: true (with failover.witness), or a finite rpl_semi_sync_master_timeout such as 2000"))
        elif not _on(r_ack):
            out.append(Check("semi-sync", WARN,
                             f"{master.name} waits, but {replica.name} does not acknowledge (rpl_semi_sync_slave_enabled=OFF): every stall costs the timeout, then asynchronous",
                             f"SET GLOBAL rpl_semi_sync_slave_enabled=ON on {replica.name} (and in my.cnf on both)"))
        else:
            out.append(Check("semi-sync", PASS, f"on, falling back to asynchronous after {timeout_ms} ms"))
    if wait_point is not None and _on(m_enabled) and wait_point.upper() != "AFTER_SYNC":
        out.append(Check(f"semi-sync: {master.name} wait point", WARN,
                         f"{wait_point}: other sessions see a commit before the replica has it",
                         "set rpl_semi_sync_master_wait_point=AFTER_SYNC"))
    return out


# --- Atlas ---------------------------------------------------------------------------------


def check_anti_flapping(view: ClusterView, cfg: Config) -> List[Check]:
    """The anti-flapping record readable on both servers, and whether it blocks now."""
    from ..antiflap import block_reason

    name = "anti-flapping record"
    if cfg.failover.block_seconds <= 0:
        return [Check(name, PASS, "off (failover.block_seconds: 0)")]
    if view.promotion_error:
        return [Check(name, WARN, f"unreadable ({view.promotion_error}): promotions would not be blocked",
                      "GRANT CREATE, INSERT, SELECT ON orch_meta.* TO the orch account on both servers (docs/install.md)")]
    rec = view.last_promotion
    if rec is None:
        return [Check(name, PASS, "no promotion on record yet (the first one creates orch_meta.promotions)")]
    blocked = block_reason(view, cfg)
    if blocked:
        return [Check(name, WARN, blocked, "find why the cluster failed over twice, then orch ack")]
    return [Check(name, PASS, f"latest: {rec.kind} promotion of {rec.node} {max(rec.age, 0):.0f}s ago (run {rec.run_id})"
                              + (", acknowledged" if rec.acked else ""))]


def check_maintenance(view: ClusterView) -> List[Check]:
    """Maintenance mode (orch pause): a pause in force is a warning naming who paused, why and
    until when; so is a pause the other host still follows, or a record that cannot be read."""
    name = "maintenance mode"
    if view.pause_error:
        return [Check(name, WARN, f"the pause record is unreadable ({view.pause_error}): a pause would not be seen",
                      "GRANT CREATE, INSERT, SELECT ON orch_meta.* TO the orch account on both servers (docs/install.md)")]
    paused = view.paused
    if paused is not None:
        return [Check(name, WARN, f"PAUSED: {paused.describe()}; nothing automatic changes the cluster (only fences of "
                                  "a node by its own host) until it ends",
                      "orch resume once the work is done" + ("" if paused.remaining is None else " (or let --for run out)"))]
    shared = view.pause_shared
    if shared is not None and shared.active:
        return [Check(name, WARN, f"resumed on this host only; the databases still hold a pause ({shared.describe()}), "
                                  "which the other host follows",
                      "orch resume again on the host that holds the VIP once a server is writable")]
    rec = view.pause
    if rec is None:
        return [Check(name, PASS, "off (no pause on record)")]
    return [Check(name, PASS, f"off (latest: {rec.describe()})")]  # a resume, or a pause --for that ran out


def check_atlas(view: ClusterView, cfg: Config) -> List[Check]:
    """Every configured Atlas reachable, with the read-only backends the maintainer would keep."""
    from ..reconcile import decide_maintain

    if not cfg.atlas:
        return []
    out = []
    plan = decide_maintain(view, cfg) if view.me.reachable or view.peer.reachable else None
    for atlas in view.atlas:
        name = f"atlas {atlas.name}"
        if not atlas.reachable:
            out.append(Check(name, FAIL, f"unreachable: {atlas.error}",
                             "start Atlas or fix atlas[].admin (address, user, password)"))
            continue
        rw = [b.address for b in atlas.backends if b.type == "rw"]
        ro = list(atlas.ro_addresses())
        if not rw:
            out.append(Check(name + " write backend", WARN, "no read/write backend: writes go nowhere",
                             "add the VIP as Atlas's proxy-backend-addresses"))
        due = [s.describe() for s in (plan.steps if plan is not None else ()) if getattr(s, "atlas", None) == atlas.name]
        if due:
            out.append(Check(name + " read backends", WARN, f"lists {', '.join(ro) or 'nothing'}; the maintainer would {'; '.join(due)}",
                             "run orch maintain (systemd: conf/orch-maintain.service), which applies it"))
        else:
            out.append(Check(name + " read backends", PASS, f"as expected: {', '.join(ro) or 'none'}"))
        if atlas.config_error:
            out.append(Check(name + " config file", WARN, atlas.config_error, "fix atlas[].config_file or Atlas's config file"))
    return out


# --- keepalived ----------------------------------------------------------------------------


def check_keepalived(root: conf.Block, ka: Keepalived, path: str) -> List[Check]:
    """keepalived.conf's sanity for orch: events reach orch, nopreempt without the weight
    trap, script security, the track file, the VIP."""
    out: List[Check] = []
    label = "keepalived"
    glob = conf.global_defs(root)
    instances = conf.instances(root)
    if root.has("include"):
        out.append(Check(label + " include", WARN, f"{path} includes other files, which are not checked",
                         "run orch doctor on the included files too, or inline them"))
    if not instances:
        return out + [Check(label + " instance", FAIL, f"{path} has no vrrp_instance", "configure the VRRP instance (conf/keepalived-server1.conf)")]
    inst = conf.chosen_instance(root, ka)
    if inst is None:
        names = ", ".join(i.words[1] for i in instances if len(i.words) > 1)
        return out + [Check(label + " instance", FAIL, f"no vrrp_instance {ka.instance} (found {names}): orch ignores other instances' events",
                            "set keepalived.instance in orch.yaml to the instance that moves the VIP")]
    iname = conf.name_of(inst) or "?"
    out.append(Check(label + " instance", PASS, f"vrrp_instance {iname}"))

    # Events reach orch: a notify script running the hook, or a FIFO for orch notify-fifo.
    notify = conf.notify_lines(root, inst)
    fifos = conf.notify_fifos(root)
    partial = conf.per_state_notify(inst)
    if notify and fifos:
        out.append(Check(label + " events", WARN, f"both a notify script and {fifos[0][0]} {fifos[0][1]}: every event is handled twice, possibly at once",
                         "keep only the FIFO (conf/keepalived-fifo-server1.conf) and run orch notify-fifo"))
    elif fifos:
        out.append(Check(label + " events", PASS, f"{fifos[0][0]} {fifos[0][1]}: run `orch notify-fifo {fifos[0][1]}` (conf/orch-notify-fifo.service)"))
    elif notify:
        script = notify[0].words[1] if len(notify[0].words) > 1 else ""
        if conf.runs_orch_notify(script):
            out.append(Check(label + " events", PASS, f"notify runs {script.split()[0] if script else '?'}"))
        else:
            out.append(Check(label + " events", FAIL, f"notify runs {script!r}, not orch's hook",
                             "notify \"/usr/local/lib/orch/keepalived-notify -c /etc/orch/orch.yaml --node NAME\", or the FIFO"))
    else:
        out.append(Check(label + " events", FAIL, f"vrrp_instance {iname} has no notify and there is no notify_fifo: keepalived tells orch nothing",
                         "add vrrp_notify_fifo and run orch notify-fifo (recommended), or a notify line running the hook"))
    if partial:
        out.append(Check(label + " notify_*", WARN, f"{', '.join(partial)} also run on state changes", "leave state handling to orch: remove them"))

    # nopreempt, and the weight trap.
    state = conf.initial_state(inst)
    if inst.has("nopreempt"):
        if state.upper() != "BACKUP":
            out.append(Check(label + " nopreempt", FAIL, f"nopreempt with state {state or 'unset'}: keepalived ignores nopreempt unless the initial state is BACKUP",
                             "set state BACKUP on both nodes"))
        else:
            out.append(Check(label + " nopreempt", PASS, "state BACKUP, nopreempt: no automatic fail-back"))
        weighted = conf.weighted_tracks(root, inst)
        if weighted:
            out.append(Check(label + " weight trap", FAIL, f"{', '.join(weighted)} with nopreempt: a failing check only lowers the priority, and with nopreempt the peer never takes over",
                             "remove the weight: a failing check then means FAULT, which gives up the VIP"))
        else:
            out.append(Check(label + " weight trap", PASS, "tracked checks have no weight: a failure means FAULT"))
    else:
        out.append(Check(label + " nopreempt", WARN, "no nopreempt: the higher priority node takes the VIP back when it returns (a second failover)",
                         "state BACKUP and nopreempt on both nodes"))

    # Script security.
    secure, user = glob.has("enable_script_security"), glob.has("script_user")
    if secure and user:
        out.append(Check(label + " script security", PASS, "enable_script_security and script_user"))
    elif secure:
        out.append(Check(label + " script security", WARN, "enable_script_security without script_user: keepalived may drop the vrrp_script",
                         "add script_user root to global_defs"))
    else:
        out.append(Check(label + " script security", WARN, "no enable_script_security: scripts run from paths others may write",
                         "add enable_script_security and script_user root to global_defs; install the hooks root-owned, mode 0755"))
    if glob.has("vrrp_strict"):
        out.append(Check(label + " vrrp_strict", WARN, "vrrp_strict is on", "leave vrrp_strict off"))

    # The track file orch writes to hand the VIP over.
    if ka.track_file:
        use = conf.track_file_use(root, inst, ka.track_file)
        if not use.named:
            out.append(Check(label + " track file", FAIL, f"no track_file reads {ka.track_file} (keepalived.track_file): orch's hand-over of the VIP does nothing",
                             f"add track_file orch {{ file {ka.track_file}; weight 0 }} and track_file {{ orch }} in the instance"))
        elif not use.tracked:
            out.append(Check(label + " track file", FAIL, f"track_file {use.named[0]} is not in vrrp_instance {iname}'s track_file",
                             f"add track_file {{ {use.named[0]} weight 0 }} to vrrp_instance {iname}"))
        elif use.weighted:
            out.append(Check(label + " track file", FAIL, f"{use.tracked[0]} is weighted: a non-zero value only lowers the priority",
                             "track it with weight 0: a non-zero value then means FAULT"))
        else:
            out.append(Check(label + " track file", PASS, f"{ka.track_file} tracked by {iname} with weight 0"))

    # The VIP orch checks is the one keepalived moves.
    if ka.vip:
        addresses = conf.virtual_addresses(inst)
        if ka.vip in addresses:
            out.append(Check(label + " VIP", PASS, f"{iname} moves {ka.vip}"))
        else:
            out.append(Check(label + " VIP", FAIL, f"{iname} moves {', '.join(addresses) or 'nothing'}, not keepalived.vip {ka.vip}",
                             "make keepalived.vip in orch.yaml the instance's virtual_ipaddress"))
    return out


# --- what must match across files ----------------------------------------------------------
# orch.yaml, keepalived.conf, check.cnf and this host each say something about the others;
# each check below compares two of them.


@dataclass(frozen=True)
class HostFacts:
    """What doctor read on this host: which nodes' hosts are its addresses, and the health check."""

    addresses: Mapping[str, Tuple[Tuple[str, bool], ...]] = field(default_factory=dict)  # node -> ((address, local?), ...)
    address_errors: Mapping[str, str] = field(default_factory=dict)  # node -> why its host did not resolve
    health: Optional[HealthCheckFacts] = None  # keepalived/health.py
    health_tracked: Tuple[str, ...] = ()  # how each tracked vrrp_script checks the server ("orch check", ...)


def check_notify_node(root: conf.Block, ka: Keepalived, self_name: str, path: str) -> List[Check]:
    """The node keepalived's notify line names is this host's self (orch.yaml or --node)."""
    inst = conf.chosen_instance(root, ka)
    if inst is None:
        return []
    nodes = conf.notify_nodes(root, inst)
    wrong = [n for n in nodes if n != self_name]
    if wrong:
        return [Check("keepalived notify node", FAIL,
                      f"{path}'s notify runs the hook with --node {wrong[0]}, but orch's self on this host is {self_name}: "
                      f"every keepalived event here would be decided for {wrong[0]} (the other host's keepalived.conf?)",
                      f"use this host's keepalived.conf (notify ... --node {self_name}), or correct self in orch.yaml")]
    if nodes:
        return [Check("keepalived notify node", PASS, f"notify runs the hook with --node {self_name}, this host's self")]
    return []


def check_witness_ping(root: conf.Block, ka: Keepalived, witness: str) -> List[Check]:
    """keepalived's witness check (chk_witness) pings failover.witness, the address orch pings."""
    inst = conf.chosen_instance(root, ka)
    if inst is None:
        return []
    name = "keepalived witness"
    pinged = conf.witness_pings(root, inst)
    if not pinged:
        if witness:
            return [Check(name, WARN, f"no tracked vrrp_script pings failover.witness {witness}: an isolated master keeps the VIP",
                          f"add chk_witness (script \"/usr/bin/ping -n -q -c 1 -W 1 {witness}\") to track_script, as in conf/keepalived-server1.conf")]
        return []
    script, target = pinged[0]
    if not witness:
        return [Check(name, WARN, f"{script} pings {target}, but failover.witness is not set: orch promotes a node whose peer "
                                  "is gone without asking the witness",
                      f"set failover.witness: {target} in orch.yaml")]
    wrong = [(n, t) for n, t in pinged if t != witness]
    if wrong:
        return [Check(name, FAIL, f"{wrong[0][0]} pings {wrong[0][1]}, but failover.witness is {witness}: keepalived and orch "
                                  "judge isolation by different hosts",
                      f"make them one address: the gateway both hosts reach (ping {witness} in {wrong[0][0]}, or failover.witness: {wrong[0][1]})")]
    return [Check(name, PASS, f"{script} pings {witness}, failover.witness")]


def check_self_address(cfg: Config, host: HostFacts) -> List[Check]:
    """nodes.<self>.host is an address of this machine: self names this host's node."""
    me = cfg.me
    name = f"{me.name}: host is this machine"
    if me.name in host.address_errors:
        return [Check(name, WARN, f"nodes.{me.name}.host {me.host}: {host.address_errors[me.name]}",
                      "give nodes.<name>.host as an IP address, or fix name resolution on this host")]
    addresses = host.addresses.get(me.name, ())
    if not addresses:
        return []
    if any(local for _, local in addresses):
        return [Check(name, PASS, f"nodes.{me.name}.host {me.host} is an address of this host")]
    others = [n.name for n in cfg.nodes if n.name != me.name and any(local for _, local in host.addresses.get(n.name, ()))]
    hint = f"; nodes.{others[0]}.host is: this host is {others[0]}" if others else ""
    return [Check(name, FAIL, f"nodes.{me.name}.host {me.host} is not an address of this host{hint}: orch would fence, promote "
                              "and check the VIP for the wrong node",
                  f"set self (or --node) to {others[0]} on this host" if others else
                  f"set self (or --node) to this host's node, or correct nodes.{me.name}.host")]


def check_health_account(cfg: Config, host: HostFacts, servers: Mapping[str, ServerFacts]) -> List[Check]:
    """The account of the health check's client defaults file logs in, reaches this node's
    server and runs what hooks/check-mysql runs (SELECT 1); at max_connections it still gets in."""
    name = "keepalived health check"
    h = host.health
    if h is None:
        if host.health_tracked:
            return [Check(name, PASS, f"tracked: {', '.join(host.health_tracked)}")]
        return [Check(name, WARN, "no tracked vrrp_script runs check-mysql or orch check: keepalived keeps the VIP on a dead server",
                      "add chk_mysql (script \"/usr/local/lib/orch/check-mysql /etc/orch/check.cnf\") to track_script, as in conf/keepalived-server1.conf")]
    out = []
    label = f"{h.defaults_file} ({h.script})"
    if h.mode >= 0 and h.mode & 0o077:
        out.append(Check(name + " file mode", WARN, f"{h.defaults_file} is mode {h.mode:o}: it holds a password",
                         f"chmod 600 {h.defaults_file}"))
    if h.login_error is None:
        return out
    if h.login_error:
        return out + [Check(name + " login", FAIL, f"hooks/check-mysql with {label} fails: {h.login_error}: keepalived "
                                                   "would put this node in FAULT and give up the VIP",
                            f"give {h.defaults_file} a [client] host, port, user and password=\"...\" of an account on "
                            f"{cfg.self_name}'s server (docs/keepalived.md)")]
    who = f"{h.options.get('user', '?')}@{h.options.get('host', 'localhost')}:{h.options.get('port', 'default port')}"
    out.append(Check(name + " login", PASS, f"hooks/check-mysql with {label}: {who} logs in and SELECT 1 answers"))
    me = servers.get(cfg.self_name)
    by_id = {s.variables.get("server_id"): s.name for s in servers.values() if s.reachable and s.variables.get("server_id")}
    if h.server_id and me is not None and me.reachable and me.variables.get("server_id"):
        reached = by_id.get(h.server_id, f"a server with server_id {h.server_id}")
        if reached != cfg.self_name:
            out.append(Check(name + " server", FAIL, f"{h.defaults_file} reaches {reached}, not {cfg.self_name}: keepalived "
                                                     f"would judge this node by another server's health",
                             f"point {h.defaults_file}'s host and port at {cfg.self_name} ({cfg.me.host}:{cfg.me.port})"))
        else:
            out.append(Check(name + " server", PASS, f"reaches {cfg.self_name} (server_id {h.server_id})"))
    flavor = me.flavor if me is not None else ""
    extra_port = me.variables.get("extra_port", "0") if me is not None else "0"
    if extra_port not in ("", "0") and h.options.get("port") == extra_port:
        out.append(Check(name + " at max_connections", PASS, f"port {extra_port} is the server's extra_port"))
    elif h.grants_error:
        out.append(Check(name + " at max_connections", WARN, f"SHOW GRANTS failed: {h.grants_error}",
                         "check the account's grants by hand (docs/keepalived.md)"))
    else:
        held = {g.upper() for g in h.grants}
        admin = requirements(flavor).CONNECTION_ADMIN
        if held & {admin, "SUPER", "ALL PRIVILEGES", "ALL"}:
            out.append(Check(name + " at max_connections", PASS, f"{h.options.get('user', 'the account')} may connect beyond max_connections"))
        else:
            out.append(Check(name + " at max_connections", WARN,
                             f"{h.options.get('user', 'the account')} lacks {admin}: at max_connections the check fails and "
                             "keepalived gives up a busy but healthy master's VIP",
                             f"use the orch account (it has {admin}) in {h.defaults_file}, or MariaDB's extra_port (docs/keepalived.md)"))
    return out


def check_metrics(cfg: Config) -> List[Check]:
    """The shipped alerting rules (conf/orch-alerts.yml) need the maintainer's metrics."""
    port = cfg.maintainer.metrics_port
    if port:
        return [Check("metrics", PASS, f"orch maintain serves Prometheus metrics on port {port}")]
    return [Check("metrics", WARN, "maintainer.metrics_port is 0: orch maintain serves no metrics (unless run with "
                                   "--metrics-port), so no alert of conf/orch-alerts.yml can fire",
                  "set maintainer.metrics_port: 9105 and scrape it (docs/metrics-and-alerts.md)")]


@dataclass(frozen=True)
class FileFacts:
    """A file orch.yaml names, as this host sees it (never its content)."""

    path: str
    exists: bool = True
    readable: bool = True
    mode: int = -1  # permission bits (-1: unknown)
    error: str = ""  # why it cannot be used: unreadable, empty, not a token, a certificate that does not load


@dataclass(frozen=True)
class HttpFacts:
    """The http: section's files: the token file and the TLS files (each None when not set)."""

    token: Optional[FileFacts] = None
    tls: Optional[FileFacts] = None  # tls_cert and tls_key as one: loaded together into an SSL context
    ca: Optional[FileFacts] = None


def check_http(cfg: Config, facts: HttpFacts) -> List[Check]:
    """The HTTP API's files (http:): the token file exists, is readable, holds a usable token
    and is not readable by group or others; the certificate and key load; the CA exists. Never
    the token itself: only paths, modes and what is wrong."""
    out: List[Check] = []
    port = cfg.maintainer.metrics_port
    t = facts.token
    name = "http token file"
    if t is None:
        if port:
            out.append(Check(name, WARN, f"http.token_file is not set: POST /switchover, /pause and /resume on port {port} "
                                         "answer 403, and orch switchover cannot ask the peer's orch",
                             "set http.token_file: /etc/orch/api.token (one line of at least 16 characters, the same "
                             "file on both hosts, chmod 600; docs/http-api.md)"))
    elif not t.exists:
        out.append(Check(name, FAIL, f"{t.path} does not exist: the state-changing endpoints are off",
                         f"create {t.path} with one line of at least 16 characters (the same on both hosts), chmod 600"))
    elif not t.readable or t.error:
        out.append(Check(name, FAIL, f"{t.path}: {t.error or 'not readable by this user'}: the state-changing endpoints are off",
                         f"put one line of at least 16 printable ASCII characters in {t.path} (no spaces), readable by root only"))
    else:
        if t.mode >= 0 and t.mode & 0o077:
            out.append(Check(name + " mode", WARN, f"{t.path} is mode {t.mode:o}: anyone who reads it may switch over or "
                                                   "pause this pair", f"chmod 600 {t.path}"))
        out.append(Check(name, PASS, f"{t.path} holds a token" + ("" if port else " (maintainer.metrics_port is 0: the API is off)")))
    if facts.tls is not None:
        name = "http TLS certificate"
        if facts.tls.error:
            out.append(Check(name, FAIL, f"{facts.tls.path}: {facts.tls.error}: orch maintain cannot serve HTTPS",
                             "give http.tls_cert and http.tls_key as a PEM certificate (chain) and its private key"))
        else:
            out.append(Check(name, PASS, f"{facts.tls.path} and its key load"))
    if facts.ca is not None:
        name = "http TLS CA"
        if facts.ca.error:
            out.append(Check(name, FAIL, f"{facts.ca.path}: {facts.ca.error}: orch cannot check the peer's certificate",
                             "give http.tls_ca as the PEM file of the CA that signed both hosts' certificates"))
        else:
            out.append(Check(name, PASS, f"{facts.ca.path} loads"))
    return out


def check_haproxy(readings: Sequence[Any]) -> List[Check]:
    """Each HAProxy of haproxy.stats_sockets answers show stat with both backends (a warning
    otherwise: orch status and the page cannot show it; failover does not depend on it)."""
    out = []
    for r in readings:
        name = f"haproxy {r.socket}"
        if not r.reachable:
            out.append(Check(name, WARN, f"unreachable: {r.error}", "check that HAProxy runs on this host with this "
                             "stats socket (haproxy.cfg's stats socket line), readable by root"))
        elif r.error:
            out.append(Check(name, WARN, r.error, "set haproxy.write_backend and read_backend to haproxy.cfg's backend names"))
        else:
            up = [f"{s.role} {s.server}" for s in r.servers if s.status == "UP" and not s.backup]
            out.append(Check(name, PASS, f"show stat answers; up: {', '.join(up) or 'none'}"))
    return out


def _file_facts(path: str) -> FileFacts:
    import os

    try:
        st = os.stat(path)
    except OSError as exc:
        return FileFacts(path, exists=False, readable=False, error=exc.strerror or str(exc))
    return FileFacts(path, True, os.access(path, os.R_OK), st.st_mode & 0o777)


def gather_http(cfg: Config) -> HttpFacts:
    """Reads the http: section's files as the server would (the token as http_client.read_token
    does, the certificate into an SSL context); keeps only what is wrong, never the token."""
    import ssl

    from ..errors import OrchError
    from ..http_client import read_token

    h = cfg.http
    token = None
    if h.token_file:
        token = _file_facts(h.token_file)
        if token.exists and token.readable:
            try:
                read_token(cfg)
            except OrchError as exc:
                from dataclasses import replace

                token = replace(token, error=str(exc).removeprefix(f"http.token_file {h.token_file}: "))
    tls = None
    if h.tls_cert:
        error = ""
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(h.tls_cert, h.tls_key or None)
        except (OSError, ssl.SSLError) as exc:
            error = f"does not load with {h.tls_key}: {getattr(exc, 'strerror', None) or exc}"
        tls = FileFacts(h.tls_cert, error=error)
    ca = None
    if h.tls_ca:
        error = ""
        try:
            ssl.create_default_context(cafile=h.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            error = f"does not load: {getattr(exc, 'strerror', None) or exc}"
        ca = FileFacts(h.tls_ca, error=error)
    return HttpFacts(token, tls, ca)


def gather_host(cfg: Config, keepalived: Optional[Tuple[conf.Block, str]]) -> Tuple[HostFacts, Tuple[str, ...]]:
    """This host's side: whether each node's host is one of its addresses and, with a
    keepalived.conf, its health check. Returns the facts and secrets met on the way."""
    import socket

    from ..observe import holds_address

    addresses: Dict[str, Tuple[Tuple[str, bool], ...]] = {}
    errors: Dict[str, str] = {}
    for node in cfg.nodes:
        try:
            found = sorted({str(info[4][0]) for info in socket.getaddrinfo(node.host, None, proto=socket.IPPROTO_TCP)})
            addresses[node.name] = tuple((a, holds_address(a)) for a in found)
        except OSError as exc:
            errors[node.name] = f"cannot tell whether it is this host: {exc.strerror or exc}"
    tracked: Tuple[str, ...] = ()
    health, secret = None, ""
    if keepalived is not None:
        inst = conf.chosen_instance(keepalived[0], cfg.keepalived)
        if inst is not None:
            health, tracked, secret = run_health_check(keepalived[0], inst)
    return HostFacts(addresses, errors, health, tracked), ((secret,) if secret else ())


# --- gathering and output ------------------------------------------------------------------


def gather_server(server: Server, node: NodeState, cfg: Config) -> ServerFacts:
    """Variables, read_only's origin and grants of one server, plus a replication login."""
    if node.down:
        return ServerFacts(node.name, False, error=node.error, flavor=node.flavor)
    # Alive but unusable for observe() (a privilege missing, say): its settings and grants
    # may still say why.
    from ..flavors import detect, server_variables

    variable_names = server_variables()
    placeholders = ", ".join(["%s"] * len(variable_names))
    flavor = node.flavor
    try:
        if not flavor:
            flavor = detect(str(server.value("SELECT VERSION()")))
        rows = server.query(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", variable_names)
    except DatabaseError as exc:
        return ServerFacts(node.name, False, error=str(exc), flavor=flavor)
    variables = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in rows}
    origin = ""
    try:
        needs = requirements(flavor)
        raw = server.value(needs.READ_ONLY_ORIGIN_QUERY)
        origin = needs.READ_ONLY_ORIGINS.get(str(raw or "").upper(), "")
    except DatabaseError:
        pass  # MySQL without access to performance_schema: said as "cannot tell"
    grants: Tuple[str, ...] = ()
    roles = False
    grants_error = ""
    try:
        lines = [str(next(iter(r.values()))) for r in server.query("SHOW GRANTS")]
        grants, roles = parse_grants(lines)
    except DatabaseError as exc:
        grants_error = str(exc)
    return ServerFacts(node.name, True, flavor=flavor, variables=variables, read_only_origin=origin,
                       grants=grants, grants_error=grants_error, roles=roles, repl_login=_repl_login(server, cfg))


def _repl_login(server: Server, cfg: Config) -> str:
    """A real login with the replication account ("" when it works); the error never holds the password."""
    from dataclasses import replace

    from ..db import Server as ServerClass

    account = replace(cfg.mysql, user=cfg.replication.user, password=cfg.replication.password)
    probe = ServerClass(server.node, account)
    try:
        probe.value("SELECT 1")
        return ""
    except DatabaseError as exc:
        return str(exc).split(": ", 1)[-1]
    finally:
        probe.close()


def run_checks(cfg: Config, view: ClusterView, servers: Mapping[str, ServerFacts], keepalived: Optional[Tuple[conf.Block, str]],
               host: Optional[HostFacts] = None, http: Optional[HttpFacts] = None,
               haproxy: Sequence[Any] = ()) -> List[Check]:
    """Every check, in the order an operator fixes things."""
    me, peer = servers.get(view.me.name), servers.get(view.peer.name)
    checks: List[Check] = []
    if host is not None:
        checks += check_self_address(cfg, host)  # a wrong self makes every other line about the wrong node
    checks += check_replication(view, cfg)
    master, _ = _roles(view)
    for s in (me, peer):
        if s is None or not s.reachable:
            continue
        checks += check_binlog(s)
        # Without a clear master (a server not observable) nothing is failed for being the replica.
        checks += check_read_only_config(s, "replica" if master is not None and master.name != s.name else "master")
        checks += check_privileges(s, cfg.failover.semi_sync)
    if me is not None and peer is not None and me.reachable and peer.reachable:
        checks += check_server_ids(me, peer)
        checks += check_release_series(view)
        checks += check_auto_increment(me, peer)
    checks += check_replication_account([s for s in (me, peer) if s is not None], view, cfg.replication.user)
    if me is not None and peer is not None and me.reachable and peer.reachable:
        checks += check_semi_sync(servers, view, cfg)
    checks += check_atlas(view, cfg)
    checks += check_anti_flapping(view, cfg)
    checks += check_maintenance(view)
    checks += check_metrics(cfg)
    if http is not None:
        checks += check_http(cfg, http)
    checks += check_haproxy(haproxy)
    if keepalived is not None:
        checks += check_keepalived(keepalived[0], cfg.keepalived, keepalived[1])
        checks += check_notify_node(keepalived[0], cfg.keepalived, cfg.self_name, keepalived[1])
        checks += check_witness_ping(keepalived[0], cfg.keepalived, cfg.failover.witness)
        if host is not None:
            checks += check_health_account(cfg, host, servers)
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    return EXIT_FAILED if any(c.status == FAIL for c in checks) else EXIT_OK


def render_table(checks: Sequence[Check], cfg: Config) -> str:
    width = max([len(c.name) for c in checks] + [10])
    lines = [f"orch doctor: cluster {cfg.cluster}, from {cfg.self_name}"]
    for c in checks:
        lines.append(f"{c.status.upper():<4}  {c.name:<{width}}  {c.detail}")
        if c.status != PASS and c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, WARN, FAIL)}
    lines.append(f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail")
    return "\n".join(lines)


def doctor(args: argparse.Namespace, out: TextIO) -> int:
    from .. import logs
    from ..db import open_servers
    from ..observe import observe
    from .common import load_config

    keepalived = None
    if args.keepalived_config:
        try:
            with open(args.keepalived_config, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"orch doctor: cannot read {args.keepalived_config}: {exc.strerror}") from None
        keepalived = (conf.parse(text), args.keepalived_config)
    cfg = load_config(args)
    servers = open_servers(cfg, read_timeout=5.0)
    try:
        view = observe(cfg, servers, atlas=bool(cfg.atlas))
        facts = {n.name: gather_server(servers[n.name], n, cfg) for n in (view.me, view.peer)}
    finally:
        for s in servers.values():
            s.close()
    host, found_secrets = gather_host(cfg, keepalived)
    from .. import haproxy

    checks = run_checks(cfg, view, facts, keepalived, host, gather_http(cfg), haproxy.observe(cfg))
    if cfg.etcd is not None:
        from .etcd_report import check_etcd, gather_etcd  # the write token (docs/etcd.md)

        checks += [Check(c.name, c.status, c.detail, c.fix) for c in check_etcd(cfg, view, gather_etcd(cfg))]
    secrets = tuple(cfg.secrets) + found_secrets
    checks = [Check(c.name, c.status, logs.redact(c.detail, secrets), logs.redact(c.fix, secrets)) for c in checks]
    code = exit_code(checks)
    if args.format == "json":
        counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, WARN, FAIL)}
        doc: Dict[str, Any] = {"cluster": cfg.cluster, "self": cfg.self_name, "exit": code, "summary": counts,
                               "checks": [c.as_dict() for c in checks]}
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(render_table(checks, cfg) + "\n")
    return code
