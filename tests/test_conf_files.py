"""The shipped service files and conf/orch.yaml: every config key shown, the example valid."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from orchestrator import config

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
ORCH = Path(sys.executable).parent / "orch"


def all_keys():
    tuples = [v for k, v in vars(config).items() if k.endswith("_KEYS") and isinstance(v, tuple)]
    assert config.KNOWN_KEYS in tuples and len(tuples) >= 10
    return sorted({key for t in tuples for key in t} | set(config.HOOK_PHASES))


def test_every_config_key_is_in_the_example_with_a_comment():
    text = (CONF / "orch.yaml").read_text()
    missing = [k for k in all_keys() if not re.search(rf"(^|[\s{{,#]){re.escape(k)}:", text, re.M)]
    assert missing == [], f"conf/orch.yaml does not show: {missing}"
    uncommented = [line for line in text.splitlines()
                   if re.match(r"^\s*[a-z_]+:", line) and "#" not in line and not line.rstrip().endswith(":")
                   and not re.match(r"^\s*(user|password_file|server\d): ", line)]
    assert uncommented == [], f"keys without a comment: {uncommented}"


def test_example_parses_with_check_config(tmp_path):
    """orch check-config on the example, its password files made real and paths moved into tmp."""
    text = (CONF / "orch.yaml").read_text()
    for name in set(re.findall(r"/etc/orch/([\w.-]+\.pass)", text)):
        (tmp_path / name).write_text("secret-from-file\n")
        (tmp_path / name).chmod(0o600)
    text = text.replace("/etc/orch/", f"{tmp_path}/").replace("/var/lib/orch", str(tmp_path / "state"))
    path = tmp_path / "orch.yaml"
    path.write_text(text)
    path.chmod(0o600)
    r = subprocess.run([str(ORCH), "-c", str(path), "check-config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "config OK" in r.stdout, r.stdout + r.stderr
    assert "secret-from-file" not in r.stdout + r.stderr


def test_maintain_unit_restarts_and_is_hardened_but_can_write_what_orch_writes():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((CONF / "orch-maintain.service").read_text())
    service = unit["Service"]
    assert service["Restart"] in ("always", "on-failure")
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    writable = service["ReadWritePaths"].split()
    text = (CONF / "orch.yaml").read_text()
    state_dir = re.search(r"^state_dir: (\S+)", text, re.M).group(1)
    atlas_conf = re.search(r"config_file: (\S+)", text).group(1)
    assert state_dir in writable and str(Path(atlas_conf).parent) in writable, writable
    assert "-/var/log/orch" in writable or "/var/log/orch" in writable
    # A restart must not kill a command the HTTP API runs (a switchover half done): the maintainer alone is signalled.
    assert service["KillMode"] == "process"


def test_logrotate_covers_the_notify_log():
    text = (CONF / "logrotate-orch").read_text()
    assert "/var/log/orch/notify.log" in text
    assert "journal.jsonl rotates itself" in text
