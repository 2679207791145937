"""The write token's effects (docs/etcd.md): read it for the view, take/release/hand it over
for the executor's steps, and keep this host's lease alive from the maintainer (LeaseKeeper),
fencing this host's server when the lease cannot be renewed in time. Every etcd call goes
through orchestrator/etcd.py; the decisions are orchestrator/token.py's.

This host's lease: one per host, granted by the first that needs it (the keeper, or a notify's
AcquireToken), named in state_dir/etcd-lease.json and under <prefix>/<cluster>/lease/<node>.
The keeper touches the file after every renewal: a promotion refuses to take the token under a
lease nobody keeps alive (no maintainer running: nothing would fence this server in time).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from . import token as tk
from .errors import OrchError, Refused, TokenRefused
from .etcd import NOT_FOUND, EtcdClient, EtcdError, client_for
from .model import ClusterView, TokenState

if TYPE_CHECKING:
    from .config import Config
    from .plan import AcquireToken, HandOverToken, ReleaseToken

log = logging.getLogger("orchestrator.token")

LEASE_FILE = "etcd-lease.json"
POLL = 0.1  # seconds between two tries while a holder's lease runs out
FINE_POLL = 0.05  # ... in its last two seconds (the take-over right at expiry)
RENEWED_AFTER = 2.5  # seconds over which a lease's whole-second TTL that has not gone down was renewed
WATCH_STEP = 0.25  # the fence watchdog looks at the deadline at least this often
SAFE_RECHECK = 0.5  # past the deadline but not fenced (outage_safe): read both servers again this often


def lease_path(cfg: "Config") -> str:
    return os.path.join(cfg.state_dir, LEASE_FILE)


def read_lease_file(cfg: "Config") -> "tuple[int, Optional[float]]":
    """(this host's lease id, seconds since the keeper last renewed it); (0, None) without one."""
    path = lease_path(cfg)
    try:
        with open(path, encoding="utf-8") as fh:
            lease = int(json.load(fh).get("lease") or 0)
        return lease, max(0.0, time.time() - os.stat(path).st_mtime)
    except (OSError, ValueError, AttributeError):
        return 0, None


def write_lease_file(cfg: "Config", lease: int) -> None:
    path = lease_path(cfg)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"lease": str(lease), "ttl": cfg.etcd.ttl if cfg.etcd else 0}, fh)
    os.replace(tmp, path)


def touch_lease_file(cfg: "Config") -> None:
    try:
        os.utime(lease_path(cfg))
    except OSError:
        pass


def client(cfg: "Config") -> EtcdClient:
    assert cfg.etcd is not None
    return client_for(cfg.etcd)


def read_token(cfg: "Config") -> TokenState:
    """The token as etcd says now (two short calls: the key, its lease's time left)."""
    c = client(cfg)
    try:
        kv = c.get(tk.token_key(cfg))
        if kv is None:
            return TokenState()
        left = c.time_to_live(kv.lease) if kv.lease else -1
        return TokenState(kv.value, float(left), kv.lease, kv.mod_revision)
    except EtcdError as exc:
        return TokenState(error=str(exc))


def grant_host_lease(cfg: "Config", c: EtcdClient) -> int:
    """A new lease for this host, named in state_dir and in etcd."""
    assert cfg.etcd is not None
    lease = c.grant(cfg.etcd.ttl)
    write_lease_file(cfg, lease)
    try:
        c.put(tk.lease_key(cfg, cfg.self_name), str(lease), lease)
    except EtcdError as exc:
        log.warning("token: cannot name this host's lease in etcd (%s); a switchover to %s cannot hand the token over "
                    "until the maintainer does", exc, cfg.self_name)
    log.info("token: granted lease %x (%ds) for %s", lease, cfg.etcd.ttl, cfg.self_name)
    return lease


def host_lease_left(cfg: "Config", node: str) -> "tuple[Optional[float], str]":
    """(seconds left of the lease ``node``'s host names in etcd, None when it names none; why it
    could not be read, or ""). A switchover's preflight: can the candidate take the token?"""
    c = client(cfg)
    try:
        named = c.get(tk.lease_key(cfg, node))
        if named is None:
            return None, ""
        return float(c.time_to_live(int(named.value))), ""
    except (EtcdError, ValueError) as exc:
        return None, str(exc)


# ------------------------------------------------------------------ the steps


def acquire(cfg: "Config", step: "AcquireToken", peer_fenced: Callable[[], str]) -> str:
    """AcquireToken: create the key under this host's lease, keep it when this node holds it,
    take it over from the peer only when ``peer_fenced()`` says it is ("" : it is not)."""
    assert cfg.etcd is not None
    c = client(cfg)
    key = tk.token_key(cfg)
    lease, age = read_lease_file(cfg)
    # The keeper may be a renewal behind (etcd just came back): wait up to two of its rounds.
    patience = time.monotonic() + 2 * tk.renew_every(cfg.etcd.ttl) + tk.renew_timeout(cfg.etcd.ttl)
    while (not lease or age is None or age > cfg.etcd.ttl) and time.monotonic() < patience:
        time.sleep(POLL)
        lease, age = read_lease_file(cfg)
    if not lease or age is None or age > cfg.etcd.ttl:
        what = (f"its lease was last renewed by orch maintain {age:.0f}s ago" if lease and age is not None
                else "no lease kept alive by orch maintain")
        raise Refused(f"this host has {what} (nothing would fence {step.node} in time if etcd became unreachable): "
                      f"{step.node} stays read-only; is orch maintain running?")
    deadline = time.monotonic() + step.wait
    said = False
    first: Optional["tuple[float, int, int, int]"] = None  # (when, lease, its TTL, raft term) of the holder's lease
    lowest = 0  # the lowest TTL of it read since
    # The peer's fence is re-read beside the polls, never in their way: a frozen peer costs its
    # handshake timeout (2 s) per read, which must not set the pace of the take-over at expiry.
    fenced = PeerCheck(peer_fenced)
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                ok, kv = c.create(key, step.node, lease)
            except EtcdError as exc:
                if exc.code != NOT_FOUND:
                    raise OrchError(f"cannot take the write token: {exc}") from None
                lease = grant_host_lease(cfg, c)  # this host's lease ran out (the keeper will adopt the new one)
                continue
            if ok:
                if attempt > 1:
                    log.info("token: taken at attempt %d (the holder's key was gone)", attempt)
                return f"write token taken for {step.node} (lease {lease:x})"
            if kv is not None and kv.value == step.node:
                if kv.lease == lease:
                    return f"{step.node} holds the write token already (lease {lease:x})"
                moved, _ = c.swap(key, kv.mod_revision, step.node, lease)
                if moved:
                    return f"{step.node} holds the write token, now under this host's lease {lease:x}"
                continue
            if kv is not None and kv.value == step.peer:
                why = fenced.result()
                if why:
                    moved, _ = c.swap(key, kv.mod_revision, step.node, lease)
                    if moved:
                        log.warning("token: taken over from %s (%s)", step.peer, why)
                        return f"write token taken over from {step.peer} ({why})"
                    continue
            ttl = -1
            if kv is not None and kv.lease:
                # The holder renews its lease (the same term, a TTL not gone down in RENEWED_AFTER s):
                # its host runs and reaches etcd (the split): refuse now rather than at the deadline.
                try:
                    ttl, term = c.lease_ttl(kv.lease)
                except EtcdError as exc:
                    log.debug("token: the holder's lease cannot be read: %s", exc)
                    ttl, term = -1, -1
                now = time.monotonic()
                if ttl < 0:
                    pass  # unknown this time: compare the next reading with the first
                elif first is None or first[1] != kv.lease or first[3] != term:
                    log.info("token: %s's lease %x has %ds left (raft term %d)", kv.value, kv.lease, ttl, term)
                    first = (now, kv.lease, ttl, term)
                    lowest = ttl
                elif ttl > lowest or (now - first[0] >= RENEWED_AFTER and ttl >= first[2]):
                    # Gone up, or not down in 2.5 s, within one term: renewed by its holder.
                    raise TokenRefused(f"the write token is held by {kv.value}, whose host renews its lease (it runs and "
                                       f"reaches etcd): {step.node} stays read-only")
                else:
                    if ttl < lowest:
                        log.info("token: %s's lease %x has %ds left (attempt %d)", kv.value, kv.lease, ttl, attempt)
                    lowest = min(lowest, ttl)
            if time.monotonic() >= deadline:
                holder = kv.value if kv is not None else "?"
                raise TokenRefused(f"the write token is held by {holder} and its lease is kept alive (its host runs and reaches "
                                   f"etcd){f' after waiting {step.wait:g}s' if step.wait else ''}: {step.node} stays read-only")
            if not said:
                log.info("token: held by %s; waiting up to %gs for its lease to run out", kv.value if kv else "?", step.wait)
                said = True
            time.sleep(poll_pause(ttl, deadline - time.monotonic()))
    finally:
        fenced.stop()


def poll_pause(ttl_left: int, time_left: float) -> float:
    """Seconds until the next take-over attempt. The holder's lease read with ``ttl_left`` whole
    seconds (-1: unknown) runs out no earlier than ``ttl_left - 1`` s from now (etcd rounds down
    and revokes expired leases every 0.5 s); but its holder may release the key any moment (a
    FAULT on its host: the kill -9 failover must not wait), so never more than POLL, and
    FINE_POLL in the lease's last seconds (the take-over right at its expiry)."""
    pause = FINE_POLL if ttl_left < 2 else POLL
    return max(0.0, min(pause, time_left))


class PeerCheck:
    """``peer_fenced()`` run again and again in a thread of its own until it says fenced;
    ``result()`` is its last answer ("" : not fenced, or not known yet). A frozen peer costs
    that thread its handshake timeout, never the caller's polls."""

    def __init__(self, check: Callable[[], str]) -> None:
        self.check = check
        self.answer = ""
        self.stopped = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def result(self) -> str:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="token-peer-check", daemon=True)
            self.thread.start()  # not waited for: a fenced peer's answer is taken at the next try, 0.1 s on
        return self.answer

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                answer = self.check()
            except Exception as exc:  # an unreadable peer is not a fenced one
                log.debug("token: cannot read the peer: %s", exc)
                answer = ""
            self.answer = answer
            if answer:
                return
            self.stopped.wait(POLL)

    def stop(self) -> None:
        self.stopped.set()


def release(cfg: "Config", step: "ReleaseToken") -> str:
    """ReleaseToken: delete the key only if ``step.node`` still holds it (at the revision read)."""
    c = client(cfg)
    key = tk.token_key(cfg)
    kv = c.get(key)
    if kv is None or kv.value != step.node:
        return f"{step.node} does not hold the write token" + (f" ({kv.value} does)" if kv is not None else "")
    done, now = c.delete_if(key, kv.mod_revision)
    if done:
        return f"write token released by {step.node}"
    return f"the write token moved meanwhile ({now.value if now else 'gone'}): nothing released"


def hand_over(cfg: "Config", step: "HandOverToken") -> str:
    """HandOverToken: move the key from ``step.node`` to ``step.to`` under ``step.to``'s host lease."""
    c = client(cfg)
    named = c.get(tk.lease_key(cfg, step.to))
    if named is None:
        raise OrchError(f"{step.to}'s host names no lease in etcd (is orch maintain running there?): the write token "
                        f"cannot be handed over")
    key = tk.token_key(cfg)
    kv = c.get(key)
    if kv is not None and kv.value == step.to:
        return f"{step.to} holds the write token already"
    if kv is not None and kv.value != step.node:
        raise OrchError(f"the write token is held by {kv.value}, not {step.node}: not handing it over")
    if kv is None:
        ok, now = c.create(key, step.to, int(named.value))
    else:
        ok, now = c.swap(key, kv.mod_revision, step.to, int(named.value))
    if not ok:
        raise OrchError(f"the write token moved meanwhile ({now.value if now else 'gone'}): not handed over")
    return f"write token handed over from {step.node} to {step.to} (its lease {int(named.value):x})"


# ------------------------------------------------------------------ the keeper


class LeaseKeeper:
    """Keeps this host's lease alive (a keepalive every token.renew_every(ttl) seconds), reads
    whether this node holds the token, publishes the cluster's state for orch fleet, and fences
    this host's server when the holder cannot renew before token.fence_at. A thread of orch
    maintain; the maintainer tells it every view it observes (a PassListener)."""

    def __init__(self, cfg: "Config", fence: Callable[[str], str], journal: Callable[[Dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic,
                 fresh_view: Optional[Callable[[], ClusterView]] = None) -> None:
        assert cfg.etcd is not None
        self.cfg = cfg
        self.ttl = float(cfg.etcd.ttl)
        self.fence = fence  # fences this host's server (the why) -> its detail; raises OrchError
        self.fresh_view = fresh_view  # both servers read now (observe.observe_quickly), right before a fence
        self.journal = journal
        self.clock = clock
        self.client = EtcdClient(cfg.etcd, tk.renew_timeout(self.ttl))
        self.lease = 0
        self.last_ok: Optional[float] = None  # when the last successful keepalive was sent
        self.renew_ms: Optional[float] = None  # how long the last successful one took
        self.holds = False  # this node held the token at the last read
        self.failing_since: Optional[float] = None
        self.fenced_at: Optional[float] = None  # when it fenced itself (not again until it renews)
        self.view: Optional[ClusterView] = None
        self.view_at = 0.0
        self.last_publish = -1e9
        self.stop_event = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.lock = threading.Lock()
        self.fence_lock = threading.Lock()  # one self-fence at a time (the watchdog's or the round's)
        self.threads: "list[threading.Thread]" = []
        self.last_leader_move: Optional[float] = None

    # PassListener
    def on_view(self, view: ClusterView) -> None:
        with self.lock:
            self.view, self.view_at = view, self.clock()

    def on_pass(self, result: Any) -> None:
        pass

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="etcd-lease-keeper", daemon=True)
        self.threads = [self.thread,
                        threading.Thread(target=self.watch_deadline, name="etcd-fence-watchdog", daemon=True),
                        threading.Thread(target=self.watch_leader, name="etcd-leader-placement", daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=5)

    # ------------------------------------------------------------ the fence deadline's watchdog

    def watch_deadline(self) -> None:
        """The self-fence deadline kept by a thread of its own: it sleeps until the deadline (at
        most WATCH_STEP at a time) and fences when it has passed, whatever the renewing thread is
        doing (a keepalive to a hung or frozen member can take its whole deadline). The sleep is
        on the monotonic clock: a host resumed after a freeze finds it passed and fences at once,
        before any etcd call."""
        while not self.stop_event.is_set():
            try:
                wait = self.check_deadline()
            except Exception:  # the watchdog never dies silently
                log.exception("token: fence watchdog failed; checking again")
                wait = WATCH_STEP
            self.stop_event.wait(max(0.005, wait))

    def check_deadline(self) -> float:
        """Fence if the deadline has passed; the seconds until the next look."""
        due = self.fence_due()
        now = self.clock()
        if due is None:
            return WATCH_STEP
        if now < due:
            return min(WATCH_STEP, due - now)
        self.fence_if_due()
        return SAFE_RECHECK  # not fenced (every acknowledged write on the replica) or fenced: look again soon

    def fence_if_due(self, lost: bool = False) -> None:
        """Fence this host's server if the deadline has passed (``lost``: its lease ran out in etcd,
        at once). One at a time: the watchdog and the renewing round may both find it due."""
        with self.fence_lock:
            now = self.clock()
            due = self.fence_due()
            if lost or (due is not None and now >= due):
                self._self_fence(now, lost=lost)

    # ------------------------------------------------------------ the etcd leader's place

    def watch_leader(self) -> None:
        """While this node holds the token: keep the etcd leader off the DB hosts (a new leader
        restarts every lease's countdown: docs/etcd.md). Looks as soon as it holds the token, then
        every LEADER_CHECK_EVERY s. A thread of its own: its etcd calls never delay a renewal."""
        checked: Optional[float] = None
        while not self.stop_event.wait(0.5):
            if not self.holds or self.fenced_at is not None:
                checked = None
                continue
            if checked is not None and self.clock() - checked < tk.LEADER_CHECK_EVERY:
                continue
            checked = self.clock()
            try:
                self.place_leader()
            except Exception:  # never kills the keeper
                log.exception("token: the etcd leader's placement")

    def place_leader(self) -> str:
        """Read where the etcd leader runs; move it to a healthy member off the DB hosts when it
        runs on one (rate-limited). What was done, for the log and tests."""
        from .etcd import member_list, move_leader

        assert self.cfg.etcd is not None
        c = EtcdClient(self.cfg.etcd, 1.0)
        members = member_list(c)
        statuses: Dict[str, Dict[str, Any]] = {}
        urls = sorted({u.rstrip("/") for m in members for u in m.client_urls} | set(self.cfg.etcd.endpoints))
        for url in urls:
            try:
                statuses[url] = c.status_of(url, 1.0)
            except EtcdError:
                continue
        leaders = {str(st.get("leader") or "") for st in statuses.values()} - {"", "0"}
        if len(leaders) != 1:
            return "no single etcd leader"
        leader_id = int(leaders.pop())
        healthy = {int(st["header"]["member_id"]) for st in statuses.values()
                   if not st.get("errors") and (st.get("header") or {}).get("member_id")}
        nodes = {n.name: n.host for n in self.cfg.nodes}
        placement = tk.leader_placement([(m.id, m.name, m.client_urls + m.peer_urls) for m in members], leader_id,
                                        healthy, nodes)
        why = tk.leader_move_due(placement, self.clock(), self.last_leader_move)
        if not why:
            return placement.describe()
        self.last_leader_move = self.clock()
        leader = next(m for m in members if m.id == leader_id)
        endpoint = next((u for u in urls if u in statuses and int(statuses[u]["header"]["member_id"]) == leader_id),
                        leader.client_urls[0] if leader.client_urls else "")
        try:
            move_leader(c, endpoint, placement.target_id)
        except EtcdError as exc:
            log.warning("token: cannot move the etcd leader to %s: %s", placement.target, exc)
            return f"move failed: {exc}"
        self._journal("etcd-leader-moved", why, detail=f"{placement.leader} ({leader_id:x}) -> {placement.target} "
                      f"({placement.target_id:x}) via {endpoint}", result="ok")
        return why

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                wait = self.tick()
            except Exception:  # the keeper never dies silently
                log.exception("token: keeper failed; trying again")
                wait = tk.renew_every(self.ttl)
            self.stop_event.wait(max(0.01, wait))

    def tick(self) -> float:
        """One round: fence if due (first: a host resumed after a freeze must not wait for a
        network call), renew, read the holder, fence if due. The seconds until the next round."""
        self.fence_if_due()
        sent = self.clock()
        try:
            self._renew(sent)
        except EtcdError as exc:
            self._failed(exc, sent)
        self.fence_if_due()
        now = self.clock()
        self._publish(now)
        nxt = sent + tk.renew_every(self.ttl)
        due = self.fence_due()
        if due is not None and due > self.clock():
            nxt = min(nxt, due)
        return nxt - self.clock()

    def fence_due(self) -> Optional[float]:
        """When this holder must fence itself (None: it holds nothing, or has fenced already)."""
        if not self.holds or self.fenced_at is not None:
            return None
        if self.last_ok is None:
            return self.clock()  # its lease ran out while it held the token: at once
        return tk.fence_at(self.last_ok, self.ttl)

    def _renew(self, sent: float) -> None:
        if not self.lease:
            lease, _ = read_lease_file(self.cfg)
            self.lease = lease or grant_host_lease(self.cfg, self.client)
        try:
            ttl = self.client.keepalive(self.lease)
        except EtcdError as exc:
            if exc.code != NOT_FOUND:
                raise
            ttl = 0
        if ttl <= 0:
            lost = self.lease
            if self.holds:
                # The token went with the lease (a host frozen past it, an etcd outage longer than
                # it): fence at once, unless every acknowledged write is on the replica (then the
                # passes take the token again, or fence this server if the peer took it).
                self._journal("token-lease-lost", f"lease {lost:x} ran out in etcd while {self.cfg.self_name} held the token")
                self.last_ok = None
                self.fence_if_due(lost=True)
                self.holds = False  # read again below
            self.lease = grant_host_lease(self.cfg, self.client)
            ttl = self.client.keepalive(self.lease)
        else:
            lease, _ = read_lease_file(self.cfg)
            if lease and lease != self.lease:  # a notify granted a newer one (this one had run out)
                self.lease = lease
        self.renew_ms = (self.clock() - sent) * 1000
        if ttl > 0:
            self.last_ok = sent
            touch_lease_file(self.cfg)
        if self.failing_since is not None:
            self._journal("token-renewed", f"lease renewed again after {sent - self.failing_since:.1f}s of failures")
            self.failing_since = None
        kv = self.client.get(tk.token_key(self.cfg))
        holds = kv is not None and kv.value == self.cfg.self_name
        if holds != self.holds:
            log.info("token: %s %s the write token", self.cfg.self_name, "holds" if holds else "no longer holds")
        self.holds = holds
        if self.fenced_at is not None and ttl > 0:
            self.fenced_at = None  # renewing again: the maintainer's passes decide from here

    def _failed(self, exc: EtcdError, sent: float) -> None:
        if self.failing_since is None:
            self.failing_since = sent
            self._journal("token-renew-failed", f"cannot renew lease {self.lease:x}: {exc}")
        else:
            log.debug("token: renew failed again: %s", exc)

    def _self_fence(self, now: float, lost: bool = False) -> None:
        with self.lock:
            view, age = self.view, now - self.view_at
        if self.fresh_view is not None:
            try:
                view, age = self.fresh_view(), 0.0
            except Exception as exc:  # no fresh view: no proof that the replica has every write
                log.warning("token: cannot read the servers before the self-fence: %s", exc)
                view = None
        from .semisync import NO_FALLBACK_MIN_MS

        safe = tk.outage_safe(view, age, self.ttl + self.cfg.maintainer.interval, NO_FALLBACK_MIN_MS)
        since = (f"has not renewed its lease for {now - self.last_ok:.1f}s (ttl {self.ttl:g}s)" if self.last_ok is not None
                 else "lost its lease in etcd (it ran out)")
        if safe:
            if self.failing_since is not None and not getattr(self, "_said_safe", False):
                log.warning("token: %s %s, but %s: writes go on", self.cfg.self_name, since, safe)
                self._said_safe = True
            return
        self._said_safe = False
        why = (f"{self.cfg.self_name} holds the write token but {since}: fencing "
               + ("at once (whoever holds the token now may open)" if lost else "before the lease can run out in etcd"))
        log.error("token: SELF-FENCE: %s", why)
        self.fenced_at = now
        try:
            detail = self.fence(why)
            self._journal("token-self-fence", why, detail=detail, result="ok")
        except OrchError as exc:
            self._journal("token-self-fence", why, detail=str(exc), result="failed")
            log.error("token: self-fence failed: %s", exc)
            self.fenced_at = None  # try again at the next round

    def _journal(self, event: str, reason: str, **extra: Any) -> None:
        (log.warning if event != "token-renewed" else log.info)("token: %s: %s", event, reason)
        try:
            from .journal import new_run_id

            self.journal({"id": new_run_id(), "node": self.cfg.self_name, "event": event, "by": "maintain",
                          "phase": "note", "reason": reason, **extra})
        except Exception:  # bookkeeping never stops the keeper
            log.exception("token: journal")

    def _publish(self, now: float) -> None:
        """This cluster's state for orch fleet, under this host's lease (every ttl seconds)."""
        if now - self.last_publish < self.ttl or not self.lease:
            return
        with self.lock:
            view = self.view
        if view is None:
            return
        self.last_publish = now
        try:
            self.client.put(tk.state_key(self.cfg, self.cfg.self_name), json.dumps(fleet_state(self.cfg, view)), self.lease)
        except EtcdError as exc:
            log.debug("token: cannot publish the fleet state: %s", exc)

    def snapshot(self) -> Dict[str, Any]:
        """For orch status and the metrics: the keeper's own view."""
        now = self.clock()
        return {"lease": self.lease, "holds": self.holds, "renew_ms": self.renew_ms,
                "since_renewal": None if self.last_ok is None else now - self.last_ok,
                "failing": self.failing_since is not None}


def fleet_state(cfg: "Config", view: ClusterView) -> Dict[str, Any]:
    """What this host publishes about its cluster (orch fleet)."""
    me, peer = view.me, view.peer
    master = me.name if me.writable else peer.name if peer.writable else ""
    replica = peer if master == me.name else me if master == peer.name else None
    lag = replica.replica.lag if replica is not None and replica.replica is not None else None
    last = view.last_promotion
    return {"cluster": cfg.cluster, "node": cfg.self_name, "at": time.time(),
            "holder": view.token.holder if view.token is not None and view.token.known else None,
            "master": master, "replica": replica.name if replica is not None else "", "lag": lag,
            "vip_here": view.holds_vip,
            "last_failover": ({"node": last.node, "kind": last.kind, "at": last.at} if last is not None else None)}
