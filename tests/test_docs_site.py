"""The documentation site: mkdocs.yml and docs/ build with ``mkdocs build --strict`` (no broken
link or anchor, no page left out of the nav) offline, the CLI reference is the parser's, and
the README is the short entry it should be."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import yaml

from orchestrator.argv import build_parser
from orchestrator.commands.manpage import markdown_reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
# Pages other work adds at its merge (not listed in the nav until then).
ARRIVING = {"etcd.md", "http-api.md", "haproxy.md", "status-page.md", "monitoring.md"}


def mkdocs_config() -> Any:
    return yaml.safe_load(MKDOCS_YML.read_text())


def nav_pages(nav: Any) -> Iterator[str]:
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            if isinstance(value, list):
                yield from nav_pages(value)
            else:
                yield value


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=300, env=env)


def test_mkdocs_is_installed():
    """./dev setup installs the docs extra; without it the strict build below cannot run."""
    import mkdocs  # noqa: F401
    import material  # noqa: F401


def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    r = build(MKDOCS_YML, site)
    assert r.returncode == 0, r.stdout + r.stderr
    for page in nav_pages(mkdocs_config()["nav"]):
        html = site / (page[:-len("index.md")] + "index.html" if page.endswith("index.md") else page[:-3] + "/index.html")
        assert html.is_file(), page
    install = (site / "install" / "index.html").read_text()
    # The tagged blocks (```bash install-step=both) render as code, not as stray text.
    assert "```bash" not in install and "apt-get" in install
    assert "```console" not in (site / "runbooks" / "switchover" / "index.html").read_text()


def test_the_site_fetches_nothing_from_outside(tmp_path):
    """No web fonts, no CDN, no plugin that needs the network: the theme's font is off and the
    only plugin is the local search; the built pages name no font or CDN host."""
    cfg = mkdocs_config()
    assert cfg["theme"]["font"] is False
    assert cfg.get("plugins") == ["search"]
    site = tmp_path / "site"
    assert build(MKDOCS_YML, site).returncode == 0
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text and "cdn.jsdelivr" not in text, html


@pytest.mark.parametrize("breakage", ["a link to a missing anchor", "a link to a missing page", "a page left out of the nav"])
def test_the_strict_build_catches(tmp_path, breakage):
    """The strict build is a check that can fail: each kind of rot breaks it."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    if breakage == "a link to a missing anchor":
        with open(tmp_path / "docs" / "index.md", "a") as f:
            f.write("\nSee [the limits](concepts.md#no-such-heading).\n")
    elif breakage == "a link to a missing page":
        with open(tmp_path / "docs" / "index.md", "a") as f:
            f.write("\nSee [nothing](no-such-page.md).\n")
    else:
        (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n")
    r = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0, f"{breakage}: the strict build passed\n{r.stdout}{r.stderr}"


def test_every_page_is_in_the_nav_once():
    pages = list(nav_pages(mkdocs_config()["nav"]))
    assert len(pages) == len(set(pages))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    # The arriving pages may be on disk or not, in the nav or not (their merge adds them).
    assert set(pages) - ARRIVING == on_disk - ARRIVING, (set(pages) - ARRIVING) ^ (on_disk - ARRIVING)


def test_the_cli_reference_is_the_parsers():
    text = (DOCS / "cli-reference.md").read_text()
    assert text == markdown_reference(build_parser()), (
        "docs/cli-reference.md differs from the parser; regenerate it with\n"
        "python -c 'from orchestrator.commands.manpage import markdown_reference as m; "
        "from orchestrator.argv import build_parser as b; print(m(b()), end=\"\")' > docs/cli-reference.md")
    for name in ("switchover", "pause", "resume", "history", "ack", "bootstrap", "doctor"):
        assert f"\n## orch {name}\n" in text, name
    assert "| `--for FOR` |" in text or "--for" in text


def test_the_readme_is_the_entry_the_rest_is_in_docs():
    """The two commands first, as indented lines (.ci/run reads `./dev test` there), what it is,
    and links to the pages, each of which exists."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    indented = [l for l in lines if l.startswith("    ./dev ")]
    assert indented[:2] == ["    ./dev sandbox", "    ./dev test"]
    assert lines.index("    ./dev sandbox") < 10
    assert len(lines) < 80, "README is the entry; the content belongs in docs/"
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 12
    for link in links:
        assert (ROOT / link).is_file(), link
    linked = {l[len("docs/"):] for l in links}
    assert set(nav_pages(mkdocs_config()["nav"])) <= linked | {"runbooks/" + p.name for p in (DOCS / "runbooks").glob("*.md")}
    ci = subprocess.run(["sed", "-n", r"s/^    \(\.\/dev test\)\( .*\)\{0,1\}$/\1/p", str(ROOT / "README.md")],
                        capture_output=True, text=True, check=True)
    assert ci.stdout.splitlines()[:1] == ["./dev test"]


def test_no_page_points_operators_at_the_readme_for_content():
    """The content moved: code, conf and docs name the docs page, not "README"."""
    found: List[str] = []
    for path in [*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "conf").iterdir(), *DOCS.rglob("*.md")]:
        if "_shipped" in path.parts or not path.is_file():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "README" in line:
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
