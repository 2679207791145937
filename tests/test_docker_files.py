"""docker/: no Docker engine here, so only the files' consistency is checked (docker/README.md says so)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from orchestrator.config import parse

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"


def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def copy_sources(dockerfile: Path):
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            args = [w for w in words[1:] if not w.startswith("--")]
            yield from args[:-1]


def test_compose_parses_and_pairs_mysql_84_with_the_maintainer():
    services = compose()["services"]
    mysql = [s for s in services.values() if str(s.get("image", "")).startswith("mysql:")]
    assert len(mysql) == 2 and all(s["image"] == "mysql:8.4" for s in mysql)
    maintainers = [s for s in services.values() if "maintain" in s.get("command", [])]
    assert len(maintainers) == 2
    assert {m["command"][m["command"].index("--node") + 1] for m in maintainers} == {"server1", "server2"}


def test_compose_references_files_that_exist():
    doc = compose()
    for name, service in doc["services"].items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: {source}"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: undeclared secret {secret}"
        for network in service.get("networks", []):
            assert network in doc["networks"], f"{name}: undeclared network {network}"
    for secret in doc["secrets"].values():
        assert set(secret) == {"environment"}, "passwords come from the environment, never from a file in the repository"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "orch.Dockerfile"])
def test_dockerfile_copy_sources_exist(dockerfile):
    sources = list(copy_sources(DOCKER / dockerfile))
    assert sources, "no COPY found"
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: missing (the build context is the repository root)"


def test_compose_orch_config_is_valid():
    raw = yaml.safe_load((DOCKER / "orch.yaml").read_text())
    for section in ("mysql", "replication"):  # the secrets exist only inside the containers
        raw[section]["password"] = "x"
        del raw[section]["password_file"]
    cfg = parse(raw)
    addresses = {n.host for n in cfg.nodes}
    ips = {s["networks"]["orch"]["ipv4_address"] for s in compose()["services"].values()
           if isinstance(s.get("networks"), dict)}
    assert addresses == ips


def test_readme_says_it_has_not_been_run():
    text = (DOCKER / "README.md").read_text()
    assert "has not been run in CI" in text.replace("\n", " ").replace("**", "")
