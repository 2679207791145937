"""Pure rules of the bounded fence: which sessions may be killed, and what is logged of them."""

import pytest

from orchestrator.fence import may_block_fence, session_text, statement_digest


@pytest.mark.parametrize("info, blocks", [
    ("UPDATE t SET v = 'x' WHERE id < 10", True),
    ("INSERT INTO t SELECT * FROM u", True),
    ("delete from t", True),
    ("CALL do_writes()", True),
    ("ALTER TABLE t ADD c INT", True),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", True),
    ("SELECT a INTO OUTFILE '/tmp/x' FROM t", True),
    (None, True),  # no statement text shown: it may be committing
    ("SELECT SLEEP(60)", False),
    ("  /* app */ select count(*) from t", False),
    ("SHOW FULL PROCESSLIST", False),
    ("EXPLAIN UPDATE t SET v = 1", False),
])
def test_only_statements_that_may_write_are_killed(info, blocks):
    assert may_block_fence(info) is blocks


def test_digest_keeps_the_shape_never_the_values():
    a = statement_digest("UPDATE t SET secret = 'hunter2', n = 42 WHERE id = 7")
    b = statement_digest("UPDATE  t SET secret = \"other\", n = 1 WHERE id = 99")
    assert a == b  # same shape, same digest
    assert "hunter2" not in a and "42" not in a and "UPDATE t SET secret = ?, n = ? WHERE id = ?" in a
    text = session_text({"id": 12, "user": "app", "host": "10.0.0.5:41234", "command": "Query", "time": 58,
                         "info": "UPDATE t SET card = '4111111111111111'"})
    assert "id 12" in text and "'app'" in text and "10.0.0.5:41234" in text and "4111" not in text
