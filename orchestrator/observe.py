"""Observe once: both servers (concurrently) into a frozen ClusterView."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Dict, Optional, Tuple

from . import flavors
from .config import Config, Node
from .db import Server
from .errors import DatabaseError
from .model import AtlasState, ClusterView, NodeState

log = logging.getLogger(__name__)


def read_node(server: Server, flavor_name: str = "auto") -> NodeState:
    """Read one server's role, fencing and GTID state (three queries)."""
    node = server.node
    head = server.query("SELECT VERSION() AS version, @@global.server_id AS server_id, @@global.read_only AS read_only")[0]
    version = str(head["version"])
    flavor = flavors.get(flavor_name, version)
    gtids = server.query(flavor.gtid_query)[0]
    status_rows = server.query(flavor.replica_status_query)
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
        replica=flavor.parse_replica_status(status_rows[0] if status_rows else None),
    )


def unreachable(node: Node, error: str) -> NodeState:
    return NodeState(name=node.name, host=node.host, port=node.port, reachable=False, error=error)


def observe_node(server: Server, flavor_name: str) -> NodeState:
    try:
        return read_node(server, flavor_name)
    except DatabaseError as exc:
        # The label is already in the message; keep only what went wrong.
        return unreachable(server.node, str(exc).split(": ", 1)[-1])


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


def observe(cfg: Config, servers: Dict[str, Server], atlas: bool = False) -> ClusterView:
    """Observe both servers at once (a dead peer costs one connect timeout, not two)."""
    results: Dict[str, NodeState] = {}

    def run(name: str) -> None:
        results[name] = observe_node(servers[name], cfg.flavor)

    peer_thread = threading.Thread(target=run, args=(cfg.peer.name,), daemon=True)
    peer_thread.start()
    run(cfg.self_name)
    atlas_states: Tuple[AtlasState, ...] = ()
    if atlas:
        from .atlas.observe import observe_atlas

        atlas_states = observe_atlas(cfg)
    peer_thread.join()
    holds_vip: Optional[bool] = holds_address(cfg.keepalived.vip) if cfg.keepalived.vip else None
    return ClusterView(me=results[cfg.self_name], peer=results[cfg.peer.name], holds_vip=holds_vip, atlas=atlas_states)
