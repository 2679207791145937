"""keepalived's track file and orch's record of the last hand-over, on real files."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.errors import OrchError
from orchestrator.keepalived.track import HANDOVER_RECORD, last_handback_age, read_track_file, record_handover, write_track_file


def test_written_in_place_and_read_back(tmp_path):
    path = str(tmp_path / "track")
    assert read_track_file(path) == ""  # not there yet
    assert write_track_file(path, True) == "written"
    inode = os.stat(path).st_ino
    assert read_track_file(path) == "1"
    write_track_file(path, False)
    assert read_track_file(path) == "0" and os.stat(path).st_ino == inode, "rewritten in place"


def test_an_unwritable_track_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(OrchError, match="cannot write keepalived's track file .*/missing/track"):
        write_track_file(str(tmp_path / "missing" / "track"), True)


def test_the_hand_back_age_counts_from_the_last_zero(tmp_path):
    state = str(tmp_path)
    assert last_handback_age(state) is None  # never handed over
    record_handover(state, True)
    assert last_handback_age(state) is None  # handed over, not back yet
    record_handover(state, False)
    age = last_handback_age(state)
    assert age is not None and 0 <= age < 5
    (tmp_path / HANDOVER_RECORD).write_text(json.dumps({"value": "0"}))  # no time: unknown
    assert last_handback_age(state) is None


def test_a_hand_over_that_cannot_be_recorded_is_only_logged(tmp_path, caplog):
    record_handover(str(tmp_path / "missing"), True)
    assert "cannot record the hand-over" in caplog.text
