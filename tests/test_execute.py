"""The executor's structure: every step type has a phase and a handler, a Plan keeps its steps
in phase order (the plan printed is the order run), and the failure policy by phase and
best effort."""

from __future__ import annotations

import dataclasses
import inspect
import socket
from dataclasses import replace
from typing import List

import pytest

from orchestrator import plan as plan_mod
from orchestrator.promotions import ACK_FILE
from orchestrator.config import parse
from orchestrator.db import open_servers
from orchestrator.decide import MASTER, decide
from orchestrator.errors import OrchError, Refused
from orchestrator.execute import HANDLERS, STATEMENTS, Executor
from orchestrator.plan import (
    ATLAS, ATLAS_FIRST, ATLAS_PHASES, ATLAS_STEPS, DATABASE, POST_HOOK, PRE_HOOK, STEP_TYPES, AckLocally, AddBackend, CatchUp,
    Fence, Phase, Plan, RecordPromotion, RemoveBackend, RunHook, SetRwOffline, SetRwOnline, SetWritable, StepResult,
    StopReplica,
)

from .test_decide import CONN, REPLICA1, cfg, down, repl, view

C = cfg(atlas=True)
HOOKED = cfg(atlas=True, hooks={"pre_failover": [["/bin/true"]], "post_failover": [["/bin/true"]]})


def step_classes() -> List[type]:
    """Every step class plan.py defines: what describes itself, but the NodeStep base."""
    return [v for v in vars(plan_mod).values()
            if isinstance(v, type) and v.__module__ == plan_mod.__name__ and hasattr(v, "describe") and v is not plan_mod.NodeStep]


def an_instance(cls: type):
    """One instance of a step class, its fields filled by their annotations."""
    values = {"str": "x", "Optional[str]": None, "float": 1.0, "int": 1, "bool": False, "Tuple[str, ...]": ()}
    args = {f.name: values[str(f.type)] for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
    if cls is RunHook:
        args["event"] = "pre_failover"
    return cls(**args)


def test_step_types_lists_every_step_class():
    assert sorted(c.__name__ for c in STEP_TYPES) == sorted(c.__name__ for c in step_classes())


@pytest.mark.parametrize("cls", STEP_TYPES, ids=lambda c: c.__name__)
def test_every_step_type_declares_its_phase_and_whether_it_is_best_effort(cls):
    step = an_instance(cls)
    assert isinstance(step.phase, Phase) and isinstance(step.best_effort, bool)
    assert not {"phase", "best_effort"} & {f.name for f in dataclasses.fields(cls)}, "class constants, not fields"


@pytest.mark.parametrize("cls", STEP_TYPES, ids=lambda c: c.__name__)
def test_every_step_type_has_a_handler(cls):
    """Through the table, or (the Atlas phases) the Atlas runner: never both, never neither."""
    if an_instance(cls).phase in ATLAS_PHASES:
        assert cls in ATLAS_STEPS and cls not in HANDLERS
    else:
        assert cls in HANDLERS and cls not in ATLAS_STEPS
        if HANDLERS[cls] is Executor._one_statement:
            assert cls in STATEMENTS


def test_dispatch_is_a_table_not_a_ladder():
    assert "isinstance" not in inspect.getsource(Executor._do)
    assert set(HANDLERS) | set(ATLAS_STEPS) == set(STEP_TYPES)


def test_phases_of_the_steps_that_are_not_plain_database_steps():
    assert RunHook("pre_failover", ("/bin/true",), 1).phase is PRE_HOOK and not RunHook("pre_failover", (), 1).best_effort
    assert RunHook("post_failover", ("/bin/true",), 1).phase is POST_HOOK and RunHook("post_failover", (), 1).best_effort
    assert SetRwOffline("a").phase is ATLAS_FIRST and SetRwOnline("a").phase is ATLAS and AddBackend("a", "b").best_effort
    assert RecordPromotion("s", "failover").best_effort and not RecordPromotion("s", "ack", "run").best_effort
    assert Fence("s").phase is DATABASE and not Fence("s").best_effort
    assert PRE_HOOK < ATLAS_FIRST < DATABASE < ATLAS < POST_HOOK


def test_a_plan_sorts_its_steps_stably_by_phase():
    pre, post = RunHook("pre_failover", ("/bin/a",), 1), RunHook("post_failover", ("/bin/b",), 1)
    steps = (post, SetRwOnline("local"), Fence("server2"), SetRwOffline("local"), SetWritable("server1"), pre,
             RemoveBackend("local", "10.0.0.1:3306"), StopReplica("server1"))
    plan = Plan("test", steps)
    assert plan.steps == (pre, SetRwOffline("local"), Fence("server2"), SetWritable("server1"), StopReplica("server1"),
                          SetRwOnline("local"), RemoveBackend("local", "10.0.0.1:3306"), post)
    assert plan.render().splitlines()[1] == f"  1. {pre.describe()}"
    in_order = Plan("test", plan.steps)
    assert in_order.steps is plan.steps, "a plan already in phase order is kept as it is"


def test_decided_plans_are_already_in_phase_order():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, HOOKED)
    phases = [s.phase for s in plan.steps]
    assert phases == sorted(phases) and phases[0] is PRE_HOOK and phases[-1] is POST_HOOK, plan.render()


class _Recording(Executor):
    """Records what runs, in order; the step named ``fail`` raises."""

    def __init__(self, fail: str = "") -> None:
        super().__init__(C, {}, atlas_runner=self._atlas_run)
        self.order: List[str] = []
        self.fail = fail

    def _atlas_run(self, cfg, steps) -> List[StepResult]:
        self.order += [type(s).__name__ for s in steps]
        return [StepResult(type(s).__name__, s.describe(), "ok") for s in steps]

    def _do(self, step) -> str:
        self.order.append(type(step).__name__)
        if type(step).__name__ == self.fail:
            raise Refused("no")
        return ""


def test_the_printed_plan_is_the_order_run():
    """Hooks included: a pre hook goes through the handler table like any step, first; a post hook last."""
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, HOOKED)
    ex = _Recording()
    result = ex.run(plan)
    assert not result.failed
    assert ex.order == [type(s).__name__ for s in plan.steps], plan.render()
    assert [r.step for r in result.results] == ex.order


def test_after_a_failure_the_steps_are_skipped_in_plan_order():
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, C)
    ex = _Recording(fail="CatchUp")
    result = ex.run(plan)
    assert result.failed and ex.order == ["SetRwOffline", "CatchUp"]
    assert [r.step for r in result.results] == [type(s).__name__ for s in plan.steps]
    assert [r.result for r in result.results][2:] == ["skipped"] * (len(plan.steps) - 2)
    assert {r.detail for r in result.results[2:]} == {"an earlier step failed"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_pair(tmp_path):
    port = closed_port()
    c = parse({
        "self": "server1", "state_dir": str(tmp_path),
        "nodes": {"server1": {"host": "127.0.0.1", "port": port}, "server2": {"host": "127.0.0.1", "port": port}},
        "mysql": {"user": "orch", "password": "x", "connect_timeout": 1}, "replication": {"user": "repl", "password": "y"},
        "keepalived": {"vip_check": False},
    })
    return c, open_servers(c)


def test_a_best_effort_step_that_fails_is_a_warning_and_the_plan_goes_on(tmp_path):
    """The anti-flapping record on a server that refuses connections: a warning; the next step runs."""
    c, servers = unreachable_pair(tmp_path)
    plan = Plan("test", (RecordPromotion("server1", "failover"), AckLocally(str(tmp_path), "run-1")))
    result = Executor(c, servers, run_id="run-2").run(plan)
    assert result.error is None
    assert [r.result for r in result.results] == ["warning", "ok"], result.results
    assert result.results[0].detail.startswith("warning: not recorded:")
    assert (tmp_path / ACK_FILE).exists()


def test_a_step_that_is_not_best_effort_stops_the_plan(tmp_path):
    """An operator's acknowledgement is the run's point: its failure fails the run."""
    c, servers = unreachable_pair(tmp_path)
    plan = Plan("test", (RecordPromotion("server1", "ack", "run-1"), AckLocally(str(tmp_path), "run-1")))
    result = Executor(c, servers, run_id="run-2").run(plan)
    assert result.error is not None
    assert [r.result for r in result.results] == ["failed", "skipped"]
    assert list(tmp_path.iterdir()) == []


def test_a_step_type_without_a_handler_is_refused():
    """_do refuses a type it has no handler for (a new step class must be added to HANDLERS)."""
    class Unknown(CatchUp):
        pass

    with pytest.raises(OrchError, match="unknown step"):
        Executor(C, {})._do(Unknown("server1", None, 1.0))
