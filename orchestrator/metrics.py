"""Prometheus metrics served by ``orch maintain --metrics-port N``.

Gauges come from the view each maintainer pass observes (no query of their own); the
failover and refusal counters come from the journal, read forward on every pass, so
they count what any orch run on this host did: keepalived's notify, notify-fifo,
promote/demote by hand, and the maintainer itself. Counting starts when the maintainer
starts (a counter restarting at 0 is what Prometheus expects).

Only the maintainer imports this module: prometheus_client stays off the notify path.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge

from .config import Config
from .journal import JOURNAL, KEEP
from .maintainer import PassResult
from .model import ClusterView, NodeState

log = logging.getLogger("orchestrator.metrics")
NAN = float("nan")


class Metrics:
    """The maintainer's metrics, on a registry of their own."""

    def __init__(self, cfg: Config, registry: Optional[CollectorRegistry] = None) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.node_up = Gauge("orch_node_up", "1 when orch observed the node's server, 0 when it could not", ["node"], registry=r)
        self.read_only = Gauge("orch_node_read_only", "1 when the server is read-only (fenced or a replica), 0 when writable", ["node"], registry=r)
        self.lag = Gauge("orch_replication_lag_seconds", "Seconds_Behind_Master of the node's replication (NaN: not replicating or unknown)", ["node"], registry=r)
        self.threads = Gauge("orch_replication_threads_running", "1 when the replication thread runs (thread: io or sql)", ["node", "thread"], registry=r)
        self.applied = Gauge("orch_relay_log_applied", "1 when everything the replica received is applied (NaN: not a replica)", ["node"], registry=r)
        self.errant = Gauge("orch_errant_gtid_transactions",
                            "Errant GTIDs the read-only node has and its peer lacks (MariaDB: one per domain with an errant tail)",
                            ["node"], registry=r)
        self.ro_backend = Gauge("orch_atlas_ro_backend_present", "1 when Atlas lists the node as a read-only backend (NaN: Atlas unreachable)",
                                ["atlas", "node"], registry=r)
        self.atlas_up = Gauge("orch_atlas_up", "1 when orch read the Atlas admin interface", ["atlas"], registry=r)
        self.holds_vip = Gauge("orch_holds_vip", "1 when this host holds keepalived.vip (NaN: not checked)", registry=r)
        self.paused = Gauge("orch_paused", "1 while maintenance mode (orch pause) is in force, 0 when not", registry=r)
        self.pause_ran_out = Gauge("orch_pause_ran_out_timestamp_seconds",
                                   "When the latest pause --for ran out by itself (Unix time; NaN: the latest record is "
                                   "no pause that ran out)", registry=r)
        self.failovers = Counter("orch_failovers", "Promotions on this host (a journaled run that made its node writable)", registry=r)
        self.refusals = Counter("orch_refusals", "Journaled runs on this host that were refused", registry=r)
        self.pass_seconds = Gauge("orch_maintainer_pass_seconds", "Duration of the maintainer's last pass", registry=r)
        self.last_pass = Gauge("orch_maintainer_last_pass_timestamp_seconds", "When the maintainer's last pass ended (Unix time)", registry=r)
        self.passes = Counter("orch_maintainer_passes", "Maintainer passes", registry=r)
        self.http_auth_failures = Counter("orch_http_auth_failures", "POSTs to the HTTP API with a missing or wrong token",
                                          registry=r)
        self.journal = JournalTail(cfg.state_dir)
        self.keeper: Any = None  # the lease keeper (etcd: configured), whose own figures the token metrics read
        if cfg.etcd is not None:
            self.token_holder = Gauge("orch_etcd_token_holder", "1 for the node holding the write token in etcd, 0 for "
                                      "the other (NaN: etcd not read)", ["node"], registry=r)
            self.lease_left = Gauge("orch_etcd_token_lease_seconds", "Seconds left of the token holder's lease (NaN: "
                                    "nobody holds it, or etcd not read)", registry=r)
            self.renew_seconds = Gauge("orch_etcd_lease_renew_seconds", "How long this host's last successful lease "
                                       "renewal took (NaN: none yet)", registry=r)
            self.since_renewal = Gauge("orch_etcd_lease_since_renewal_seconds", "Seconds since this host's lease was "
                                       "last renewed (a holder fences itself past ttl*0.98-2)", registry=r)
            for node in cfg.nodes:
                self.token_holder.labels(node=node.name).set(NAN)
            for gauge in (self.lease_left, self.renew_seconds, self.since_renewal):
                gauge.set(NAN)
        for node in cfg.nodes:  # every series exists from the first scrape
            for gauge in (self.node_up, self.read_only, self.lag, self.applied, self.errant):
                gauge.labels(node=node.name).set(NAN)
            for thread in ("io", "sql"):
                self.threads.labels(node=node.name, thread=thread).set(NAN)
            for atlas in cfg.atlas:
                self.ro_backend.labels(atlas=atlas.name, node=node.name).set(NAN)
        for atlas in cfg.atlas:
            self.atlas_up.labels(atlas=atlas.name).set(NAN)
        self.holds_vip.set(NAN)
        self.paused.set(NAN)
        self.pause_ran_out.set(NAN)

    def update_view(self, view: ClusterView) -> None:
        """Set the gauges from what a pass observed."""
        for node, peer in ((view.me, view.peer), (view.peer, view.me)):
            self._node(node, peer)
        self.holds_vip.set(NAN if view.holds_vip is None else float(view.holds_vip))
        self.paused.set(float(view.paused is not None))
        self.pause_ran_out.set(pause_ran_out_at(view.pause, time.time()))
        if self.cfg.etcd is not None:
            self._token(view)
        addresses = {n.name: n.atlas_address for n in self.cfg.nodes}
        for atlas in view.atlas:
            self.atlas_up.labels(atlas=atlas.name).set(1.0 if atlas.reachable else 0.0)
            listed = set(atlas.ro_addresses()) if atlas.reachable else None
            for name, address in addresses.items():
                value = NAN if listed is None else float(address in listed)
                self.ro_backend.labels(atlas=atlas.name, node=name).set(value)

    def _token(self, view: ClusterView) -> None:
        t = view.token
        for node in self.cfg.nodes:
            self.token_holder.labels(node=node.name).set(NAN if t is None or not t.known else float(t.holder == node.name))
        left = t.lease_left if t is not None and t.known and t.holder and t.lease_left is not None else None
        self.lease_left.set(NAN if left is None else left)
        if self.keeper is not None:
            snap = self.keeper.snapshot()
            self.renew_seconds.set(NAN if snap["renew_ms"] is None else snap["renew_ms"] / 1000.0)
            self.since_renewal.set(NAN if snap["since_renewal"] is None else snap["since_renewal"])

    def _node(self, node: NodeState, peer: NodeState) -> None:
        from .decide import flavor_of

        name = node.name
        if not node.reachable:
            self.node_up.labels(node=name).set(0.0)
            for gauge in (self.read_only, self.lag, self.applied, self.errant):
                gauge.labels(node=name).set(NAN)
            for thread in ("io", "sql"):
                self.threads.labels(node=name, thread=thread).set(NAN)
            return
        self.node_up.labels(node=name).set(1.0)
        self.read_only.labels(node=name).set(float(node.read_only))
        flavor = flavor_of(node, self.cfg)
        r = node.replica
        replicating = r is not None and r.configured
        self.lag.labels(node=name).set(float(r.lag) if replicating and r is not None and r.lag is not None else NAN)
        self.threads.labels(node=name, thread="io").set(float(r.io.value == "running") if replicating and r is not None else 0.0)
        self.threads.labels(node=name, thread="sql").set(float(r.sql.value == "running") if replicating and r is not None else 0.0)
        self.applied.labels(node=name).set(float(not flavor.unapplied(node)) if replicating else NAN)
        # Only a read-only node can be errant: a master is ahead of its replica by design.
        if node.read_only and peer.reachable:
            self.errant.labels(node=name).set(float(count_gtids(flavor.errant(node, peer))))
        else:
            self.errant.labels(node=name).set(0.0 if node.writable else NAN)

    def read_journal(self) -> None:
        """Count the runs journaled since the last read."""
        for record in self.journal.new_records():
            if record.get("phase") != "end":
                continue
            if record.get("result") == "refused":
                self.refusals.inc()
            if is_promotion(record):
                self.failovers.inc()

    def on_view(self, view: ClusterView) -> None:
        """A maintainer listener: every view a pass observes sets the gauges."""
        try:
            self.update_view(view)
        except Exception:  # metrics never stop the maintainer
            log.exception("metrics: updating from the view failed")

    def on_pass(self, result: PassResult) -> None:
        """A maintainer listener: every pass is timed and followed by a read of the journal."""
        self.pass_seconds.set(result.seconds)
        self.last_pass.set(time.time())
        self.passes.inc()
        try:
            self.read_journal()
        except Exception:  # metrics never stop the maintainer
            log.exception("metrics: reading the journal failed")


def count_gtids(text: str) -> int:
    """Transactions in a GTID set (MySQL ``uuid:1-5:7``) or GTIDs in a list (MariaDB ``0-1-5,1-2-9``)."""
    if not text:
        return 0
    from .gtid import GtidError, GtidSet

    try:
        return sum(hi - lo + 1 for _, ivs in GtidSet.parse(text).sources for lo, hi in ivs)
    except GtidError:
        return len([g for g in text.split(",") if g.strip()])


def is_promotion(record: Dict[str, Any]) -> bool:
    """A journaled run that made its node writable. Not a switchover's own record: on the old
    master its only SetWritable is an abort's un-fence (the candidate's MASTER event, on the
    candidate's host, is the promotion and is counted there)."""
    if record.get("event") == "SWITCHOVER":
        return False
    steps = record.get("steps") or ()
    return any(isinstance(s, dict) and s.get("step") == "SetWritable" and s.get("result") == "ok" for s in steps)


class JournalTail:
    """Reads journal records appended since the last read, across its rotation."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, JOURNAL)
        self.inode, self.offset = self._end()

    def _end(self) -> Tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return 0, 0
        return st.st_ino, st.st_size

    def new_records(self) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        try:
            st = os.stat(self.path)
        except OSError:
            return out
        if self.inode and st.st_ino != self.inode:
            # Rotated: finish the file we were reading, now journal.jsonl.N.
            old = self._rotated(self.inode)
            if old is not None:
                out += self._read(old, self.offset)[0]
            self.inode, self.offset = st.st_ino, 0
        elif not self.inode:
            self.inode, self.offset = st.st_ino, 0
        if st.st_size < self.offset:
            self.offset = 0  # truncated by hand
        records, self.offset = self._read(self.path, self.offset)
        return out + records

    def _rotated(self, inode: int) -> Optional[str]:
        for n in range(1, KEEP + 1):
            path = f"{self.path}.{n}"
            try:
                if os.stat(path).st_ino == inode:
                    return path
            except OSError:
                continue
        return None

    @staticmethod
    def _read(path: str, offset: int) -> Tuple[List[Dict[str, Any]], int]:
        """Complete lines from ``offset``; the offset after the last one."""
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = []
        for raw in _lines(data[:end]):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records, offset + end


def _lines(data: bytes) -> Iterator[bytes]:
    for raw in data.split(b"\n"):
        if raw.strip():
            yield raw


def pause_ran_out_at(pause: Any, now: float) -> float:
    """Pure: when the latest record, a pause --for, ran out by itself (``now`` plus its remaining
    seconds, which the server's clock made negative), as Unix time; NaN when the latest record
    is a resume, a pause until orch resume, or a pause still in force."""
    if pause is None or pause.kind != "pause" or pause.remaining is None or pause.remaining > 0:
        return NAN
    return now + pause.remaining

