"""check-config (validation alone) and check (keepalived's vrrp_script health check)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..config import load
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError


def check_config(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load(args.config, args.node)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"orch: config error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    for w in cfg.warnings:
        out.write(f"warning: {w}\n")
    nodes = ", ".join(f"{n.name}={n.host}:{n.port}" for n in cfg.nodes)
    out.write(f"config OK: {cfg.path}: cluster {cfg.cluster}, self {cfg.self_name}, nodes {nodes}, flavor {cfg.flavor}, {len(cfg.atlas)} Atlas\n")
    return EXIT_OK


def health_check(args: argparse.Namespace, out: TextIO) -> int:
    """Exit 0 when this node's server accepts a login and answers SELECT 1."""
    cfg = load(args.config, args.node)
    from dataclasses import replace

    from ..db import Server
    from ..errors import DatabaseError

    account = replace(cfg.mysql, connect_timeout=min(cfg.mysql.connect_timeout, args.timeout))
    server = Server(cfg.me, account, read_timeout=args.timeout)
    try:
        server.value("SELECT 1")
    except DatabaseError as exc:
        print(f"orch check: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        server.close()
    return EXIT_OK


def replica_check(args: argparse.Namespace, out: TextIO) -> int:
    """Exit 0 when this node is a replica fit for a read pool (LVS MISC_CHECK), 1 otherwise.

    The maintainer's "may stay in Atlas" test (decide.replica_health with in_atlas=True):
    a probe every few seconds sees a replica under write load nearly always with
    something received but not yet applied, so lag within max_lag suffices, as for a
    listed Atlas backend. Errant GTIDs are checked when the peer answers.
    """
    cfg = load(args.config, args.node)
    from dataclasses import replace

    from ..db import Server
    from ..decide import replica_health
    from ..observe import observe

    account = replace(cfg.mysql, connect_timeout=min(cfg.mysql.connect_timeout, args.timeout))
    servers = {n.name: Server(n, account, read_timeout=args.timeout) for n in cfg.nodes}
    try:
        view = observe(cfg, servers, promotions=False, witness=False, pause=False)
    finally:
        for server in servers.values():
            server.close()
    health = replica_health(view, view.me, view.peer, cfg, in_atlas=True)
    if health.healthy is False:
        print(f"orch check --replica: unhealthy: {health.reason}", file=sys.stderr)
        return EXIT_FAILED
    # None: healthy as far as can be told without the peer (errant GTIDs unchecked).
    out.write(f"orch check --replica: ok: {health.reason}\n")
    return EXIT_OK
