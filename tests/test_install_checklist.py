"""The install checklist (docs/install.md), run as written into two namespace hosts, a failover included.

How the checklist is marked (docs/install.md): every block of it is a fenced
code block whose info string is ``bash install-step=WHERE`` (the install) or ``bash
failover-step=WHERE`` (the test failover at its end). WHERE is ``build`` (once, in the
checkout), ``both`` (server1, then server2), ``server1`` or ``server2``. This test reads
those blocks from docs/install.md in document order and runs each one with ``bash -e -o
pipefail`` in the host's network namespace, in a copy of the checkout, with the host's
passwords on stdin: nothing of the commands is copied here.

What the test changes, and nothing else (each lives in one place below):

- ``PATHS``: the host's directories (/etc, /usr/local, /opt/orch, /var/lib/orch,
  /var/log/orch, /run/orch) live under a per-host root; the commands and the files they
  install (orch.yaml, keepalived.conf, the units, Atlas's config) are rewritten to it.
- Addresses: none. The namespaces carry the documented ones (10.0.0.0/24, VIP
  10.0.0.100, the witness 10.0.0.254 on the bridge): the host's interfaces are not touched.
- ``SERVICE_LINES``: what has no equivalent without systemd and apt. ``apt-get install``
  checks that the packages are there; ``systemctl`` starts the unit's ExecStart (read from
  the installed unit file; Debian's for keepalived) in the host's namespace, mariadb is a
  lab mariadbd run with the checklist's my.cnf settings instead of the lab's own
  replication settings, and Atlas's ``mysql-proxyd`` is the Atlas stand-in.
- ``host_env``: PATH (the root's /usr/local/bin first), ``ORCH_CONFIG`` (orch's default
  config path under the root), HOME with a ``.my.cnf`` naming the host's mariadbd socket
  (the ``mariadb`` client's default one is the host's own), and offline pip
  (``PIP_NO_INDEX``; the wheel's dependencies are the dev venv's, through a .pth line).

Then: a writer inserts through the VIP from a client namespace while the failover blocks
kill -9 server1's mariadbd; server2 must take over, no acknowledged row may be lost,
never two writable servers, and server1 must come back as server2's replica.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from orchestrator.lab import mariadb, netns
from orchestrator.lab.hosts import APP_CREDENTIALS, write_secret
from orchestrator.lab.probes import Sampler, row_ids, server_state
from orchestrator.lab.proc import Proc, run, spawn, tail, wait_for
from orchestrator.lab.traffic import Writer, create_app_schema

REPO = Path(__file__).resolve().parent.parent
INSTALL_PAGE = REPO / "docs" / "install.md"
ROOTS = Path("/run/orch-install")  # root-owned all the way up: keepalived's enable_script_security runs the hooks
SUBNET = "10.0.0"
VIP = f"{SUBNET}.100"
WITNESS = f"{SUBNET}.254"
CLIENT = f"{SUBNET}.10"
HOSTS = ("server1", "server2")
KEEPALIVED_UNIT = Path("/lib/systemd/system/keepalived.service")  # Debian's
# The same passwords on both hosts, fed to the checklist's `read` in its order (mysql,
# repl, atlas, admin): quotes, a backslash, '#', a blank and non-ASCII, so that every
# quoting step of the checklist is exercised. Atlas's admin password is written into
# Atlas's config as is (the checklist says: no backslash, no leading blank).
PASSWORDS = ("orch pw 'q' \"d\" \\ # à", "repl-pw \\ 'x' é", "atlas-admin pw", "admin pw 'a' \\ b")

# The only change to the documented paths: each is moved under the host's root (in the
# commands, and in the files they install). A path already under a root is left alone.
PATHS = ("/etc", "/usr/local", "/opt/orch", "/var/lib/orch", "/var/log/orch", "/run/orch")
_PATH_RE = re.compile(r"(?<![\w.~/-])(" + "|".join(re.escape(p) for p in PATHS) + r")(?![\w.-])")
# Files holding secrets are never rewritten (a password may contain "/etc").
SECRET_NAMES = re.compile(r"\.pass$|^check\.cnf$")
# What a Debian host with the packages installed already has.
SKELETON = ("etc/mysql/mariadb.conf.d", "etc/keepalived", "etc/systemd/system", "etc/logrotate.d", "etc/default",
            "usr/local/bin", "usr/local/mysql-proxy/conf", "usr/local/mysql-proxy/bin", "opt", "root", "run")
# my.cnf keys the lab's mariadbd sets by itself that the checklist must set instead.
DOCUMENTED_KEYS = ("server_id", "log_bin", "relay_log", "log_slave_updates", "binlog_format", "gtid_strict_mode",
                   "gtid_domain_id", "bind_address", "report_host", "report_port", "skip_name_resolve", "read_only")

BLOCK_RE = re.compile(r"^```bash (install|failover)-step=(build|both|server1|server2)\n(.*?)^```\n", re.M | re.S)


def to_root(text: str, root: Path) -> str:
    return _PATH_RE.sub(lambda m: f"{root}{m.group(1)}", text)


@dataclass
class Block:
    kind: str  # install | failover
    where: str  # build | both | server1 | server2
    text: str


def checklist() -> List[Block]:
    section = INSTALL_PAGE.read_text().split("\n## Notes on the install\n", 1)[0]
    return [Block(kind, where, text) for kind, where, text in BLOCK_RE.findall(section)]


def test_the_checklist_is_complete_and_in_order():
    """Pure: the order the issue asks for (packages ... a healed test failover), one place for each step."""
    blocks = checklist()
    text = "\n".join(f"[{b.kind} {b.where}]\n{b.text}" for b in blocks)

    def first(pattern: str) -> int:
        m = re.search(pattern, text, re.M)
        assert m, f"the checklist lacks {pattern!r}"
        return m.start()

    order = [r"^apt-get install", r"^python3 -m pip wheel", r"^/opt/orch/bin/pip install dist/atlas_ha_orch",
             r"binlog_row_image = FULL", r"systemctl restart mariadb", r"/etc/orch/\$name\.pass", r"GRANT RELOAD",
             r"conf/orch\.yaml /etc/orch/orch\.yaml", r"/etc/orch/check\.cnf", r"orch check-config", r"bootstrap --yes",
             r"keepalived-server1\.conf", r"keepalived-server2\.conf", r"orch-maintain\.service", r"orch doctor",
             r"systemctl kill -s KILL mariadb", r"orch ack"]
    positions = [first(p) for p in order]
    assert positions == sorted(positions), list(zip(order, positions))
    for setting in ("auto_increment_increment = 2", "read_only = ON", "gtid_strict_mode = ON", "log_slave_updates = ON",
                    "rpl_semi_sync_slave_enabled = ON", "auto_increment_offset = 1", "auto_increment_offset = 2"):
        assert setting in text, setting
    assert [b.where for b in blocks if b.kind == "install"][0] == "both" and blocks[-1].kind == "failover"
    # no install from the index under a name that is not ours
    assert not re.search(r"pip install (?!dist/)", text), text


# --------------------------------------------------------------------------- the hosts


@dataclass
class InstallHost:
    name: str
    index: int
    root: Path
    netns: str
    db: mariadb.MariaDBInstance
    procs: Dict[str, Proc] = field(default_factory=dict)
    killed_at: float = 0.0  # when `systemctl kill` killed its mariadbd (CLOCK_MONOTONIC)

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}"

    def file(self, path: str) -> Path:
        """A documented absolute path on this host."""
        return Path(to_root(path, self.root))


def fresh_datadir(target: Path) -> str:
    """A datadir as Debian's package leaves it: system tables, root@localhost, no accounts of ours."""
    tmpdir = target.parent / "install-tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    no_anonymous = target.parent / "no-anonymous.sql"  # Debian's install has no anonymous accounts either
    no_anonymous.write_text("DELETE FROM mysql.global_priv WHERE user = '';\n")
    argv = [mariadb.INSTALL_DB, "--no-defaults", f"--datadir={target}", "--auth-root-authentication-method=normal",
            "--skip-test-db", f"--extra-file={no_anonymous}", f"--tmpdir={tmpdir}", *(f"--{k}={v}" for k, v in mariadb.INNODB_SIZES.items()), "--user=root"]
    run(argv, timeout=180)
    return str(target)


def host_env(host: InstallHost, pybin: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "PATH": f"{host.root}/usr/local/bin:{pybin}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(host.root / "root"),
        "ORCH_CONFIG": str(host.file("/etc/orch/orch.yaml")),
        "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LC_ALL": "C.UTF-8",
    })
    return env


def rewrite_installed_files(host: InstallHost) -> None:
    """PATHS applied to the text files the commands installed under the root (idempotent)."""
    for top in ("etc", "usr/local/mysql-proxy/conf"):
        for path in (host.root / top).rglob("*"):
            if not path.is_file() or path.is_symlink() or path.name.startswith(".") or SECRET_NAMES.search(path.name):
                continue
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            new = to_root(text, host.root)
            if new != text:
                mode = path.stat().st_mode
                path.write_text(new)
                os.chmod(path, mode)


def documented_mycnf(host: InstallHost) -> Dict[str, str]:
    """The [mariadbd] settings the checklist wrote under the root's /etc/mysql."""
    options: Dict[str, str] = {}
    for cnf in sorted(host.file("/etc/mysql/mariadb.conf.d").glob("*.cnf")):
        parser = configparser.ConfigParser(allow_no_value=True, interpolation=None, inline_comment_prefixes=("#",),
                                           strict=False)
        parser.optionxform = lambda key: key.replace("-", "_")  # type: ignore[assignment,method-assign]
        parser.read(cnf)
        for section in ("server", "mysqld", "mariadb", "mariadbd"):
            if parser.has_section(section):
                options.update({k: (v if v is not None else "ON") for k, v in parser.items(section)})
    return options


def start_unit(host: InstallHost, unit: str) -> None:
    """`systemctl enable --now|start|restart UNIT` without systemd: the unit's ExecStart in the namespace."""
    if unit in ("mariadb", "mariadb.service"):
        if host.db.is_running():
            host.db.stop()
        host.db.extra_options = {**{k: None for k in DOCUMENTED_KEYS}, **documented_mycnf(host)}
        host.db.start(timeout=60)
        return
    name = unit.removesuffix(".service")
    old = host.procs.pop(name, None)
    if old is not None:
        old.stop(5, signal.SIGTERM)
    if name == "keepalived":
        source, env_file = KEEPALIVED_UNIT.read_text(), host.file("/etc/default/keepalived")
    else:
        source, env_file = host.file(f"/etc/systemd/system/{name}.service").read_text(), None
    line = re.search(r"^ExecStart=[-@!+:]*(.+)$", source, re.M)
    assert line, f"{unit}: no ExecStart"
    env = {}
    if env_file is not None and env_file.exists():
        env = dict(shlex.split(l)[0].split("=", 1) for l in env_file.read_text().splitlines() if "=" in l and not l.startswith("#"))
    argv = [a for w in shlex.split(line.group(1)) for a in (shlex.split(env.get(w[2:-1] if w.startswith("${") else w[1:], ""))
                                                            if w.startswith("$") else [w])]
    host.procs[name] = spawn(argv, host.root / f"{name}.log", host.root / "run" / f"{name}.launch.pid", host.netns)


def start_atlas(host: InstallHost, instance: str) -> None:
    """Atlas's `mysql-proxyd INSTANCE restart`: the stand-in on conf/INSTANCE.cnf under Atlas's directory."""
    old = host.procs.pop("atlas", None)
    if old is not None:
        old.stop(5, signal.SIGTERM)
    config = host.file(f"/usr/local/mysql-proxy/conf/{instance}.cnf")
    argv = [sys.executable, "-m", "orchestrator.lab.atlas_standin.standin", "--config", str(config)]
    host.procs["atlas"] = spawn(argv, host.root / "atlas.log", host.root / "run" / "atlas.pid", host.netns)

    def answers() -> bool:
        def probe() -> bool:
            try:
                socket.create_connection(("127.0.0.1", 2345), 0.5).close()
                return True
            except OSError:
                return False
        return netns.in_netns(host.netns, probe, 5)

    wait_for(f"Atlas stand-in on {host.name}", answers, 15, detail=lambda: tail(host.root / "atlas.log", 3))


def kill_unit(host: InstallHost, unit: str) -> None:
    assert unit in ("mariadb", "mariadb.service"), f"systemctl kill {unit}: only mariadb is killed here"
    host.killed_at = time.monotonic()
    host.db.kill()


def atlas_backends(host: InstallHost) -> Optional[List[Tuple[str, str, str]]]:
    """(address, state, type) of every backend in this host's Atlas (stand-in); None while it does not answer."""
    from orchestrator.atlas.client import AtlasAdmin
    from orchestrator.errors import AtlasError

    def query() -> Optional[List[Tuple[str, str, str]]]:
        try:
            with AtlasAdmin("127.0.0.1", 2345, "user", PASSWORDS[2], timeout=2.0) as admin:
                return [(b.address, b.state, b.type) for b in admin.backends()]
        except AtlasError:
            return None

    return netns.in_netns(host.netns, query, 10)


# Lines the test cannot run as written (no systemd, no apt here), each with what it does instead.
SERVICE_LINES: List[Tuple[re.Pattern, Callable[[InstallHost, re.Match], None]]] = [
    (re.compile(r"apt-get install -y (.+)"),
     lambda h, m: run(["dpkg", "-s", *m.group(1).split()], timeout=30)),  # the packages are there
    (re.compile(r"systemctl daemon-reload"), lambda h, m: None),
    (re.compile(r"systemctl (?:enable --now|start|restart) (\S+)"), lambda h, m: start_unit(h, m.group(1))),
    (re.compile(r"systemctl kill -s KILL (\S+)"), lambda h, m: kill_unit(h, m.group(1))),
    (re.compile(r"/usr/local/mysql-proxy/bin/mysql-proxyd (\S+) (?:start|restart)"), lambda h, m: start_atlas(h, m.group(1))),
]


@dataclass
class Installation:
    hosts: Dict[str, InstallHost]
    source: Path
    pybin: Path
    client_ns: str
    transcript: List[str] = field(default_factory=list)

    def run_block(self, block: Block, host: Optional[InstallHost], timeout: float = 300) -> None:
        """Run one block: its shell parts with bash in the host's namespace, its service lines as above."""
        where = host.name if host else "build"
        shell: List[str] = []

        def flush() -> None:
            if not shell:
                return
            script = "\n".join(shell) + "\n"
            shell.clear()
            env = host_env(host, self.pybin) if host else host_env(self.hosts["server1"], self.pybin)
            argv = (["ip", "netns", "exec", host.netns] if host else []) + ["bash", "-e", "-o", "pipefail", "-c",
                                                                            to_root(script, host.root) if host else script]
            stdin = "".join(p + "\n" for p in PASSWORDS)
            r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=self.source, env=env)
            self.transcript.append(f"--- {where}\n{script}--> exit {r.returncode}\n{r.stdout}{r.stderr}")
            for secret in PASSWORDS:
                assert secret not in r.stdout + r.stderr, f"a password reached the output of:\n{script}"
            if r.returncode != 0:
                raise AssertionError(f"on {where}, exit {r.returncode}:\n{script}--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
            if host:
                rewrite_installed_files(host)

        for line in block.text.splitlines():
            for pattern, action in SERVICE_LINES:
                m = pattern.fullmatch(line.strip())
                if m:
                    flush()
                    assert host is not None, f"{line!r} in a build block"
                    self.transcript.append(f"--- {where}: {line.strip()} (without systemd/apt: see SERVICE_LINES)")
                    action(host, m)
                    break
            else:
                shell.append(line)
        flush()

    def run(self, block: Block) -> None:
        if block.where == "build":
            self.run_block(block, None)
            # The wheel goes to each host's checkout: here they share the one copy.
            return
        for name in (HOSTS if block.where == "both" else (block.where,)):
            self.run_block(block, self.hosts[name])
            if block.text.lstrip().startswith("python3 -m venv"):
                offer_dev_dependencies(self.hosts[name])


def offer_dev_dependencies(host: InstallHost) -> None:
    """The venv's dependencies (pip ran offline, --no-deps): the dev venv's, through a path line."""
    import sysconfig

    python = host.file("/opt/orch/bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def make_network(lab_id: str) -> Tuple[str, Dict[str, str], str]:
    bridge, client = f"orchinst-{lab_id}-br", f"orchinst-{lab_id}-cl"
    hosts = {name: f"orchinst-{lab_id}-h{i}" for i, name in enumerate(HOSTS, 1)}
    for ns in (bridge, *hosts.values(), client):
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", bridge, "link", "add", "br0", "address", netns.BRIDGE_MAC, "type", "bridge"])
    run(["ip", "-n", bridge, "link", "set", "br0", "up"])
    run(["ip", "-n", bridge, "addr", "add", f"{WITNESS}/24", "dev", "br0"])
    ends = [(hosts[n], f"vh{i}", f"{SUBNET}.{i}") for i, n in enumerate(HOSTS, 1)] + [(client, "vcl", CLIENT)]
    for ns, port, address in ends:
        run(["ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", bridge, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    return bridge, hosts, client


def stop_everything(inst: Installation, namespaces: List[str]) -> List[str]:
    """Our processes by PID (keepalived first, by SIGKILL: no STOP events starting orch runs), then our namespaces."""
    problems = []
    for host in inst.hosts.values():
        keepalived = host.procs.pop("keepalived", None)
        if keepalived is not None:
            keepalived.stop(5, signal.SIGKILL)
    for host in inst.hosts.values():
        for proc in host.procs.values():
            proc.stop(5, signal.SIGTERM)
        try:
            host.db.kill()
        except Exception as exc:  # keep going: the namespaces must go
            problems.append(str(exc))
    for ns in namespaces:
        problems += netns.remove_namespace(ns)  # what still runs there (notify runs, keepalived's child) is ours
    return problems


@pytest.fixture
def installation(tmp_path):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    source = tmp_path / "checkout"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__",
                                                                  ".pytest_cache", ".git"))
    pybin = tmp_path / "pybin"  # python3 for the build and the venv: the dev venv's (offline: it has setuptools)
    pybin.mkdir()
    (pybin / "python3").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    os.chmod(pybin / "python3", 0o755)
    datadir = fresh_datadir(tmp_path / "template" / "data")
    lab_id = secrets.token_hex(3)
    base = ROOTS / lab_id
    namespaces = [f"orchinst-{lab_id}-{suffix}" for suffix in ("br", "h1", "h2", "cl")]  # make_network's names
    inst = Installation({}, source, pybin, "")
    try:
        netns.secure_dir(base)
        bridge, host_ns, inst.client_ns = make_network(lab_id)
        assert [bridge, *host_ns.values(), inst.client_ns] == namespaces
        for i, name in enumerate(HOSTS, 1):
            root = base / name
            for d in SKELETON:
                (root / d).mkdir(mode=0o755, parents=True, exist_ok=True)
            db = mariadb.MariaDBInstance(name, str(root / "var/lib/mysql"), 3306, 0, host=f"{SUBNET}.{i}", netns=host_ns[name])
            db.initialize(datadir)
            (root / "root/.my.cnf").write_text(f"[client]\nsocket={db.socket}\n")
            (root / "etc/default/keepalived").write_text(
                f'DAEMON_ARGS="--use-file {root}/etc/keepalived/keepalived.conf --pid {root}/run/keepalived.pid '
                f'--vrrp_pid {root}/run/vrrp.pid --checkers_pid {root}/run/checkers.pid --log-console --log-detail --no-syslog"\n')
            inst.hosts[name] = InstallHost(name, i, root, host_ns[name], db)
        yield inst
    finally:
        existing = set(run(["ip", "netns", "list"], check=False).stdout.split())
        problems = stop_everything(inst, [ns for ns in namespaces if ns in existing])
        (tmp_path / "transcript.txt").write_text("\n".join(inst.transcript))
        for host in inst.hosts.values():  # keep the logs for a post-mortem, then the root goes
            for log in ("keepalived.log", "orch-maintain.log", "atlas.log", "var/log/orch/notify.log"):
                if (host.root / log).exists():
                    shutil.copyfile(host.root / log, tmp_path / f"{host.name}-{Path(log).name}")
        shutil.rmtree(base, ignore_errors=True)
        assert not problems, problems


@pytest.mark.netns
def test_the_install_checklist_makes_a_pair_that_fails_over(installation, tmp_path):
    inst = installation
    s1, s2 = inst.hosts["server1"], inst.hosts["server2"]
    blocks = checklist()
    for block in (b for b in blocks if b.kind == "install"):
        inst.run(block)

    # The install's result: server1 the writable master holding the VIP, server2 its replica.
    assert netns.holds_address(s1.netns, VIP) and not netns.holds_address(s2.netns, VIP)
    st1, st2 = server_state(s1.db), server_state(s2.db)
    assert st1.read_only is False and st2.read_only is True and st2.replicating and st2.source == f"{s1.address}:3306", \
        (st1.describe(), st2.describe())

    # The application: its account and table on the master, a writer through the VIP.
    s1.db.sql("CREATE DATABASE IF NOT EXISTS test")
    create_app_schema(s1.db)
    app_pass = tmp_path / "app.pass"
    write_secret(app_pass, APP_CREDENTIALS.password)
    writer = Writer(VIP, 3306, tmp_path, app_pass, netns=inst.client_ns, name="install-writer")
    sampler = Sampler({h.name: h.db for h in inst.hosts.values()})
    with writer, sampler:
        time.sleep(1)
        for block in (b for b in blocks if b.kind == "failover"):
            inst.run(block)
        acked = {a[0] for a in writer.acked()}
    assert s1.killed_at, "the failover blocks never killed server1's mariadbd"
    assert [a for a in writer.acked() if a[1] < s1.killed_at], "no insert acknowledged before the kill"
    assert writer.acked_since(s1.killed_at), "no insert acknowledged through the VIP after the failover"

    assert netns.holds_address(s2.netns, VIP) and not netns.holds_address(s1.netns, VIP)
    st1, st2 = server_state(s1.db), server_state(s2.db)
    assert st2.read_only is False and st1.read_only is True, (st1.describe(), st2.describe())
    assert st1.replicating and st1.source == f"{s2.address}:3306", st1.describe()
    lost = acked - row_ids(s2.db)
    assert not lost, f"{len(lost)} acknowledged rows missing on the new master: {sorted(lost)[:10]}"
    mariadb.wait_gtid_equal(s2.db, s1.db, timeout=30)
    assert acked <= row_ids(s1.db)
    assert sampler.both_writable() == [], sampler.both_writable()[:3]
    # Healed in Atlas too: each host's maintainer puts the writer (the VIP) online and server1 back as the read backend.
    healed = sorted([(f"{VIP}:3306", "rw"), (f"{s1.address}:3306", "ro")])
    for host in inst.hosts.values():
        wait_for(f"{host.name}'s Atlas to list the VIP online and server1 as its read-only backend",
                 lambda: sorted((a, ty) for a, st, ty in (atlas_backends(host) or []) if st != "offline") == healed
                 and len(atlas_backends(host) or []) == 2,
                 30, detail=lambda: f"{atlas_backends(host)}; {tail(host.root / 'orch-maintain.log', 3)}")
