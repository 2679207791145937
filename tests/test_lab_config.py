"""The lab runs the shipped configuration: conf/orch.yaml and conf/keepalived-*.conf.

Each lab host's orch.yaml is conf/orch.yaml with the lab's addresses, node names,
ports and paths put in (hosts.SUBSTITUTED) and the values in hosts.LAB_OVERRIDES, each
with the reason a test needs it. Walking both YAML trees key by key, any other
difference fails here. keepalived runs conf/keepalived-*.conf with only addresses and
paths replaced.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

from orchestrator.lab import netns
from orchestrator.lab.hosts import (
    CONF_DIR, LAB_OVERRIDES, REMOVE, SHIPPED_TIMING, SUBSTITUTED, Host, Override, lab_config, overrides_except,
    track_file, write_host_files,
)

from . import chaos
from . import orchtest as t

MISSING = object()  # a key one of the two trees lacks


def leaves(shipped: Any, lab: Any, path: str = "") -> Iterator[Tuple[str, Any, Any]]:
    """Every leaf where the two YAML trees differ: (dotted key, shipped value, lab value)."""
    if isinstance(shipped, dict) and isinstance(lab, dict):
        for key in list(shipped) + [k for k in lab if k not in shipped]:
            yield from leaves(shipped.get(key, MISSING), lab.get(key, MISSING), f"{path}{key}.")
    elif isinstance(shipped, list) and isinstance(lab, list):
        for i in range(max(len(shipped), len(lab))):
            yield from leaves(shipped[i] if i < len(shipped) else MISSING, lab[i] if i < len(lab) else MISSING, f"{path}{i}.")
    elif shipped != lab or type(shipped) is not type(lab):
        yield path.rstrip("."), shipped, lab


def unexplained(shipped: Dict[str, Any], lab: Dict[str, Any], variant: str, overrides: Dict[str, Override]) -> List[str]:
    """The differences neither SUBSTITUTED nor an override applying to ``variant`` names."""
    problems = []
    for key, was, now in leaves(shipped, lab):
        override = overrides.get(key)
        if override is not None and variant in override.labs:  # checked before SUBSTITUTED: it wins
            expected = MISSING if override.value is REMOVE else override.value
            if now is expected or now == expected:
                continue
            problems.append(f"{key}: the lab has {now!r}, its override says {override.value!r}")
            continue
        if any(key == s or key.startswith(s + ".") for s in SUBSTITUTED):
            continue
        problems.append(f"{key}: conf/orch.yaml has {was!r}, the lab {now!r} (not in LAB_OVERRIDES)")
    return problems


def shipped() -> Dict[str, Any]:
    return yaml.safe_load((CONF_DIR / "orch.yaml").read_text())


def lab_hosts(tmp_path: Path, variant: str) -> Tuple[Host, Host]:
    if variant == "netns":
        return (Host("server1", 1, str(tmp_path / "server1"), f"{netns.SUBNET}.1", netns.MYSQL_PORT, netns.ATLAS_ADMIN_PORT, "ns1"),
                Host("server2", 2, str(tmp_path / "server2"), f"{netns.SUBNET}.2", netns.MYSQL_PORT, netns.ATLAS_ADMIN_PORT, "ns2"))
    return (Host("server1", 1, str(tmp_path / "server1"), "127.0.0.1", 40001, 40002),
            Host("server2", 2, str(tmp_path / "server2"), "127.0.0.1", 40003, 40004))


def written(tmp_path: Path, variant: str, overrides: Any = None) -> Dict[str, Dict[str, Any]]:
    """The orch.yaml each lab host gets, as the labs write it (NetnsLab._up, LoopbackLab._up)."""
    h1, h2 = lab_hosts(tmp_path, variant)
    for host, peer in ((h1, h2), (h2, h1)):
        if variant == "netns":
            write_host_files(host, peer, vip=netns.VIP, witness=netns.WITNESS, interface=netns.IFACE, overrides=overrides)
        else:
            write_host_files(host, peer, rw_backend=h1.backend, overrides=overrides)
    return {h.name: yaml.safe_load(h.file("orch.yaml").read_text()) for h in (h1, h2)}


# ---------------------------------------------------------------------------- orch.yaml


@pytest.mark.parametrize("variant", ["netns", "loopback"])
def test_lab_orch_yaml_is_the_shipped_one_but_for_substitutions_and_named_overrides(tmp_path, variant):
    hosts = lab_hosts(tmp_path, variant)
    for name, cfg in written(tmp_path, variant).items():
        assert unexplained(shipped(), cfg, variant, LAB_OVERRIDES) == [], name
        assert cfg["self"] == name
        assert cfg["nodes"] == {h.name: {"host": h.address, "port": h.port} for h in hosts}


@pytest.mark.parametrize("variant", ["netns", "loopback"])
def test_lab_orch_yaml_passes_check_config(tmp_path, variant):
    written(tmp_path, variant)
    for name in ("server1", "server2"):
        r = t.orch(str(tmp_path / name / "orch.yaml"), None, "check-config")
        assert r.code == 0 and "config OK" in r.stdout, r


def test_the_comparison_catches_a_changed_or_extra_or_missing_key(tmp_path):
    cfg = written(tmp_path, "netns")["server1"]
    cfg["failover"]["catchup_timeout"] = 10  # what the lab used before it loaded conf/orch.yaml
    cfg["mysql"]["connect_timeout"] = 1
    cfg["maintainer"]["interval"] = 2  # an override's key, with another value
    cfg["failover"]["no_such_key"] = 1
    del cfg["failover"]["fence_timeout"]
    problems = unexplained(shipped(), cfg, "netns", LAB_OVERRIDES)
    assert [p.split(":")[0] for p in problems] == [
        "mysql.connect_timeout", "failover.catchup_timeout", "failover.fence_timeout", "failover.no_such_key",
        "maintainer.interval"], problems
    # An override that applies wins over a substitution of the same key.
    cfg = written(tmp_path, "loopback")["server1"]
    cfg["keepalived"]["interface"] = "lo"
    assert [p.split(":")[0] for p in unexplained(shipped(), cfg, "loopback", LAB_OVERRIDES)] == ["keepalived.interface"]
    # The loopback lab's overrides do not excuse the namespace lab.
    cfg = written(tmp_path, "netns")["server1"]
    cfg["keepalived"]["vip_check"] = False
    assert [p.split(":")[0] for p in unexplained(shipped(), cfg, "netns", LAB_OVERRIDES)] == ["keepalived.vip_check"]


def assert_override_rules(conf: Dict[str, Any], key: str, override: Override) -> None:
    """A shipped key, a value that differs from it, a reason, and the labs it applies to."""
    node: Any = conf
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]  # KeyError: not a shipped key
    assert override.value is REMOVE or override.value != node, f"{key}: the override is the shipped value; drop it"
    assert len(override.reason) > 30, f"{key}: say why a test needs it"
    assert set(override.labs) <= {"netns", "loopback", "chaos"} and override.labs


def test_every_override_names_a_shipped_key_a_changed_value_and_a_reason():
    conf = shipped()
    for key, override in LAB_OVERRIDES.items():
        assert_override_rules(conf, key, override)
    assert set(SHIPPED_TIMING) <= set(LAB_OVERRIDES)


def test_every_opt_in_override_follows_the_same_rules_and_names_its_test():
    from orchestrator.lab.hosts import OPT_IN_OVERRIDES, named_override, with_opt_in

    conf = shipped()
    for key, override in OPT_IN_OVERRIDES.items():
        assert_override_rules(conf, key, override)
        assert key not in LAB_OVERRIDES, f"{key}: a lab default and an opt-in at once"
        test = override.reason.split(":")[0]
        assert test.startswith("tests/test_") and (CONF_DIR.parent / test).exists(), f"{key}: name the test that opts in"
        assert with_opt_in(key)[key] is override and named_override(key) is override
    with pytest.raises(ValueError, match="not opt-in overrides"):
        with_opt_in("failover.block_seconds")


def test_substituted_values_are_addresses_names_ports_and_paths(tmp_path):
    def plain(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return 0 < value < 65536  # a port
        text = str(value)
        try:
            ipaddress.ip_address(text)
            return True
        except ValueError:
            return bool(re.fullmatch(r"server[12]|eth0|[\w./-]+\.(pass|cnf|track)|/[\w./-]+", text))

    for variant in ("netns", "loopback"):
        for cfg in written(tmp_path / variant, variant).values():
            for key, _, now in leaves(shipped(), cfg):
                if any(key == s or key.startswith(s + ".") for s in SUBSTITUTED) and now is not MISSING:
                    assert plain(now), f"{variant}: {key} = {now!r} is not an address, name, port or path"


def test_shipped_timing_leaves_block_seconds_and_interval_as_shipped(tmp_path):
    conf = shipped()
    assert (conf["failover"]["block_seconds"], conf["maintainer"]["interval"]) == (3600, 5)
    overrides = overrides_except(SHIPPED_TIMING)
    for cfg in written(tmp_path, "netns", overrides).values():
        assert cfg["failover"]["block_seconds"] == 3600 and cfg["maintainer"]["interval"] == 5
        assert unexplained(conf, cfg, "netns", overrides) == []
        # ...and every other override still applies
        assert cfg["log"]["syslog"] is LAB_OVERRIDES["log.syslog"].value
    with pytest.raises(ValueError):
        overrides_except(["failover.catchup_timeout"])


def test_a_lab_records_its_overrides_so_orch_lab_commands_rebuild_it(tmp_path):
    lab = netns.NetnsLab(str(tmp_path), lab_id="cfgtest", overrides=overrides_except(SHIPPED_TIMING))
    state = lab.state()
    again = netns.NetnsLab.from_state(state, list(lab.hosts.values()))
    assert again.overrides == lab.overrides and set(again.overrides) == set(LAB_OVERRIDES) - set(SHIPPED_TIMING)
    default = netns.NetnsLab(str(tmp_path), lab_id="cfgtest2")
    assert default.overrides == LAB_OVERRIDES


def test_lab_config_refuses_a_key_conf_orch_yaml_lacks(tmp_path):
    h1, h2 = lab_hosts(tmp_path, "netns")
    with pytest.raises(KeyError):
        lab_config(h1, h2, "netns", vip=netns.VIP, overrides={"failover.no_such_key": Override(1, "x" * 40)})


# ---------------------------------------------------------------------------- the chaos test's orch.yaml


def test_chaos_orch_yaml_is_the_shipped_one_but_for_substitutions_and_named_overrides(tmp_path):
    for name in ("server1", "server2"):
        cfg = chaos.orch_config(tmp_path, name)
        assert unexplained(shipped(), cfg, "chaos", LAB_OVERRIDES) == [], name
        assert "atlas" not in cfg and "track_file" not in cfg["keepalived"]
        assert cfg["keepalived"]["vip"] == chaos.VIP and cfg["failover"]["witness"] == chaos.WITNESS
    assert chaos.MAINTAINER_INTERVAL == LAB_OVERRIDES["maintainer.interval"].value


# ---------------------------------------------------------------------------- keepalived


def keepalived_substitutions(host: Host, hooks: Path, notify_hook: Path, profile: str, fifo: bool) -> List[Tuple[str, str]]:
    """What the lab may replace in conf/keepalived-*.conf: addresses and paths, nothing else."""
    subs = [
        ("/usr/local/lib/orch/check-mysql", str(hooks / "check-mysql")),
        ("/etc/orch/check.cnf", str(host.file("check.cnf"))),
        ("10.0.0.100/24", f"{netns.VIP}/{netns.PREFIXLEN}"),
        ("10.0.0.254", netns.WITNESS),
        ("/var/lib/orch/keepalived.track", str(track_file(host))),
    ]
    if profile == "fast":
        subs += [("/var/lib/orch/mysqld.track", str(netns.mysqld_track_file(host))),
                 ("/run/orch/keepalived.fifo", str(netns.fifo_path(host)))]
    if profile == "default" or not fifo:
        subs += [("/usr/local/lib/orch/keepalived-notify", str(notify_hook)),
                 ("/etc/orch/orch.yaml", str(host.file("orch.yaml"))),
                 ("/var/log/orch/notify.log", str(host.file("notify.log"))),
                 ("/usr/local/bin/orch", netns.orch_bin())]
    return subs


@pytest.mark.parametrize("name", ["server1", "server2"])
@pytest.mark.parametrize("profile", netns.PROFILES)
def test_lab_keepalived_conf_is_the_shipped_one_but_for_addresses_and_paths(tmp_path, profile, name):
    host = Host(name, int(name[-1]), str(tmp_path / name), f"{netns.SUBNET}.{name[-1]}", 3306, 2345, netns="x")
    hooks, hook = tmp_path / "hooks", tmp_path / "hooks" / "keepalived-notify"
    source = CONF_DIR / (f"keepalived-{name}.conf" if profile == "default" else f"keepalived-{profile}-{name}.conf")
    rendered = netns.render_keepalived(name, hooks, host, hook, profile)
    header, body = rendered.split("\n", 1)
    assert header == f"# generated by orchestrator.lab.netns from {source}"
    expected = source.read_text()
    for token, value in keepalived_substitutions(host, hooks, hook, profile, fifo=True):
        assert token in expected, f"{source} lacks {token}"
        expected = expected.replace(token, value)
    assert body == expected
    # Nothing else moved: putting the shipped values back gives the shipped file.
    for token, value in keepalived_substitutions(host, hooks, hook, profile, fifo=True):
        body = body.replace(value, token)
    assert body == source.read_text()


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_benchmark_floor_replaces_only_the_fifo_by_a_noop_notify(tmp_path, name):
    """bench/failover's floor (no orch): the fast profile with a notify script that does nothing
    in place of the FIFO; everything else as shipped."""
    host = Host(name, int(name[-1]), str(tmp_path / name), f"{netns.SUBNET}.{name[-1]}", 3306, 2345, netns="x")
    hooks, noop = tmp_path / "hooks", tmp_path / "hooks" / "noop-notify"
    source = CONF_DIR / f"keepalived-fast-{name}.conf"
    body = netns.render_keepalived(name, hooks, host, noop, "fast", fifo=False).split("\n", 1)[1]
    expected = source.read_text()
    expected = re.sub(r"^\s*vrrp_notify_fifo \S+\n", "", expected, flags=re.M)
    expected = re.sub(r"^(\s*)# no notify line:[^\n]*\n", lambda m: f'{m.group(1)}notify "{noop}"\n', expected, flags=re.M)
    for token, value in keepalived_substitutions(host, hooks, noop, "fast", fifo=False):
        expected = expected.replace(token, value)
    assert body == expected
    assert "vrrp_notify_fifo" not in body and body.count(f'notify "{noop}"') == 1


def test_render_refuses_a_conf_file_without_a_token_it_replaces(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "keepalived-server1.conf").write_text((CONF_DIR / "keepalived-server1.conf").read_text().replace("10.0.0.254", "10.0.0.253"))
    monkeypatch.setattr(netns, "CONF_DIR", conf)
    host = Host("server1", 1, str(tmp_path / "server1"), f"{netns.SUBNET}.1", 3306, 2345, netns="x")
    with pytest.raises(netns.LabError, match="10.0.0.254"):
        netns.render_keepalived("server1", tmp_path, host, tmp_path / "hook")


def test_keepalived_accepts_the_rendered_fast_conf(tmp_path):
    if not Path(netns.KEEPALIVED).exists():
        pytest.skip(f"keepalived not installed at {netns.KEEPALIVED}")
    host = Host("server1", 1, str(tmp_path / "server1"), f"{netns.SUBNET}.1", 3306, 2345, netns="x")
    conf = tmp_path / "k.conf"
    conf.write_text(netns.render_keepalived("server1", netns.HOOKS_DIR, host, netns.HOOKS_DIR / "keepalived-notify", "fast"))
    proc = subprocess.run([netns.KEEPALIVED, "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_labs_gtid_comparison_ignores_the_order_mariadb_lists_them_in():
    from orchestrator.lab.base import gtid_entries

    assert gtid_entries("0-2-8,0-1-9") == gtid_entries("0-1-9, 0-2-8") == gtid_entries("0-1-9,\n0-2-8")
    assert gtid_entries("0-1-6,0-2-7") != gtid_entries("0-2-7")
    assert gtid_entries("") == frozenset()
