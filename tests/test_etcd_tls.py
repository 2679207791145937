"""The etcd door over TLS (docs/etcd.md, "TLS and a user"): a real etcd member serving https
on loopback with --client-cert-auth, certificates made here by Debian's openssl (a throwaway
CA, one day, in a temp dir), and orch's client, `orch doctor`, `orch status`, `orch fleet` and
`orch maintain` against it. Each refusal is one line that says which setting to look at;
no private key, no password, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import pytest

from orchestrator.config import Etcd
from orchestrator.etcd import EtcdClient, EtcdError

from . import orchtest as t
from .orchtest import write_report
from .etcdtest import ETCD, free_port

pytestmark = pytest.mark.etcd
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
PASSWORD = "pässwörd-ü ß€ 中文"  # non-ASCII, with a space: never in a log, an error or argv


# ------------------------------------------------------------------ certificates


def _ssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def _leaf(d: Path, name: str, ca: str, subject: str, ext: str) -> None:
    _ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
         "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _ssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getattr__(self, name: str) -> str:  # pki.ca_pem, pki.client_key, ...
        base, ext = name.rsplit("_", 1)
        return str(self.dir / f"{base}.{ext}")


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate; and another CA with its
    own client certificate (what a wrong CA or a stranger presents)."""
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "server", "ca", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    _leaf(d, "client", "ca", "/CN=orch", "extendedKeyUsage=clientAuth\n")
    # With auth on, etcd's JSON gateway refuses a client certificate that has a Common Name.
    _leaf(d, "nocn", "ca", "/O=orch", "extendedKeyUsage=clientAuth\n")
    _leaf(d, "stranger", "otherca", "/CN=orch", "extendedKeyUsage=clientAuth\n")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return Pki(d)


# ------------------------------------------------------------------ a member serving https


class TlsMember:
    """One etcd member: clients over https with --client-cert-auth; started and stopped here by PID."""

    def __init__(self, base: Path, pki: Pki, *extra: str) -> None:
        self.base, self.pki, self.extra = base, pki, list(extra)
        self.port, self.peer = free_port(), free_port()
        self.log = base / "etcd.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "TlsMember":
        peer = f"http://127.0.0.1:{self.peer}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", "tls", "--data-dir", str(self.base / "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"tls={peer}",
                 "--cert-file", self.pki.server_pem, "--key-file", self.pki.server_key,
                 "--trusted-ca-file", self.pki.ca_pem, "--client-cert-auth", *self.extra],
                stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        import ssl

        ctx = ssl.create_default_context(cafile=self.pki.ca_pem)
        ctx.load_cert_chain(self.pki.client_pem, self.pki.client_key)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1, context=ctx) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            assert self.proc is not None and self.proc.poll() is None, f"etcd exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"etcd over TLS not healthy: {self.log.read_text()[-2000:]}"
            time.sleep(0.1)

    def ctl(self, *args: str, stdin: str = "") -> None:
        """etcdctl over TLS; a password goes on stdin only (never argv)."""
        p = self.pki
        subprocess.run(["etcdctl", "--endpoints", self.url, "--cacert", p.ca_pem, "--cert", p.client_pem, "--key", p.client_key,
                        *args], check=True, capture_output=True, timeout=20, input=stdin.encode("utf-8"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    if not os.access(OPENSSL, os.X_OK):
        pytest.skip("openssl is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def member(tmp_path_factory, pki):
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (./dev setup installs etcd-server)")
    m = TlsMember(tmp_path_factory.mktemp("etcd-tls"), pki).start()
    yield m
    m.stop()


def settings(endpoints, **kw) -> Etcd:
    return Etcd(endpoints=tuple(endpoints), timeout=kw.pop("timeout", 1.0), **kw)


def assert_one_clean_line(text: str, pki: Pki, *secrets: str) -> None:
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text and "PRIVATE KEY" not in text, text
    for name in ("client.key", "server.key", "ca.key"):
        assert Path(pki.dir / name).read_text().splitlines()[1] not in text  # no key material
    for s in secrets:
        assert s not in text, "a secret in an error"


# ------------------------------------------------------------------ the client


def test_cacert_cert_and_key_work_for_every_verb(member, pki):
    c = EtcdClient(settings([member.url], cacert=pki.ca_pem, cert=pki.client_pem, key=pki.client_key))
    lease = c.grant(5)
    assert c.keepalive(lease) == 5
    ok, _ = c.create("/tls/token", "server1", lease)
    assert ok and c.get("/tls/token").value == "server1"
    assert c.create("/tls/token", "server2", lease) == (False, c.get("/tls/token"))
    assert [kv.key for kv in c.get_prefix("/tls/")] == ["/tls/token"]
    assert [urls for _, urls in c.members()] == [(member.url,)]
    assert c.status_of(member.url)["header"]["member_id"]
    c.revoke(lease)
    assert c.get("/tls/token") is None


def _refusals(member, pki) -> Dict[str, "tuple[dict, str]"]:
    p = pki
    return {
        "wrong CA": (dict(cacert=p.otherca_pem, cert=p.client_pem, key=p.client_key),
                     f"TLS: the member's certificate is not signed by etcd.cacert {p.otherca_pem}"),
        "no client certificate": (dict(cacert=p.ca_pem),
                                  "TLS: the member wants a client certificate (--client-cert-auth): set etcd.cert and etcd.key"),
        "https without cacert": (dict(cert=p.client_pem, key=p.client_key),
                                 "TLS: the member's certificate is not signed by any of the system's CAs: set etcd.cacert"),
        "a client certificate of another CA": (dict(cacert=p.ca_pem, cert=p.stranger_pem, key=p.stranger_key),
                                               f"TLS: the member refused the client certificate etcd.cert {p.stranger_pem}"),
        "a key that is not the certificate's": (dict(cacert=p.ca_pem, cert=p.client_pem, key=p.server_key),
                                                f"etcd TLS: cannot load etcd.cert {p.client_pem} with etcd.key {p.server_key}: "
                                                "key values mismatch"),
    }


@pytest.mark.parametrize("case", ["wrong CA", "no client certificate", "https without cacert",
                                  "a client certificate of another CA", "a key that is not the certificate's"])
def test_each_tls_mistake_is_one_clear_line(member, pki, case):
    kw, expected = _refusals(member, pki)[case]
    c = EtcdClient(settings([member.url], **kw))
    for _ in range(3):  # the server's alert and its close race: the same sentence every time
        started = time.monotonic()
        with pytest.raises(EtcdError) as exc:
            c.get("/tls/x")
        text = str(exc.value)
        assert expected in text, text
        assert "no member answered within" not in text  # it answered: TLS failed, said so
        assert_one_clean_line(text, pki)
        assert time.monotonic() - started < 1.5  # a refusal costs no deadline


def test_a_certificate_for_another_address_and_an_unreadable_ca_say_so(member, pki, tmp_path):
    # The member's certificate names 127.0.0.1 only: reached as localhost, the name does not match.
    by_name = EtcdClient(settings([member.url.replace("127.0.0.1", "localhost")], cacert=pki.ca_pem, cert=pki.client_pem,
                                  key=pki.client_key))
    with pytest.raises(EtcdError) as exc:
        by_name.get("/tls/x")
    assert "TLS: the member's certificate does not name localhost" in str(exc.value), str(exc.value)
    assert_one_clean_line(str(exc.value), pki)
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(EtcdError) as exc:
        EtcdClient(settings([member.url], cacert=str(garbage))).get("/tls/x")
    assert str(exc.value).startswith(f"etcd TLS: cannot load etcd.cacert {garbage}: "), str(exc.value)
    assert "_ssl.c" not in str(exc.value)
    assert_one_clean_line(str(exc.value), pki)


def test_an_http_endpoint_for_an_https_member_says_so(member, pki):
    c = EtcdClient(settings([member.url.replace("https://", "http://")], timeout=1.0))
    with pytest.raises(EtcdError) as exc:
        c.get("/tls/x")
    assert "an https member? the endpoint says http://" in str(exc.value), str(exc.value)
    assert_one_clean_line(str(exc.value), pki)


def test_a_member_that_never_finishes_the_handshake_costs_its_share(member, pki):
    # A port that accepts TCP and never answers the TLS ClientHello (a frozen member): the call
    # succeeds on the next endpoint within its deadline; alone, it fails within the deadline.
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        dead = f"https://127.0.0.1:{hung.getsockname()[1]}"
        tls = dict(cacert=pki.ca_pem, cert=pki.client_pem, key=pki.client_key)
        c = EtcdClient(settings([dead, member.url], timeout=1.0, **tls))
        started = time.monotonic()
        c.put("/tls/hung", "ok")
        assert time.monotonic() - started < 1.0 and c.last_endpoint == member.url
        only = EtcdClient(settings([dead], timeout=0.5, **tls))
        started = time.monotonic()
        with pytest.raises(EtcdError, match="no member answered within 0.5s"):
            only.get("/tls/hung")
        assert time.monotonic() - started < 0.9
    finally:
        hung.close()


def test_a_tls_refusal_on_one_member_fails_over_to_the_next(member, pki, tmp_path):
    # The first member presents a certificate of another CA (a stranger on the address): skipped.
    other = make_pki(tmp_path / "other")
    stranger = TlsMember(tmp_path, other).start()
    try:
        c = EtcdClient(settings([stranger.url, member.url], cacert=pki.ca_pem, cert=pki.client_pem, key=pki.client_key))
        c.put("/tls/failover", "1")
        assert c.get("/tls/failover").value == "1" and c.last_endpoint == member.url
    finally:
        stranger.stop()


# ------------------------------------------------------------------ orch's commands, a real pair


def _config(tmp: Path, cluster, etcd: dict, name: str = "orch.yaml") -> str:
    s1, s2, _, _ = cluster
    d = t.config_dict(s1, s2, str(tmp / "state"), etcd={"ttl": 5, "prefix": "/tls-orch", **etcd})
    return t.write_config(tmp / name, d)


@pytest.mark.mariadb
def test_orch_doctor_status_and_fleet_over_tls(member, pki, cluster, tmp_path):
    good = _config(tmp_path, cluster, {"endpoints": [member.url], "cacert": pki.ca_pem, "cert": pki.client_pem,
                                       "key": pki.client_key})
    r = t.orch(good, "server1", "doctor")
    assert "etcd members" in r.output and "all 1 endpoints answer" in r.output, r
    assert "etcd endpoints are the members" in r.output, r
    line = next(x for x in r.stdout.splitlines() if "etcd endpoints are the members" in x)
    assert "fail" not in line.lower(), line
    s = t.orch(good, "server1", "status")
    assert "etcd: write token" in s.output, s
    f = t.orch(good, "server1", "fleet")
    assert f.code == 0, f

    for case in ("wrong CA", "no client certificate", "https without cacert"):
        kw, expected = _refusals(member, pki)[case]
        bad = _config(tmp_path, cluster, {"endpoints": [member.url], **kw}, name=f"orch-{case.replace(' ', '-')}.yaml")
        d = t.orch(bad, "server1", "doctor")
        assert d.code != 0, d
        members = [x for x in d.stdout.splitlines() if "etcd members" in x]
        assert members and expected in members[0] and "1 of 1 endpoints refuse TLS" in members[0], (case, d.stdout)
        assert "check etcd.cacert, etcd.cert and etcd.key" in d.stdout, d.stdout
        token = [x for x in d.stdout.splitlines() if "write token" in x]
        assert token and expected in token[0], (case, d.stdout)
        assert "Traceback" not in d.output
        f = t.orch(bad, "server1", "fleet")
        assert f.code == 1 and expected in f.stdout and "Traceback" not in f.output, f
        assert len(f.output.strip().splitlines()) == 1, f


# ------------------------------------------------------------------ a user over TLS


@pytest.fixture
def auth_member(tmp_path, pki):
    """A member of its own (auth on changes every call): user orch, a non-ASCII password."""
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed")
    # Its login tokens last 2 s (etcd's default is 300 s): orch logs in again when one expires.
    m = TlsMember(tmp_path / "auth", pki, "--auth-token-ttl", "2")
    m.base.mkdir()
    m.start()
    m.ctl("user", "add", "root", "--interactive=false", stdin="rootpw\n")
    # etcdctl reads a password from stdin up to its first space: this one goes through the API.
    EtcdClient(settings([m.url], cacert=pki.ca_pem, cert=pki.client_pem, key=pki.client_key)).call(
        "/v3/auth/user/add", {"name": "orchuser", "password": PASSWORD}, what="user add")
    m.ctl("role", "add", "orch")
    m.ctl("role", "grant-permission", "orch", "--prefix=true", "readwrite", "/tls-orch/")
    m.ctl("user", "grant-role", "orchuser", "orch")
    m.ctl("auth", "enable")
    yield m
    m.stop()


@pytest.mark.mariadb
def test_user_and_non_ascii_password_over_tls_never_shown(auth_member, pki, cluster, tmp_path):
    # A client certificate with a Common Name: etcd refuses it on its JSON API while auth is on; said so.
    with_cn = EtcdClient(settings([auth_member.url], user="orchuser", password=PASSWORD, cacert=pki.ca_pem,
                                  cert=pki.client_pem, key=pki.client_key))
    with pytest.raises(EtcdError) as exc:
        with_cn.get("/tls-orch/k")
    assert "issue etcd.cert without one" in str(exc.value) and "orchuser" in str(exc.value), str(exc.value)
    assert_one_clean_line(str(exc.value), pki, PASSWORD)

    tls = {"cacert": pki.ca_pem, "cert": pki.nocn_pem, "key": pki.nocn_key}
    c = EtcdClient(settings([auth_member.url], user="orchuser", password=PASSWORD, **tls))
    c.put("/tls-orch/k", "v")
    assert c.get("/tls-orch/k").value == "v"
    with pytest.raises(EtcdError, match="permission denied"):
        c.put("/elsewhere", "v")
    token = c._token
    time.sleep(3.5)  # the login token expired: one call logs in again, unseen
    assert c.get("/tls-orch/k").value == "v" and c._token and c._token != token

    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    cfg = _config(tmp_path, cluster, {"endpoints": [auth_member.url], "user": "orchuser", "password_file": str(secret), **tls})
    state = tmp_path / "state"

    # orch maintain: logs in, grants this host's lease, takes the token for the writable master.
    log = tmp_path / "maintain.log"
    with open(log, "ab") as out:
        keeper = subprocess.Popen([t.ORCH, "-v", "-c", cfg, "--node", "server1", "maintain"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            kv = c.get("/tls-orch/test/token")
            if kv is not None and kv.value == "server1":
                break
            assert keeper.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        cmdline = Path(f"/proc/{keeper.pid}/cmdline").read_bytes().decode("utf-8", "replace")
        assert PASSWORD not in cmdline
        r = t.orch(cfg, "server1", "-v", "status")
        assert "etcd: write token held by server1" in r.output, r
        d = t.orch(cfg, "server1", "-v", "doctor")
        assert "all 1 endpoints answer" in d.output, d
    finally:
        keeper.send_signal(signal.SIGTERM)
        try:
            keeper.wait(timeout=15)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()

    # A wrong password: one line naming the user, not the password.
    secret.write_text("wrong-" + PASSWORD + "\n", encoding="utf-8")
    f = t.orch(cfg, "server1", "fleet")
    assert f.code == 1 and "etcd login as 'orchuser'" in f.stdout, f
    assert len(f.output.strip().splitlines()) == 1 and "Traceback" not in f.output, f
    d2 = t.orch(cfg, "server1", "doctor")
    assert "etcd login as 'orchuser'" in d2.stdout and "Traceback" not in d2.output, d2

    # Nowhere: the processes' output, the maintainer's log, anything in state_dir.
    texts = [log.read_text(errors="replace"), r.output, d.output, f.output, d2.output]
    texts += [p.read_text(errors="replace") for p in state.rglob("*") if p.is_file()]
    for text in texts:
        for s in (PASSWORD, json.dumps(PASSWORD)[1:-1], "wrong-" + PASSWORD):
            assert s not in text, "the etcd password shown"


# ------------------------------------------------------------------ the namespace lab over TLS


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory, mariadb_template):
    """orch lab up --etcd-tls: the three members serve clients over TLS with --client-cert-auth."""
    from orchestrator.lab.proc import wait_for

    from .orchtest import LabHolder, held_lab
    from .test_etcd_drills import runs_settled, skip_reason, token_holder

    with held_lab(lambda: LabHolder(tmp_path_factory.mktemp("etcd-tls-lab"), mariadb_template, "default",
                                    etcd=True, etcd_tls=True), skip_reason()) as h:
        lab = h.healthy()
        wait_for("the master to hold the write token", lambda: token_holder(lab) == lab.master(), 20)
        wait_for("every journaled orch run to have ended", lambda: runs_settled(lab), 20)
        yield lab


@pytest.mark.netns
def test_lab_over_tls_the_split_drill(tls_lab, request):
    """The split (drill 1 of tests/test_etcd_drills.py) with orch talking TLS to every member:
    the members refuse a client without a certificate, orch doctor passes its etcd checks, and
    the hosts cut from each other for 6 s leave one writer, nothing lost, the token held."""
    import urllib.request

    from orchestrator.lab import netns
    from orchestrator.lab.proc import orch_bin, run

    from .test_etcd_drills import drill, line

    lab = tls_lab
    assert all(e.startswith("https://") for e in lab.etcd_endpoints())
    client = lab.etcd_endpoints()[0]

    def plain() -> str:  # no client certificate: refused by the member
        import ssl

        try:
            urllib.request.urlopen(client + "/health", timeout=2, context=ssl.create_default_context(cafile=lab.etcd_pki().ca))
        except OSError as exc:
            return type(exc).__name__
        return "answered"

    assert netns.in_netns(lab.bridge_ns, plain, 10) != "answered"
    master = lab.master()
    host = lab.hosts[master]
    doctor = run(["ip", "netns", "exec", host.netns or "", orch_bin(), "-c", str(host.file("orch.yaml")), "doctor"],
                 timeout=60, check=False)
    members = [x for x in doctor.stdout.splitlines() if "etcd members" in x or "write token" in x or "host lease" in x]
    assert len(members) == 3 and all(x.startswith("PASS") for x in members), doctor.stdout
    assert "all 3 endpoints answer" in doctor.stdout, doctor.stdout

    fig = drill(lab, "split over TLS", inject=lambda n: lab.isolate_hosts(True), restore=lambda n: lab.isolate_hosts(False),
                seconds=6.0, stranded=True)
    write_report(request, "etcd over TLS in the namespace lab (seconds):", [line(lab, "1 split: hosts lose each other 6s", fig)])
    assert fig.two_writers == 0.0, f"[two writers] both servers writable for {fig.two_writers:.2f}s"
    assert fig.final == fig.old and fig.token == fig.final



@pytest.mark.netns
def test_orch_lab_up_etcd_tls_as_docs_etcd_md_shows(tmp_path):
    """docs/etcd.md: `orch lab up --etcd-tls` builds the lab with etcd over TLS; `orch lab down` removes it."""
    from orchestrator.lab.proc import orch_bin, run

    from .test_etcd_drills import skip_reason

    if skip_reason():
        pytest.skip(skip_reason())
    workdir = str(tmp_path / "lab")
    up = run([orch_bin(), "lab", "up", "--etcd-tls", "--dir", workdir], timeout=180, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads(open(f"{workdir}/lab.json").read())
        assert state["etcd_tls"] is True
        ns = state["hosts"][0]["netns"]
        conf = f"{workdir}/server1/orch.yaml"
        assert "cacert:" in open(conf).read() and "https://" in open(conf).read()
        status = run(["ip", "netns", "exec", ns, orch_bin(), "-c", conf, "status"], timeout=30, check=False)
        assert "etcd: write token held by server1" in status.stdout, status.stdout
    finally:
        down = run([orch_bin(), "lab", "down", "--dir", workdir], timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
