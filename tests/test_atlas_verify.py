"""Another admin shifting Atlas's backend numbers between our lookup and our REMOVE, and
a config-file rewrite that failed being done again: against the Atlas stand-in.

The race is made deterministic at the stand-in: when our REMOVE BACKEND arrives, a
second real admin connection changes the list first (what a person, or orch on the
other host, may do at that moment)."""

import logging
import os
import shutil

import pytest

from orchestrator.atlas.apply import run_atlas_steps
from orchestrator.atlas.client import REMOVE_ATTEMPTS, AtlasAdmin
from orchestrator.atlas.configfile import read_ro_backends
from orchestrator.atlas.observe import observe_atlas
from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.config import parse
from orchestrator.errors import AtlasError
from orchestrator.model import ClusterView
from orchestrator.plan import RemoveBackend
from orchestrator.plan import PersistBackends
from orchestrator.reconcile import decide_maintain

from .test_decide import down

USER, PASSWORD = "admin", "verify-admin-pw"
MASTER = "10.0.0.100:3306"  # the VIP, Atlas's read/write backend
R2, R3, R4, R5 = (f"10.0.0.{n}:3306" for n in (2, 3, 4, 5))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "atlas.cnf"
    path.write_text(
        "[mysql-proxy]\n"
        f"admin-username = {USER}\n"
        f"admin-password = {PASSWORD}\n"
        f"proxy-backend-addresses = {MASTER}\n"
        f"proxy-read-only-backend-addresses = {R2}@3, {R3}, {R4}\n"
        "# keep me\n"
    )
    return str(path)


@pytest.fixture
def atlas(config):
    standin = AtlasStandin(config, host="127.0.0.1", port=0, check_interval=None).start()
    yield standin
    standin.stop()


@pytest.fixture
def admin(atlas):
    admin = AtlasAdmin(*atlas.address, USER, PASSWORD, timeout=2.0, name="local")
    yield admin
    admin.close()


@pytest.fixture
def other(atlas):
    """A second admin connection: the other host's orch, or a person at the admin port."""
    other = AtlasAdmin(*atlas.address, USER, PASSWORD, timeout=2.0, name="other")
    yield other
    other.close()


def listed(atlas):
    return [(address, type_) for _, address, _, type_ in atlas.backends()]


def on_remove(monkeypatch, atlas, before=None, after=None, times=1):
    """Run `before` when a REMOVE BACKEND reaches the stand-in, ahead of it (the numbers
    shift under it), and/or `after` right after it; for the first `times` REMOVEs."""
    real = atlas._state.execute
    seen = []

    def execute(query):
        if not query.upper().startswith(b"REMOVE BACKEND") or len(seen) >= times:
            return real(query)
        seen.append(query)
        if before:
            before()
        reply = real(query)
        if after:
            after()
        return reply

    monkeypatch.setattr(atlas._state, "execute", execute)
    return seen


def orch_config(atlas, **atlas_extra):
    # The servers' own addresses are not among the backends: only the steps given act.
    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1", "port": 3306, "atlas_address": "10.0.0.11:3306"},
                  "server2": {"host": "10.0.0.2", "port": 3306, "atlas_address": "10.0.0.12:3306"}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "keepalived": {"vip_check": False},
        "atlas": [{"name": "local", "admin": {"host": atlas.address[0], "port": atlas.address[1], "user": USER, "password": PASSWORD},
                   **atlas_extra}],
    })


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- REMOVE BACKEND n after the numbers shifted -------------------------------------


def test_other_admin_removing_first_shifts_ours_onto_the_next_one_which_is_put_back(atlas, admin, other, monkeypatch, caplog):
    # 1 MASTER rw, 2 R2, 3 R3, 4 R4. We look R3 up as 3; the other admin removes R2 first,
    # so our REMOVE BACKEND 3 takes R4.
    on_remove(monkeypatch, atlas, before=lambda: other._execute("REMOVE BACKEND 2"))
    assert admin.remove_backend(R3) is True
    # R4 is back, R3 is gone, and R2 stays gone: that removal was the other admin's.
    assert listed(atlas) == [(MASTER, "rw"), (R4, "ro")]
    assert atlas.mutating_commands() == ["REMOVE BACKEND 2", "REMOVE BACKEND 3", f"ADD SLAVE {R4}", "REMOVE BACKEND 2"]
    [error] = errors(caplog)
    assert f"atlas local at 127.0.0.1:{atlas.address[1]}: {R4} (ro) vanished with REMOVE BACKEND 3 (meant for {R3} (ro))" in error
    assert f"put it back with ADD SLAVE {R4}" in error
    assert admin.last_incidents == [error.split(": ", 1)[1]]
    assert f"{R2} (ro) vanished while we removed {R3} (ro), not by our REMOVE BACKEND 3: another admin removed it" in caplog.text


def test_a_read_write_backend_taken_by_mistake_comes_back_as_one(tmp_path, monkeypatch, caplog):
    m2, m3 = "10.0.0.101:3306", "10.0.0.102:3306"
    path = tmp_path / "rw.cnf"
    path.write_text(f"[mysql-proxy]\nadmin-username = {USER}\nadmin-password = {PASSWORD}\n"
                    f"proxy-backend-addresses = {MASTER},{m2},{m3}\nproxy-read-only-backend-addresses = {R2}\n")
    with AtlasStandin(str(path), host="127.0.0.1", port=0, check_interval=None) as atlas, \
            AtlasAdmin(*atlas.address, USER, PASSWORD, name="local") as admin, AtlasAdmin(*atlas.address, USER, PASSWORD) as other:
        on_remove(monkeypatch, atlas, before=lambda: other._execute("REMOVE BACKEND 1"))
        assert admin.remove_backend(m2, type="rw") is True  # 2 at lookup; then 2 is m3
        assert listed(atlas) == [(m3, "rw"), (R2, "ro")]
        assert atlas.mutating_commands() == ["REMOVE BACKEND 1", "REMOVE BACKEND 2", f"ADD MASTER {m3}", "REMOVE BACKEND 1"]
    [error] = errors(caplog)
    assert f"{m3} (rw) vanished with REMOVE BACKEND 2 (meant for {m2} (rw))" in error and f"ADD MASTER {m3}" in error


def test_number_gone_from_the_end_is_looked_up_again_and_nothing_is_put_back(atlas, admin, other, monkeypatch, caplog):
    # We look R4 up as 4; the other admin removes R2: 4 no longer exists, Atlas rejects it
    # and nothing was removed by us, so the other admin's removal stands.
    on_remove(monkeypatch, atlas, before=lambda: other._execute("REMOVE BACKEND 2"))
    assert admin.remove_backend(R4) is True
    assert listed(atlas) == [(MASTER, "rw"), (R3, "ro")]
    assert errors(caplog) == [] and admin.last_incidents == []
    assert atlas.mutating_commands() == ["REMOVE BACKEND 2", "REMOVE BACKEND 4", "REMOVE BACKEND 3"]


def test_when_the_other_admin_also_added_everything_that_vanished_comes_back(atlas, admin, other, monkeypatch, caplog):
    # The other admin removes R2 and adds R9: the list no longer tells which of R2 and R4
    # our REMOVE BACKEND 3 took, so both come back (a loud undone removal beats a
    # healthy backend silently lost).
    r9 = "10.0.0.9:3306"
    on_remove(monkeypatch, atlas, before=lambda: (other._execute("REMOVE BACKEND 2"), other._execute(f"ADD SLAVE {r9}")))
    assert admin.remove_backend(R3) is True
    assert listed(atlas) == [(MASTER, "rw"), (r9, "ro"), (R2, "ro"), (R4, "ro")]
    assert [e.split(": ", 1)[1].split(" vanished")[0] for e in errors(caplog)] == [f"{R2} (ro)", f"{R4} (ro)"]


def test_add_master_between_lookup_and_remove_is_reported_when_its_entry_is_taken(atlas, admin, other, monkeypatch, caplog):
    # We look R2 (the first slave) up as 2; the other admin's ADD MASTER R5 appends R5 and
    # swaps it with the first slave: 2 is R5 when our REMOVE arrives. R5 was never in a
    # list we read, so it cannot be named or put back: that is said loudly instead.
    on_remove(monkeypatch, atlas, before=lambda: other._execute(f"ADD MASTER {R5}"))
    assert admin.remove_backend(R2) is True
    assert listed(atlas) == [(MASTER, "rw"), (R3, "ro"), (R4, "ro")]
    [error] = errors(caplog)
    assert "REMOVE BACKEND 2 (meant for 10.0.0.2:3306 (ro)) took none of the backends listed before it" in error
    assert "add back by hand whatever is missing" in error


def test_removal_that_keeps_being_undone_gives_up_after_the_attempts(atlas, admin, other, monkeypatch, caplog):
    # Someone re-adds R4 right after each of our removals.
    seen = on_remove(monkeypatch, atlas, after=lambda: other._execute(f"ADD SLAVE {R4}"), times=99)
    with pytest.raises(AtlasError, match=f"{R4} \\(ro\\) is still listed after {REMOVE_ATTEMPTS} attempts"):
        admin.remove_backend(R4)
    assert len(seen) == REMOVE_ATTEMPTS
    assert len(errors(caplog)) == REMOVE_ATTEMPTS and f"or {R4} was added back at once" in errors(caplog)[0]


def test_backend_that_cannot_be_put_back_is_an_error_naming_it(atlas, admin, other, monkeypatch, caplog):
    on_remove(monkeypatch, atlas, before=lambda: other._execute("REMOVE BACKEND 2"))
    real = AtlasAdmin._execute

    def refuse_re_adding(self, command):
        if command.startswith("ADD SLAVE") and self is admin:
            raise AtlasError("refused for the test")
        return real(self, command)

    monkeypatch.setattr(AtlasAdmin, "_execute", refuse_re_adding)
    with pytest.raises(AtlasError, match=f"also removed {R4} \\(ro\\) \\(ADD SLAVE {R4} failed: refused for the test\\).*add it back by hand"):
        admin.remove_backend(R3)
    assert any(f"also removed {R4} (ro)" in e for e in errors(caplog))


def test_the_journaled_step_says_what_was_put_back(atlas, other, monkeypatch):
    cfg = orch_config(atlas, persist="none")
    on_remove(monkeypatch, atlas, before=lambda: other._execute("REMOVE BACKEND 2"))
    [result] = run_atlas_steps(cfg, [RemoveBackend("local", R3, "server3 is not a healthy replica")])
    assert result.result == "ok" and result.detail.startswith("removed; ")
    assert f"{R4} (ro) vanished with REMOVE BACKEND 3" in result.detail and f"ADD SLAVE {R4}" in result.detail
    assert listed(atlas) == [(MASTER, "rw"), (R4, "ro")]


# --- a failed config-file rewrite is done again ---------------------------------------


def block_rewrites(config):
    """A directory where the backup goes: the rewrite fails (as root too), reading still works."""
    os.makedirs(config + ".orch.bak/in-the-way")


def test_failed_rewrite_after_a_change_is_redone_by_a_later_pass(atlas, config, caplog):
    cfg = orch_config(atlas, config_file=config)
    block_rewrites(config)
    [removed, persisted] = run_atlas_steps(cfg, [RemoveBackend("local", R3, "gone")])
    assert (removed.result, persisted.step, persisted.result) == ("ok", "Persist", "failed")
    assert "the maintainer rewrites it on its next pass" in errors(caplog)[-1]
    assert [a for a, _ in read_ro_backends(config)] == [R2, R3, R4], "the file still lists the removed backend"

    # The next pass sees the file differ from Atlas's list, with nothing else to change.
    plan = maintain_plan(cfg)
    [step] = plan.steps
    assert step == PersistBackends("local", config_file=config, runtime=(R2, R4), listed=(R2, R3, R4))
    assert f"rewrite {config} (it lists {R2},{R3},{R4}, Atlas local {R2},{R4})" in plan.reason
    [again] = run_atlas_steps(cfg, plan.steps)
    assert (again.step, again.result) == ("PersistBackends", "failed"), "still blocked: failed again, retried next pass"

    shutil.rmtree(config + ".orch.bak")
    [fixed] = run_atlas_steps(cfg, maintain_plan(cfg).steps)
    assert (fixed.step, fixed.result, fixed.detail) == ("PersistBackends", "ok", f"{config} rewritten")
    assert read_ro_backends(config) == [(R2, 3), (R4, None)], "the weight of a kept entry stays"
    assert "# keep me\n" in open(config).read()
    assert maintain_plan(cfg).steps == () and atlas.mutating_commands() == ["REMOVE BACKEND 3"]


def test_unreadable_config_file_is_a_warning_not_a_step(atlas, config):
    cfg = orch_config(atlas, config_file=config)
    os.unlink(config)
    os.mkdir(config)
    plan = maintain_plan(cfg)
    assert plan.steps == () and any("cannot read" in w and "its config file is not checked" in w for w in plan.warnings)


def maintain_plan(cfg):
    """The maintainer's decision with neither server observable: no backend is changed,
    the config file is still checked against Atlas's list."""
    return decide_maintain(ClusterView(me=down("server1"), peer=down("server2"), atlas=observe_atlas(cfg)), cfg)
