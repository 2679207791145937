"""orch check --replica: the read pool's health check (LVS MISC_CHECK), on a real pair."""

from __future__ import annotations

import time

import pytest

from . import orchtest as t

pytestmark = pytest.mark.mariadb

HEAVY = ("apscheduler", "tenacity", "orchestrator.atlas", "orchestrator.commands.maintain", "orchestrator.maintainer", "orchestrator.lab",
         "orchestrator.execute", "prometheus_client")


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


def test_replica_check_healthy_stopped_sql_master_and_fast(cluster):
    s1, s2, cfg, _ = cluster
    s1.sql("INSERT INTO test.t VALUES (1, 'a')")
    t.lab.wait_gtid_equal(s1, s2)

    start = time.monotonic()
    r = t.orch(cfg, "server2", "check", "--replica")
    wall = time.monotonic() - start
    assert r.code == 0 and "healthy replica" in r.stdout and one_line(r.stdout), r
    # keepalived runs it every few seconds: one short-lived process, well under a second
    print(f"orch check --replica wall time: {wall:.3f}s")
    assert wall < 2.0, f"orch check --replica took {wall:.2f}s"

    r = t.orch(cfg, "server1", "check", "--replica")
    assert r.code == 1 and "writable" in r.stderr and one_line(r.stderr), r

    s2.sql("STOP SLAVE SQL_THREAD")
    r = t.orch(cfg, "server2", "check", "--replica")
    assert r.code == 1 and "SQL thread" in r.stderr and one_line(r.stderr), r
    s2.sql("START SLAVE SQL_THREAD")
    t.assert_no_secrets(r.stdout, r.stderr)


def test_replica_check_imports_stay_light(cluster):
    _, _, cfg, _ = cluster
    r = t.orch(cfg, "server2", "check", "--replica", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.code == 0, r
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "orchestrator.decide" in imported and "pymysql" in imported, "import tracing did not work"
    loaded = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == [], f"imported by orch check --replica: {loaded}"


def test_replica_check_bad_option_is_a_usage_error(cluster):
    _, _, cfg, _ = cluster
    r = t.orch(cfg, "server2", "check", "--replica", "--bogus")
    assert r.code == 2 and one_line(r.stderr) and "--bogus" in r.stderr, r
