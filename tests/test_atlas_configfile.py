import os
import stat

import pytest

from orchestrator.atlas import configfile
from orchestrator.atlas.configfile import read_ro_backends, rewrite_ro_backends
from orchestrator.errors import AtlasError

KEY = "proxy-read-only-backend-addresses"

# A realistic Atlas config with the traps: comments (one mentioning the key), blank lines,
# both spacings, trailing spaces, a weight, a key of the same name in another group.
CONFIG = (
    b"# Atlas config, hand edited\n"
    b"[mysql-proxy]\n"
    b"\n"
    b"#proxy-read-only-backend-addresses = 10.9.9.9:3306\n"
    b"admin-username = user\n"
    b"admin-password=pwd   \n"
    b"proxy-backend-addresses = 10.0.0.1:3306\n"
    b"proxy-read-only-backend-addresses = 10.0.0.2:3306@3, 10.0.0.3:3306\n"
    b"pwds = app:DAJnl8cVzy8=\n"
    b"\tdaemon = true\n"
    b"\n"
    b"[other]\n"
    b"proxy-read-only-backend-addresses = 10.7.7.7:1\n"
)


def write(tmp_path, data=CONFIG, mode=0o640):
    path = tmp_path / "test.cnf"
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def lines_except_key(data: bytes):
    in_proxy = False
    kept = []
    for line in data.splitlines(keepends=True):
        if line.strip().startswith(b"["):
            in_proxy = line.strip() == b"[mysql-proxy]"
        if in_proxy and line.startswith(KEY.encode()):
            continue
        kept.append(line)
    return kept


def key_line(data: bytes) -> bytes:
    found = []
    in_proxy = False
    for line in data.splitlines(keepends=True):
        if line.strip().startswith(b"["):
            in_proxy = line.strip() == b"[mysql-proxy]"
        elif in_proxy and line.startswith(KEY.encode()):
            found.append(line)
    assert len(found) == 1, found
    return found[0]


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("test.cnf", "test.cnf.orch.bak"))


def test_read_gives_addresses_with_weights_in_file_order(tmp_path):
    assert read_ro_backends(write(tmp_path)) == [("10.0.0.2:3306", 3), ("10.0.0.3:3306", None)]


@pytest.mark.parametrize("line", [b"", KEY.encode() + b" = \n", KEY.encode() + b"=\n"])
def test_read_missing_or_empty_key_is_empty(tmp_path, line):
    assert read_ro_backends(write(tmp_path, b"[mysql-proxy]\nadmin-username=u\n" + line)) == []


def test_read_without_group_is_an_error(tmp_path):
    with pytest.raises(AtlasError, match=r"no \[mysql-proxy\] group"):
        read_ro_backends(write(tmp_path, b"[other]\n" + KEY.encode() + b"=10.0.0.2:3306\n"))


def test_remove_one_keeps_every_other_byte_and_the_weight(tmp_path):
    path = write(tmp_path)
    assert rewrite_ro_backends(path, ["10.0.0.2:3306"]) is True
    data = open(path, "rb").read()
    assert key_line(data) == KEY.encode() + b" = 10.0.0.2:3306@3\n"
    assert lines_except_key(data) == lines_except_key(CONFIG)
    assert read_ro_backends(path) == [("10.0.0.2:3306", 3)]


def test_add_one_appends_without_weight_and_keeps_separator_style(tmp_path):
    path = write(tmp_path)
    assert rewrite_ro_backends(path, ["10.0.0.4:3306", "10.0.0.3:3306", "10.0.0.2:3306"]) is True
    data = open(path, "rb").read()
    assert key_line(data) == KEY.encode() + b" = 10.0.0.2:3306@3, 10.0.0.3:3306, 10.0.0.4:3306\n"
    assert lines_except_key(data) == lines_except_key(CONFIG)


def test_no_space_style_and_crlf_are_kept(tmp_path):
    data = b"[mysql-proxy]\r\nadmin-username=u\r\n" + KEY.encode() + b"=10.0.0.2:3306,10.0.0.3:3306\r\nx=1"
    path = write(tmp_path, data)
    assert rewrite_ro_backends(path, ["10.0.0.3:3306", "10.0.0.5:3306"]) is True
    assert open(path, "rb").read() == (
        b"[mysql-proxy]\r\nadmin-username=u\r\n" + KEY.encode() + b"=10.0.0.3:3306,10.0.0.5:3306\r\nx=1"
    )


def test_empty_list_writes_an_empty_value(tmp_path):
    path = write(tmp_path)
    assert rewrite_ro_backends(path, []) is True
    data = open(path, "rb").read()
    assert key_line(data) == KEY.encode() + b" = \n"
    assert lines_except_key(data) == lines_except_key(CONFIG)
    assert read_ro_backends(path) == []
    assert rewrite_ro_backends(path, []) is False


@pytest.mark.parametrize(
    "data, expected",
    [
        # added after the group's last key, in the group's spacing, before [other]
        (b"# c\n[mysql-proxy]\nadmin-username = u\n\n# about other\n[other]\nk=v\n",
         b"# c\n[mysql-proxy]\nadmin-username = u\n" + KEY.encode() + b" = 10.0.0.2:3306\n"
         b"\n# about other\n[other]\nk=v\n"),
        (b"[mysql-proxy]\nadmin-username=u", b"[mysql-proxy]\nadmin-username=u\n"
         + KEY.encode() + b"=10.0.0.2:3306\n"),
        (b"[mysql-proxy]\n", b"[mysql-proxy]\n" + KEY.encode() + b" = 10.0.0.2:3306\n"),
        (b"[mysql-proxy]\r\nadmin-username=u\r\n",
         b"[mysql-proxy]\r\nadmin-username=u\r\n" + KEY.encode() + b"=10.0.0.2:3306\r\n"),
    ],
)
def test_missing_key_is_added_in_the_group(tmp_path, data, expected):
    path = write(tmp_path, data)
    assert rewrite_ro_backends(path, ["10.0.0.2:3306"]) is True
    assert open(path, "rb").read() == expected


def test_same_set_is_no_change_and_leaves_the_file_alone(tmp_path):
    path = write(tmp_path)
    past = 1_000_000_000
    os.utime(path, ns=(past, past))
    # another order, a duplicate and unnormalized spelling: still the same set
    assert rewrite_ro_backends(path, [" 10.0.0.3:03306", "10.0.0.2:3306", "10.0.0.3:3306"]) is False
    assert os.stat(path).st_mtime_ns == past
    assert open(path, "rb").read() == CONFIG
    assert not os.path.exists(path + ".orch.bak")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "data",
    [
        b"[mysql-proxy]\nadmin-username=u\n",  # no key and no backends: nothing to add
        b"[mysql-proxy]\n" + KEY.encode() + b" =  10.0.0.2:3306@2 ,   10.0.0.3:3306,\n",
    ],
)
def test_same_set_in_odd_spelling_is_no_change(tmp_path, data):
    path = write(tmp_path, data)
    wanted = [a for a, _ in read_ro_backends(path)]
    assert rewrite_ro_backends(path, reversed(wanted)) is False
    assert open(path, "rb").read() == data


def test_backup_holds_the_previous_contents_and_only_one_is_kept(tmp_path):
    path = write(tmp_path)
    rewrite_ro_backends(path, ["10.0.0.2:3306"])
    assert open(path + ".orch.bak", "rb").read() == CONFIG
    second = open(path, "rb").read()
    rewrite_ro_backends(path, ["10.0.0.8:3306"])
    assert open(path + ".orch.bak", "rb").read() == second
    assert leftovers(tmp_path) == []


def test_mode_is_kept_for_file_and_backup(tmp_path):
    path = write(tmp_path, mode=0o604)
    rewrite_ro_backends(path, ["10.0.0.9:3306"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o604
    assert stat.S_IMODE(os.stat(path + ".orch.bak").st_mode) == 0o604
    assert os.stat(path).st_uid == os.getuid()


def test_crash_before_any_rename_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = write(tmp_path)

    def crash(src, dst):
        raise OSError(5, "simulated crash")

    monkeypatch.setattr(configfile.os, "replace", crash)
    with pytest.raises(AtlasError, match="simulated crash"):
        rewrite_ro_backends(path, ["10.0.0.9:3306"])
    assert open(path, "rb").read() == CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.cnf"]


def test_crash_between_temp_write_and_final_rename_leaves_old_file(tmp_path, monkeypatch):
    path = write(tmp_path)
    real_replace = os.replace

    def crash_on_config(src, dst):
        if os.fspath(dst) == path:
            raise OSError(5, "simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(configfile.os, "replace", crash_on_config)
    with pytest.raises(AtlasError, match="simulated crash"):
        rewrite_ro_backends(path, ["10.0.0.9:3306"])
    assert open(path, "rb").read() == CONFIG
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["db2:3306", "10.0.0.2", "'10.0.0.2:3306'", "10.0.0.2:3306@2"])
def test_invalid_address_is_rejected_before_touching_the_file(tmp_path, bad):
    path = write(tmp_path)
    with pytest.raises(ValueError):
        rewrite_ro_backends(path, ["10.0.0.2:3306", bad])
    assert open(path, "rb").read() == CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.cnf"]


def test_duplicate_key_in_group_is_refused(tmp_path):
    data = b"[mysql-proxy]\n" + KEY.encode() + b"=10.0.0.2:3306\n" + KEY.encode() + b"=10.0.0.3:3306\n"
    path = write(tmp_path, data)
    with pytest.raises(AtlasError, match="appears 2 times"):
        rewrite_ro_backends(path, ["10.0.0.2:3306"])
    assert open(path, "rb").read() == data


def test_missing_file_is_an_atlas_error(tmp_path):
    with pytest.raises(AtlasError, match="cannot read"):
        rewrite_ro_backends(str(tmp_path / "nope.cnf"), [])
