import pytest

from orchestrator.gtid import BinlogState, GtidError, GtidPos, GtidSet, MariaGtid, mariadb_errant

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "4f22ab58-82db-22f2-af44-d91bba53a673"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ""),
        (None, ""),
        (f"{A}:1-5", f"{A}:1-5"),
        (f"{A}:1-5:6-9", f"{A}:1-9"),  # adjacent intervals merge
        (f"{A}:7:1-3:2-4", f"{A}:1-4:7"),
        (f"{B}:1,\n{A}:1-2", f"{A}:1-2,{B}:1"),  # sorted, newlines tolerated
        (f"{A.upper()}:3", f"{A}:3"),
        (f"{A.replace('-', '')}:3", f"{A}:3"),
        (f"{A}:tag_1:1-2,{A}:5", f"{A}:5,{A}:tag_1:1-2"),  # MySQL 8.4 tagged GTIDs
    ],
)
def test_gtid_set_parse_and_format(text, expected):
    assert str(GtidSet.parse(text)) == expected


@pytest.mark.parametrize("bad", ["nonsense", f"{A}", f"{A}:0", f"{A}:5-3", f"{A}:x-y", "1-2-3"])
def test_gtid_set_rejects_garbage(bad):
    with pytest.raises(GtidError):
        GtidSet.parse(bad)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (f"{A}:1-10", f"{A}:1-10", ""),
        (f"{A}:1-10", f"{A}:1-5", f"{A}:6-10"),
        (f"{A}:1-10", f"{A}:3-4:8", f"{A}:1-2:5-7:9-10"),
        (f"{A}:1-10,{B}:1-3", f"{A}:1-10", f"{B}:1-3"),
        (f"{A}:1-3", f"{B}:1-3", f"{A}:1-3"),
        (f"{A}:1-3", f"{A}:1-100", ""),
        (f"{A}:tag:1-3", f"{A}:1-3", f"{A}:tag:1-3"),  # a tag is its own source
    ],
)
def test_gtid_subtract(a, b, expected):
    assert str(GtidSet.parse(a).subtract(GtidSet.parse(b))) == expected


def test_mariadb_position_parse():
    pos = GtidPos.parse("1-2-5, 0-1-100")
    assert str(pos) == "0-1-100,1-2-5"
    with pytest.raises(GtidError):
        GtidPos.parse("0-1-5,0-2-6")  # a position has one GTID per domain
    with pytest.raises(GtidError):
        GtidPos.parse("0-1")


def test_mariadb_missing_from_compares_sequence_per_domain():
    target = GtidPos.parse("0-1-100,1-2-5")
    assert str(target.missing_from(GtidPos.parse("0-1-100,1-2-5"))) == ""
    assert str(target.missing_from(GtidPos.parse("0-1-99,1-2-9"))) == "0-1-100"
    assert str(target.missing_from(GtidPos.parse("0-2-150"))) == "1-2-5"
    assert str(target.missing_from(GtidPos())) == "0-1-100,1-2-5"


def test_mariadb_errant_needs_same_server_id():
    # The peer reached seq 100 in domain 0, but under server 2: our 0-1-100 is divergence.
    errant = mariadb_errant(GtidPos.parse("0-1-100"), BinlogState.parse("0-1-99,0-2-100"))
    assert errant == (MariaGtid(0, 1, 100),)


def test_mariadb_errant_none_when_peer_has_it():
    assert mariadb_errant(GtidPos.parse("0-1-100"), BinlogState.parse("0-1-100,0-2-140")) == ()
    assert mariadb_errant(GtidPos.parse("0-1-100,1-1-3"), BinlogState.parse("0-1-120,1-1-3")) == ()
    assert mariadb_errant(GtidPos(), BinlogState.parse("0-2-3")) == ()


def test_mariadb_errant_missing_domain():
    assert mariadb_errant(GtidPos.parse("0-1-4,7-1-2"), BinlogState.parse("0-1-4")) == (MariaGtid(7, 1, 2),)
