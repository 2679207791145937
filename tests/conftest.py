"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from orchestrator import logs
from orchestrator.lab import mariadb as lab


@pytest.fixture(autouse=True)
def _orch_logging_undone() -> Iterator[None]:
    """A test that runs ``cli.main`` in this process has ``logs.setup`` put a handler on the root
    logger, writing to the stderr pytest captured for that test; undone after it, so a later
    teardown's log line does not meet a closed file ("--- Logging error ---")."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if logs._context in handler.filters:  # logs.setup's (pytest's own handlers stay)
            root.removeHandler(handler)
    logs._syslog = None
    root.setLevel(level)
    if hasattr(root, "_orch_configured"):
        del root._orch_configured

# --- MariaDB: real throwaway mariadbd processes (orchestrator.lab.mariadb) ---


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A datadir made once per session by mariadb-install-db; instances copy it."""
    if not os.access(lab.MARIADBD, os.X_OK):
        pytest.skip(f"{lab.MARIADBD} not found: install mariadb-server to run the MariaDB tests")
    return lab.create_template(str(tmp_path_factory.mktemp("mariadb-template") / "data"))


@pytest.fixture
def mariadb_pair(
    mariadb_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[lab.MariaDBInstance, lab.MariaDBInstance]]:
    """(server1, server2): a writable master and its read-only GTID replica, caught up.

    Both are killed (our PIDs only) and their datadirs deleted afterwards, pass or
    fail; my.cnf and error.log stay under the pytest tmp dir for post-mortems.
    """
    # mktemp keeps the socket path short; tmp_path carries the test's name.
    with lab.running_pair(str(tmp_path_factory.mktemp("pair")), mariadb_template) as pair:
        yield pair


@pytest.fixture
def cluster(mariadb_pair, tmp_path):
    """(server1, server2, config path, state dir): server1 master, server2 its replica,
    a table test.t (id, v), and an orch config for both (no VIP check)."""
    from . import orchtest as t

    s1, s2 = mariadb_pair
    state = tmp_path / "state"
    cfg = t.write_config(tmp_path / "orch.yaml", t.config_dict(s1, s2, str(state)))
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY, v VARCHAR(40))")
    lab.wait_gtid_equal(s1, s2)
    return s1, s2, cfg, str(state)
