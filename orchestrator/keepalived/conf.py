"""keepalived.conf as orch reads it: a tree of statements, and what orch asks of it.

orch doctor checks the file against orch.yaml (commands/doctor.py holds the checks); this
module only parses and answers questions: which vrrp_instance, how its events leave
keepalived (notify lines, a notify FIFO), what it tracks and with which weight, which
track_file reads orch's track file, the addresses it moves, and the commands of its
tracked vrrp_scripts (the health check's client defaults file, the witness ping).
Included files are not followed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from ..config import Keepalived  # config imports nothing of keepalived: only for the annotations

# hooks/check-mysql's client defaults file when its vrrp_script names none.
DEFAULT_CHECK_CNF = "/etc/orch/check.cnf"
HEALTH_CHECKS = ("check-mysql", "orch-check-mysql")  # the hook's names: the source tree's, the console script
PINGS = ("ping", "ping6", "fping", "fping6")
NOTIFY_FIFOS = ("notify_fifo", "vrrp_notify_fifo")
NOTIFY_PER_STATE = ("notify_master", "notify_backup", "notify_fault", "notify_stop")
TRACKS = ("track_script", "track_interface", "track_file", "track_process")


@dataclass
class Block:
    """One keepalived statement: its words and, for a block, its children."""

    words: List[str]
    children: Optional[List["Block"]] = None

    def find(self, keyword: str) -> List["Block"]:
        return [c for c in self.children or [] if c.words and c.words[0] == keyword]

    def has(self, keyword: str) -> bool:
        return bool(self.find(keyword))


def _tokens(text: str) -> List[Optional[str]]:
    """Words, quoted strings and braces; None marks a line end. # and ! start comments."""
    out: List[Optional[str]] = []
    for line in text.splitlines():
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if ch in "#!":
                break
            if ch.isspace():
                i += 1
            elif ch in "{}":
                out.append(ch)
                i += 1
            elif ch == '"':
                end = line.find('"', i + 1)
                end = n if end < 0 else end
                out.append(line[i + 1:end])
                i = end + 1
            else:
                j = i
                while j < n and not line[j].isspace() and line[j] not in '{}"':
                    j += 1
                out.append(line[i:j])
                i = j
        out.append(None)
    return out


def parse(text: str) -> Block:
    """keepalived.conf as a tree of statements (the root's children are the top level)."""
    tokens = _tokens(text)
    pos = 0

    def block() -> List[Block]:
        nonlocal pos
        items: List[Block] = []
        words: List[str] = []
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok is None:
                if words:
                    items.append(Block(words))
                    words = []
            elif tok == "{":
                items.append(Block(words, block()))
                words = []
            elif tok == "}":
                if words:
                    items.append(Block(words))
                return items
            else:
                words.append(tok)
        if words:
            items.append(Block(words))
        return items

    return Block(["<root>"], block())


def weight(words: Sequence[str]) -> int:
    """The ``weight N`` among a statement's words (0 when none, or not a number)."""
    for i, w in enumerate(words[:-1]):
        if w == "weight":
            try:
                return int(words[i + 1])
            except ValueError:
                return 0
    return 0


def _block_weight(block: Block) -> int:
    """The weight a block's own ``weight`` line gives (a vrrp_script's, a track_file's)."""
    return next((weight(c.words) for c in block.children or [] if c.words[0] == "weight"), 0)


# --- the top level ---------------------------------------------------------------------------


def global_defs(root: Block) -> Block:
    """Every global_defs block's statements as one."""
    return Block(["global_defs"], [c for g in root.find("global_defs") for c in g.children or []])


def instances(root: Block) -> List[Block]:
    return root.find("vrrp_instance")


def name_of(block: Block) -> str:
    """A named block's name (vrrp_instance VI_1: "VI_1"), "" when it has none."""
    return block.words[1] if len(block.words) > 1 else ""


def chosen_instance(root: Block, ka: Keepalived) -> Optional[Block]:
    """The vrrp_instance keepalived.instance names (the first one when unset)."""
    found = instances(root)
    if ka.instance:
        return next((i for i in found if len(i.words) > 1 and i.words[1] == ka.instance), None)
    return found[0] if found else None


def notify_fifos(root: Block) -> List[Tuple[str, str]]:
    """(keyword, path) of each notify FIFO global_defs names."""
    return [(b.words[0], b.words[1]) for b in global_defs(root).children or [] if b.words[0] in NOTIFY_FIFOS and len(b.words) > 1]


# --- one instance ----------------------------------------------------------------------------


def sync_groups(root: Block, inst: Block) -> List[Block]:
    """The vrrp_sync_groups whose group lists the instance."""
    iname = name_of(inst)
    return [g for g in root.find("vrrp_sync_group") if any(iname in (b.words or []) for gb in g.find("group") for b in gb.children or [])]


def notify_lines(root: Block, inst: Block) -> List[Block]:
    """The instance's notify statements, then its sync groups'."""
    return list(inst.find("notify")) + [b for g in sync_groups(root, inst) for b in g.find("notify")]


def runs_orch_notify(command: str) -> bool:
    """Whether a notify line's command runs orch's hook (keepalived-notify, or orch ... notify)."""
    return "keepalived-notify" in command or bool(re.search(r"\borch\b.*\bnotify\b", command))


def per_state_notify(inst: Block) -> List[str]:
    """The notify_master/_backup/_fault/_stop keywords the instance has."""
    return [b.words[0] for b in (inst.children or []) if b.words[0] in NOTIFY_PER_STATE]


def notify_nodes(root: Block, inst: Block) -> List[str]:
    """The --node of each notify line that runs orch's hook for this instance (or its sync group)."""
    out = []
    for b in notify_lines(root, inst):
        try:
            words = shlex.split(b.words[1]) if len(b.words) > 1 else []
        except ValueError:
            words = b.words[1].split()
        for i, w in enumerate(words):
            if w == "--node" and i + 1 < len(words):
                out.append(words[i + 1])
            elif w.startswith("--node="):
                out.append(w.split("=", 1)[1])
    return out


def initial_state(inst: Block) -> str:
    """The instance's ``state`` (MASTER or BACKUP; "" when unset)."""
    return next((b.words[1] for b in inst.find("state") if len(b.words) > 1), "")


def weighted_tracks(root: Block, inst: Block) -> List[str]:
    """Each tracked script, interface, file or process that has a weight, as
    "track_script chk (weight -20)"; a vrrp_script's own weight counts too."""
    scripts = {s.words[1]: s for s in root.find("vrrp_script") if len(s.words) > 1}
    out = []
    for section in TRACKS:
        for blk in inst.find(section):
            for entry in blk.children or []:
                w = weight(entry.words)
                if not w and section == "track_script" and entry.words[0] in scripts:
                    w = _block_weight(scripts[entry.words[0]])
                if w:
                    out.append(f"{section} {entry.words[0]} (weight {w})")
    return out


def virtual_addresses(inst: Block) -> List[str]:
    """The addresses the instance moves (virtual_ipaddress, without the prefix length)."""
    return [e.words[0].split("/")[0] for blk in inst.find("virtual_ipaddress") for e in blk.children or []]


@dataclass(frozen=True)
class TrackFileUse:
    """How keepalived reads one file: the track_file blocks naming it, the instance's
    track_file entries of those, and whether the first such entry is weighted."""

    named: Tuple[str, ...]  # track_file (or vrrp_track_file) blocks whose file is the path
    tracked: Tuple[str, ...]  # those the instance's track_file lists
    weighted: bool  # the first tracked one has a weight (on its entry or its block)


def track_file_use(root: Block, inst: Block, path: str) -> TrackFileUse:
    """How the instance tracks ``path`` (orch's keepalived.track_file)."""
    # keepalived 2.1+ spells it track_file at the top level; vrrp_track_file before.
    files = {b.words[1]: b for b in root.find("track_file") + root.find("vrrp_track_file") if len(b.words) > 1 and b.children is not None}
    named = [n for n, b in files.items() if any(len(c.words) > 1 and c.words[0] == "file" and c.words[1] == path for c in b.children or [])]
    tracked = [e for blk in inst.find("track_file") for e in blk.children or [] if e.words[0] in named]
    weighted = bool(tracked) and bool(weight(tracked[0].words) or any(
        weight(c.words) for c in files[tracked[0].words[0]].children or [] if c.words[0] == "weight"))
    return TrackFileUse(tuple(named), tuple(e.words[0] for e in tracked), weighted)


# --- the tracked scripts ---------------------------------------------------------------------


def _script_words(block: Block) -> List[str]:
    """A vrrp_script's command as words (keepalived splits it on blanks, quotes kept together)."""
    text = next((c.words[1] for c in block.children or [] if c.words[0] == "script" and len(c.words) > 1), "")
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def tracked_scripts(root: Block, inst: Block) -> List[Tuple[str, List[str]]]:
    """(name, command words) of each vrrp_script the instance tracks."""
    scripts = {s.words[1]: s for s in root.find("vrrp_script") if len(s.words) > 1}
    names = [e.words[0] for blk in inst.find("track_script") for e in blk.children or []]
    return [(n, _script_words(scripts[n])) for n in names if n in scripts]


def program(words: Sequence[str]) -> str:
    """A command's program without its directory ("" for no command)."""
    return words[0].rsplit("/", 1)[-1] if words else ""


def health_check(root: Block, inst: Block) -> Tuple[Optional[Tuple[str, str]], Tuple[str, ...]]:
    """The first tracked vrrp_script running hooks/check-mysql, as (script name, its client
    defaults file), or None; and, before it, how each tracked ``orch ... check`` script
    checks the server ("chk: orch -c ... check")."""
    others: List[str] = []
    for script, words in tracked_scripts(root, inst):
        if program(words) in HEALTH_CHECKS:
            return (script, words[1] if len(words) > 1 else DEFAULT_CHECK_CNF), tuple(others)
        if program(words) == "orch" and "check" in words:
            others.append(f"{script}: {' '.join(words)}")
    return None, tuple(others)


def ping_target(words: Sequence[str]) -> str:
    """The address a ping command pings (its last word), or "" when it is not a ping."""
    if program(words) not in PINGS:
        return ""
    return words[-1] if not words[-1].startswith("-") else ""


def witness_pings(root: Block, inst: Block) -> List[Tuple[str, str]]:
    """(script name, address) of each tracked vrrp_script that pings an address (chk_witness)."""
    pinged = [(n, ping_target(words)) for n, words in tracked_scripts(root, inst)]
    return [(n, target) for n, target in pinged if target]
