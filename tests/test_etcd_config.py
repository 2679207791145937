"""The etcd: section (orchestrator/config.py): optional, every problem at once, the password from its file."""

from __future__ import annotations

import os

import pytest

from orchestrator.config import parse
from orchestrator.errors import ConfigError

GOOD = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "pw1"},
    "replication": {"user": "repl", "password": "pw2"},
    "keepalived": {"vip": "10.0.0.100"},
}


def test_without_the_section_there_is_no_token():
    assert parse(GOOD).etcd is None


def test_the_section_and_its_defaults(tmp_path):
    pf = tmp_path / "etcd.pass"
    pf.write_text("sécret\n")
    cfg = parse({**GOOD, "etcd": {"endpoints": ["http://10.0.0.1:2379", "http://10.0.0.254:2379/"], "user": "orch",
                                  "password_file": str(pf)}}, str(tmp_path / "orch.yaml"))
    assert cfg.etcd.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.254:2379")
    assert (cfg.etcd.ttl, cfg.etcd.prefix, cfg.etcd.timeout) == (5, "/orch", 1.0)
    assert cfg.etcd.password == "sécret" and "sécret" in cfg.secrets
    assert "sécret" not in repr(cfg.etcd)


def test_every_problem_at_once():
    with pytest.raises(ConfigError) as exc:
        parse({**GOOD, "etcd": {"endpoints": ["10.0.0.1:2379", "http://u:p@h:1"], "ttl": 1, "prefix": "orch/",
                                "password": "x", "cert": "c.pem"}})
    got = sorted(exc.value.problems)
    assert got == [
        f"etcd.cert: {os.path.abspath('c.pem')} does not exist",
        "etcd.cert: give cert and key together",
        "etcd.endpoints: cacert/cert need https:// endpoints",
        "etcd.endpoints[0]: expected http://host:port or https://host:port (no path, no credentials)",
        "etcd.endpoints[1]: expected http://host:port or https://host:port (no path, no credentials)",
        "etcd.prefix: expected a key prefix starting with / and not ending with / (e.g. /orch)",
        "etcd.ttl: expected an integer from 3 to 60",
        "etcd.user: missing (a password needs a user)",
    ]
