"""Observe once: both servers (concurrently) into a frozen ClusterView."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from . import flavors
from .config import Config, Node
from .db import Server
from .errors import ALIVE, DOWN, LOST, DatabaseError
from .model import AtlasState, ClusterView, NodeState, SemiSync, ThreadState, TokenState

if TYPE_CHECKING:  # the Atlas client is imported only where an Atlas is configured
    from .atlas.client import AtlasAdmin

PROBE_MAX = 1.2  # seconds: the longest watch of an IO thread for signs of its source's life
PROBE_POLL = 0.1  # seconds between looks: a killed source shows as Connecting within one

log = logging.getLogger(__name__)


def read_node(server: Server, flavor_name: str = "auto", semisync: bool = False) -> NodeState:
    """Read one server's role, fencing and GTID state (three queries; a fourth for semi-sync).

    Replica status comes before the executed GTIDs: what was received is then never
    ahead of what is counted as applied merely because the two were read apart.
    """
    node = server.node
    head = server.query("SELECT VERSION() AS version, @@global.server_id AS server_id, @@global.read_only AS read_only")[0]
    version = str(head["version"])
    flavor = flavors.get(flavor_name, version)
    status_rows = server.query(flavor.replica_status_query)
    gtids = server.query(flavor.gtid_query)[0]
    semi, uptime = read_semisync(server, flavor) if semisync else (None, 0)
    return NodeState(
        name=node.name,
        host=node.host,
        port=node.port,
        reachable=True,
        version=version,
        flavor=flavor.name,
        server_id=int(head["server_id"]),
        read_only=bool(int(head["read_only"])),
        super_read_only=bool(int(gtids.get("super_read_only") or 0)),
        executed=str(gtids.get("executed") or "").replace("\n", ""),
        binlog_pos=str(gtids.get("binlog_pos") or "").replace("\n", ""),
        binlog_state=str(gtids.get("binlog_state") or "").replace("\n", ""),
        replica=flavor.parse_replica_status(_default_channel(status_rows)),
        semisync=semi,
        uptime=uptime,
        rewinding=bool(int(gtids.get("rewinding") or 0)),
    )


def read_semisync(server: Server, flavor: flavors.Flavor) -> Tuple[SemiSync, int]:
    """The semi-sync settings and counters, and the server's uptime. A server without
    semi-sync support (a MySQL without the plugin) gives SemiSync(error=...)."""
    try:
        row = server.query(flavor.semisync_query)[0]
    except DatabaseError as exc:
        if exc.kind == DOWN or exc.code in (2013, 2006):
            raise
        return SemiSync(error=str(exc).split(": ", 1)[-1]), 0

    def on(value: Any) -> bool:
        return str(value).upper() in ("1", "ON")

    def number(value: Any) -> int:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    return SemiSync(
        enabled=on(row.get("enabled")), timeout_ms=number(row.get("timeout_ms")), wait_no_replica=on(row.get("wait_no_replica")),
        wait_point=str(row.get("wait_point") or ""), replica_enabled=on(row.get("replica_enabled")),
        clients=number(row.get("clients")), waiting=number(row.get("waiting")),
    ), number(row.get("uptime"))


def _default_channel(rows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The unnamed replication connection (MariaDB's SHOW ALL SLAVES STATUS lists every one)."""
    for row in rows:
        if not (row.get("Connection_name") or row.get("Channel_Name") or row.get("Channel_name")):
            return row
    return None


def unreachable(node: Node, error: str, alive: bool = False) -> NodeState:
    return NodeState(name=node.name, host=node.host, port=node.port, reachable=False, error=error, alive=alive)


def observe_node(server: Server, flavor_name: str, semisync: bool = False) -> NodeState:
    for attempt in (1, 2):
        reused = server.connected
        try:
            return read_node(server, flavor_name, semisync)
        except DatabaseError as exc:
            # A connection kept from an earlier pass broke, or its server stopped answering
            # (frozen since): a new handshake tells down from alive.
            if attempt == 1 and (exc.kind == LOST or (reused and exc.kind == ALIVE and exc.code == 2013)):
                server.close()
                continue
            # The label is already in the message; keep only what went wrong.
            return unreachable(server.node, str(exc).split(": ", 1)[-1], alive=exc.kind != DOWN)
    raise AssertionError("unreachable")


def receiving_window(me: NodeState) -> float:
    """How long the IO thread's progress must be watched to prove its source alive."""
    period = me.replica.heartbeat_period if me.replica is not None else None
    return min(PROBE_MAX, 1.2 * period) if period else PROBE_MAX


def prove_alive(server: Server, me: NodeState, peer: NodeState, first_read: float, flavor_name: str) -> NodeState:
    """A peer orch cannot reach is still alive if this node's IO thread keeps receiving from it.

    The IO thread says Yes for slave_net_timeout after its source froze or vanished, so
    "running" proves nothing; its position or heartbeat count moving does.
    """
    r = me.replica
    if not peer.down or r is None or r.io is not ThreadState.RUNNING or not me.replicates_from(peer.host, peer.port):
        return peer
    deadline = first_read + receiving_window(me)
    while True:
        time.sleep(max(0.0, min(PROBE_POLL, deadline - time.monotonic())))
        try:
            again = read_node(server, flavor_name)
        except DatabaseError:
            return peer
        r2 = again.replica
        if r2 is None or r2.io is not ThreadState.RUNNING:
            return peer  # the IO thread noticed its source is gone: down, as observed
        if r2.io_marker != r.io_marker:
            return replace(peer, alive=True, error=f"{peer.error}; but {me.name}'s IO thread is still receiving from it, so it is alive")
        if time.monotonic() >= deadline:
            return peer


def holds_address(address: str) -> bool:
    """Whether ``address`` is assigned to an interface of this host (network namespace).

    Binding succeeds only for a local address (no IP_FREEBIND): one syscall, no netlink.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
            return True
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise


def observe(
    cfg: Config, servers: Dict[str, Server], atlas: bool = False, admins: Optional[Mapping[str, AtlasAdmin]] = None,
    promotions: bool = True, witness: bool = True, pause: bool = True,
) -> ClusterView:
    """Observe both servers at once (a dead peer costs one connect timeout, not two).

    ``promotions``: also the anti-flapping record (one query per server, with
    failover.block_seconds); ``witness``: ping failover.witness when the peer does not
    answer (up to a second when it does not either). Only a MASTER decision needs them: a
    FAULT on an isolated master must fence it without waiting for a ping. ``pause``: the
    maintenance record (one or two queries per server, orchestrator/pauses.py): every
    decision needs it (an unreadable copy counts as no pause, and is said)."""
    results: Dict[str, NodeState] = {}
    copies: Dict[str, Any] = {}  # anti-flapping: each server's copy of the latest promotion
    pauses: Dict[str, Any] = {}  # maintenance mode: each server's copy of the latest pause/resume

    def run(name: str) -> None:
        results[name] = observe_node(servers[name], cfg.flavor, cfg.failover.semi_sync)
        if pause and results[name].reachable:
            from .pauses import read_latest as read_pause

            pauses[name] = read_pause(servers[name], name)
        # While paused, a MASTER needs the promotion record even without anti-flapping: an orch
        # switchover's row there lets its planned promotion through.
        paused = name in pauses and pauses[name][0] is not None and pauses[name][0].active
        if promotions and (cfg.failover.block_seconds > 0 or paused) and results[name].reachable:
            from .promotions import read_latest

            copies[name] = read_latest(servers[name], name)

    peer_thread = threading.Thread(target=run, args=(cfg.peer.name,), daemon=True)
    peer_thread.start()
    tokens: List[TokenState] = []
    token_thread: Optional[threading.Thread] = None
    if cfg.etcd is not None:
        from .lease import read_token  # etcd: configured (its client is imported only then)

        token_thread = threading.Thread(target=lambda: tokens.append(read_token(cfg)), daemon=True)
        token_thread.start()
    first_read = time.monotonic()
    run(cfg.self_name)
    atlas_states: Tuple[AtlasState, ...] = ()
    if atlas:
        from .atlas.observe import observe_atlas

        atlas_states = observe_atlas(cfg, admins)
    peer_thread.join()
    if token_thread is not None:
        token_thread.join()
    me, peer = results[cfg.self_name], results[cfg.peer.name]
    if me.reachable:
        peer = prove_alive(servers[cfg.self_name], me, peer, first_read, cfg.flavor)
    if me.reachable and peer.reachable:
        me, peer = settle_errant(cfg, servers, me, peer)
    last_promotion, promotion_error = None, ""
    if copies:
        from .promotions import combine

        last_promotion, promotion_error = combine(copies, cfg.state_dir)
    pause_record, pause_shared, pause_error = None, None, ""
    if pause:
        from .pauses import combine as combine_pauses

        pause_record, pause_shared, pause_error = combine_pauses(pauses, cfg.state_dir)
    # A peer that does not answer may be dead, or this node may be the one cut off: ask
    # the witness (one ICMP echo; about a millisecond when it answers).
    asked = witness and cfg.failover.witness and me.reachable and not peer.reachable
    return ClusterView(me=me, peer=peer, holds_vip=vip_held(cfg), atlas=atlas_states,
                       last_promotion=last_promotion, promotion_error=promotion_error,
                       witness=witness_reachable(cfg.failover.witness) if asked else None,
                       pause=pause_record, pause_error=pause_error, pause_shared=pause_shared,
                       token=(tokens[0] if tokens else TokenState(error="not read")) if token_thread is not None else None)


def settle_errant(cfg: Config, servers: Dict[str, Server], me: NodeState, peer: NodeState) -> Tuple[NodeState, NodeState]:
    """Read a replica's source again when the replica looks errant.

    The two servers are read at once: a replica read after its source may already have
    applied what the source committed after it was read, and so look errant. Only a
    replica (read-only, or replicating) can have errant GTIDs, and its source's set only
    grows: read again after the replica, the source has everything the replica applied.
    """
    flavor = flavors.get(me.flavor, me.version)
    names = {me.name: cfg.self_name, peer.name: cfg.peer.name}
    nodes = {me.name: me, peer.name: peer}
    for replica, source in ((me, peer), (peer, me)):
        if not _replica_like(replica) or not flavor.errant(replica, nodes[source.name]):
            continue
        again = observe_node(servers[names[source.name]], cfg.flavor, cfg.failover.semi_sync)
        if again.reachable:
            nodes[source.name] = again
    return nodes[me.name], nodes[peer.name]


def _replica_like(node: NodeState) -> bool:
    return node.read_only or (node.replica is not None and node.replica.configured)


def witness_reachable(address: str, timeout: float = 1.0) -> bool:
    """One ICMP echo to the witness (the gateway), answered within ``timeout`` seconds."""
    import subprocess

    try:
        done = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", str(max(1, int(timeout + 0.5))), address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout + 1, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("witness %s: ping failed to run: %s", address, exc)
        return False
    return done.returncode == 0


def vip_answered_elsewhere(interface: str, vip: str, source: str, timeout: float = 1.0) -> Optional[Tuple[str, ...]]:
    """The MAC addresses of other hosts that answer ARP for ``vip`` on ``interface`` (this
    host holds it, so its own kernel does not answer on the wire): () when none, None when
    it cannot be told (arping missing or failing)."""
    import subprocess

    argv = ["arping", "-r", "-c", "2", "-w", str(max(1, int(timeout + 0.5))), "-i", interface]
    if source:
        argv += ["-S", source]
    try:
        done = subprocess.run(argv + [vip], capture_output=True, text=True, timeout=timeout + 2, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("duplicate-VIP check on %s failed to run: %s", interface, exc)
        return None
    macs = tuple(sorted({line.strip().lower() for line in done.stdout.splitlines() if line.count(":") == 5}))
    if done.returncode not in (0, 1) or (done.returncode == 1 and done.stderr.strip() and not macs):
        log.warning("duplicate-VIP check on %s: arping exit %d: %s", interface, done.returncode, done.stderr.strip()[:200])
        return None
    return macs


def vip_held(cfg: Config) -> Optional[bool]:
    """Whether this host holds keepalived.vip; None when no VIP is checked."""
    if not cfg.keepalived.vip or not getattr(cfg.keepalived, "vip_check", True):
        return None
    return holds_address(cfg.keepalived.vip)


def observe_quickly(cfg: Config, seconds: float = 0.5) -> ClusterView:
    """Both servers read at once on connections of their own, every deadline ``seconds`` (the
    lease keeper's check right before a self-fence: is the replica receiving, is semi-sync on?)."""
    from dataclasses import replace as copy

    account = copy(cfg.mysql, connect_timeout=seconds, read_timeout=seconds)
    servers = {n.name: Server(n, account, seconds) for n in cfg.nodes}
    results: Dict[str, NodeState] = {}

    def run(name: str) -> None:
        results[name] = observe_node(servers[name], cfg.flavor, semisync=True)

    try:
        peer_thread = threading.Thread(target=run, args=(cfg.peer.name,), daemon=True)
        peer_thread.start()
        run(cfg.self_name)
        peer_thread.join(seconds * 4)
    finally:
        for s in servers.values():
            s.close()
    peer = results.get(cfg.peer.name) or unreachable(cfg.peer, "no answer in time")
    return ClusterView(me=results[cfg.self_name], peer=peer)
