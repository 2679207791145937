"""Configuration validation: every problem at once, with its path."""

import os

import pytest

from orchestrator.config import load, parse
from orchestrator.errors import ConfigError, UsageError

GOOD = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1", "port": 3306}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "pw1"},
    "replication": {"user": "repl", "password": "pw2"},
    "keepalived": {"vip": "10.0.0.100"},
}


def problems(raw, **kw):
    with pytest.raises(ConfigError) as exc:
        parse(raw, **kw)
    return exc.value.problems


def test_defaults():
    c = parse(GOOD)
    assert (c.cluster, c.flavor, c.state_dir, c.failover.catchup_timeout) == ("atlas-ha", "auto", "/var/lib/orch", 30.0)
    assert c.me.name == "server1" and c.peer.name == "server2" and c.peer.port == 3306
    assert c.peer.atlas_address == "10.0.0.2:3306"
    assert c.mysql.connect_timeout == 2.0 and c.mysql.tls == "preferred"
    assert c.maintainer.interval == 5.0 and c.maintainer.max_lag == 10
    assert c.failover.fence_timeout == 3.0 and c.mysql.read_timeout == 2.0
    assert c.keepalived.vip_check is True and c.keepalived.vip == "10.0.0.100"
    assert "pw1" not in repr(c) and set(c.secrets) == {"pw1", "pw2"}


def test_every_problem_reported_with_its_path():
    raw = {
        "self": "server9", "flavor": "oracle", "colour": "blue",
        "nodes": {"server1": {"host": "", "port": "x"}, "server2": {"host": "h", "port": 70000}},
        "mysql": {"user": "orch"},
        "failover": {"catchup_timeout": "soon"},
    }
    got = problems(raw)
    for expected in [
        "colour: unknown key", "flavor: expected one of auto, mysql, mariadb", "nodes.server1.host: expected a non-empty string",
        "nodes.server1.port: expected an integer", "nodes.server2.port: expected an integer from 1 to 65535",
        "self: 'server9' is not one of nodes: server1, server2", "mysql.password: missing (or give password_file)",
        "replication: missing", "failover.catchup_timeout: expected a number",
    ]:
        assert expected in got, got


def test_unknown_keys_at_every_level_are_errors_with_their_path():
    atlas = [{"name": "local", "admin": {"host": "127.0.0.1", "user": "u", "password": "p", "timeuot": 2}, "persits": "none"}]
    raw = {
        **GOOD,
        "nodes": {"server1": {"host": "10.0.0.1", "prot": 3306}, "server2": {"host": "10.0.0.2"}},
        "mysql": {"user": "orch", "password": "pw1", "read_timout": 1},
        "replication": {"user": "repl", "password": "pw2", "tls": "required"},
        "failover": {"catchup_timout": 5},
        "atlas": atlas,
        "maintainer": {"intervall": 5},
        "keepalived": {"vip": "10.0.0.100", "instnace": "VI_1"},
        "log": {"sylog": True},
        "statedir": "/tmp",
    }
    got = problems(raw)
    expected = [
        "statedir: unknown key", "nodes.server1.prot: unknown key", "mysql.read_timout: unknown key",
        "replication.tls: unknown key", "failover.catchup_timout: unknown key", "atlas[0].persits: unknown key",
        "atlas[0].admin.timeuot: unknown key", "maintainer.intervall: unknown key", "keepalived.instnace: unknown key",
        "log.sylog: unknown key",
    ]
    assert sorted(got) == sorted(expected), got


def test_timeouts_and_their_ranges():
    c = parse({**GOOD, "failover": {"fence_timeout": 0.5}, "mysql": {"user": "o", "password": "p", "read_timeout": 7}})
    assert c.failover.fence_timeout == 0.5 and c.mysql.read_timeout == 7.0 and c.mysql.connect_timeout == 2.0
    got = problems({**GOOD, "failover": {"fence_timeout": 0}, "mysql": {"user": "o", "password": "p", "read_timeout": 601}})
    assert "failover.fence_timeout: expected a number from 0.1 to 600" in got
    assert "mysql.read_timeout: expected a number from 0.1 to 600" in got
    got = problems({**GOOD, "failover": {"fence_timeout": "3s"}, "mysql": {"user": "o", "password": "p", "read_timeout": True}})
    assert "failover.fence_timeout: expected a number" in got and "mysql.read_timeout: expected a number" in got
    # the replication account has no timeouts of its own: they are orch's, not the replica's
    assert "replication.read_timeout: unknown key" in problems({**GOOD, "replication": {"user": "r", "password": "p", "read_timeout": 1}})


def test_vip_is_required_unless_vip_check_is_false():
    raw = {k: v for k, v in GOOD.items() if k != "keepalived"}
    for missing in (raw, {**raw, "keepalived": {"instance": "VI_1"}}, {**raw, "keepalived": {"vip": ""}},
                    {**raw, "keepalived": {"vip_check": True}}):
        got = problems(missing)
        assert len(got) == 1 and got[0].startswith("keepalived.vip: missing: notify needs it to tell stale keepalived events"), got
        assert "keepalived.vip_check: false" in got[0]
    c = parse({**raw, "keepalived": {"vip_check": False, "instance": "VI_1"}})
    assert (c.keepalived.vip, c.keepalived.vip_check) == ("", False)
    assert "keepalived.vip_check: expected true or false" in problems({**raw, "keepalived": {"vip_check": "no"}})
    assert any(p.startswith("keepalived.vip: set while keepalived.vip_check is false")
               for p in problems({**raw, "keepalived": {"vip": "10.0.0.100", "vip_check": False}}))


def test_check_config_reports_every_problem(tmp_path, capsys):
    import yaml

    from orchestrator.cli import main

    p = tmp_path / "orch.yaml"
    raw = {k: v for k, v in GOOD.items() if k != "keepalived"}
    p.write_text(yaml.safe_dump({**raw, "failover": {"catchup_timout": 5, "fence_timeout": 0}}))
    os.chmod(p, 0o600)
    assert main(["-c", str(p), "check-config"]) == 1
    err = capsys.readouterr().err
    for expected in ("failover.catchup_timout: unknown key", "failover.fence_timeout: expected a number from 0.1 to 600",
                     "keepalived.vip: missing"):
        assert f"orch: config error: {expected}" in err, err
    p.write_text(yaml.safe_dump({**raw, "keepalived": {"vip_check": False}}))
    assert main(["-c", str(p), "check-config"]) == 0
    assert "config OK" in capsys.readouterr().out


def test_node_override_and_node_count():
    assert parse(GOOD, self_override="server2").self_name == "server2"
    assert "nodes: expected exactly 2 nodes, got 1" in problems({**GOOD, "nodes": {"server1": {"host": "h"}}})


def test_password_file(tmp_path):
    (tmp_path / "mysql.pass").write_text("from-file\n")
    raw = {**GOOD, "mysql": {"user": "orch", "password_file": "mysql.pass"}}
    assert parse(raw, str(tmp_path / "orch.yaml")).mysql.password == "from-file"
    bad = {**GOOD, "mysql": {"user": "orch", "password_file": "missing.pass"}}
    assert any(p.startswith("mysql.password_file: cannot read") for p in problems(bad, path=str(tmp_path / "orch.yaml")))
    both = {**GOOD, "mysql": {"user": "orch", "password": "a", "password_file": "mysql.pass"}}
    assert "mysql: give password or password_file, not both" in problems(both, path=str(tmp_path / "x.yaml"))


def test_tls_settings(tmp_path):
    assert parse({**GOOD, "mysql": {"user": "o", "password": "p", "tls": "disabled"}}).mysql.tls == "disabled"
    assert "mysql.tls: expected one of disabled, preferred, required" in problems({**GOOD, "mysql": {"user": "o", "password": "p", "tls": "maybe"}})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    c = parse({**GOOD, "mysql": {"user": "o", "password": "p", "tls_ca": str(ca)}})
    assert c.mysql.tls == "required" and c.mysql.tls_ca == str(ca)


def test_tls_options_reach_the_driver():
    from orchestrator.db import _tls_options

    assert _tls_options(parse({**GOOD, "mysql": {"user": "o", "password": "p", "tls": "disabled"}}).mysql) == {"ssl_disabled": True}
    assert _tls_options(parse(GOOD).mysql) == {}
    import ssl

    ctx = _tls_options(parse({**GOOD, "mysql": {"user": "o", "password": "p", "tls": "required"}}).mysql)["ssl"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE


def test_atlas_section():
    atlas = [{"name": "local", "admin": {"host": "127.0.0.1", "port": 2345, "user": "user", "password": "pwd"}, "config_file": "/etc/atlas.cnf"}]
    c = parse({**GOOD, "atlas": atlas})
    assert c.atlas[0].persist == "rewrite" and c.atlas[0].port == 2345 and "pwd" in c.secrets
    assert parse({**GOOD, "atlas": [{**atlas[0], "config_file": ""}]}).atlas[0].persist == "none"
    got = problems({**GOOD, "atlas": [atlas[0], {**atlas[0], "persist": "rewrite", "config_file": ""}]})
    assert "atlas[1].name: duplicate name 'local'" in got and "atlas[1].config_file: missing (persist: rewrite needs it)" in got
    got = problems({**GOOD, "atlas": atlas, "nodes": {"server1": {"host": "db1.example"}, "server2": {"host": "10.0.0.2", "atlas_address": "10.0.0.2"}}})
    assert any(p.startswith("nodes.server1.atlas_address: 'db1.example' is not an IPv4 address") for p in got), got
    assert any(p.startswith("nodes.server2.atlas_address:") for p in got), got


def test_keepalived_section():
    c = parse({**GOOD, "keepalived": {"vip": "10.0.0.100/24", "instance": "VI_1"}})
    assert (c.keepalived.vip, c.keepalived.instance) == ("10.0.0.100", "VI_1")
    assert "keepalived.vip: expected an IP address" in problems({**GOOD, "keepalived": {"vip": "nope"}})


def test_load_errors(tmp_path):
    with pytest.raises(UsageError, match="cannot read the config file"):  # bad input: exit 2
        load(str(tmp_path / "absent.yaml"))
    p = tmp_path / "x.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load(str(p))


def test_env_overrides(tmp_path, monkeypatch):
    import yaml

    p = tmp_path / "orch.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    os.chmod(p, 0o600)
    monkeypatch.setenv("ORCH_CONFIG", str(p))
    monkeypatch.setenv("ORCH_NODE", "server2")
    c = load()
    assert c.path == str(p) and c.self_name == "server2" and c.warnings == ()


def test_example_config_is_valid():
    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "conf", "orch.yaml")
    raw = yaml.safe_load(open(path))

    def inline(d):  # the example points at password files that exist only on a real host
        if isinstance(d, dict):
            return {("password" if k == "password_file" else k): inline(v) for k, v in d.items()}
        if isinstance(d, list):
            return [inline(v) for v in d]
        return d

    c = parse(inline(raw))
    assert c.atlas[0].persist == "rewrite" and c.keepalived.instance == "VI_1"
    assert c.keepalived.vip_check and c.keepalived.vip == "10.0.0.100"
    text = open(path).read()
    for key in ("fence_timeout:", "read_timeout:", "vip_check:"):
        assert key in text, f"conf/orch.yaml does not show {key}"


def test_a_parsed_copy_an_earlier_orch_left_is_removed_once(tmp_path, caplog):
    """Earlier versions kept a parsed copy of the config, passwords included, beside it
    (.orch.yaml.compiled): loading the config removes it and says so; nothing reads it."""
    import json
    import logging

    import yaml

    from orchestrator.config import compiled_path

    p = tmp_path / "orch.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    os.chmod(p, 0o600)
    stale = tmp_path / ".orch.yaml.compiled"
    assert compiled_path(str(p)) == str(stale)
    planted = json.loads(json.dumps(GOOD))
    planted["mysql"]["password"] = "planted"
    stale.write_text(json.dumps({"format": 1, "source": p.read_text(), "raw": planted}))
    os.chmod(stale, 0o600)
    with caplog.at_level(logging.INFO, logger="orchestrator.config"):
        assert load(str(p)).mysql.password == "pw1"
    assert not stale.exists()
    assert any(str(stale) in r.getMessage() and "removed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="orchestrator.config"):
        load(str(p))
    assert not any("compiled" in r.getMessage() for r in caplog.records), "said once: nothing left to remove"
    assert sorted(os.listdir(tmp_path)) == ["orch.yaml"]


def test_addresses_read_and_printed_as_the_ipaddress_module_does():
    """Over thousands of near-addresses config accepts, rejects and prints exactly as
    ipaddress does ("localhost" counts as loopback too)."""
    import ipaddress
    import random

    from orchestrator import config

    def expect(make, text):
        try:
            return make(text)
        except ValueError:
            return ValueError

    rng = random.Random(1126)
    parts = ["0", "1", "01", "00", "9", "10", "127", "255", "256", "999", "1000", "", " 1", "1 ", "+1", "-1",
             "0x1", "1e1", "٣", "a", "ff", "0000", "4294967295"]
    samples = ["127.0.0.1", "10.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5", "1.2.3.4/24", "",
               "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "2001:DB8::1", "1:2:3:4:5:6:7:8:9", "localhost", "127.1",
               "1.2.3.4\n", "１.2.3.4"]
    for _ in range(3000):
        samples.append(rng.choice([".", ":"]).join(rng.choice(parts) for _ in range(rng.randrange(1, 6))))
    for text in samples:
        assert expect(config.ipv4_address, text) == expect(lambda t: str(ipaddress.IPv4Address(t)), text), repr(text)
        assert expect(config.ip_address, text) == expect(lambda t: str(ipaddress.ip_address(t)), text), repr(text)
        loopback = text == "localhost" or expect(lambda t: ipaddress.ip_address(t).is_loopback, text) is True
        assert config._loopback(text) == loopback, repr(text)
