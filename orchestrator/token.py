"""Pure: the write token in etcd (docs/etcd.md). No I/O, no clock: callers pass the time.

One key per cluster, ``<prefix>/<cluster>/token``, whose value is the node holding it, put
under that host's lease (orchestrator/lease.py keeps the lease alive from the maintainer).
Only the holder's server may be opened: a promotion takes the token right before its
re-check and its SetWritable (AcquireToken); a fence of the master's host releases it at
once (ReleaseToken), so a kill -9 failover does not wait for the lease; a switchover hands
it over in one transaction (HandOverToken). A dead or frozen host costs its lease.

The self-fence deadline (``fence_at``): a lease renewed by a keepalive *sent* at ``t`` runs
out in etcd no earlier than ``t + ttl`` by the leader's clock (the leader restarts the TTL
when the request reaches it, after ``t``; a leader change only lengthens it). Measured on
this host's monotonic clock, whose rate may differ from the leader's by up to RATE_MARGIN,
that is no earlier than ``t + ttl * (1 - RATE_MARGIN)``. The fence must be done by then: it
starts FENCE_BUDGET seconds before. The margin is what Patroni keeps between retry_timeout
and ttl; docs/etcd.md has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .model import ClusterView, ThreadState, TokenState
from .plan import AcquireToken, HandOverToken, ReleaseToken, Step

if TYPE_CHECKING:
    from .config import Config

RATE_MARGIN = 0.02  # clock rate difference allowed between this host and the etcd leader (NTP keeps it under 0.05 %)
# Seconds a self-fence may take: 0.5 s to read both servers (is every acknowledged write on a
# receiving replica? then no fence, outage_safe), read_only within 1 s, or kill the writers and
# set it again within 1 s more.
FENCE_BUDGET = 2.5
OPEN_MARGIN = 1.0  # etcd revokes expired leases every 0.5 s, then a raft round
# A promotion waits for the holder's lease for ttl + OPEN_MARGIN + this: when the frozen host
# also ran the etcd leader, the new leader restarts every lease's TTL plus its election timeout
# once elected, which (etcd's defaults: 1 s election timeout, randomized up to 2 s) happens
# 1 to 2 s after the freeze: up to 2 + 1 + 0.5 (the revocation's own pace) more.
ELECTION_ALLOWANCE = 3.5


def token_key(cfg: "Config") -> str:
    assert cfg.etcd is not None
    return f"{cfg.etcd.prefix}/{cfg.cluster}/token"


def lease_key(cfg: "Config", node: str) -> str:
    """Where a host's maintainer names its lease (a switchover hands the token over to it)."""
    assert cfg.etcd is not None
    return f"{cfg.etcd.prefix}/{cfg.cluster}/lease/{node}"


def state_key(cfg: "Config", node: str) -> str:
    """Where a host's maintainer publishes its cluster's state (orch fleet)."""
    assert cfg.etcd is not None
    return f"{cfg.etcd.prefix}/{cfg.cluster}/state/{node}"


def renew_every(ttl: float) -> float:
    """Seconds between two keepalives of the host lease."""
    return ttl / 5.0


def renew_timeout(ttl: float) -> float:
    """One keepalive's deadline (over every endpoint): shorter than the pace, so a hung member
    never delays the next attempt."""
    return min(1.0, renew_every(ttl) * 0.9)


# How long renewals may fail while etcd elects a leader after losing one: its randomized
# election timeout (1 s default, up to 2 s), the pre-vote and a raft round. Seen on a busy
# 2-core machine: two renewals in a row failed, none succeeded for 3.0 s after the last one.
ELECTION_SECONDS = 3.0


def election_tolerated(ttl: float) -> bool:
    """Whether the self-fence margin outlasts an etcd leader election that begins just before
    a renewal is due: the margin after the last renewal against the election plus one pace."""
    return fence_at(0.0, ttl) >= ELECTION_SECONDS + renew_every(ttl)


def fence_at(last_renewal_sent: float, ttl: float) -> float:
    """When a holder that has not renewed since ``last_renewal_sent`` (monotonic) must start
    fencing itself, so that it is read-only before its lease can run out in etcd."""
    return last_renewal_sent + ttl * (1.0 - RATE_MARGIN) - FENCE_BUDGET


def outage_safe(view: Optional[ClusterView], now_age: float, max_age: float, min_timeout_ms: int) -> str:
    """Why this master may keep taking writes while it cannot renew its lease ("" : it may not).

    Only while every acknowledged write is on its replica: semi-sync without fallback is on,
    and the peer receives from it (as seen by a view at most ``max_age`` old). The replica then
    cannot open without the token, and when it can (etcd reachable from it, this lease run
    out) its promotion fences this master and applies everything it received first."""
    if view is None or now_age > max_age:
        return ""
    me, peer = view.me, view.peer
    s = me.semisync
    if not (me.writable and s is not None and s.no_fallback(min_timeout_ms)):
        return ""
    r = peer.replica if peer.reachable else None
    if r is None or not peer.replicates_from(me.host, me.port) or r.io is not ThreadState.RUNNING:
        return ""
    return f"semi-sync without fallback is on and {peer.name} receives from {me.name}: every acknowledged write is on {peer.name}"


# ------------------------------------------------------------------ the decisions


def open_gate(view: ClusterView, cfg: "Config", operator: bool = False) -> Tuple[str, List[Step]]:
    """A promotion of this node: (why it is refused, "" when not; the token steps to run right
    before the re-check that precedes SetWritable). Without etcd: ("", [])."""
    t = view.token
    if cfg.etcd is None or t is None:
        return "", []
    me, peer = view.me, view.peer
    if not t.known:
        return (f"the write token cannot be read ({t.error}): no promotion without it (an etcd outage stops "
                f"failovers, docs/etcd.md)"), []
    if t.holder in ("", me.name):
        return "", [AcquireToken(me.name, peer.name, 0.0)]
    if t.holder != peer.name:
        return f"the write token is held by {t.holder!r}, not a node of this cluster (etcd.prefix shared?)", []
    if peer.writable and not operator:
        # The writer is the token's holder: this node stays read-only and, holding the VIP, hands
        # it back (invariants' HANDOVER rule); orch promote may still fence it and take over.
        return (f"{peer.name} is writable and holds the write token ({t.describe()}): {me.name} stays read-only "
                f"(the VIP goes back to {peer.name} through keepalived.track_file; orch promote takes over)"), []
    # Not the lease left as read: an etcd leader elected meanwhile restarts it (ELECTION_ALLOWANCE).
    return "", [AcquireToken(me.name, peer.name, float(cfg.etcd.ttl) + OPEN_MARGIN + ELECTION_ALLOWANCE)]


def release_steps(view: ClusterView, cfg: "Config", why: str) -> List[Step]:
    """After this node's fence (or when its server is down): release the token it holds, so
    that the peer opens at once. Tried when etcd could not be read too (best effort)."""
    t = view.token
    if cfg.etcd is None or t is None:
        return []
    if t.known and t.holder != view.me.name:
        return []
    return [ReleaseToken(view.me.name, why)]


def handover_steps(view: ClusterView, cfg: "Config") -> List[Step]:
    """A switchover: the token moves from this (fenced) node to the candidate."""
    if cfg.etcd is None:
        return []
    return [HandOverToken(view.me.name, view.peer.name)]


def handover_refusal(view: ClusterView, cfg: "Config", candidate_lease: Optional[float], lease_error: str = "") -> str:
    """"" when a switchover may hand the token to the peer; otherwise why not, before anything is
    fenced: this node must hold it (or nobody), and the peer's host must name a lease its
    maintainer renewed within the last two renewals (``candidate_lease``: seconds left, None:
    none named). A candidate that cannot reach etcd could not open after the hand-over."""
    t = view.token
    if cfg.etcd is None or t is None:
        return ""
    me, cand = view.me, view.peer
    if not t.known:
        return f"the write token cannot be read ({t.error}): it could not be handed over"
    if t.holder not in ("", me.name):
        return f"the write token is {t.describe()}, not by {me.name}: it cannot be handed over from here"
    if lease_error:
        return f"{cand.name}'s host lease cannot be read ({lease_error})"
    if candidate_lease is None:
        return (f"{cand.name}'s host names no lease in etcd (is orch maintain running there, and does it reach etcd?): "
                f"{cand.name} could not take the write token")
    # Renewed every ttl/5 s (ttl 5: a healthy keeper's lease reads 4 or 5 s, 3 after one missed renewal).
    fresh = cfg.etcd.ttl - 2 * renew_every(cfg.etcd.ttl)
    if candidate_lease < fresh:
        return (f"{cand.name}'s host lease has {max(candidate_lease, 0):.0f}s left of {cfg.etcd.ttl}s: its orch maintain "
                f"has not renewed it for two rounds (it does not reach etcd?), so {cand.name} could not take the write token")
    return ""


def may_switch_semisync_off(view: ClusterView, cfg: "Config") -> str:
    """"" when this master may switch its semi-sync wait off (its replica gone); otherwise why not:
    only the token holder may (a master cut from its peer only, both reaching the witness, is
    exactly the split the token exists for)."""
    t = view.token
    if cfg.etcd is None or t is None:
        return ""
    if not t.known:
        return f"the write token cannot be read ({t.error})"
    if t.holder != view.me.name:
        return f"{view.me.name} does not hold the write token ({t.describe()})"
    return ""


# ------------------------------------------------------------------ the etcd leader's place

LEADER_CHECK_EVERY = 5.0  # seconds between two looks at where the etcd leader runs (the holder's keeper)
LEADER_MOVE_GAP = 30.0  # at most one leadership move per this many seconds (a member that keeps losing it)


@dataclass(frozen=True)
class LeaderPlacement:
    """Where the etcd leader runs, and where it should (members named as etcd names them)."""

    leader: str = ""  # the leader's member name ("" : no leader known)
    leader_id: int = 0
    on_node: str = ""  # the DB node whose host runs it ("" : off the DB hosts, or unknown)
    target: str = ""  # a healthy member off the DB hosts to hand leadership to ("" : none)
    target_id: int = 0

    def describe(self) -> str:
        if not self.leader:
            return "no etcd leader known"
        where = f"on {self.on_node}'s host" if self.on_node else "off the DB hosts"
        return f"etcd leader {self.leader} runs {where}"


def url_host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def member_node(urls: Sequence[str], nodes: Mapping[str, str]) -> str:
    """The DB node whose host runs the etcd member with these client and peer URLs ("" : none,
    e.g. the witness's member). ``nodes``: node name -> its host as in the config's nodes:. Peer
    URLs count too: clients may reach etcd on another network than the databases (the lab does)."""
    hosts = {url_host(u) for u in urls} - {""}
    for name, host in sorted(nodes.items()):
        if host.lower() in hosts:
            return name
    return ""


def leader_placement(members: Sequence[Tuple[int, str, Sequence[str]]], leader_id: int, healthy: Collection[int],
                     nodes: Mapping[str, str]) -> LeaderPlacement:
    """Pure: where the leader runs, and the member to move it to when it runs on a DB host.

    ``members``: (id, name, client and peer URLs) as etcd lists them; ``healthy``: the ids of the
    members that answered their status just now naming that leader. Why it matters: a new etcd
    leader restarts every lease's countdown (with its election timeout on top), so when the host
    that froze also ran the leader, its token's lease runs on 1 to 2 s after the election."""
    by_id = {m[0]: m for m in members}
    found = by_id.get(leader_id)
    if not leader_id or found is None:
        return LeaderPlacement()
    on = member_node(found[2], nodes)
    target = next((m for m in sorted(members, key=lambda m: m[1]) if m[0] != leader_id and m[0] in healthy
                   and not member_node(m[2], nodes)), None) if on else None
    return LeaderPlacement(found[1], leader_id, on, target[1] if target else "", target[0] if target else 0)


def leader_move_due(p: LeaderPlacement, now: float, last_move: Optional[float]) -> str:
    """Why the holder's keeper moves the etcd leader now ("" : it does not): it runs on a DB host,
    a healthy member off the DB hosts can take it, and no move was made in LEADER_MOVE_GAP s."""
    if not p.on_node or not p.target:
        return ""
    if last_move is not None and now - last_move < LEADER_MOVE_GAP:
        return ""
    return (f"{p.describe()}: moving leadership to {p.target}, off the DB hosts (a new leader restarts every lease's "
            f"countdown: if {p.on_node}'s host froze, its write token's lease would outlast ttl by the election)")


def token_state(holder: str, lease_left: Optional[float], lease: int = 0, mod_revision: int = 0) -> TokenState:
    """A TokenState (tests, and lease.py's reader)."""
    return TokenState(holder, lease_left, lease, mod_revision)
