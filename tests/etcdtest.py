"""A real three-member etcd cluster on loopback for tests: ports chosen free, every process
started here and stopped by its PID (never by name)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    proc: Optional[subprocess.Popen] = None
    log: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"


@dataclass
class EtcdCluster:
    members: List[Member]
    base: str
    stopped: Dict[str, bool] = field(default_factory=dict)

    @property
    def endpoints(self) -> List[str]:
        return [m.url for m in self.members]

    def cluster_arg(self) -> str:
        return ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def start(self, m: Member, state: str = "new") -> None:
        logf = open(m.log, "ab")
        m.proc = subprocess.Popen(
            [ETCD, "--name", m.name, "--data-dir", m.data_dir,
             "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
             "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
             "--initial-cluster", self.cluster_arg(), "--initial-cluster-state", state,
             "--initial-cluster-token", os.path.basename(self.base),
             "--heartbeat-interval", "100", "--election-timeout", "1000"],
            stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

    def stop(self, m: Member, sig: int = signal.SIGKILL) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            m.proc.wait(timeout=10)
        m.proc = None

    def freeze(self, m: Member) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGSTOP)

    def thaw(self, m: Member) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGCONT)

    def wait_healthy(self, timeout: float = 20.0, members: Optional[List[Member]] = None) -> None:
        deadline = time.monotonic() + timeout
        for m in members or [m for m in self.members if m.proc is not None]:
            while True:
                try:
                    with urllib.request.urlopen(m.url + "/health", timeout=1) as r:
                        if b'"true"' in r.read():
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"etcd member {m.name} not healthy; log: {open(m.log).read()[-2000:]}")
                time.sleep(0.1)

    def leader(self) -> Member:
        import json

        for m in self.members:
            if m.proc is None:
                continue
            try:
                req = urllib.request.Request(m.url + "/v3/maintenance/status", data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    status = json.loads(r.read())
                if status.get("leader") == status.get("header", {}).get("member_id"):
                    return m
            except OSError:
                continue
        raise AssertionError("no etcd leader")

    def close(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                try:
                    m.proc.send_signal(signal.SIGCONT)
                except OSError:
                    pass
            self.stop(m)


def start_cluster(base: str, names=("e1", "e2", "e3")) -> EtcdCluster:
    members = [Member(n, free_port(), free_port(), os.path.join(base, n), log=os.path.join(base, f"{n}.log")) for n in names]
    cluster = EtcdCluster(members, base)
    for m in members:
        cluster.start(m)
    try:
        cluster.wait_healthy()
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (./dev setup installs etcd-server)")
    cluster = start_cluster(str(tmp_path_factory.mktemp("etcd")))
    yield cluster
    cluster.close()
