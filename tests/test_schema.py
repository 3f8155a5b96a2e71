"""The state database's schema: CURRENT documents every column there is, each
migration step does what it says (tested alone, N -> N+1) and never leaves a
database half-way, and resolving a conflict through State."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cscfs.metadata import State, schema
from cscfs.metadata.state import RESOLUTIONS
from cscfs.remote.base import Fingerprint

ROOT = Path(__file__).resolve().parent.parent


def _tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _documented() -> tuple[dict[str, list[str]], list[str]]:
    """({table: [column, ...]}, [meta key, ...]) as schema.CURRENT lists them."""
    tables: dict[str, list[str]] = {}
    keys: list[str] = []
    current = None
    for line in schema.CURRENT.splitlines():
        if m := re.match(r"table (\w+)", line):
            current = tables.setdefault(m[1], [])
        elif line.strip() == "meta keys:":
            current = keys
        elif current is keys and (m := re.match(r"  (\w+)  ", line)):
            keys.append(m[1])
        elif current is not None and (m := re.match(r"  (\w+) +(INTEGER|TEXT|REAL)\b", line)):
            current.append(m[1])
    return tables, keys


def _fresh(tmp_path) -> sqlite3.Connection:
    State(str(tmp_path / "state.db")).close()
    return sqlite3.connect(tmp_path / "state.db")


def test_current_documents_every_table_and_column(tmp_path):
    db = _fresh(tmp_path)
    documented, _ = _documented()
    assert sorted(documented) == _tables(db)
    for table in _tables(db):
        # Same names both ways: a column added without a word, or one documented that
        # no longer exists, fails here.
        assert documented[table] == _columns(db, table), table
    assert f"Schema version {schema.LATEST}." in schema.CURRENT


def test_current_documents_every_meta_key_the_code_uses():
    _, keys = _documented()
    used = set()
    for path in (ROOT / "cscfs").rglob("*.py"):
        text = path.read_text()
        used.update(re.findall(r"[gs]et_meta\(\s*[\"'](\w+)[\"']", text))
        used.update(re.findall(r"FROM meta WHERE key = '(\w+)'", text))
    assert used and used <= set(keys), used - set(keys)


# -- each migration alone -----------------------------------------------------------

def _at(version: int) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for n in range(version):
        schema.apply_step(db, n)
    assert db.execute("PRAGMA user_version").fetchone()[0] == version
    return db


def _dump(db: sqlite3.Connection) -> dict[str, list[dict]]:
    out = {}
    for table in _tables(db):
        cur = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
        names = [d[0] for d in cur.description]
        out[table] = [dict(zip(names, row)) for row in cur]
    return out


_ITEM = "INSERT INTO items (ino, parent, name, kind, mode, size, mtime_ns, ctime_ns, " \
        "pinned, last_access) VALUES (?, ?, ?, ?, 420, ?, 7, 8, ?, ?)"


def _rows_v1(db) -> None:
    db.executemany(_ITEM, [(1, 0, "", "dir", 0, 0, 1_700_000_000),
                           (2, 1, "a.txt", "file", 3, 0, 1_700_000_100),
                           (3, 1, "b.txt", "file", 5, 1, 0)])
    db.execute("INSERT INTO conflicts (path, kind, detected_at) VALUES ('a.txt', "
               "'update/update', 1.5)")
    db.execute("INSERT INTO meta VALUES ('server', '/srv/share')")


def _rows_v2(db) -> None:
    _rows_v1(db)
    db.execute("INSERT INTO journal (op, ino, kind, path, at) VALUES ('mkdir', 4, 'dir', "
               "'new', 2.5)")
    db.execute("INSERT INTO events (at, kind, mode, reason) VALUES (3.5, 'mode', 'offline', "
               "'unreachable: test')")


def _step_1(before, after) -> None:
    assert before == {}
    assert sorted(after) == ["conflicts", "items", "meta"]
    assert all(rows == [] for rows in after.values())


def _step_2(before, after) -> None:
    assert sorted(after) == ["conflicts", "events", "items", "journal", "meta"]
    assert after["journal"] == after["events"] == []
    assert {t: after[t] for t in before} == before  # the rows there were are untouched


def _step_3(before, after) -> None:
    root = {**before["items"][0], "pinned": 1}
    assert after["items"] == [root] + before["items"][1:]  # only the root changes
    assert {t: after[t] for t in before if t != "items"} == {
        t: rows for t, rows in before.items() if t != "items"}


def _step_4(before, after) -> None:
    expected = [{**row, "last_access": row["last_access"] * 1000, "base_seen_ns": 0,
                 "base_sha256": None} for row in before["items"]]
    assert after["items"] == expected  # seconds become milliseconds, new columns empty
    assert {t: after[t] for t in before if t != "items"} == {
        t: rows for t, rows in before.items() if t != "items"}


def _rows_v4(db) -> None:
    _rows_v2(db)
    db.execute("UPDATE items SET base_seen_ns = 9, base_sha256 = 'ab' WHERE ino = 2")


def _step_5(before, after) -> None:
    # Both rebuilt tables keep every row and column; the new columns are empty.
    assert after["items"] == [{**row, "uid": None, "gid": None, "rdev": 0}
                              for row in before["items"]]
    assert after["journal"] == [{**row, "uid": None, "gid": None, "rdev": None}
                                for row in before["journal"]]
    assert {t: after[t] for t in before if t not in ("items", "journal")} == {
        t: rows for t, rows in before.items() if t not in ("items", "journal")}


# step n (from version n): (rows valid at version n, what the step must do)
STEPS = {
    0: (None, _step_1),
    1: (_rows_v1, _step_2),
    2: (_rows_v2, _step_3),
    3: (_rows_v2, _step_4),
    4: (_rows_v4, _step_5),
}


def test_every_migration_has_its_step_test():
    assert sorted(STEPS) == list(range(schema.LATEST))


@pytest.mark.parametrize("n", range(schema.LATEST))
def test_one_migration_step(n):
    db = _at(n)
    rows, check = STEPS[n]
    if rows:
        rows(db)
    before = _dump(db)
    schema.apply_step(db, n)
    assert db.execute("PRAGMA user_version").fetchone()[0] == n + 1
    check(before, _dump(db))


def test_step_4_adds_the_base_columns_with_their_defaults():
    db = _at(3)
    assert "base_seen_ns" not in _columns(db, "items")
    schema.apply_step(db, 3)
    info = {r[1]: r for r in db.execute("PRAGMA table_info(items)")}
    assert info["base_seen_ns"][2:5] == ("INTEGER", 1, "0")  # type, NOT NULL, default
    assert info["base_sha256"][2:5] == ("TEXT", 0, None)


def test_step_5_takes_special_files_and_owners_and_never_reuses_a_number():
    db = _at(4)
    _rows_v4(db)
    db.execute("DELETE FROM items WHERE ino = 3")  # the highest ino, gone before the step
    db.execute("INSERT INTO journal (op, ino, kind, path, at) VALUES ('rmdir', 5, 'dir', "
               "'old', 3.5)")
    db.execute("DELETE FROM journal")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(_ITEM, (7, 1, "p", "fifo", 0, 0, 0))
    schema.apply_step(db, 4)
    for kind in ("fifo", "socket", "chardev", "blockdev"):
        db.execute("INSERT INTO items (parent, name, kind, mode, size, mtime_ns, ctime_ns, "
                   "uid, gid, rdev) VALUES (1, ?, ?, 420, 0, 7, 8, 65534, 65534, 258)",
                   (kind, kind))
    assert db.execute("SELECT min(ino) FROM items WHERE parent = 1 AND name IN "
                      "('fifo', 'socket', 'chardev', 'blockdev')").fetchone()[0] == 4
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(_ITEM, (20, 1, "q", "door", 0, 0, 0))
    db.execute("INSERT INTO journal (op, ino, kind, path, mode, uid, gid, rdev, at) VALUES "
               "('mknod', 9, 'fifo', 'p', 420, 1, 2, 0, 4.5)")
    assert db.execute("SELECT seq FROM journal").fetchone()[0] == 3
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO journal (op, ino, kind, path, at) VALUES ('link', 9, "
                   "'file', 'p', 4.5)")


@pytest.mark.parametrize("n", range(schema.LATEST))
def test_a_failing_step_rolls_back_to_where_it_was(n, monkeypatch):
    db = _at(n)
    rows = {1: _rows_v1, 2: _rows_v2, 3: _rows_v2, 4: _rows_v4}.get(n)
    if rows:
        rows(db)
    before = _dump(db)
    broken = list(schema.MIGRATIONS)
    broken[n] += "\nCREATE TABLE half_done (x);\nSELECT no_such_function();\n"
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        schema.apply_step(db, n)
    assert db.execute("PRAGMA user_version").fetchone()[0] == n
    assert not db.in_transaction
    assert _dump(db) == before  # nothing of the step is left, not even its first lines


_CRASH = """
import os, sqlite3, sys
from cscfs.metadata import schema
n, path = int(sys.argv[1]), sys.argv[2]
db = sqlite3.connect(path, isolation_level=None)
db.create_function("crash", 0, lambda: os._exit(9))
schema.MIGRATIONS[n] += "\\nSELECT crash();\\n"   # dies after the step's own SQL
schema.apply_step(db, n)
"""


@pytest.mark.parametrize("n", range(schema.LATEST))
def test_a_crash_mid_step_leaves_version_n_and_migrates_later(n, tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    for step in range(n):
        schema.apply_step(db, step)
    before = _dump(db)
    db.close()
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(n), str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    db = sqlite3.connect(path, isolation_level=None)  # the hot journal is rolled back
    assert db.execute("PRAGMA user_version").fetchone()[0] == n
    assert _dump(db) == before
    assert schema.migrate(db) == n
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST


def test_migrate_reports_the_version_it_found(tmp_path):
    db = _at(2)
    assert schema.migrate(db) == 2
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert schema.migrate(db) == schema.LATEST  # nothing left to do


# -- conflicts ------------------------------------------------------------------------

def test_resolve_conflict_closes_it(tmp_path):
    state = State(str(tmp_path / "state.db"))
    fp = Fingerprint(3, 10, 99)
    first = state.add_conflict("a.txt", "update/update", (4, 11), fp, fp, "a (conflict).txt")
    second = state.add_conflict("b.txt", "delete/update", None, fp, fp, None)
    t0 = time.time()
    state.resolve_conflict(first, "both")
    assert [c["id"] for c in state.open_conflicts()] == [second]
    at, how = state.db.execute("SELECT resolved_at, resolution FROM conflicts WHERE id = ?",
                               (first,)).fetchone()
    assert how == "both" and t0 <= at <= time.time()
    state.resolve_conflict(second, "server")
    assert state.open_conflicts() == []


def test_resolve_conflict_refuses_what_is_never_stored(tmp_path):
    state = State(str(tmp_path / "state.db"))
    cid = state.add_conflict("a.txt", "update/update", None, None, None, None)
    with pytest.raises(ValueError):
        state.resolve_conflict(cid, "latest")  # the caller picks local or server first
    with pytest.raises(LookupError):
        state.resolve_conflict(cid + 1, "local")
    assert [c["id"] for c in state.open_conflicts()] == [cid]
    assert set(RESOLUTIONS) == {"local", "server", "both"}


def _rows(path) -> set[str]:
    """The item names another connection (a restart) finds in the database."""
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM items WHERE ino != 1")}
    finally:
        db.close()


def _listed_node(name: str, parent: int = 1):
    from cscfs.metadata import Node

    return Node(ino=0, parent=parent, name=name, kind="file", mode=0o644, size=3,
                mtime_ns=10**18, ctime_ns=10**18, base=Fingerprint(3, 10**18, 7))


def test_a_listings_rows_are_written_later_but_before_any_other_row(tmp_path):
    """A first listing's rows wait (the answer does not), keep their inos, and are
    written before anything that could depend on them, also after a rollback."""
    path = tmp_path / "state.db"
    state = State(str(path))
    try:
        first = [_listed_node(f"f{i}") for i in range(3)]
        state.insert_many(first)
        second = [_listed_node("g")]
        state.insert_many(second)
        inos = [n.ino for n in first + second]
        assert inos == list(range(inos[0], inos[0] + 4)) and inos[0] > 1
        assert _rows(path) == set() and state.pending_since is not None
        first[0].size = 5  # changed before written: the row says what the node says now
        with pytest.raises(RuntimeError):
            with state.transaction():
                state.save(first[1])  # writes them first, inside this transaction
                raise RuntimeError("rolled back")
        assert _rows(path) == set()  # undone, and pending again
        state.delete([first[2].ino])  # writes the pending rows, then deletes
        assert _rows(path) == {"f0", "f1", "g"}
        assert state.pending_since is None
        size = {n.ino: n.size for n in state.load()}[first[0].ino]
        assert size == 5
        third = _listed_node("h")
        state.insert_many([third])
        assert third.ino == inos[-1] + 1  # never a number given before
    finally:
        state.close()
    assert "h" in _rows(path)  # close writes what waits
