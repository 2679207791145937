"""Credentials for the mariadb/mariadb-dump/mariadb-binlog clients orch runs: a [client]
option file, mode 0600 in a private directory removed afterwards, never argv."""

from __future__ import annotations

import os
from typing import Any, Optional


def option_value(value: str) -> str:
    """A value double-quoted for a client option file: any text, blanks, '#' and quotes kept.

    Unquoted, the client drops leading and trailing blanks (a latin1 space, so a UTF-8
    password ending in "à", bytes C3 A0, loses a byte), cuts at "#" and reads escapes.
    """
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


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
