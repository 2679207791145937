"""The compiled copy of dataclass methods: the same classes, faster, and never a copy it should not trust."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

# Each check runs in a fresh interpreter: install() changes the dataclasses module of its process.
PRELUDE = """
import json, sys
sys.dont_write_bytecode = False
from orchestrator import classcache
classcache.cache_path = lambda: sys.argv[1]
"""

DEFINE = """
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Tuple

@dataclass(frozen=True)
class Step:
    \"\"\"A frozen step.\"\"\"
    node: str
    timeout: float = 2.0
    peers: Tuple[str, ...] = field(default=(), repr=False)
    template: ClassVar[str] = "x"

@dataclass(order=True)
class Counter:
    \"\"\"A mutable, ordered one.\"\"\"
    n: int = 0

a, b = Step("s1", 3.0, ("p",)), Step("s1", 3.0, ("p",))
try:
    a.node = "s2"
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
c = Counter(); c.n += 1
facts = {
    "repr": repr(a), "eq": a == b, "hash": hash(a) == hash(b), "frozen": frozen,
    "fields": [f.name for f in dataclasses.fields(Step)], "replace": repr(dataclasses.replace(a, node="s3")),
    "order": Counter(1) < Counter(2), "counter": repr(c), "annotations": str(Step.__init__.__annotations__),
    "init_defaults": repr(Step.__init__.__defaults__),
}
"""


def run(code: str, cache: Path, env: "dict | None" = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code, str(cache)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_classes_are_exactly_what_dataclasses_makes_compiled_or_cached(tmp_path):
    cache = tmp_path / "methods.marshal"
    plain = run(DEFINE + "print(json.dumps(facts))", cache)
    first = run("classcache.install()\n" + DEFINE + "classcache.save()\nprint(json.dumps({**facts, 'added': len(classcache._added)}))", cache)
    assert cache.exists() and first.pop("added") == 0  # saved: nothing left to add
    again = run("classcache.install()\n" + DEFINE + "print(json.dumps({**facts, 'cached': len(classcache._compiled), 'added': len(classcache._added)}))", cache)
    assert again.pop("cached") > 0 and again.pop("added") == 0  # every method came from the copy
    assert plain == first == again
    assert plain["frozen"] and plain["eq"] and plain["hash"] and plain["order"]


def test_a_copy_that_is_not_exactly_trusted_is_ignored(tmp_path):
    cache = tmp_path / "methods.marshal"
    run("classcache.install()\n" + DEFINE + "classcache.save()\nprint('{}')", cache)
    count = "classcache.install()\nprint(json.dumps({'cached': len(classcache._compiled)}))"
    assert run(count, cache)["cached"] > 0

    cache.chmod(0o666)  # writable by others: anyone could plant code in it
    assert run(count, cache)["cached"] == 0
    cache.chmod(0o644)

    data = marshal.loads(cache.read_bytes())
    cache.write_bytes(marshal.dumps({**data, "python": "another interpreter"}))
    assert run(count, cache)["cached"] == 0

    cache.write_bytes(b"not marshal at all")
    assert run(count, cache)["cached"] == 0

    link = tmp_path / "link.marshal"
    link.symlink_to(cache)
    assert run(count, link)["cached"] == 0


def test_nothing_is_written_when_bytecode_is_not(tmp_path):
    cache = tmp_path / "methods.marshal"
    run("sys.dont_write_bytecode = True\nclasscache.install()\n" + DEFINE + "classcache.save()\nprint('{}')", cache)
    assert not cache.exists()


def test_dataclasses_loads_inspect_only_when_a_class_needs_it(tmp_path):
    code = """
classcache.install()
import dataclasses
loaded = "inspect" in sys.modules
@dataclasses.dataclass
class NoDoc:
    x: int
import inspect
print(json.dumps({"loaded": loaded, "doc": NoDoc.__doc__, "real": inspect.signature is dataclasses.inspect.signature}))
"""
    facts = run(code, tmp_path / "methods.marshal")
    assert facts == {"loaded": False, "doc": "NoDoc(x: int)", "real": True}


def test_orch_saves_the_copy_and_its_next_run_uses_it(tmp_path):
    """cli.main installs the copy before a command imports anything, and saves after the run."""
    config = tmp_path / "orch.yaml"
    config.write_text("self: server1\nnodes: {server1: {host: 127.0.0.1}, server2: {host: 127.0.0.2}}\n"
                      "mysql: {user: orch, password: pw}\nreplication: {user: repl, password: pw}\n"
                      f"state_dir: {tmp_path / 'state'}\nkeepalived: {{instance: VI_1, vip_check: false}}\n")
    config.chmod(0o600)
    cache = tmp_path / "methods.marshal"
    code = f"""
from orchestrator import cli
code = cli.main(["-c", {str(config)!r}, "notify", "INSTANCE", "VI_OTHER", "MASTER", "100"])
import dataclasses
print(json.dumps({{"exit": code, "cached": len(classcache._compiled), "patched": dataclasses.exec is classcache._exec,
                  "decide": "orchestrator.decide" in sys.modules}}))
"""
    first = run(code, cache)
    assert first["exit"] == 0 and first["patched"] and first["decide"] and cache.exists()
    again = run(code, cache)
    assert again["exit"] == 0 and again["cached"] >= first["cached"] > 0
    path = Path(__import__("orchestrator.classcache").classcache.cache_path())
    assert path.parent.name == "__pycache__"  # beside the package's own bytecode


def test_the_notify_path_does_not_load_inspect(tmp_path):
    """Every dataclass keepalived's hook defines has a docstring: inspect (ast, dis) stays unloaded."""
    import socket

    def closed_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    config = tmp_path / "orch.yaml"
    config.write_text(f"self: server1\nnodes: {{server1: {{host: 127.0.0.1, port: {closed_port()}}}, "
                      f"server2: {{host: 127.0.0.1, port: {closed_port()}}}}}\n"
                      "mysql: {user: orch, password: pw, connect_timeout: 1}\nreplication: {user: repl, password: pw}\n"
                      f"state_dir: {tmp_path / 'state'}\nkeepalived: {{instance: VI_1, vip_check: false}}\n")
    config.chmod(0o600)
    code = f"""
from orchestrator import cli
code = cli.main(["-c", {str(config)!r}, "notify", "INSTANCE", "VI_1", "BACKUP", "100"])
print(json.dumps({{"exit": code, "loaded": sorted(m for m in ("inspect", "ast", "dis") if m in sys.modules),
                  "walked": "orchestrator.execute" in sys.modules}}))
"""
    facts = run(code, tmp_path / "methods.marshal")
    assert facts == {"exit": 3, "loaded": [], "walked": True}
