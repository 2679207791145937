"""Credentials for the mariadb/mariadb-dump/mariadb-binlog clients orch runs: a [client]
option file, mode 0600 in a private directory removed afterwards, never argv."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, Mapping, Optional, Sequence


def option_value(value: str) -> str:
    """A value double-quoted for a client option file: any text, blanks, '#' and quotes kept.

    Unquoted, the client drops leading and trailing blanks (a latin1 space, so a UTF-8
    password ending in "à", bytes C3 A0, loses a byte), cuts at "#" and reads escapes.
    """
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def client_options_of(text: str) -> Dict[str, str]:
    """host, port, socket, user and password as the mariadb/mysql client reads them from a
    defaults file's client groups (quotes and escapes undone; the last one wins)."""
    import re

    groups = {"client", "client-server", "client-mariadb", "mysql", "mariadb", "mariadb-client"}
    out: Dict[str, str] = {}
    group = ""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "s": " ", "\\": "\\", '"': '"', "'": "'"}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and "]" in line:
            group = line[1:line.index("]")].strip().lower()
            continue
        if group not in groups or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.replace("_", "-").lower()
        if key not in ("host", "port", "socket", "user", "password"):
            continue
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) > 1:
            value = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), value[1:-1])
        else:
            value = value.split("#", 1)[0].strip()
        out[key] = value
    return out


def client_options(user: str, password: str, tls: str = "preferred", tls_ca: str = "",
                   host: Optional[str] = None, port: Optional[int] = None) -> str:
    """The [client] group: the account, where to connect (when given), and TLS as orch uses it."""
    lines = ["[client]"]
    if host is not None:
        lines.append(f"host={option_value(host)}")
    if port is not None:
        lines.append(f"port={int(port)}")
    lines += [f"user={option_value(user)}", f"password={option_value(password)}"]
    if tls == "required":
        lines.append("ssl")
        if tls_ca:
            lines += [f"ssl-ca={option_value(tls_ca)}", "ssl-verify-server-cert"]
    elif tls == "disabled":
        lines.append("skip-ssl")
    return "\n".join(lines) + "\n"


class OptionFile:
    """``with OptionFile(text) as f:`` f.path is the file (0600, in a 0700 directory of its own)."""

    def __init__(self, text: str, prefix: str = "orch-client-") -> None:
        self.text = text
        self.prefix = prefix
        self.dir = ""
        self.path = ""

    @classmethod
    def for_account(cls, account: Any, prefix: str, host: Optional[str] = None, port: Optional[int] = None) -> "OptionFile":
        return cls(client_options(account.user, account.password, account.tls, account.tls_ca, host, port), prefix)

    def __enter__(self) -> "OptionFile":
        import tempfile

        self.dir = tempfile.mkdtemp(prefix=self.prefix)  # mode 0700
        self.path = os.path.join(self.dir, "client.cnf")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.text)
        return self

    def __exit__(self, *exc: Any) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def run_client(argv: Sequence[str], label: str, timeout: float, stdin: Any = None, stdout: Any = None,
               env: Optional[Mapping[str, str]] = None) -> "subprocess.CompletedProcess[bytes]":
    """Run one of those clients (argv list, no shell, credentials only in an option file);
    CommandError naming ``label`` on a timeout, a failed start or a non-zero exit (with the
    last 300 characters of what it said on stderr). stdout is captured unless given."""
    import subprocess

    from .errors import CommandError

    try:
        proc = subprocess.run(list(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False, env=None if env is None else dict(env))
    except subprocess.TimeoutExpired:
        raise CommandError(f"{label}: timed out after {timeout:g}s") from None
    except OSError as exc:
        raise CommandError(f"{label}: {exc.strerror}") from None
    if proc.returncode != 0:
        err = " | ".join(line.strip() for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip())[-300:]
        raise CommandError(f"{label}: exit code {proc.returncode}: {err}")
    return proc
