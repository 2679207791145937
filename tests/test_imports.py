"""What imports what: the product apart from its sandbox, a light notify hook, no cycles."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest
import yaml

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"

# Run as keepalived runs the hook: `orch notify ...` through orchestrator.cli.main.
NOTIFY = """
import sys
before = sorted(sys.modules)  # the interpreter's start-up (a development venv's import hook loads more)
from orchestrator import cli
code = cli.main(sys.argv[1:])
import json
print(json.dumps({"exit": code, "modules": sorted(sys.modules), "before": before}))
"""


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("with_atlas", [False, True], ids=["no-atlas", "atlas"])
def test_notify_path_imports_no_lab_stand_in_or_scheduler(tmp_path, with_atlas):
    """Both servers down: BACKUP decides, journals and runs its (Atlas) steps, and loads
    nothing of the sandbox; without Atlas, not even the Atlas client or its retries."""
    atlas = [{"name": "local", "admin": {"host": "127.0.0.1", "port": closed_port(), "user": "u", "password": "p"}}]
    config = tmp_path / "orch.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "test",
        "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": closed_port()},
                  "server2": {"host": "127.0.0.1", "port": closed_port()}},
        "mysql": {"user": "orch", "password": "pw", "connect_timeout": 1},
        "replication": {"user": "repl", "password": "pw"},
        "state_dir": str(tmp_path / "state"),
        "keepalived": {"instance": "VI_1", "vip_check": False},
        **({"atlas": atlas} if with_atlas else {}),
    }))
    config.chmod(0o600)
    argv = [sys.executable, "-c", NOTIFY, "-c", str(config), "notify", "INSTANCE", "VI_1", "BACKUP", "100"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    run = json.loads(proc.stdout.splitlines()[-1])
    assert run["exit"] == 3, proc.stderr  # safe, incomplete: nothing to fence while this server is down
    modules = set(run["modules"])
    walked = {"orchestrator.commands.roles", "orchestrator.observe", "orchestrator.decide", "orchestrator.execute",
              "orchestrator.db", "pymysql"} | ({"orchestrator.atlas.apply", "orchestrator.atlas.client"} if with_atlas else set())
    assert walked <= modules, f"the notify path was not walked: {sorted(walked - modules)} missing"
    heavy = ["orchestrator.lab", "orchestrator.commands.lab", "orchestrator.commands.maintain", "orchestrator.maintainer",
             "orchestrator.pass_choice", "orchestrator.metrics", "apscheduler"]
    if not with_atlas:
        heavy += ["orchestrator.atlas", "tenacity"]
    loaded = sorted(m for m in modules if any(in_package(m, h) for h in heavy))
    assert loaded == [], f"imported on the notify path: {loaded}"


def import_graph() -> Dict[str, Set[str]]:
    """Every orchestrator module -> the orchestrator modules it imports (deferred ones too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: Dict[str, Set[str]] = {}
    for name, (path, is_package) in modules.items():
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_package else name.split(".")[:-1]
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    cycles: List[List[str]] = []

    def visit(module: str, path: List[str], done: Set[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in done:
                visit(imported, path + [imported], done)
        done.add(module)

    done: Set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_only_orch_lab_imports_the_lab():
    graph = import_graph()
    users = sorted(m for m, imported in graph.items()
                   if not in_package(m, "orchestrator.lab") and any(in_package(i, "orchestrator.lab") for i in imported))
    assert users == ["orchestrator.commands.lab"]


# Never needed on the hook's path: each is milliseconds of write downtime per event. (typing,
# ssl, traceback, inspect, ipaddress and yaml are imported there as any Python program
# imports them: PyMySQL imports ssl, logging traceback, dataclasses inspect; the config is
# parsed on every event.)
PUT_OFF = ["argparse", "encodings.idna", "logging.handlers", "tenacity", "apscheduler", "prometheus_client",
           "orchestrator.lab", "orchestrator.maintainer", "orchestrator.metrics"]


@pytest.mark.parametrize("with_atlas", [False, True], ids=["no-atlas", "atlas"])
def test_promotion_imports_nothing_it_does_not_use(cluster, tmp_path, with_atlas):
    """The measured failover (bench/notify_latency): the master killed, its caught-up replica
    promoted by `orch notify MASTER`, with and without an Atlas to update. It promotes, and
    none of what the hook puts off is loaded: a change that brings one back costs every
    failover its import time."""
    s1, s2, cfg, state = cluster
    from orchestrator.lab.atlas_standin.standin import AtlasStandin

    from . import orchtest as t
    from .test_atlas_failover import ADMIN_PW, atlas_conf

    standin = None
    if with_atlas:
        conf = atlas_conf(tmp_path / "atlas.cnf", f"{s2.host}:{s2.port}@2")
        standin = AtlasStandin(conf, host="127.0.0.1", port=0, check_interval=None).start()
        host, port = standin.address
        atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ADMIN_PW}, "config_file": conf}]
        cfg = t.write_config(tmp_path / "orch-atlas.yaml", t.config_dict(s1, s2, state, atlas=atlas))
    try:
        _promote_and_check_imports(s1, s2, cfg, standin)
    finally:
        if standin is not None:
            standin.stop()


def _promote_and_check_imports(s1, s2, cfg, standin):
    from . import orchtest as t

    assert t.orch(cfg, "server2", "check-config").code == 0
    s1.kill()
    argv = [sys.executable, "-c", NOTIFY, "-c", cfg, "--node", "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    run = json.loads(proc.stdout.splitlines()[-1])
    assert run["exit"] == 0, proc.stderr
    assert s2.sql("SELECT @@global.read_only AS ro")[0]["ro"] == 0
    modules = set(run["modules"]) - set(run["before"])
    assert {"orchestrator.execute", "orchestrator.flavors.mariadb", "pymysql"} <= modules
    if standin is not None:  # it worked on Atlas: writes off through Atlas, then on again
        assert "orchestrator.atlas.client" in modules
        assert standin.mutating_commands() == ["SET OFFLINE 1", "SET ONLINE 1"]
    assert sorted(m for m in PUT_OFF if m in modules) == []
