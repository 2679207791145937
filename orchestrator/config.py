"""Configuration: YAML -> frozen dataclasses, with every problem reported at once.

Each key is stated once, as a field of its section's dataclass made by ``setting()``
(orchestrator/schema.py): YAML key, default, bounds or choices, one line of help. One
reader walks each section against its fields; a section's own check (``@checks``) then
says what no single field can (the nodes map, rules across fields). Reading touches no
file: ``validate`` leaves password_file and tls_ca as paths and ``resolve`` reads them
(and looks at the hook programs); ``parse`` does both, ``load`` reads the YAML first.
``reference()`` renders the schema as docs/configuration.md. Key names are a public
interface; adding a section is one dataclass and one field of Config.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from .errors import ConfigError, UsageError
from .schema import Reading, as_mapping, checks, keys_of, mapping, paths, read, setting, tables, text
from .schema import read_section  # noqa: F401  (one section alone, for whoever adds one)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/etc/orch/orch.yaml"
FLAVORS = ("auto", "mysql", "mariadb")
PERSIST_MODES = ("rewrite", "save_config", "none")
TLS_MODES = ("disabled", "preferred", "required")
HOOK_PHASES = ("pre_failover", "post_failover", "pre_switchover", "post_switchover")
MAX_REPLICATION_PASSWORD = 96  # bytes MariaDB keeps of MASTER_PASSWORD


# Value checks of this file's keys: (value, meta) -> the value to keep, or ValueError(the
# problem); the docstring's first line names the type in the reference.


def _any_string(value: Any, meta: Any) -> str:
    """string"""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _file_path(value: Any, meta: Any) -> str:
    """file path"""
    if not isinstance(value, str):
        raise ValueError("expected a file path")
    return value


def _absolute_path(value: Any, meta: Any) -> str:
    """absolute file path"""
    if not isinstance(value, str) or (value and not os.path.isabs(value)):
        raise ValueError("expected an absolute file path")
    return value


def _directory(value: Any, meta: Any) -> str:
    """directory path"""
    if not isinstance(value, str) or not value:
        raise ValueError("expected a directory path")
    return value


def _interface(value: Any, meta: Any) -> str:
    """network interface name"""
    if not isinstance(value, str) or (value and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", value)):
        raise ValueError("expected a network interface name")
    return value


def _witness(value: Any, meta: Any) -> str:
    """IPv4 address"""
    if value in ("", None):
        return ""
    try:
        return ipv4_address(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _atlas_address(value: Any, meta: Any) -> str:
    """IPv4:port"""
    if value is None:
        return ""  # host:port, filled in by the node's check
    if not isinstance(value, str):
        raise ValueError("expected IPv4:port")
    return parse_ipv4_address(value)


def _mail_address(value: Any, meta: Any) -> str:
    """mail address"""
    value = text(value)
    if "@" not in value or re.search(r"[\r\n]", value):
        raise ValueError("expected a mail address")
    return value


def _webhook_url(value: Any, meta: Any) -> str:
    """http(s) URL"""
    value = text(value)
    from urllib.parse import urlsplit  # only with a webhook configured

    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or re.search(r"\s", value):
        raise ValueError("expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("credentials in the URL are not supported: give them in headers (Authorization)")
    return value


# Structure readers: (value or None when absent, path, reading) -> the value to keep.


def _argv_lists(value: Any, path: str, reading: Reading) -> Tuple[Tuple[str, ...], ...]:
    """list of argv lists

    Each hook a non-empty list of strings whose first item is an absolute program path
    (no PATH lookup, no shell)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        reading.add(path, "expected a list of argv lists ([[/usr/local/bin/x, arg], ...])")
        return ()
    hooks = []
    for i, argv in enumerate(value):
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            reading.add(f"{path}[{i}]", "expected a non-empty list of non-empty strings (an argv, run without a shell)")
        elif not os.path.isabs(argv[0]):
            reading.add(f"{path}[{i}][0]", f"expected an absolute program path, got {argv[0]!r} (hooks run without PATH lookup)")
        elif any("\0" in a for a in argv):
            reading.add(f"{path}[{i}]", "an argument contains a NUL byte")
        else:
            hooks.append(tuple(argv))
    return tuple(hooks)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _headers(value: Any, path: str, reading: Reading) -> Tuple[Tuple[str, str], ...]:
    """mapping of HTTP headers"""
    headers = []
    for name, given in mapping(value, path, reading).items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            reading.add(path, f"{name!r} is not an HTTP header name")
        elif not isinstance(given, str) or re.search(r"[\r\n\0]", given):
            reading.add(f"{path}.{name}", "expected a one-line string")  # never echo the value: it may be a token
        else:
            headers.append((name, given))
    return tuple(headers)


def _recipients(value: Any, path: str, reading: Reading) -> Tuple[str, ...]:
    """list of mail addresses"""
    if value is None:
        reading.add(path, "missing")
        return ()
    if not isinstance(value, list) or not value:
        reading.add(path, "expected a list of mail addresses")
        return ()
    recipients = []
    for i, address in enumerate(value):
        if not isinstance(address, str) or "@" not in address or re.search(r"[\r\n]", address):
            reading.add(f"{path}[{i}]", "expected a mail address")
        else:
            recipients.append(address)
    return tuple(recipients)


def _nodes(value: Any, path: str, reading: Reading) -> Tuple[Node, ...]:
    """map of two nodes, by name"""
    m = mapping(value, path, reading)
    if value is None:
        reading.add(path, "missing")
        return ()
    if len(m) != 2:
        reading.add(path, f"expected exactly 2 nodes, got {len(m)}")
    return tuple(read(Node, spec, f"{path}.{name}", reading, given={"name": str(name)}) for name, spec in m.items())


def _atlas(value: Any, path: str, reading: Reading) -> Tuple[AtlasInstance, ...]:
    """list of Atlas instances"""
    if value is None:
        return ()
    if not isinstance(value, list):
        reading.add(path, "expected a list of Atlas instances")
        return ()
    out: List[AtlasInstance] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        atlas = read(AtlasInstance, item, where, reading, defaults={"name": f"atlas{i + 1}"})
        if atlas.name in {a.name for a in out}:
            reading.add(f"{where}.name", f"duplicate name {atlas.name!r}")
        out.append(atlas)
    return tuple(out)


def _secret(m: Mapping[str, Any], path: str, reading: Reading) -> Tuple[str, str]:
    """(password, password_file): the password given inline, or the file to read it from
    (relative to the config's directory; resolve() reads it)."""
    if "password" in m and "password_file" in m:
        reading.add(path, "give password or password_file, not both")
        return "", ""
    if "password_file" in m:
        pf = m["password_file"]
        if not isinstance(pf, str) or not pf:
            reading.add(f"{path}.password_file", "expected a file path")
            return "", ""
        return "", os.path.join(reading.base_dir, pf)
    value = m.get("password")
    if value is None:
        reading.add(f"{path}.password", "missing (or give password_file)")
        return "", ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        reading.add(f"{path}.password", "expected a string")
        return "", ""
    return str(value), ""


_PASSWORD_HELP = "its password (any UTF-8)"
_PASSWORD_FILE_HELP = "a file whose first line is the password (relative to orch.yaml's directory)"


def _password_file(**kw: Any) -> Any:
    return setting("", _PASSWORD_FILE_HELP, custom=True, shown_type="file path", **kw)


# --- the sections -------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A MySQL account orch logs in with (mysql) or hands to the replica (replication)."""

    user: str = setting(help="the account's user name", positional=True)
    password: str = setting(help=_PASSWORD_HELP, either="password_file", custom=True, positional=True, repr=False)
    connect_timeout: float = setting(2.0, "seconds for the TCP connect and the handshake: past it, a server is down",
                                     lo=0.1, hi=60)
    tls: str = setting("preferred", "like the mysql client: preferred uses TLS when the server offers it",
                       choices=TLS_MODES)
    tls_ca: str = setting("", "verify the server's certificate and host name against this CA file (implies required)",
                          check=_file_path)
    read_timeout: float = setting(2.0, "seconds for an observation statement (the handshake uses connect_timeout): "
                                  "past it, alive but unusable", lo=0.1, hi=600)
    password_file: str = _password_file()


REPLICATION_KEYS = ("user", "password", "password_file")  # the replica's account has no timeouts or TLS of orch's


@checks(Account)
def _account(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Account:
    values["password"], values["password_file"] = _secret(as_mapping(raw), path, reading)
    if values.get("tls_ca"):  # (the replication account has no TLS keys)
        values["tls_ca"] = os.path.join(reading.base_dir, values["tls_ca"])
        if values["tls"] == "preferred":
            values["tls"] = "required"  # a CA to verify against means TLS is wanted
    return cls(**values)


@dataclass(frozen=True)
class Node:
    """One of the two servers."""

    name: str  # its key in nodes
    host: str = setting(help="its address (IPv4 where Atlas is managed)", positional=True)
    port: int = setting(3306, "its MySQL port", lo=1, hi=65535)
    atlas_address: str = setting("", "the backend as Atlas lists it", check=_atlas_address, shown_default="host:port")


@checks(Node)
def _node(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Node:
    if as_mapping(raw).get("atlas_address") is None:
        values["atlas_address"] = f"{values['host']}:{values['port']}"
        try:
            values["atlas_address"] = parse_ipv4_address(values["atlas_address"])
        except ValueError:
            pass  # only an error when Atlas is configured: the config's check says so
    return cls(**values)


@dataclass(frozen=True)
class Failover:
    """The failover's deadlines."""

    catchup_timeout: float = setting(30.0, "seconds to wait for the relay log to be applied", lo=0, hi=3600)
    lock_timeout: float = setting(120.0, "seconds a notify waits for another orch run on this host; then the "
                                  "maintainer takes the event", lo=0, hi=3600)
    fence_timeout: float = setting(3.0, "seconds fencing a live peer may wait for its running writes; then orch "
                                   "kills them, once", lo=0.1, hi=600)
    semi_sync: bool = setting(False, "semi-synchronous replication without asynchronous fallback, the wait managed "
                              "by orch ([Partitions and split brain](concepts.md#partitions-and-split-brain))")
    witness: str = setting("", "an address both hosts reach (the gateway): tells a dead replica from isolation; "
                           "required with semi_sync", check=_witness)
    auto_rewind: bool = setting(True, "roll back a divergent tail automatically when it is proven never "
                                "acknowledged (saved first)")
    block_seconds: float = setting(3600.0, "anti-flapping: an automatic promotion this soon after the last one "
                                   "waits for orch ack (0: off)", lo=0, hi=30 * 86400)


@checks(Failover)
def _failover(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Failover:
    if values["semi_sync"] and not values["witness"]:
        reading.add(f"{path}.witness", "missing: with semi_sync the maintainer needs it to tell a dead replica from "
                    "an isolated master")
    return cls(**values)


@dataclass(frozen=True)
class AtlasInstance:
    """One Atlas proxy and how orch reaches its admin port."""

    name: str = setting(help="a name for logs and orch status", shown_default="atlas1, atlas2... by position",
                        positional=True)
    host: str = setting("127.0.0.1", "the admin port's address", under="admin", positional=True)
    port: int = setting(2345, "the admin port", lo=1, hi=65535, under="admin", positional=True)
    user: str = setting(help="Atlas's admin-username", under="admin", positional=True)
    password: str = setting(help=_PASSWORD_HELP, either="password_file", under="admin", custom=True, positional=True,
                            repr=False)
    config_file: str = setting("", "Atlas's config file, where changes are persisted", check=_file_path)
    persist: str = setting("rewrite", "how read backends are persisted: rewrite (the config_file), save_config "
                           "(Atlas's own SAVE CONFIG), none", choices=PERSIST_MODES,
                           shown_default="rewrite with a config_file, else none")
    timeout: float = setting(2.0, "seconds per admin command", lo=0.1, hi=60, under="admin")
    password_file: str = _password_file(under="admin")


@checks(AtlasInstance)
def _atlas_instance(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> AtlasInstance:
    m = as_mapping(raw)
    admin = m.get("admin")
    if isinstance(admin, Mapping) and admin:
        values["password"], values["password_file"] = _secret(admin, f"{path}.admin", reading)
    else:  # not given (and said so): as before the schema, no address either
        values.update(host="", port=0, user="", password="", password_file="")
    if "persist" not in m:
        values["persist"] = "rewrite" if values["config_file"] else "none"
    if m.get("persist", values["persist"]) == "rewrite" and not values["config_file"]:
        reading.add(f"{path}.config_file", "missing (persist: rewrite needs it)")
    return cls(**values)


@dataclass(frozen=True)
class MaintainerSettings:
    """The maintainer's pace and its replica lag limit."""

    interval: float = setting(5.0, "seconds between reconcile passes (1 s while a replica is out of Atlas)",
                              lo=0.1, hi=3600)
    max_lag: int = setting(10, "seconds; a replica further behind is not a read backend (nor passes orch check "
                           "--replica)", lo=0, hi=86400)
    metrics_port: int = setting(0, "Prometheus metrics of orch maintain on this port (conf/orch-alerts.yml needs "
                                "them); 0: off", lo=0, hi=65535)


@dataclass(frozen=True)
class HttpApi:
    """The HTTP API on maintainer.metrics_port (docs/http-api.md): health checks for HAProxy,
    status and history as JSON, and the authenticated switchover, pause and resume."""

    listen: str = setting("", "the address orch maintain's HTTP port (maintainer.metrics_port) listens on; empty: "
                          "every address", custom=True, shown_type="IP address")
    tls_cert: str = setting("", "serve HTTPS with this certificate (PEM, with tls_key); relative to orch.yaml's "
                            "directory", check=_file_path)
    tls_key: str = setting("", "the certificate's private key (PEM)", check=_file_path)
    tls_ca: str = setting("", "orch calling the peer's API over HTTPS verifies its certificate against this CA file "
                          "(default: the system's CAs)", check=_file_path)
    token_file: str = setting("", "a file whose first line is the token POST /switchover, /pause and /resume need "
                              "(Authorization: Bearer); the same on both hosts; unset: those endpoints are off",
                              check=_file_path)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


@checks(HttpApi)
def _http_api(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> HttpApi:
    listen = as_mapping(raw).get("listen") or ""
    if listen:
        try:
            values["listen"] = ip_address(str(listen))
        except ValueError:
            reading.add(f"{path}.listen", "expected an IP address (or nothing: every address)")
            values["listen"] = ""
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        reading.add(f"{path}.tls_cert", "tls_cert and tls_key go together")
    for name in ("tls_cert", "tls_key", "tls_ca", "token_file"):
        if values[name]:
            values[name] = os.path.join(reading.base_dir, values[name])
    return cls(**values)


def _sockets(value: Any, path: str, reading: Reading) -> Tuple[str, ...]:
    """list of absolute UNIX socket paths"""
    if value is None:
        return ()
    if not isinstance(value, list):
        reading.add(path, "expected a list of absolute UNIX socket paths")
        return ()
    sockets = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not os.path.isabs(item) or len(item.encode("utf-8")) > 107:
            reading.add(f"{path}[{i}]", "expected an absolute UNIX socket path (at most 107 bytes)")
        elif item in sockets:
            reading.add(f"{path}[{i}]", f"{item} is listed twice")
        else:
            sockets.append(item)
    return tuple(sockets)


@dataclass(frozen=True)
class Haproxy:
    """Where orch reads each HAProxy's view of the servers (docs/haproxy.md): shown by orch
    status, GET /status and the status page; read only, never changed."""

    stats_sockets: Tuple[str, ...] = setting((), "each HAProxy's runtime API socket (haproxy.cfg's stats socket "
                                             "path) on this host; orch reads show stat from it", read=_sockets)
    write_backend: str = setting("write", "the backend of haproxy.cfg that sends writes to the master",
                                 check=_any_string)
    read_backend: str = setting("read", "the backend of haproxy.cfg that sends reads to the replica",
                                check=_any_string)


@checks(Haproxy)
def _haproxy(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Haproxy:
    if values["write_backend"] == values["read_backend"]:
        reading.add(f"{path}.read_backend", "the same backend as write_backend: give each its own")
    return cls(**values)


@dataclass(frozen=True)
class Keepalived:
    """Which keepalived events are ours, and the VIP they move."""

    instance: str = setting("", "act only on notify events of this VRRP instance (or group) name", check=_any_string)
    vip: str = setting("", "the VIP: notify checks whether this host holds it (the real state); required unless "
                       "vip_check is false", custom=True, shown_type="IP address")
    vip_check: bool = setting(True, "false (and no vip) only where something else moves the VIP, or both nodes "
                              "share a host")
    track_file: str = setting("", "keepalived's vrrp_track_file (weight 0): orch writes 1 to hand the VIP over",
                              check=_absolute_path)
    interface: str = setting("", "the VRRP interface: the maintainer checks that no other host answers for the VIP "
                             "(ARP)", check=_interface)


@checks(Keepalived)
def _keepalived(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Keepalived:
    vip = as_mapping(raw).get("vip") or ""
    if vip and not values["vip_check"]:
        reading.add(f"{path}.vip", "set while keepalived.vip_check is false: give one or the other")
        vip = ""
    elif vip:
        try:
            vip = ip_address(str(vip).split("/")[0])
        except ValueError:
            reading.add(f"{path}.vip", "expected an IP address")
            vip = ""
    elif values["vip_check"]:
        reading.add(f"{path}.vip", "missing: notify needs it to tell stale keepalived events from the real state "
                    "(opt out with keepalived.vip_check: false where something else moves the VIP, or both nodes run on one host)")
    values["vip"] = vip
    return cls(**values)


@dataclass(frozen=True)
class Webhook:
    """Where alerts are POSTed as JSON; header values may carry tokens (secrets)."""

    url: str = setting(help="the http:// or https:// URL alerts are POSTed to (a secret: often the token itself)",
                       check=_webhook_url, positional=True, repr=False)
    timeout: float = setting(3.0, "seconds per POST", lo=0.1, hi=60)
    headers: Tuple[Tuple[str, str], ...] = setting((), "extra HTTP headers (Authorization...); their values are "
                                                   "secrets", read=_headers, repr=False)


@dataclass(frozen=True)
class Smtp:
    """The mail relay alerts go through (STARTTLS and login optional)."""

    host: str = setting(help="the mail relay", positional=True)
    port: int = setting(25, "its SMTP port", lo=1, hi=65535, shown_default="25 (587 with starttls)")
    starttls: bool = setting(False, "STARTTLS before anything else; must be true to log in to a non-loopback host")
    user: str = setting("", "log in as this user (with password or password_file)")
    password: str = setting("", _PASSWORD_HELP, either="password_file", custom=True, repr=False)
    sender: str = setting("", "the From address", key="from", check=_mail_address, required=True)
    to: Tuple[str, ...] = setting((), "the recipients", read=_recipients, required=True)
    timeout: float = setting(3.0, "seconds per mail", lo=0.1, hi=60)
    password_file: str = _password_file()


@checks(Smtp)
def _smtp(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Smtp:
    m = as_mapping(raw)
    if "port" not in m and values["starttls"]:
        values["port"] = 587
    if "user" in m:
        values["password"], values["password_file"] = _secret(m, path, reading)
        if values["host"] and not values["starttls"] and not _loopback(values["host"]):
            reading.add(f"{path}.starttls", "must be true to log in to a non-loopback host (the password would cross "
                        "the network in clear)")
    elif "password" in m or "password_file" in m:
        reading.add(f"{path}.user", "missing (a password needs a user)")
    return cls(**values)


@dataclass(frozen=True)
class Alerts:
    """Alert transports (at least one) and the window within which an identical alert is sent once."""

    webhook: Optional[Webhook] = setting(None, "a JSON webhook", section=Webhook)
    smtp: Optional[Smtp] = setting(None, "a mail", section=Smtp)
    dedup_seconds: float = setting(300.0, "an identical alert within this window is counted, not sent", lo=0, hi=86400)

    @property
    def secrets(self) -> Tuple[str, ...]:
        values: List[str] = []
        if self.webhook is not None:
            values.append(self.webhook.url)  # a webhook URL often is the token (Slack, Teams...)
            for _, value in self.webhook.headers:
                values += [value, value.split()[-1] if value.split() else ""]  # "Bearer TOKEN": the token alone too
        if self.smtp is not None:
            values.append(self.smtp.password)
        return tuple(v for v in values if v)


@checks(Alerts)
def _alerts(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Optional[Alerts]:
    if values["webhook"] is None and values["smtp"] is None:
        if isinstance(raw, Mapping):
            reading.add(path, "give webhook or smtp (or leave alerts out)")
        return None
    return cls(**values)


def _etcd_endpoints(value: Any, path: str, reading: Reading) -> Tuple[str, ...]:
    """http(s)://host:port, one per member"""
    if not isinstance(value, (list, tuple)) or not value:
        reading.add(path, "expected a list of http:// or https:// URLs (one per etcd member)")
        return ()
    from urllib.parse import urlsplit  # only with an etcd section

    out: List[str] = []
    for i, item in enumerate(value):
        try:
            parts = urlsplit(str(item))
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (not isinstance(item, str) or parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or not port or parts.path not in ("", "/") or "@" in parts.netloc):
            reading.add(f"{path}[{i}]", "expected http://host:port or https://host:port (no path, no credentials)")
            continue
        out.append(f"{parts.scheme}://{parts.netloc}")
    if len(set(out)) != len(out):
        reading.add(path, "an endpoint is listed twice")
    return tuple(out)


def _etcd_prefix(value: Any, meta: Any) -> str:
    """key prefix"""
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/") or re.search(r"\s", value):
        raise ValueError("expected a key prefix starting with / and not ending with / (e.g. /orch)")
    return value


@dataclass(frozen=True)
class Etcd:
    """The write token in etcd (docs/etcd.md): only the host holding it may open its server."""

    endpoints: Tuple[str, ...] = setting(help="every etcd member's client URL: one per DB host and one beside the "
                                         "witness", read=_etcd_endpoints, positional=True)
    ttl: int = setting(5, "seconds: the write token's lease; a frozen or cut-off master's host costs this much "
                       "before the peer opens, and fences itself before it runs out", lo=3, hi=60)
    prefix: str = setting("/orch", "keys live under <prefix>/<cluster>/", check=_etcd_prefix)
    timeout: float = setting(1.0, "seconds for one etcd call over every endpoint (a hung member costs its share, "
                             "then the next is tried)", lo=0.2, hi=10)
    user: str = setting("", "log in as this etcd user (with password or password_file)")
    password: str = setting("", _PASSWORD_HELP, either="password_file", custom=True, repr=False)
    cacert: str = setting("", "verify the members' certificates against this CA file (https endpoints)", check=_file_path)
    cert: str = setting("", "client certificate file (etcd's --client-cert-auth)", check=_file_path)
    key: str = setting("", "client certificate's key file", check=_file_path)
    password_file: str = _password_file()


@checks(Etcd)
def _etcd(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Etcd:
    m = as_mapping(raw)
    if "user" in m:
        values["password"], values["password_file"] = _secret(m, path, reading)
    elif "password" in m or "password_file" in m:
        reading.add(f"{path}.user", "missing (a password needs a user)")
    for name in ("cacert", "cert", "key"):
        if values.get(name):
            values[name] = os.path.join(reading.base_dir, values[name])
    if bool(values.get("cert")) != bool(values.get("key")):
        reading.add(f"{path}.cert", "give cert and key together")
    if (values.get("cacert") or values.get("cert")) and not any(e.startswith("https://") for e in values.get("endpoints", ())):
        reading.add(f"{path}.endpoints", "cacert/cert need https:// endpoints")
    return cls(**values)


_HOOK_HELP = "argv lists, run in order"


@dataclass(frozen=True)
class Hooks:
    """Site commands run around a promotion or a switchover (orchestrator/hooks.py): argv
    lists run without a shell, context in ORCH_* environment variables."""

    timeout: float = setting(10.0, "seconds per hook; then it is killed with its process group", lo=0.1, hi=3600)
    pre_failover: Tuple[Tuple[str, ...], ...] = setting((), "before a promotion: one that fails or times out "
                                                        "refuses it", read=_argv_lists)
    post_failover: Tuple[Tuple[str, ...], ...] = setting((), "after a promotion, best effort", read=_argv_lists)
    pre_switchover: Tuple[Tuple[str, ...], ...] = setting((), "before orch switchover: one that fails or times out "
                                                          "refuses it", read=_argv_lists)
    post_switchover: Tuple[Tuple[str, ...], ...] = setting((), "after orch switchover, best effort", read=_argv_lists)

    def of(self, phase: str) -> Tuple[Tuple[str, ...], ...]:
        return getattr(self, phase) if phase in HOOK_PHASES else ()


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: str  # the file it was read from
    cluster: str = setting("atlas-ha", "a name for logs, the journal and alerts", positional=True)
    flavor: str = setting("auto", "the servers' kind; auto reads SELECT VERSION()", choices=FLAVORS, positional=True)
    self_name: str = setting(help="this host's node; --node or ORCH_NODE override", key="self", custom=True,
                             shown_type="node name", shown_default="required (or --node)", positional=True)
    nodes: Tuple[Node, ...] = setting(help="the two servers, by name", read=_nodes, each=(Node, ".<name>"),
                                      positional=True)
    mysql: Account = setting(help="the account orch uses on both servers", section=Account, positional=True)
    replication: Account = setting(help="the account the replica uses to reach the peer", section=Account,
                                   keys=REPLICATION_KEYS, positional=True)
    failover: Failover = setting(Failover(), "the failover's deadlines and safety")
    state_dir: str = setting("/var/lib/orch", "lock, journal.jsonl, pending-event.json, semisync.json, rewind/, "
                             "flap-ack.json", check=_directory)
    atlas: Tuple[AtlasInstance, ...] = setting((), "every Atlas this host manages (usually the local one)", read=_atlas,
                                                   each=(AtlasInstance, "[]"))
    maintainer: MaintainerSettings = setting(MaintainerSettings(), "the maintainer (orch maintain): its pace, lag limit and metrics")
    keepalived: Keepalived = setting(Keepalived(), "which keepalived events are ours, and the VIP")
    http: HttpApi = setting(HttpApi(), "the HTTP API on maintainer.metrics_port: health checks, status, "
                            "switchover/pause/resume ([HTTP API](http-api.md))")
    haproxy: Haproxy = setting(Haproxy(), "the HAProxy instances whose backends orch status and the status page "
                               "show ([HAProxy](haproxy.md))")
    hooks: Hooks = setting(Hooks(), "site commands around a promotion or a switchover ([Hooks](concepts.md#hooks))")
    etcd: Optional[Etcd] = setting(None, "the write token in etcd: only the host holding it opens its server "
                                   "([The write token in etcd](etcd.md)); without it, no token", section=Etcd)
    alerts: Optional[Alerts] = setting(None, "a webhook and/or a mail on promotion, refusal, split brain... "
                                       "([Alerts](metrics-and-alerts.md#alerts))", section=Alerts)
    syslog: bool = setting(False, "also log to syslog (always to stderr)", under="log")
    warnings: Tuple[str, ...] = ()

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def me(self) -> Node:
        return self.node(self.self_name)

    @property
    def peer(self) -> Node:
        return next(n for n in self.nodes if n.name != self.self_name)

    @property
    def secrets(self) -> Tuple[str, ...]:
        """Every password in this config, for the log redaction filter."""
        values = [self.mysql.password, self.replication.password] + [a.password for a in self.atlas]
        if self.alerts is not None:
            values += self.alerts.secrets
        if self.etcd is not None:
            values.append(self.etcd.password)
        return tuple(v for v in values if v)


@checks(Config)
def _config(cls: Any, values: Dict[str, Any], raw: Any, path: str, reading: Reading) -> Config:
    nodes = values["nodes"]
    self_name = reading.self_override or as_mapping(raw).get("self")
    if not self_name:
        reading.add("self", "missing (or give --node / ORCH_NODE)")
    elif nodes and str(self_name) not in {n.name for n in nodes}:
        reading.add("self", f"{self_name!r} is not one of nodes: {', '.join(n.name for n in nodes)}")
    values["self_name"] = str(self_name)
    if values["atlas"]:
        for n in nodes:
            try:
                parse_ipv4_address(n.atlas_address)
            except ValueError:
                reading.add(f"nodes.{n.name}.atlas_address", f"{n.host!r} is not an IPv4 address; set atlas_address to IPv4:port")
    return cls(**values)


# --- the schema as key lists and as a reference -------------------------------------


def all_keys(cls: Any = Config) -> Iterator[Tuple[str, Any]]:
    """Every key of the file: (dotted path, its field), as docs/configuration.md lists them."""
    return paths(cls)


# The key lists, derived from the schema (tests/test_conf_files.py checks the example shows each).
KNOWN_KEYS = keys_of(Config)
NODE_KEYS = keys_of(Node)
MYSQL_KEYS = keys_of(Account)
FAILOVER_KEYS = keys_of(Failover)
ATLAS_KEYS = keys_of(AtlasInstance)
ATLAS_ADMIN_KEYS = keys_of(AtlasInstance, "admin")
MAINTAINER_KEYS = keys_of(MaintainerSettings)
KEEPALIVED_KEYS = keys_of(Keepalived)
HAPROXY_KEYS = keys_of(Haproxy)
LOG_KEYS = keys_of(Config, "log")
ALERTS_KEYS = keys_of(Alerts)
WEBHOOK_KEYS = keys_of(Webhook)
SMTP_KEYS = keys_of(Smtp)
ETCD_KEYS = keys_of(Etcd)


def reference(cls: Any = Config) -> str:
    """The configuration reference as Markdown: every key with its type, default, allowed
    values and help, one table per section. docs/configuration.md is this text."""
    return "\n".join([
        "# Configuration reference",
        "",
        "<!-- Generated by orchestrator.config.reference() from the schema in orchestrator/config.py;",
        "     tests/test_config_schema.py fails when this file differs from it. Edit the schema, then run",
        "     python -c 'from orchestrator.config import reference; print(reference(), end=\"\")' > docs/configuration.md -->",
        "",
        "orch reads `/etc/orch/orch.yaml` (or `-c FILE`, or `$ORCH_CONFIG`); `conf/orch.yaml` is a",
        "complete example and [orch.yaml by example](orch-yaml.md) explains it. An unknown key at any",
        "level is an error; `orch check-config` reports every problem with its path. A relative",
        "file path is relative to the directory of orch.yaml.",
        "",
        *tables(cls),
    ])


# --- reading a whole file: validate (pure), resolve (files), parse (both), load -------


def _base_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path)) if path and not path.startswith("<") else os.getcwd()


def _validate(raw: Any, path: str, reading: Reading) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{path}: expected a YAML mapping at the top level"])
    return read(Config, raw, "", reading, given={"path": path})


def validate(raw: Any, path: str = "<config>", self_override: Optional[str] = None) -> Config:
    """Validate a loaded YAML document against the schema without reading any file:
    password_file and tls_ca stay paths (resolve() reads them). Raise ConfigError listing
    every problem."""
    reading = Reading(_base_dir(path), self_override)
    cfg = _validate(raw, path, reading)
    if reading.items:
        raise ConfigError(reading.items)
    return cfg


def resolve(cfg: Config) -> Config:
    """Read what a validated config points at: passwords from their files, the CA's
    presence, hook programs (warnings). Raise ConfigError listing every problem."""
    reading = Reading()
    cfg = _resolve(cfg, reading)
    if reading.items:
        raise ConfigError(reading.items)
    return cfg


def parse(raw: Any, path: str = "<config>", self_override: Optional[str] = None) -> Config:
    """Validate a loaded YAML document, then resolve it; raise ConfigError listing every
    problem of both steps at once."""
    reading = Reading(_base_dir(path), self_override)
    cfg = _resolve(_validate(raw, path, reading), reading)
    if reading.items:
        raise ConfigError(reading.items)
    return cfg


def _resolve(cfg: Config, reading: Reading) -> Config:
    mysql = _with_password(cfg.mysql, "mysql", reading)
    if mysql.tls_ca and not os.path.isfile(mysql.tls_ca):
        reading.add("mysql.tls_ca", f"{mysql.tls_ca} does not exist")
    replication = _with_password(cfg.replication, "replication", reading)
    if len(replication.password.encode("utf-8")) > MAX_REPLICATION_PASSWORD:
        # MariaDB keeps at most 96 bytes of MASTER_PASSWORD (MySQL: 32 characters).
        reading.add("replication.password", f"longer than {MAX_REPLICATION_PASSWORD} bytes of UTF-8: the server would not keep it whole")
    atlas = tuple(_with_password(a, f"atlas[{i}].admin", reading) for i, a in enumerate(cfg.atlas))
    alerts = cfg.alerts
    if alerts is not None and alerts.smtp is not None and alerts.smtp.password_file:
        alerts = replace(alerts, smtp=_with_password(alerts.smtp, "alerts.smtp", reading))
    etcd = cfg.etcd
    if etcd is not None:
        etcd = _with_password(etcd, "etcd", reading) if etcd.password_file else etcd
        for name in ("cacert", "cert", "key"):
            if getattr(etcd, name) and not os.path.isfile(getattr(etcd, name)):
                reading.add(f"etcd.{name}", f"{getattr(etcd, name)} does not exist")
    return replace(cfg, mysql=mysql, replication=replication, atlas=atlas, alerts=alerts, etcd=etcd,
                   warnings=cfg.warnings + _hook_warnings(cfg.hooks))


def _with_password(holder: Any, path: str, reading: Reading) -> Any:
    """``holder`` with its password read from its password_file (when it names one)."""
    pf = holder.password_file
    if not pf:
        return holder
    try:
        with open(pf, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except OSError as exc:
        reading.add(f"{path}.password_file", f"cannot read {pf}: {exc.strerror}")
        return holder
    if not value:
        reading.add(f"{path}.password_file", f"{pf} is empty")
    return replace(holder, password=value)


def _hook_warnings(hooks: Hooks) -> Tuple[str, ...]:
    """A pre hook that cannot run refuses every promotion: say so at every load."""
    out = []
    for phase in HOOK_PHASES:
        for i, argv in enumerate(hooks.of(phase)):
            if not os.access(argv[0], os.X_OK):
                what = "every promotion would be refused" if phase.startswith("pre_") else "it would fail"
                out.append(f"hooks.{phase}[{i}]: {argv[0]} is missing or not executable: {what}")
    return tuple(out)


def parse_ipv4_address(text: str) -> str:
    """Validate ``a.b.c.d:port`` (what Atlas accepts); return it normalized or raise ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not IPv4:port")
    try:
        ip = ipv4_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not IPv4:port (Atlas takes no host names)") from None
    return f"{ip}:{int(port)}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ipv4_address(text: str) -> str:
    """``str(ipaddress.IPv4Address(text))``: the address, or ValueError."""
    return str(ipaddress.IPv4Address(text))


def ip_address(text: str) -> str:
    """``str(ipaddress.ip_address(text))``: the address, normalized, or ValueError."""
    return str(ipaddress.ip_address(text))


def _permission_warnings(path: str, raw: Any) -> Tuple[str, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and "password:" in _text_of(raw):
        return (f"{path} holds a password and is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it",)
    return ()


def _text_of(raw: Any) -> str:
    # Look for inline password keys anywhere in the document.
    if isinstance(raw, Mapping):
        return "".join(("password:" if k == "password" else "") + _text_of(v) for k, v in raw.items())
    if isinstance(raw, list):
        return "".join(_text_of(v) for v in raw)
    return ""


def load(path: Optional[str] = None, node: Optional[str] = None) -> Config:
    """Read and validate the YAML config. ``path`` defaults to $ORCH_CONFIG or /etc/orch/orch.yaml.

    What came from the command line (or its environment variables) and is wrong is bad
    input (UsageError, exit 2): a config file that cannot be read, a --node that is not one
    of the file's nodes. A file that says something wrong is a ConfigError (exit 1)."""
    given = "-c" if path else ("$ORCH_CONFIG" if os.environ.get("ORCH_CONFIG") else "the default")
    path = path or os.environ.get("ORCH_CONFIG") or DEFAULT_PATH
    flag = "--node" if node else "ORCH_NODE"
    node = node or os.environ.get("ORCH_NODE") or None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"orch: cannot read the config file {path} ({given}): {exc.strerror}") from None
    raw = _parse_yaml(path, text)
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    if node and isinstance(nodes, Mapping) and nodes and node not in nodes:
        raise UsageError(f"orch: {flag} {node} is not one of nodes ({', '.join(str(n) for n in nodes)}) in {path}")
    cfg = parse(raw, path, node)
    _remove_compiled_copy(path)
    warnings = _permission_warnings(path, raw)
    if warnings:
        cfg = replace(cfg, warnings=cfg.warnings + warnings)
    return cfg


def _parse_yaml(path: str, text: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {problem}"]) from None


def compiled_path(path: str) -> str:
    """Where orch up to 0.x kept a parsed copy of the config (passwords included) beside it."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.compiled")


def _remove_compiled_copy(path: str) -> None:
    """Remove the parsed copy an earlier orch wrote next to the config: a second copy of the
    configuration, passwords included, that nothing reads any more."""
    stale = compiled_path(path)
    try:
        st = os.lstat(stale)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        return  # not a file orch wrote: leave it alone
    try:
        os.unlink(stale)
    except OSError as exc:
        log.warning("cannot remove %s, an old parsed copy of the config: %s", stale, exc.strerror)
        return
    log.info("removed %s, an old parsed copy of the config (orch no longer keeps one)", stale)
