"""The configuration schema: one statement of each key, read by one reader, rendered as the
reference (docs/configuration.md) and checked against conf/orch.yaml and docs/orch-yaml.md."""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from orchestrator import config
from orchestrator.config import Config, parse, read_section, resolve, setting, validate
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = dict(config.all_keys())

GOOD = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "pw1"},
    "replication": {"user": "repl", "password": "pw2"},
    "keepalived": {"vip": "10.0.0.100"},
}


def problems(call: Any, *args: Any, **kw: Any) -> List[str]:
    with pytest.raises(ConfigError) as exc:
        call(*args, **kw)
    return exc.value.problems


# --- the reference -------------------------------------------------------------------


def test_docs_configuration_md_is_the_generated_reference():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == config.reference(), (
        "docs/configuration.md differs from the schema; regenerate it with\n"
        "python -c 'from orchestrator.config import reference; print(reference(), end=\"\")' > docs/configuration.md")


def test_every_schema_key_is_in_the_reference_with_its_help_and_bounds():
    text = config.reference()
    for path, f in SCHEMA.items():
        assert f"`{path}`" in text, path
        assert f.metadata["help"].strip(), f"{path} has no help"
        if "choices" in f.metadata:
            assert all(f"`{c}`" in text for c in f.metadata["choices"]), path
    assert "| `failover.catchup_timeout` | number | `30` | 0 to 3600 |" in text
    assert "| `nodes.<name>.port` | integer | `3306` | 1 to 65535 |" in text
    assert "| `flavor` | string | `auto` | `auto`, `mysql`, `mariadb` |" in text


def test_each_default_is_stated_once():
    """The reader's default is the dataclass's, wherever the class can have one; a
    section's default is the section read from nothing."""
    def check(cls: Any) -> None:
        for f in fields(cls):
            meta = f.metadata
            if "help" not in meta:
                continue
            if f.default is not MISSING and meta["default"] is not MISSING:
                assert meta["default"] == f.default, (cls.__name__, f.name)
            if "section" in meta:
                check(meta["section"])

    check(Config)
    for cls in (config.Node, config.AtlasInstance):
        check(cls)
    c = parse(GOOD)
    assert c.failover == config.Failover() and c.maintainer == config.MaintainerSettings() and c.hooks == config.Hooks()
    assert c.state_dir == SCHEMA["state_dir"].metadata["default"] == "/var/lib/orch"


# --- conf/orch.yaml and docs/orch-yaml.md against the schema ---------------------------------------


def uncommented(text: str) -> str:
    """The YAML with its commented-out keys put back (``# tls_ca: ...``, the ``# alerts:``
    block); prose comments stay comments."""
    return "\n".join(re.sub(r"^(\s*)# ?(?=\s*[a-z_]+:)", r"\1", line) for line in text.splitlines())


def key_paths(doc: Any, prefix: str = "") -> List[str]:
    """Every key of a YAML document as a schema path (nodes.<name>.host, atlas[].admin.port)."""
    out = []
    for key, value in doc.items():
        path = "nodes.<name>" if prefix == "nodes" else f"{prefix}.{key}" if prefix else str(key)
        out.append(path)
        if isinstance(value, dict) and not is_leaf(path):
            out += key_paths(value, path)
        elif isinstance(value, list) and path == "atlas":
            for item in value:
                out += key_paths(item, "atlas[]")
    return out


def is_leaf(path: str) -> bool:
    f = SCHEMA.get(path)
    return f is not None and "section" not in f.metadata and path not in ("nodes", "atlas")


def unknown(paths: List[str]) -> List[str]:
    """The paths that are neither a key of the schema nor a group of its keys (log, atlas[].admin)."""
    return [p for p in paths if p not in SCHEMA and not any(k.startswith(p + ".") for k in SCHEMA)]


def section_text(text: str, top: str) -> str:
    m = re.search(rf"^#? ?{re.escape(top)}:.*?(?=^#? ?[a-z_]+:|\Z)", text, re.M | re.S)
    return m.group(0) if m else ""


def test_every_key_of_the_example_is_in_the_schema_and_every_schema_key_in_the_example():
    text = (ROOT / "conf" / "orch.yaml").read_text()
    shown = key_paths(yaml.safe_load(uncommented(text)))
    assert unknown(shown) == [], "conf/orch.yaml shows keys the schema does not have"
    missing = []
    for path, f in SCHEMA.items():
        either = f.metadata.get("either")
        leaf = path.rsplit(".", 1)[-1]
        if path in shown or (either and path.rsplit(".", 1)[0] + "." + either in shown):
            continue
        if re.search(rf"#.*\b{re.escape(leaf)}:", section_text(text, path.split(".")[0].split("[")[0])):
            continue  # named in a comment of its section ("per node also atlas_address: ...")
        missing.append(path)
    assert missing == [], f"conf/orch.yaml does not show: {missing}"


def test_orch_yaml_page_block_names_only_schema_keys_and_links_the_reference():
    section = (ROOT / "docs" / "orch-yaml.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    shown = key_paths(yaml.safe_load(uncommented(block)))
    assert len(shown) > 20 and unknown(shown) == []
    assert "](configuration.md)" in section


def test_the_comparison_catches_a_misspelt_or_missing_key():
    assert unknown(key_paths({"failover": {"catchup_timout": 5}, "atlas": [{"admin": {"prot": 1}}], "log": {}})) == [
        "failover.catchup_timout", "atlas[].admin.prot"]
    assert unknown(key_paths({"nodes": {"s1": {"host": "h"}}, "alerts": {"smtp": {"from": "a@b"}}})) == []


# --- one reader, pure, then files ---------------------------------------------------------


def test_validate_reads_no_file_and_resolve_reads_them(tmp_path):
    raw = {**GOOD, "mysql": {"user": "orch", "password_file": "mysql.pass", "tls_ca": "ca.pem"}}
    path = str(tmp_path / "orch.yaml")
    pure = validate(raw, path)  # neither file exists yet: nothing is read
    assert (pure.mysql.password, pure.mysql.password_file) == ("", str(tmp_path / "mysql.pass"))
    assert (pure.mysql.tls, pure.mysql.tls_ca) == ("required", str(tmp_path / "ca.pem"))
    got = problems(resolve, pure)
    assert got == [f"mysql.password_file: cannot read {tmp_path}/mysql.pass: No such file or directory",
                   f"mysql.tls_ca: {tmp_path}/ca.pem does not exist"], got
    (tmp_path / "mysql.pass").write_text("from-file\n")
    (tmp_path / "ca.pem").write_text("x")
    assert resolve(pure).mysql.password == "from-file" and resolve(pure) == parse(raw, path)
    assert "from-file" not in repr(resolve(pure))


def test_parse_reports_problems_of_both_steps_at_once(tmp_path):
    raw = {**GOOD, "mysql": {"user": "orch", "password_file": "absent.pass"}, "failover": {"catchup_timeout": -1}}
    got = problems(parse, raw, str(tmp_path / "orch.yaml"))
    assert sorted(got) == sorted(["failover.catchup_timeout: expected a number from 0 to 3600",
                                  f"mysql.password_file: cannot read {tmp_path}/absent.pass: No such file or directory"])


def test_replication_password_length_is_checked_once_the_password_is_known(tmp_path):
    (tmp_path / "repl.pass").write_text("ü" * 49 + "\n")  # 98 bytes
    raw = {**GOOD, "replication": {"user": "repl", "password_file": "repl.pass"}}
    validate(raw, str(tmp_path / "orch.yaml"))
    got = problems(parse, raw, str(tmp_path / "orch.yaml"))
    assert got == ["replication.password: longer than 96 bytes of UTF-8: the server would not keep it whole"]
    assert "ü" not in "".join(got)


# --- a new section is one edit ---------------------------------------------------------


def urls(value: Any, path: str, reading: Any) -> Tuple[str, ...]:
    """list of URLs"""
    if not isinstance(value, list) or not all(isinstance(u, str) and u.startswith("http") for u in value):
        reading.add(path, "expected a list of http(s) URLs")
        return ()
    return tuple(value)


@dataclass(frozen=True)
class Consul:
    """A section a new section would add it (consul: none exists)."""

    endpoints: Tuple[str, ...] = setting(("http://127.0.0.1:2379",), "the etcd cluster", read=urls)
    ttl: float = setting(10.0, "seconds the leader key lives without a touch", lo=1, hi=300)
    prefix: str = setting("/orch", "where orch's keys live")
    mode: str = setting("off", "off | advisory | required", choices=("off", "advisory", "required"))


@dataclass(frozen=True)
class WithConsul(Config):
    """Config with one more field: the whole edit."""

    consul: Consul = setting(Consul(), "the consensus store")


def test_a_new_section_is_one_edit():
    assert read_section(Consul, None) == Consul()
    assert read_section(Consul, {"ttl": 5, "mode": "advisory"}, "consul") == Consul(ttl=5.0, mode="advisory")
    got = problems(read_section, Consul, {"ttl": 0, "mode": "on", "prefx": "/x", "prefix": ""}, "consul")
    assert sorted(got) == ["consul.mode: expected one of off, advisory, required", "consul.prefix: expected a non-empty string",
                           "consul.prefx: unknown key", "consul.ttl: expected a number from 1 to 300"]
    assert problems(read_section, Consul, {"endpoints": ["x"]}, "consul") == ["consul.endpoints: expected a list of http(s) URLs"]
    # In the whole file: read with everything else, its problems with the others', in the reference.
    cfg = read_section(WithConsul, {**GOOD, "consul": {"ttl": 20}}, given={"path": "<test>"})
    assert isinstance(cfg, WithConsul) and cfg.consul.ttl == 20.0 and cfg.me.name == "server1"
    got = problems(read_section, WithConsul, {**GOOD, "consul": {"ttl": "soon"}, "failover": {"catchup_timout": 1}},
                   given={"path": "<test>"})
    assert sorted(got) == ["consul.ttl: expected a number", "failover.catchup_timout: unknown key"]
    assert "consul" in config.keys_of(WithConsul) and "consul" not in config.KNOWN_KEYS
    assert "| `consul.ttl` | number | `10` | 1 to 300 | seconds the leader key lives without a touch |" in config.reference(WithConsul)


def test_the_derived_key_lists_are_the_schemas():
    assert config.KNOWN_KEYS == ("cluster", "flavor", "self", "nodes", "mysql", "replication", "failover", "state_dir",
                                 "atlas", "maintainer", "keepalived", "http", "haproxy", "hooks", "etcd", "alerts", "log")
    assert config.HAPROXY_KEYS == ("stats_sockets", "write_backend", "read_backend")
    assert config.ATLAS_KEYS == ("name", "admin", "config_file", "persist")
    assert set(config.ATLAS_ADMIN_KEYS) == {"host", "port", "user", "password", "password_file", "timeout"}
    assert config.LOG_KEYS == ("syslog",) and "from" in config.SMTP_KEYS and "sender" not in config.SMTP_KEYS
    by_section: Dict[str, List[str]] = {}
    for path in SCHEMA:
        head, _, leaf = path.rpartition(".")
        by_section.setdefault(head, []).append(leaf)
    assert sorted(by_section["failover"]) == sorted(config.FAILOVER_KEYS)
    assert sorted(by_section["replication"]) == sorted(config.REPLICATION_KEYS)
