"""orch lab up --etcd-tls: the lab's etcd members serve their clients over TLS with
--client-cert-auth, and orch connects with etcd.cacert/cert/key (docs/etcd.md, "TLS and a user").

A throwaway CA made with Debian's openssl in the lab's workdir, valid one day: one server
certificate per member (its client address in subjectAltName) and one client certificate
with no Common Name (etcd refuses one with a Common Name on its JSON API once auth is on).
Peer traffic stays plain http: the lab tests orch's side."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {done.stderr.strip()[-300:]}")


@dataclass(frozen=True)
class EtcdPki:
    dir: Path

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    def server(self, member: str) -> Tuple[str, str]:
        return str(self.dir / f"{member}.pem"), str(self.dir / f"{member}.key")

    @property
    def client(self) -> Tuple[str, str]:
        return str(self.dir / "client.pem"), str(self.dir / "client.key")

    def orch_settings(self) -> Dict[str, str]:
        """The etcd: section's TLS keys."""
        cert, key = self.client
        return {"cacert": self.ca, "cert": cert, "key": key}

    def member_flags(self, member: str) -> List[str]:
        cert, key = self.server(member)
        return ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", self.ca, "--client-cert-auth"]

    def etcdctl_flags(self) -> List[str]:
        cert, key = self.client
        return ["--cacert", self.ca, "--cert", cert, "--key", key]

    def ssl_context(self) -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(*self.client)
        return ctx


def make_pki(directory: Path, members: Iterable[Tuple[str, str]]) -> EtcdPki:
    """A CA, a server certificate for each (member name, client address), a client certificate."""
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    _openssl(d, "req", "-x509", *CURVE, "-days", "1", "-subj", "/CN=orch lab etcd CA", "-keyout", "ca.key", "-out", "ca.pem")
    leaves = [(name, f"/CN={address}", f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth,clientAuth\n")
              for name, address in members]
    leaves.append(("client", "/O=orch", "extendedKeyUsage=clientAuth\n"))
    for name, subject, ext in leaves:
        _openssl(d, "req", *CURVE, "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext)
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return EtcdPki(d)
