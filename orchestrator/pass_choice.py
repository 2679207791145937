"""Pure: what one maintainer pass does, chosen from the observed view and a few facts.

The order, in one place (``choose_action``); the first rule with a plan to run wins:

1. a keepalived event a notify handed over because it could not get the run lock;
2. the write token (invariants.decide_token, etcd: configured: a writable server holds it), then
   the invariants (invariants.decide_invariant: a STALE writer, a SPLIT-BRAIN, a
   HANDOVER of the VIP, the VIP holder promoted): the VIP holder is the writable master,
   nobody else writes;
3. failover.semi_sync's policy (invariants.decide_semisync);
4. an unfinished rejoin of this node (reconcile.decide_rejoin);
5. Atlas's read-only backends (reconcile.decide_maintain), run when nothing above acts.

In maintenance mode (orch pause) the choice is made the same way, then only its fences of
this node run (``paused_choice``; pause.paused_plan): what would have been done is said.

A rule that finds an anomaly and leaves it alone on purpose (a no-op plan) is said loudly
(``PassChoice.noticed``) and the next rule is tried. The maintainer (orchestrator/maintainer.py)
gathers the facts, asks this module, and runs the plan; nothing here reads a file or a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .config import Config
from .invariants import SEMISYNC, caught_up, decide_invariant, decide_pending, decide_semisync, decide_token, needs_witness
from .model import ClusterView
from .pause import paused_plan
from .plan import ACT, NOOP, PAUSED, Plan
from .reconcile import decide_maintain, decide_rejoin, replica_out

MAINTAIN = "MAINTAIN"  # the journal's event for Atlas's backends
REJOIN = "REJOIN"
REFUSAL_RETRY_EVERY = 60.0  # seconds between two runs (and journal records) of a plan that was refused


@dataclass(frozen=True)
class PassFacts:
    """What a pass learned besides the view."""

    handed_over: str = ""  # the event a notify handed over (taken from state_dir under the run lock)
    track: str = ""  # keepalived.track_file's value ("" without one)
    handback_age: Optional[float] = None  # seconds since orch last wrote 0 to the track file
    vip_elsewhere: Optional[Tuple[str, ...]] = None  # MACs of other hosts answering ARP for the VIP (None: not checked)
    witness: Optional[bool] = None  # whether failover.witness answered
    witness_asked: bool = False  # the witness was pinged for this pass (a ping costs up to 1 s: only when needed)


@dataclass(frozen=True)
class PassChoice:
    """What a pass chose, and what it noticed on the way."""

    action: Optional[Tuple[str, Plan]]  # (event, plan) taking precedence over Atlas's plan
    atlas: Optional[Plan]  # Atlas's read-only backends (None: a handed-over event's pass)
    said: str  # the pass's sentence for the log
    noticed: Tuple[Tuple[str, Plan], ...] = ()  # anomalies left alone on purpose: said loudly
    recheck_soon: bool = False  # a replica out of Atlas or an action taken: the next pass comes fast
    asks_witness: bool = False  # the semi-sync rule needs the witness's answer: choose again with it

    @property
    def event(self) -> str:
        return self.action[0] if self.action is not None else MAINTAIN

    @property
    def plan(self) -> Plan:
        """The plan to run (or to print, in a dry run)."""
        if self.action is not None:
            return self.action[1]
        assert self.atlas is not None
        return self.atlas

    @property
    def acting(self) -> bool:
        return self.action is not None or (self.atlas is not None and self.atlas.outcome not in (NOOP, PAUSED))


def choose_action(view: ClusterView, cfg: Config, facts: PassFacts) -> PassChoice:
    """The pass's choice, by the order in this module's docstring."""
    if facts.handed_over:
        plan = decide_pending(view, cfg, facts.handed_over)
        return PassChoice((facts.handed_over, plan), None, plan.reason)
    noticed = []
    repair = decide_token(view, cfg)  # the write token first: a writable server without it must stop
    if repair is not None and repair[1].outcome == NOOP:
        noticed.append(repair)
        repair = None
    if repair is None:
        repair = decide_invariant(view, cfg, facts.vip_elsewhere, facts.track, facts.handback_age)
    if repair is not None and repair[1].outcome == NOOP:
        noticed.append(repair)
        repair = None
    asks_witness = False
    if repair is None:
        asks_witness = not facts.witness_asked and needs_witness(view, cfg)
        semi = decide_semisync(view, cfg, facts.witness)
        if semi is not None and semi.outcome == NOOP:
            noticed.append((SEMISYNC, semi))  # an isolated master's writers wait: loud every pass
        elif semi is not None:
            repair = (SEMISYNC, semi)
    rejoin = decide_rejoin(view, cfg) if repair is None else None
    atlas = decide_maintain(view, cfg)
    action = repair
    if action is None and rejoin is not None and rejoin.outcome == ACT:
        action = (REJOIN, rejoin)
    said = action[1].reason if action is not None else (rejoin.reason if rejoin is not None else atlas.reason)
    choice = PassChoice(action, atlas, said, tuple(noticed), replica_out(view, cfg) or action is not None, asks_witness)
    return paused_choice(view, cfg, choice) if view.paused is not None else choice


def paused_choice(view: ClusterView, cfg: Config, choice: PassChoice) -> PassChoice:
    """Maintenance mode (orch pause): the pass runs only the fences of this node its choice
    holds (pause.paused_plan), journaled; anything else is said, not run nor journaled on every pass."""
    action = choice.action
    said = choice.said
    if action is not None:
        plan = paused_plan(view, action[1], cfg.self_name)
        action = (action[0], plan) if plan.steps else None
        said = plan.reason
    atlas = paused_plan(view, choice.atlas, cfg.self_name) if choice.atlas is not None else None
    if choice.action is None and atlas is not None and atlas.outcome == PAUSED:
        said = atlas.reason
    elif choice.action is None:
        pause = view.paused
        assert pause is not None
        said = f"paused ({pause.describe()}); {said}"
    return PassChoice(action, atlas, said, choice.noticed, action is not None, choice.asks_witness)


@dataclass(frozen=True)
class Refusal:
    """The last refusal of one plan (keyed by refusal_key)."""

    at: float  # time.monotonic() when it was refused
    why: str
    catch_up: bool = False  # refused for its catch-up (errors.CatchUpRefused): retried once caught up
    token: bool = False  # refused for the write token held by the peer (errors.TokenRefused): retried once it is free


def refusal_key(event: str, plan: Plan) -> str:
    """What makes two refused plans the same refusal: the event and the reason, its numbers
    masked (an anti-flapping block's "promoted 12s ago" changes every pass)."""
    import re

    return f"{event} " + re.sub(r"\d+(\.\d+)?", "#", plan.reason)


def still_refused(last: Optional[Refusal], now: float, view: ClusterView, cfg: Config) -> bool:
    """Whether a plan refused a moment ago is only said again, not run (nor journaled, nor its
    hooks run): for REFUSAL_RETRY_EVERY seconds, unless this view shows its reason gone (a
    catch-up that timed out is done now)."""
    if last is not None and last.token and view.token is not None and view.token.known and view.token.holder in ("", cfg.self_name):
        return False  # the token is free now (or this node's): the promotion may take it
    return last is not None and now - last.at < REFUSAL_RETRY_EVERY and not (last.catch_up and caught_up(view, cfg))
