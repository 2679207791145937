"""The maintainer's listeners: told of every view and every pass, never able to stop it.

No MariaDB needed: both servers' ports are closed, so each pass observes two refused
connections (real sockets) and plans nothing.
"""

from __future__ import annotations

import math
import socket
from typing import List

import pytest

from orchestrator.config import parse
from orchestrator.maintainer import Maintainer, PassResult
from orchestrator.http_server import serve_http
from orchestrator.metrics import Metrics


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(tmp_path):
    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": closed_port()}, "server2": {"host": "127.0.0.1", "port": closed_port()}},
        "mysql": {"user": "orch", "password": "pw", "connect_timeout": 1},
        "replication": {"user": "repl", "password": "pw"},
        "keepalived": {"vip_check": False},
        "state_dir": str(tmp_path / "state"),
    })


class Recorder:
    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def on_view(self, view) -> None:
        self.calls.append(("view", view))

    def on_pass(self, result: PassResult) -> None:
        self.calls.append(("pass", result))


class Broken:
    def on_view(self, view) -> None:
        raise RuntimeError("listener bug")

    def on_pass(self, result: PassResult) -> None:
        raise RuntimeError("listener bug")


@pytest.mark.parametrize("dry_run", [False, True], ids=["once", "dry-run"])
def test_listeners_hear_every_view_and_every_pass_and_a_broken_one_stops_nothing(tmp_path, caplog, dry_run):
    cfg = config(tmp_path)
    (tmp_path / "state").mkdir()
    m = Maintainer(cfg)
    first, second = Recorder(), Recorder()
    m.add_listener(first)
    m.add_listener(Broken())
    m.add_listener(second)
    try:
        for _ in range(2):
            assert m.run_pass(dry_run=dry_run) == 0
    finally:
        m.close()
    assert first.calls and [kind for kind, _ in first.calls] == ["view", "pass", "view", "pass"]
    assert [kind for kind, _ in second.calls] == [kind for kind, _ in first.calls], "a broken listener before it changes nothing"
    view = first.calls[0][1]
    assert view.me.name == "server1" and not view.me.reachable and not view.peer.reachable
    assert first.calls[2][1] is m.last_view
    result = first.calls[1][1]
    assert result.changes == 0 and result.error is None and result.seconds >= 0 and result.dry_run is dry_run
    assert result.choice is not None and result.choice.event == "MAINTAIN"
    assert "Broken.on_view failed" in caplog.text and "Broken.on_pass failed" in caplog.text


def test_a_pass_that_raises_is_still_reported_to_the_listeners(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "state").write_text("a file where state_dir should be")  # the journal cannot be read
    m = Maintainer(cfg)
    heard = Recorder()
    m.add_listener(heard)
    try:
        with pytest.raises(NotADirectoryError):
            m.run_pass()
    finally:
        m.close()
    (kind, result), = heard.calls
    assert kind == "pass" and isinstance(result.error, NotADirectoryError) and result.choice is None


def test_metrics_listen_to_the_maintainer(tmp_path):
    """The gauges follow the observed view, the pass counters follow the passes."""
    cfg = config(tmp_path)
    (tmp_path / "state").mkdir()
    m = Maintainer(cfg)
    metrics = Metrics(cfg)
    m.add_listener(metrics)
    try:
        m.run_pass()
    finally:
        m.close()
    sample = metrics.registry.get_sample_value
    assert sample("orch_maintainer_passes_total") == 1
    assert sample("orch_maintainer_pass_seconds") > 0
    assert sample("orch_node_up", {"node": "server1"}) == 0 and sample("orch_node_up", {"node": "server2"}) == 0
    assert math.isnan(sample("orch_holds_vip"))


def test_serve_http_registers_listeners_and_replaces_no_method(tmp_path):
    cfg = config(tmp_path)
    m = Maintainer(cfg)
    run_pass, observe = m.run_pass, m.observe
    api = None
    try:
        api = serve_http(m, cfg, closed_port())
    finally:
        if api is not None:
            api.close()
        m.close()
    # the metrics and the HTTP API's view keeper, as orch maintain registers them
    assert [type(x).__name__ for x in m.listeners] == ["Metrics", "ViewKeeper"]
    assert m.run_pass == run_pass and m.observe == observe
