"""check-config (validation alone) and check (keepalived's vrrp_script health check)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, TextIO

from ..config import DEFAULT_PATH, load
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError


def _json(out: TextIO, doc: Dict[str, Any]) -> None:
    import json

    out.write(json.dumps(doc, indent=2) + "\n")


def config_path(given: "str | None") -> str:
    import os

    return given or os.environ.get("ORCH_CONFIG") or DEFAULT_PATH


def check_config(args: argparse.Namespace, out: TextIO) -> int:
    """Validate the config file; with --format json one object: valid, path, problems, warnings,
    cluster, self, flavor, nodes [{name, host, port}], atlas (names). An unreadable file is bad input (exit 2)."""
    as_json = getattr(args, "format", "table") == "json"
    try:
        cfg = load(args.config, args.node)
    except ConfigError as exc:
        if as_json:
            _json(out, {"valid": False, "path": config_path(args.config), "problems": exc.problems, "warnings": [], "cluster": None,
                        "self": None, "flavor": None, "nodes": [], "atlas": []})
            return EXIT_FAILED
        for problem in exc.problems:
            print(f"orch: config error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        _json(out, {"valid": True, "path": cfg.path, "problems": [], "warnings": list(cfg.warnings), "cluster": cfg.cluster,
                    "self": cfg.self_name, "flavor": cfg.flavor,
                    "nodes": [{"name": n.name, "host": n.host, "port": n.port} for n in cfg.nodes],
                    "atlas": [a.name for a in cfg.atlas]})
        return EXIT_OK
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
        if getattr(args, "format", "table") == "json":
            _json(out, {"check": "server", "node": cfg.self_name, "ok": False, "reason": str(exc)})
        else:
            print(f"orch check: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        server.close()
    if getattr(args, "format", "table") == "json":
        _json(out, {"check": "server", "node": cfg.self_name, "ok": True, "reason": "the server answers"})
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
    if getattr(args, "format", "table") == "json":
        _json(out, {"check": "replica", "node": cfg.self_name, "ok": health.healthy is not False, "reason": health.reason})
        return EXIT_FAILED if health.healthy is False else EXIT_OK
    if health.healthy is False:
        print(f"orch check --replica: unhealthy: {health.reason}", file=sys.stderr)
        return EXIT_FAILED
    # None: healthy as far as can be told without the peer (errant GTIDs unchecked).
    out.write(f"orch check --replica: ok: {health.reason}\n")
    return EXIT_OK
