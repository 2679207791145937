"""The write token in orch status and orch doctor, and orch fleet (etcd: configured; docs/etcd.md).

Gathering (etcd calls, through orchestrator/etcd.py) is apart from the checks, which are pure."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TextIO, Tuple

from ..config import Config
from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..model import ClusterView

PASS, WARN, FAIL = "pass", "warn", "fail"  # as orch doctor's


@dataclass(frozen=True)
class Check:
    """One of orch doctor's lines (doctor.Check has the same fields)."""

    name: str
    status: str
    detail: str
    fix: str = ""


# ------------------------------------------------------------------ doctor


@dataclass(frozen=True)
class EtcdFacts:
    """What orch doctor read from etcd."""

    endpoints: Dict[str, str] = field(default_factory=dict)  # endpoint -> "" (answered) or why not
    leader_seen: Dict[str, str] = field(default_factory=dict)  # endpoint -> the leader's member id it reports
    members: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    members_error: str = ""
    lease: int = 0
    lease_age: Optional[float] = None
    member_urls: Tuple[Tuple[int, str, Tuple[str, ...]], ...] = ()  # (id, name, client and peer URLs)
    leader_id: int = 0  # the leader's member id, when the members that answered agree on one


def gather_etcd(cfg: Config) -> EtcdFacts:
    from ..etcd import EtcdError
    from ..lease import client, read_lease_file

    c = client(cfg)
    endpoints: Dict[str, str] = {}
    leaders: Dict[str, str] = {}
    assert cfg.etcd is not None
    for e in cfg.etcd.endpoints:
        try:
            status = c.status_of(e, min(1.0, cfg.etcd.timeout))
            endpoints[e] = ""
            leaders[e] = str(status.get("leader", ""))
        except EtcdError as exc:
            endpoints[e] = str(exc)
    from ..etcd import member_list

    members: List[Tuple[str, Tuple[str, ...]]] = []
    urls: List[Tuple[int, str, Tuple[str, ...]]] = []
    error = ""
    try:
        listed = member_list(c)
        members = [(m.name, m.client_urls) for m in listed]
        urls = [(m.id, m.name, m.client_urls + m.peer_urls) for m in listed]
    except EtcdError as exc:
        error = str(exc)
    lease, age = read_lease_file(cfg)
    agreed = {v for v in leaders.values() if v and v != "0"}
    return EtcdFacts(endpoints, leaders, tuple(members), error, lease, age, tuple(urls),
                     int(agreed.pop()) if len(agreed) == 1 else 0)


def check_leader_placement(cfg: Config, facts: EtcdFacts) -> List[Check]:
    """Pure: warn when the etcd leader runs on a DB host (members matched to hosts by their client
    and peer URLs against the nodes' hosts)."""
    from ..token import LEADER_CHECK_EVERY, leader_placement

    if not facts.leader_id or not facts.member_urls:
        return []
    nodes = {n.name: n.host for n in cfg.nodes}
    healthy = {m[0] for m in facts.member_urls}
    p = leader_placement(facts.member_urls, facts.leader_id, healthy, nodes)
    if not p.leader:
        return []
    if not p.on_node:
        return [Check("etcd leader placement", PASS, p.describe())]
    target = (f"etcdctl move-leader {p.target_id:x}  (to {p.target}; orch maintain on the token holder moves it "
              f"there itself within {LEADER_CHECK_EVERY:g}s when that member is healthy)") if p.target else \
        "run an etcd member off the DB hosts (beside the witness) and move the leader there (etcdctl move-leader)"
    return [Check("etcd leader placement", WARN,
                  f"{p.describe()}: if that host freezes, the new leader restarts every lease's countdown and the peer "
                  f"opens 1 to 2 s later than ttl + 1 s (docs/etcd.md)", target)]


def check_etcd(cfg: Config, view: ClusterView, facts: EtcdFacts) -> List[Check]:
    """Pure: the members answer, the config names the cluster's members, a leader, the token, the lease kept alive."""
    assert cfg.etcd is not None
    checks: List[Check] = []
    down = {e: why for e, why in facts.endpoints.items() if why}
    n = len(facts.endpoints)
    if not down:
        checks.append(Check("etcd members", PASS, f"all {n} endpoints answer"))
    else:
        quorum_left = n - len(down) > n // 2
        tls = all("TLS: " in w for w in down.values())  # they answer; this host's TLS settings do not fit
        checks.append(Check("etcd members", WARN if quorum_left else FAIL,
                            f"{len(down)} of {n} endpoints {'refuse TLS' if tls else 'do not answer'}: "
                            + "; ".join(f"{e}: {w}" for e, w in down.items()),
                            "check etcd.cacert, etcd.cert and etcd.key against the members' --trusted-ca-file and certificates "
                            "(docs/etcd.md, TLS)" if tls else
                            "start the member(s); with a majority down no failover can happen (docs/etcd.md)"))
    if n < 3:
        checks.append(Check("etcd quorum", WARN, f"{n} endpoint(s): one lost member stops writes to etcd",
                            "run three members: one on each DB host and one beside the witness"))
    if facts.members_error:
        checks.append(Check("etcd endpoints are the members", FAIL, f"cannot list the members: {facts.members_error}"))
    else:
        urls = {u.rstrip("/") for _, us in facts.members for u in us}
        configured = set(cfg.etcd.endpoints)
        missing = sorted(urls - configured)
        strangers = sorted(configured - urls)
        if not missing and not strangers:
            checks.append(Check("etcd endpoints are the members", PASS, f"etcd.endpoints are the {len(urls)} members' client URLs"))
        else:
            what = []
            if strangers:
                what.append(f"configured but not a member: {', '.join(strangers)}")
            if missing:
                what.append(f"members not configured: {', '.join(missing)}")
            checks.append(Check("etcd endpoints are the members", FAIL if strangers else WARN, "; ".join(what),
                                "list every member's client URL in etcd.endpoints (etcdctl member list)"))
    leaders = {v for v in facts.leader_seen.values() if v and v != "0"}
    if len(leaders) == 1:
        checks.append(Check("etcd leader", PASS, "the members agree on one leader"))
    elif facts.leader_seen:
        checks.append(Check("etcd leader", FAIL, f"members report {len(leaders)} leaders", "check the members' peer network"))
    checks.extend(check_leader_placement(cfg, facts))
    t = view.token
    if t is None or not t.known:
        checks.append(Check("write token", FAIL, f"cannot be read ({t.error if t else 'not observed'})"))
    else:
        writer = next((n for n in (view.me, view.peer) if n.writable), None)
        if writer is not None and t.holder != writer.name:
            checks.append(Check("write token", FAIL, f"{writer.name} is writable but the token is {t.describe()}",
                                "orch maintain fences a writable server without the token, or takes it when nobody holds it"))
        else:
            checks.append(Check("write token", PASS, t.describe()))
    if not facts.lease or facts.lease_age is None:
        checks.append(Check("host lease", FAIL, "this host has no lease: orch maintain is not running, and no promotion "
                            "here can take the token", "run orch maintain (the long-running one, not --once)"))
    elif facts.lease_age > cfg.etcd.ttl:
        checks.append(Check("host lease", FAIL, f"this host's lease {facts.lease:x} was last renewed {facts.lease_age:.0f}s ago "
                            f"(ttl {cfg.etcd.ttl}s): orch maintain is not keeping it alive", "run orch maintain"))
    else:
        checks.append(Check("host lease", PASS, f"lease {facts.lease:x} renewed {facts.lease_age:.1f}s ago"))
    checks.append(check_lease_margin(cfg))
    return checks


def check_lease_margin(cfg: Config) -> Check:
    """Pure: whether losing the etcd leader can fence the master (docs/etcd.md, What an etcd
    outage means): an election outlasting the self-fence margin does, unless semi-sync
    without fallback vouches for every acknowledged write."""
    from .. import token as tk

    assert cfg.etcd is not None
    ttl = cfg.etcd.ttl
    margin = tk.fence_at(0.0, ttl)
    said = f"the master fences itself {margin:.1f}s after its last renewal (ttl {ttl}s)"
    if tk.election_tolerated(ttl):
        return Check("etcd lease margin", PASS, f"{said}: longer than an etcd leader election")
    if cfg.failover.semi_sync:
        return Check("etcd lease margin", PASS, f"{said}; an etcd leader election may outlast it, but semi-sync without "
                     "fallback keeps the master writing while its replica receives")
    return Check("etcd lease margin", WARN,
                 f"{said}, and failover.semi_sync is off: an etcd leader election (1 to 3 s) can outlast that and fence "
                 "the master for a moment (writes refused, nothing lost)",
                 "turn failover.semi_sync on (as conf/orch.yaml ships it), or set etcd.ttl to 10")


# ------------------------------------------------------------------ orch fleet


def fleet_rows(kvs: List[Any], prefix: str, now: float) -> List[Dict[str, Any]]:
    """Pure: every cluster's published state (<prefix>/<cluster>/state/<node>), one row per cluster
    (its hosts' reports merged: the newest says who is master)."""
    clusters: Dict[str, Dict[str, Any]] = {}
    token: Dict[str, str] = {}
    for kv in kvs:
        rest = kv.key[len(prefix) + 1:] if kv.key.startswith(prefix + "/") else ""
        parts = rest.split("/")
        if len(parts) == 2 and parts[1] == "token":
            token[parts[0]] = kv.value
        if len(parts) != 3 or parts[1] != "state":
            continue
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        row = clusters.setdefault(parts[0], {"cluster": parts[0], "reporters": [], "at": 0.0})
        row["reporters"].append(parts[2])
        if float(doc.get("at") or 0) >= row["at"]:
            row.update({k: doc.get(k) for k in ("master", "replica", "lag", "last_failover")})
            row["at"] = float(doc.get("at") or 0)
    for name, row in clusters.items():
        row["holder"] = token.get(name, "")
        row["age"] = round(now - row.pop("at"), 1)
        row["reporters"] = sorted(row["reporters"])
    for name in token:
        if name not in clusters:
            clusters[name] = {"cluster": name, "holder": token[name], "master": None, "replica": None, "lag": None,
                              "last_failover": None, "reporters": [], "age": None}
    return [clusters[k] for k in sorted(clusters)]


def fleet(args: argparse.Namespace, out: TextIO) -> int:
    from ..etcd import EtcdError
    from ..lease import client
    from .common import load_config

    cfg = load_config(args)
    if cfg.etcd is None:
        raise UsageError("orch fleet: no etcd: section in the configuration (docs/etcd.md)")
    try:
        kvs = client(cfg).get_prefix(cfg.etcd.prefix + "/")
    except EtcdError as exc:
        out.write(f"orch fleet: {exc}\n") if args.format != "json" else out.write(json.dumps({"error": str(exc)}) + "\n")
        return EXIT_FAILED
    rows = fleet_rows(kvs, cfg.etcd.prefix, time.time())
    if args.format == "json":
        out.write(json.dumps({"prefix": cfg.etcd.prefix, "clusters": rows}, indent=2) + "\n")
        return EXIT_OK
    out.write(f"{'cluster':<20} {'token':<12} {'master':<12} {'replica':<12} {'lag':>5}  {'report age':>10}  last failover\n")
    for r in rows:
        last = r.get("last_failover") or {}
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last["at"])) if last.get("at") else ""
        lag = "" if r.get("lag") is None else str(r["lag"])
        age = "" if r.get("age") is None else f"{r['age']:.0f}s"
        out.write(f"{r['cluster']:<20} {r.get('holder') or '-':<12} {r.get('master') or '-':<12} {r.get('replica') or '-':<12} "
                  f"{lag:>5}  {age:>10}  {(last.get('node', '') + ' ' + last.get('kind', '') + ' ' + when).strip()}\n")
    if not rows:
        out.write(f"no cluster publishes under {cfg.etcd.prefix}/ (orch maintain publishes while it runs)\n")
    return EXIT_OK
