"""orchestrator/statefile.py: a state file is replaced whole, 0600, and a failed write
leaves the old one and no temporary file behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from orchestrator.statefile import replace_json


def test_replaced_whole_and_private(tmp_path):
    path = str(tmp_path / "state.json")
    replace_json(path, {"a": 1})
    replace_json(path, {"b": "ü"}, fsync=True, newline=True)
    assert json.loads(open(path, encoding="utf-8").read()) == {"b": "ü"}
    assert open(path, encoding="utf-8").read().endswith("}\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "state.json")
    replace_json(path, {"old": True})
    with pytest.raises(TypeError):
        replace_json(path, {"bad": object()})  # fails before anything is written
    os.rename(path, path + ".keep")
    os.mkdir(path)  # a directory in the way: the rename fails after the write
    with pytest.raises(OSError):
        replace_json(path, {"new": True})
    assert sorted(os.listdir(tmp_path)) == ["state.json", "state.json.keep"]
    assert json.loads(open(path + ".keep").read()) == {"old": True}
