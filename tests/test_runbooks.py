"""The runbooks (docs/runbooks/*.md), run as written in the namespace lab, in the nav's order.

How a page is marked (docs/runbooks/index.md says the same to its readers):

- ``Starts with: serverA the master, serverB its replica.`` and ``Ends with: ...`` lines.
- Fenced blocks ``console title="HOST"`` (the site shows the title): each line starting with ``# `` is one command, run
  as root on HOST with ``bash -e -o pipefail`` in the host's network namespace; other lines
  are sample output (not compared). A command exits 0 unless it ends with ``# exits N``.
- Fenced blocks ``console title="HOST: outside orch"``: steps that are not orch's (packages, reboots,
  service restarts, a failure reproduced). They are not run as written: each line is done
  by its lab equivalent in ``LAB_EQUIVALENTS`` (one table, each with what it does); a line
  without one fails the pure test below.

What the test changes in a command, and nothing else: the host's paths (``PATHS``: the
keepalived configuration's path); the environment gives ``orch`` the host's config
(``ORCH_CONFIG``, the default path's stand-in) and the ``mariadb`` client the host's socket
(HOME with a ``.my.cnf``). Before a runbook, when the lab's master is not the page's
"Starts with" master, the test runs a switchover of its own (not part of the page); after
the last command it waits until the cluster is healthy (one writable VIP holder, its peer a
replicating read-only replica, GTIDs equal, the replica in both Atlas stand-ins) and checks
the page's "Ends with" master. The lab runs conf/orch.yaml with ``failover.block_seconds`` as
shipped (3600: the refused-failover runbook needs the anti-flapping block), the other lab
overrides as named in orchestrator/lab/hosts.py; its orch.yaml names the password files by
absolute path, as the install checklist's does (``absolute_password_files``).

Two named exceptions: ``SEEDED`` (after orch bootstrap the pair is compared by GTID position,
not binlog state; why is there) and ``KNOWN_BUGS`` (a runbook that fails because of a bug in
orch, marked xfail with the bug; the fix removes the mark).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from orchestrator.lab import LabError, netns
from orchestrator.lab.hosts import overrides_except, write_secret
from orchestrator.lab.proc import orch_bin

from .orchtest import LabHolder, held_lab, write_report

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "docs" / "runbooks"

BLOCK_RE = re.compile(r'^```console title="(server[12])(: outside orch)?"\n(.*?)^```$', re.M | re.S)
STATE_RE = re.compile(r"^(Starts|Ends) with: (server[12]) the master, (server[12]) its replica\.$", re.M)
EXITS_RE = re.compile(r"\s+# exits (\d+)$")
COMMAND_TIMEOUT = 240  # seconds: the longest wait a page writes is `timeout 120`
HEAL_TIMEOUT = 90


@dataclass(frozen=True)
class Step:
    kind: str  # runbook (run as written) | outside (its lab equivalent)
    host: str
    command: str
    exit_code: int = 0


@dataclass(frozen=True)
class Runbook:
    page: str
    starts: Tuple[str, str]  # (master, replica)
    ends: Tuple[str, str]
    steps: Tuple[Step, ...]


def page_order() -> List[str]:
    """The runbook pages in the nav's order (an operator's order), without the index."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    section = next(entry["Runbooks"] for entry in nav if isinstance(entry, dict) and "Runbooks" in entry)
    pages = [next(iter(item.values())) for item in section]
    return [p.split("/", 1)[1] for p in pages if p != "runbooks/index.md"]


def parse(page: str) -> Runbook:
    """Pure: a runbook page's start, end and steps, in document order."""
    text = (RUNBOOKS / page).read_text()
    states = {m.group(1): (m.group(2), m.group(3)) for m in STATE_RE.finditer(text)}
    steps = []
    for host, outside, body in BLOCK_RE.findall(text):
        kind = "outside" if outside else "runbook"
        for line in body.splitlines():
            if kind == "outside":
                if line.strip():
                    steps.append(Step(kind, host, line.strip()))
                continue
            if not line.startswith("# "):
                continue  # sample output
            command = line[2:].strip()
            m = EXITS_RE.search(command)
            code = int(m.group(1)) if m else 0
            steps.append(Step(kind, host, command[:m.start()] if m else command, code))
    return Runbook(page, states.get("Starts", ("", "")), states.get("Ends", ("", "")), tuple(steps))


# --- what the lab does for a step outside orch ------------------------------------------------

def _restart_mysqld(lab: netns.NetnsLab, host: str) -> None:
    lab.dbs[host].stop()  # a clean shutdown, as a package's postinst or systemctl restart does
    lab.start_mysqld(host)


def _stop_keepalived(lab: netns.NetnsLab, host: str) -> None:
    proc = lab.procs.get(f"{host}.keepalived")
    if proc is not None:
        proc.stop(10, signal.SIGTERM)  # SIGTERM: keepalived leaves gracefully (its STOP event runs)


def _restart_keepalived(lab: netns.NetnsLab, host: str) -> None:
    _stop_keepalived(lab, host)
    lab.start_keepalived(lab.hosts[host])


def _stop_maintainer(lab: netns.NetnsLab, host: str) -> None:
    proc = lab.procs.get(f"{host}.maintain")
    if proc is not None:
        proc.stop(10, signal.SIGTERM)


def _restart_maintainer(lab: netns.NetnsLab, host: str) -> None:
    _stop_maintainer(lab, host)
    lab.start_maintainer(lab.hosts[host])


def _reboot(lab: netns.NetnsLab, host: str) -> None:
    """Services stop (keepalived first, then the maintainer, then mariadbd cleanly) and start
    in a boot's order. The host's orch notify-fifo reader and Atlas stand-in keep running."""
    _stop_keepalived(lab, host)
    _stop_maintainer(lab, host)
    lab.dbs[host].stop()
    time.sleep(1.0)  # a reboot takes a while: the peer's maintainer sees the replica gone
    lab.start_mysqld(host)
    lab.start_keepalived(lab.hosts[host])
    lab.start_maintainer(lab.hosts[host])


def _nothing(lab: netns.NetnsLab, host: str) -> None:
    return None


def _stop_services(lab: netns.NetnsLab, host: str) -> None:
    _stop_keepalived(lab, host)
    _stop_maintainer(lab, host)


def _start_services(lab: netns.NetnsLab, host: str) -> None:
    lab.start_keepalived(lab.hosts[host])
    lab.start_maintainer(lab.hosts[host])


def _stop_all(lab: netns.NetnsLab, host: str) -> None:
    _stop_services(lab, host)
    lab.dbs[host].stop()


def _remove_datadir(lab: netns.NetnsLab, host: str) -> None:
    db = lab.dbs[host]
    assert not db.is_running(), "the datadir of a running server"
    shutil.rmtree(db.datadir)


def _admin(lab: netns.NetnsLab, host: str) -> None:
    """Install checklist steps 4 and 5 for the administrator: its password file (the same on
    both hosts) and the account, with sql_log_bin = 0, for the hosts' network."""
    write_secret(lab.hosts[host].file("admin.pass"), ADMIN_PASSWORD)
    conn = lab.dbs[host].connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("CREATE USER 'orch_admin'@%s IDENTIFIED BY %s", (LAB_NETWORK, ADMIN_PASSWORD))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'orch_admin'@%s WITH GRANT OPTION", (LAB_NETWORK,))
    finally:
        conn.close()


def _new_empty_server(lab: netns.NetnsLab, host: str) -> None:
    """MariaDB installed again, empty (steps 3 to 5): a datadir from the lab's template (its
    accounts, no tables, no GTIDs), the lab's settings, started; and the administrator."""
    db = lab.dbs[host]
    db.initialize(lab.template)
    lab.start_mysqld(host)
    _admin(lab, host)


def _lose_host(lab: netns.NetnsLab, host: str) -> None:
    """A host gone: keepalived and mariadbd die (kill -9), the maintainer with them, the data is lost."""
    lab.kill_keepalived(lab.hosts[host])
    _stop_maintainer(lab, host)
    lab.kill_mysqld(host)
    shutil.rmtree(lab.dbs[host].datadir)


# Every outside-orch line a runbook may write, and the lab's equivalent (named in each page's note).
LAB_EQUIVALENTS: Dict[str, Tuple[str, Callable[[netns.NetnsLab, str], None]]] = {
    "systemctl kill -s KILL mariadb": ("kill -9 of the host's mariadbd", lambda lab, host: lab.kill_mysqld(host) and None),
    "systemctl start mariadb": ("start the host's mariadbd", lambda lab, host: lab.start_mysqld(host)),
    "systemctl restart keepalived": ("SIGTERM the host's keepalived, start it again", _restart_keepalived),
    "systemctl restart orch-maintain": ("SIGTERM the host's orch maintain, start it again", _restart_maintainer),
    "apt-get update": ("nothing (no package lists in the lab)", _nothing),
    "apt-get upgrade -y": ("restart the host's mariadbd (the lab runs one MariaDB version)", _restart_mysqld),
    "apt-get install -y mariadb-server mariadb-client": ("restart the host's mariadbd (one MariaDB version)", _restart_mysqld),
    "/opt/orch/bin/pip install --upgrade dist/atlas_ha_orch-*.whl": ("nothing (the lab runs the checkout's orch)", _nothing),
    "systemctl reboot": ("stop keepalived, the maintainer and mariadbd; start them again", _reboot),
    "systemctl stop keepalived orch-maintain mariadb": ("SIGTERM keepalived and the maintainer, stop mariadbd", _stop_all),
    "rm -rf /var/lib/mysql": ("remove the host's datadir", _remove_datadir),
    "# MariaDB installed again, empty: install checklist steps 3 to 5 on this host":
        ("a new server from the lab's empty template, started, with the administrator", _new_empty_server),
    "# the administrator orch_admin again, with the same /etc/orch/admin.pass: install checklist steps 4 and 5":
        ("the administrator's password file and account (sql_log_bin = 0)", _admin),
    "systemctl start keepalived orch-maintain": ("start the host's keepalived and maintainer", _start_services),
    "# the host is lost": ("kill -9 of keepalived and mariadbd, the maintainer stopped, the datadir removed", _lose_host),
    "# a new host with the same name and address: install checklist steps 1 to 7":
        ("a new server from the lab's empty template, with the administrator (the lab's files stay)", _new_empty_server),
    "systemctl enable --now keepalived": ("start the host's keepalived", lambda lab, host: lab.start_keepalived(lab.hosts[host])),
    "systemctl enable --now orch-maintain": ("start the host's maintainer", lambda lab, host: lab.start_maintainer(lab.hosts[host])),
}


# --- pure: the pages are well formed ----------------------------------------------------------

def test_every_runbook_page_is_runnable():
    pages = page_order()
    assert pages == ["switchover.md", "refused-failover.md", "rewind.md", "bootstrap.md", "maintenance.md",
                     "restart-keepalived.md", "rolling-upgrade.md", "replace-host.md"]
    assert {p.name for p in RUNBOOKS.glob("*.md")} == set(pages) | {"index.md"}
    for page in pages:
        rb = parse(page)
        text = (RUNBOOKS / page).read_text()
        assert rb.starts[0] and rb.ends[0], f"{page}: no 'Starts with:' or 'Ends with:' line"
        assert rb.starts[0] != rb.starts[1] and rb.ends[0] != rb.ends[1], page
        assert any(s.kind == "runbook" for s in rb.steps), f"{page}: no command to run"
        assert text.count("```console") == len(BLOCK_RE.findall(text)), f"{page}: a console block not titled with its host"
        for step in rb.steps:
            if step.kind == "outside":
                assert step.command in LAB_EQUIVALENTS, f"{page}: no lab equivalent for {step.command!r}"
        if any(s.kind == "outside" for s in rb.steps):
            assert '!!! note "Outside orch"' in text, f"{page}: outside steps without the 'Outside orch' note"
    for page, command in PRINTED:  # a renamed command would silently check nothing
        assert command in [s.command for s in parse(page).steps if s.kind == "runbook"], (page, command)


def test_the_parser_reads_commands_exit_codes_and_output():
    rb = parse("refused-failover.md")
    status = [s for s in rb.steps if s.command == "orch status"]
    assert status and status[0].exit_code == 1 and status[0].host == "server1"
    assert Step("outside", "server1", "systemctl kill -s KILL mariadb") in rb.steps
    assert all(not s.command.startswith("#") for s in rb.steps)


# --- the lab ------------------------------------------------------------------------------------

# What a command's text names that the lab has elsewhere: paths, and the hosts' network.
PATHS = {
    "/etc/keepalived/keepalived.conf": lambda lab, host: str(lab.run_dir / f"keepalived-{host}.conf"),
    "/etc/orch/": lambda lab, host: str(lab.hosts[host].path) + "/",
    "10.0.0.": lambda lab, host: netns.SUBNET + ".",
}
LAB_NETWORK = f"{netns.SUBNET}.%"
ADMIN_PASSWORD = "adm-pw-\u00f1-\"q'"  # non-ASCII and quotes: through every file and SQL string it passes


@pytest.fixture(scope="module")
def holder(tmp_path_factory, mariadb_template):
    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("runbooks"), mariadb_template,
                                    overrides=overrides_except(["failover.block_seconds"]))) as h:
        yield h


def absolute_password_files(lab: netns.NetnsLab) -> None:
    """The lab's orch.yaml names its password files relative to itself (mysql.pass); the
    install checklist's (and so the runbooks') orch.yaml names them absolute
    (/etc/orch/mysql.pass), which step 8's sed matches. Same files, same meaning."""
    for host in lab.hosts.values():
        path = host.file("orch.yaml")
        text = path.read_text()
        for name in ("mysql.pass", "repl.pass", "atlas.pass"):
            text = text.replace(f"password_file: {name}\n", f"password_file: {host.file(name)}\n")
        path.write_text(text)


@pytest.fixture(scope="module")
def report(request):
    lines: List[str] = []
    yield lines
    write_report(request, "runbooks (namespace lab):", lines)


def host_env(lab: netns.NetnsLab, host: str) -> Dict[str, str]:
    """orch's default config and the mariadb client's socket, for this host."""
    h = lab.hosts[host]
    home = h.file("runbook-home")
    home.mkdir(exist_ok=True)
    # As a DBA's root has it: user= here must not replace the account in orch's own option
    # files (bootstrap's and rewind's clients read only those: --defaults-file).
    (home / ".my.cnf").write_text(f"[client]\nuser=root\nsocket={lab.dbs[host].socket}\n")
    bindir = os.path.dirname(orch_bin())
    return {"PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
            "ORCH_CONFIG": str(h.file("orch.yaml")), "LANG": "C.UTF-8"}


def run_command(lab: netns.NetnsLab, host: str, command: str) -> subprocess.CompletedProcess:
    for path, replace in PATHS.items():
        command = command.replace(path, replace(lab, host))
    argv = ["ip", "netns", "exec", lab.hosts[host].netns or "", "bash", "-e", "-o", "pipefail", "-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=host_env(lab, host),
                          stdin=subprocess.DEVNULL, check=False)


# Pages that seed a server with orch bootstrap. MariaDB's seed starts the new server's binary
# log at the dump's GTID position, so its gtid_binlog_state lacks the source's older entries
# of other server ids (0-1-6 when the position is 0-2-7): the lab's "GTID sets differ" check
# (which compares gtid_binlog_state) never passes after a pair that already failed over once.
# For these pages the two must instead be at one position (gtid_current_pos) and differ in
# nothing else.
SEEDED = {"bootstrap.md", "replace-host.md"}


def wait_ended(lab: netns.NetnsLab, page: str) -> None:
    """The lab's health (orchestrator/lab/base.py), with SEEDED's one allowance."""
    deadline = time.monotonic() + HEAL_TIMEOUT
    while True:
        problems = lab.health()
        if page in SEEDED:
            positions = {s.gtid_current_pos for s in lab.servers().values()}
            if len(positions) == 1:
                problems = [p for p in problems if not p.startswith("[gtid]")]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{page}: not healed after {HEAL_TIMEOUT}s:\n  " + "\n  ".join(problems))
        time.sleep(0.2)


def bring_to(lab: netns.NetnsLab, master: str) -> None:
    """Not part of any page: a switchover of the test's own when the lab's master is another."""
    if lab.master() == master:
        return
    current = lab.master()
    assert current, "no single VIP holder before the runbook"
    done = run_command(lab, current, "orch switchover --yes")
    assert done.returncode == 0, f"setup switchover to {master}:\n{done.stdout}{done.stderr}"
    lab.wait_healthy(HEAL_TIMEOUT)
    assert lab.master() == master


# Runbooks that fail today because of a known issue in orch (not in the page): page -> the issue,
# marked xfail. The issue is a race (the master's maintainer pass must land in the rewind's ~2 s
# without replication), so a run may also pass: not strict. Remove the mark with the fix.
KNOWN_BUGS: Dict[str, str] = {}  # none today (the rewind race is fixed: orchestrator/plan.py MarkRewind)


# What a page says a command prints, checked in its output: (page, command) -> the words.
PRINTED: Dict[Tuple[str, str], Tuple[str, ...]] = {
    # No server writable: the acknowledgement is kept here and on the other host, through its API.
    ("refused-failover.md", "orch ack --yes"): ("asking server2's orch to acknowledge too", "\n  server2: "),
}


def runbook_params() -> List[object]:
    return [pytest.param(page, marks=pytest.mark.xfail(strict=False, raises=AssertionError, reason=KNOWN_BUGS[page]))
            if page in KNOWN_BUGS else page for page in page_order()]


@pytest.mark.netns
@pytest.mark.parametrize("page", runbook_params())
def test_runbook(holder, report, page):
    rb = parse(page)
    lab = holder.healthy()
    absolute_password_files(lab)
    transcript: List[str] = []
    try:
        bring_to(lab, rb.starts[0])
        started = time.monotonic()
        for n, step in enumerate(rb.steps, 1):
            what = f"{page} step {n} on {step.host}: {step.command}"
            if step.kind == "outside":
                LAB_EQUIVALENTS[step.command][1](lab, step.host)
                continue
            done = run_command(lab, step.host, step.command)
            transcript.append(f"[{step.host}]# {step.command}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n")
            assert done.returncode == step.exit_code, (
                f"{what}\nexited {done.returncode}, the page says {step.exit_code}\n--- stdout\n{done.stdout}\n"
                f"--- stderr\n{done.stderr}{lab.logs_hint()}")
            for words in PRINTED.get((page, step.command), ()):
                assert words in "\n" + done.stdout, f"{what}: the page says it prints {words.strip()!r}\n{done.stdout}"
        wait_ended(lab, page)
        assert lab.master() == rb.ends[0], f"{page}: the master is {lab.master()}, the page says {rb.ends[0]}"
        servers = lab.servers()
        assert servers[rb.ends[0]].read_only is False and servers[rb.ends[1]].read_only is True
        assert servers[rb.ends[1]].replicating
        report.append(f"{page}: {len(rb.steps)} steps, ended as the page says ({rb.ends[0]} the master) "
                      f"in {time.monotonic() - started:.1f}s")
    except LabError as exc:
        pytest.fail(f"{page}: {exc}{lab.logs_hint()}", pytrace=False)
    finally:
        # What each command printed, for a reader of a failure (and for the page's sample output).
        (lab.workdir / f"runbook-{page[:-3]}.log").write_text("".join(transcript))
