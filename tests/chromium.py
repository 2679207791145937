"""Headless Chromium (Debian's package) for the page tests: the DOM after scripts ran, a
screenshot, and a small tree of the dumped DOM to check rendered content by element.

Offline: every page under test is self-contained; Chromium gets a profile of its own in the
test's directory, so tests running side by side never share one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", "--disable-sync", "--hide-scrollbars")
TIMEOUT = 90  # seconds for one Chromium run


def require() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (./dev setup does)")


def _run(url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    require()
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def dump_dom(url: str, workdir: Path, virtual_time_ms: int = 0) -> str:
    """The page's DOM after its scripts ran (``--virtual-time-budget`` lets timers fire)."""
    extra = (f"--virtual-time-budget={virtual_time_ms}",) if virtual_time_ms else ()
    return _run(url, workdir, "--dump-dom", *extra).stdout


def screenshot(url: str, png: Path, workdir: Path, width: int = 1280, height: int = 2000) -> Path:
    """A PNG of the page at ``width`` x ``height``."""
    _run(url, workdir, f"--screenshot={png}", f"--window-size={width},{height}")
    assert png.exists() and png.stat().st_size > 10_000, f"no screenshot at {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return png


@dataclass
class Element:
    tag: str
    attrs: Dict[str, str]
    children: List["Element"] = field(default_factory=list)
    text_parts: List[str] = field(default_factory=list)  # text directly inside, and the children's in order

    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())

    def iter(self) -> Iterator["Element"]:
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: Optional[str] = None, **attrs: str) -> List["Element"]:
        """Elements below (and including) this one with ``tag`` and every attribute given
        (``class_`` matches one class among several; ``data_x`` is ``data-x``)."""
        out = []
        for el in self.iter():
            if tag is not None and el.tag != tag:
                continue
            ok = True
            for key, want in attrs.items():
                name = "class" if key == "class_" else key.replace("_", "-")
                have = el.attrs.get(name)
                if have is None or (name == "class" and want not in have.split()) or (name != "class" and have != want):
                    ok = False
                    break
            if ok:
                out.append(el)
        return out

    def one(self, tag: Optional[str] = None, **attrs: str) -> "Element":
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag or '*'} {attrs}>, found {len(found)}"
        return found[0]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack: List[Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el.text_parts.append(data)


def parse(dom: str) -> Element:
    """A tree of the DOM Chromium dumped."""
    builder = _Builder()
    builder.feed(dom)
    builder.close()
    return builder.root
