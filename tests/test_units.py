"""Units: byte ranges, schema versions, conflict names, the invariant checker, and
the dependency rule that the core never loads a FUSE binding."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscfs.cache import ContentStore, RangeSet
from cscfs.check import check
from cscfs.errors import UserError
from cscfs.metadata import State, schema
from sync.conflicts import conflict_name

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=12)


@given(spans, st.integers(0, 260), st.integers(0, 260))
def test_rangeset_matches_a_set_of_bytes(added, a, b):
    rs, model = RangeSet(), set()
    for s, e in added:
        rs.add(s, e)
        model.update(range(s, e))
    start, end = min(a, b), max(a, b)
    assert rs.covers(start, end) == all(i in model for i in range(start, end))
    missing = {i for s, e in rs.missing(start, end) for i in range(s, e)}
    assert missing == {i for i in range(start, end) if i not in model}
    assert rs.present_bytes() == len(model)
    assert all(x[1] < y[0] for x, y in zip(rs.spans, rs.spans[1:]))  # disjoint, not touching
    rs.truncate(a)
    assert {i for s, e in rs.spans for i in range(s, e)} == {i for i in model if i < a}


def test_schema_is_versioned_and_a_newer_one_refused(tmp_path):
    db = tmp_path / "state.db"
    State(str(db)).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="newer than this cscfs"):
        State(str(db))


def test_conflict_names_are_recognisable():
    when = 1_795_000_000
    assert conflict_name("report.odt", "host", when).startswith("report (conflict host ")
    assert conflict_name("report.odt", "host", when).endswith(").odt")
    assert conflict_name("Makefile", "h", when).endswith(")")
    assert conflict_name(".bashrc", "h", when).startswith(".bashrc (conflict h ")


def test_check_finds_a_dirty_item_whose_content_is_gone(tmp_path):
    state = State(str(tmp_path / "state.db"))
    content = ContentStore(str(tmp_path / "content"))
    from cscfs.metadata import Node

    node = Node(ino=0, parent=1, name="f", kind="file", mode=0o644, size=5, mtime_ns=1,
                ctime_ns=1, dirty=True, present=RangeSet([(0, 5)]))
    state.insert(node)
    faults = check(state, content)
    assert any("content file holds None bytes" in f for f in faults)
    fd = content.open(node.ino)
    import os

    os.write(fd, b"12345")
    os.close(fd)
    assert check(state, content) == []
    content.truncate(999, 3)  # a content file with no item
    assert check(state, content) == ["content file 999 belongs to no item"]


def test_core_modules_load_no_fuse_binding():
    code = ("import sys, sync, netprobe, cscfs.vfs, cscfs.daemon, cscfs.cli; "
            "bad = [m for m in ('pyfuse3', 'fuse', 'mfusepy', 'winfspy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_version_1_database_migrates_to_the_latest_with_its_rows(tmp_path):
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.executescript(schema.MIGRATIONS[0] + "PRAGMA user_version = 1;")
    con.execute("INSERT INTO items (ino, parent, name, kind, mode, size, mtime_ns, ctime_ns) "
                "VALUES (1, 0, '', 'dir', 493, 0, 1, 1), (2, 1, 'kept.txt', 'file', 420, 3, 1, 1)")
    con.commit()
    con.close()
    state = State(str(db))
    assert state.db.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST == 5
    assert [n.name for n in state.load() if n.ino == 2] == ["kept.txt"]
    assert [n.pinned for n in state.load() if n.ino == 1] == [1]  # v3: the root is pinned
    state.journal_add("mkdir", 2, "dir", "x")
    state.add_event("mode", "test", mode="online")
    assert state.journal_count() == 1 and state.events()[0]["reason"] == "test"


def test_no_conflict_copy_of_a_conflict_copy():
    first = conflict_name("report.odt", "host", 1_795_000_000)
    again = conflict_name(first, "other", 1_795_000_100)
    assert again.count("(conflict") == 1 and again.startswith("report (conflict other ")
