"""The state database (SQLite, WAL) and the in-memory rows the VFS works on.

Only the FUSE dispatch thread touches the connection. Reads and writes of file data
never query it: a Node carries what they need and is saved at fsync, at namespace
operations and in batches every half second (VFS.run_saver).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field

from ..cache.ranges import RangeSet
from sync.ports import Fingerprint
from . import schema

ROOT_INO = 1
RACY_NS = 2_000_000_000  # file system clock ticks are ms; allow for some clock skew too
RESOLUTIONS = ("local", "server", "both")  # conflicts.resolution once resolved


@dataclass(eq=False, slots=True)
class Node:
    ino: int
    parent: int
    name: str
    kind: str
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    target: str | None = None
    base: Fingerprint | None = None
    dirty: bool = False
    present: RangeSet = field(default_factory=RangeSet)
    pinned: int = 0  # 1 pinned, -1 unpinned, 0 as its folder (schema v3)
    listed: bool = False
    last_access: int = 0
    base_seen_ns: int = 0     # our clock when `base` was recorded
    base_sha: str | None = None  # SHA-256 of the base's content, for racy bases
    uid: int | None = None    # owner; None: the mounting user (schema v5)
    gid: int | None = None
    rdev: int = 0             # chardev, blockdev: the device number
    # --- runtime only ---
    children: dict[str, int] | None = None  # directories: name -> ino
    checked_at: float = -1e9  # monotonic time of the last check against the server
    marked: int = 0           # bumped when a server change marks it stale (a listing
                              # taken before the mark must not count as fresh)
    fd: int = -1              # content file, open while any handle is open
    opens: int = 0
    writers: int = 0
    generation: int = 0       # bumped by every local change of content
    epoch: int = 0            # bumped when the content is dropped for a new server
                              # version: a fetch started before must not store its bytes
    unsaved: bool = False     # size / mtime / present changed since the last save
    unlinked: bool = False    # removed from the tree while still open
    refetched: bool = False   # content dropped since the kernel last opened it
    sent_sha: str | None = None  # SHA-256 of an upload cut off mid-way: it may have landed

    def set_base(self, fp: Fingerprint | None, sha: str | None = None) -> None:
        self.base, self.base_sha = fp, sha
        self.base_seen_ns = time.time_ns() if fp is not None else 0

    @property
    def racy(self) -> bool:
        """Recorded within RACY_NS of its own mtime: a later write in the same tick
        of the server's clock could keep the same fingerprint."""
        return self.base is not None and abs(self.base_seen_ns - self.base.mtime_ns) < RACY_NS

    @property
    def complete(self) -> bool:
        return self.present.covers(0, self.size)

    @property
    def cached_bytes(self) -> int:
        return self.present.present_bytes()

    def status(self, in_conflict: bool = False) -> str:
        if in_conflict:
            return "conflict"
        if self.dirty:
            return "dirty"
        if self.kind != "file" or self.complete:
            return "cached"
        return "partial" if self.present.spans else "ghost"


_COLUMNS = ("ino, parent, name, kind, mode, size, mtime_ns, ctime_ns, target, base_size, "
            "base_mtime_ns, base_file_id, dirty, present, pinned, listed, last_access, "
            "base_seen_ns, base_sha256, uid, gid, rdev")
_ALL_VALUES = ",".join("?" * len(_COLUMNS.split(",")))  # a row with its ino


def _row(node: Node) -> tuple:
    b = node.base
    return (node.parent, node.name, node.kind, node.mode, node.size, node.mtime_ns,
            node.ctime_ns, node.target, b and b.size, b and b.mtime_ns, b and b.file_id,
            int(node.dirty), json.dumps(node.present.spans) if node.present.spans else "[]",
            node.pinned,
            int(node.listed), node.last_access, node.base_seen_ns, node.base_sha,
            node.uid, node.gid, node.rdev)


class DiskFull(OSError):
    """The state database cannot grow: ENOSPC for the application, never EIO."""

    def __init__(self, detail: str):
        super().__init__(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {detail}")


class _Connection(sqlite3.Connection):
    """A connection that meets a full disk as ENOSPC. `on_full()` may make room (the
    data dir's reserve); then the statement is tried once more if that can still
    work: outside a transaction, or the COMMIT of one still active."""

    on_full = None

    def execute(self, sql, params=()):
        return self._guarded(super().execute, sql, params)

    def executemany(self, sql, seq):
        return self._guarded(super().executemany, sql, list(seq))

    def _guarded(self, run, sql, params):
        try:
            return run(sql, params)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            retry = not self.in_transaction or sql.strip().upper() == "COMMIT"
            if self.on_full is not None and self.on_full() and retry:
                try:
                    return run(sql, params)
                except sqlite3.OperationalError as again:
                    if getattr(again, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                        raise
            raise DiskFull("the state database cannot grow") from exc


class State:
    def __init__(self, path: str):
        fresh = not os.path.exists(path)
        self.created = fresh  # a new cache: first-use settings apply
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  factory=_Connection)
        if fresh:
            os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives kill -9 (it is in the OS page cache);
        # fsync() from an application forces a checkpoint (see sync_to_disk).
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA busy_timeout = 5000")
        schema.migrate(self.db)
        # Rows of new server items not written yet (insert_many): a first listing
        # answers before its rows are written, which happens at the next write of any
        # row, at a listing's end (flush_pending) or a second later. They hold nothing
        # of the user's, only what the server says: lost in a crash, listed again.
        self._pending: list[Node] = []
        self._pending_saves: dict[int, Node] = {}  # rows saved after those (a folder's
                                                    # `listed`, which they complete)
        self.pending_since: float | None = None     # time.monotonic() of the oldest
        self._written_in_transaction: list[Node] = []  # pending again on a rollback
        if self.db.execute("SELECT 1 FROM items WHERE ino = ?", (ROOT_INO,)).fetchone() is None:
            now = time.time_ns()
            self.db.execute(
                f"INSERT INTO items ({_COLUMNS}) VALUES (?,0,'','dir',?,0,?,?,NULL,NULL,NULL,"
                "NULL,0,'[]',1,0,0,0,NULL,NULL,NULL,0)", (ROOT_INO, 0o755, now, now))

    @contextlib.contextmanager
    def transaction(self):
        if self.db.in_transaction:  # nested: the outer one commits
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a full disk may have rolled it back already
                self.db.execute("ROLLBACK")
            self._pending[:0] = self._written_in_transaction
            raise
        finally:
            self._written_in_transaction = []

    def close(self) -> None:
        self.flush_pending()
        self.db.close()

    # -- items ----------------------------------------------------------------
    def flush_pending(self) -> None:
        """Write the rows insert_many gave inos but did not write (from the nodes as
        they are now), then the saves that waited for them."""
        if not self._pending:
            return
        nodes, saves, since = self._pending, self._pending_saves, self.pending_since
        self._pending, self._pending_saves, self.pending_since = [], {}, None
        nested = self.db.in_transaction  # a rollback of the outer one undoes this too
        try:
            with self.transaction():
                self.db.executemany(f"INSERT INTO items ({_COLUMNS}) VALUES ({_ALL_VALUES})",
                                    [(node.ino,) + _row(node) for node in nodes])
                for node in saves.values():
                    self._update(node)
                if nested:
                    self._written_in_transaction.extend(nodes)
        except BaseException:
            self._pending[:0] = nodes
            self._pending_saves.update(saves)
            self.pending_since = since
            raise

    def load(self) -> list[Node]:
        self.flush_pending()
        nodes = []
        for r in self.db.execute(f"SELECT {_COLUMNS} FROM items"):
            base = Fingerprint(r[9], r[10], r[11]) if r[9] is not None else None
            nodes.append(Node(
                ino=r[0], parent=r[1], name=r[2], kind=r[3], mode=r[4], size=r[5],
                mtime_ns=r[6], ctime_ns=r[7], target=r[8], base=base, dirty=bool(r[12]),
                present=RangeSet([tuple(s) for s in json.loads(r[13])]),
                pinned=r[14], listed=bool(r[15]), last_access=r[16], base_seen_ns=r[17],
                base_sha=r[18], uid=r[19], gid=r[20], rdev=r[21]))
        return nodes

    def insert(self, node: Node) -> int:
        self.flush_pending()
        cur = self.db.execute(
            f"INSERT INTO items ({_COLUMNS}) VALUES "
            "(NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _row(node))
        node.ino = cur.lastrowid
        return node.ino

    def insert_many(self, nodes: list[Node]) -> None:
        """Rows for many new server items (a folder's first listing): their inos are
        given here, in order, as AUTOINCREMENT would; the rows are written later, in
        one statement (see flush_pending)."""
        if self._pending:
            top = self._pending[-1].ino
        else:
            (top,) = self.db.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'items'),"
                " 0), coalesce((SELECT max(ino) FROM items), 0))").fetchone()
            self.pending_since = time.monotonic()
        for ino, node in enumerate(nodes, top + 1):
            node.ino = ino
        self._pending.extend(nodes)

    def save_after_pending(self, node: Node) -> None:
        """Save a row that must not be written before the pending rows (a folder's
        `listed` flag says its children's rows are there): with them, or now."""
        if self._pending:
            self._pending_saves[node.ino] = node
        else:
            self.save(node)

    def save(self, node: Node) -> None:
        self.flush_pending()
        self._update(node)

    def _update(self, node: Node) -> None:
        self.db.execute(
            "UPDATE items SET parent=?, name=?, kind=?, mode=?, size=?, mtime_ns=?, "
            "ctime_ns=?, target=?, base_size=?, base_mtime_ns=?, base_file_id=?, dirty=?, "
            "present=?, pinned=?, listed=?, last_access=?, base_seen_ns=?, base_sha256=?, "
            "uid=?, gid=?, rdev=? WHERE ino=?",
            _row(node) + (node.ino,))
        node.unsaved = False

    def delete(self, inos) -> None:
        self.flush_pending()
        self.db.executemany("DELETE FROM items WHERE ino = ?", [(i,) for i in inos])

    def sync_to_disk(self) -> None:
        """Make every commit so far durable against power loss, not only kill -9."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value", (key, value))

    # -- conflicts ----------------------------------------------------------------
    def add_conflict(self, path: str, kind: str, local: tuple | None,
                     remote: Fingerprint | None, base: Fingerprint | None,
                     copy_path: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO conflicts (path, kind, local_size, local_mtime_ns, remote_size, "
            "remote_mtime_ns, remote_file_id, base_size, base_mtime_ns, base_file_id, "
            "copy_path, detected_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (path, kind, local and local[0], local and local[1],
             remote and remote.size, remote and remote.mtime_ns, remote and remote.file_id,
             base and base.size, base and base.mtime_ns, base and base.file_id,
             copy_path, time.time()))
        return cur.lastrowid

    def open_conflicts(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM conflicts WHERE resolved_at IS NULL ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def resolve_conflict(self, conflict_id: int, resolution: str) -> None:
        """Mark a conflict settled; `resolution` is the version kept. 'latest' is
        never stored: the caller decides which side that is first."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution {resolution!r} is not one of {RESOLUTIONS}")
        cur = self.db.execute("UPDATE conflicts SET resolved_at = ?, resolution = ? "
                              "WHERE id = ?", (time.time(), resolution, conflict_id))
        if cur.rowcount == 0:
            raise LookupError(f"no conflict with id {conflict_id}")

    # -- journal ------------------------------------------------------------------
    def journal_add(self, op: str, ino: int, kind: str, path: str, *, new_path=None,
                    base: Fingerprint | None = None, target: Fingerprint | None = None,
                    mode=None, mtime_ns=None, link_target=None, uid=None, gid=None,
                    rdev=None) -> int:
        cur = self.db.execute(
            "INSERT INTO journal (op, ino, kind, path, new_path, base_size, base_mtime_ns, "
            "base_file_id, target_size, target_mtime_ns, target_file_id, mode, mtime_ns, "
            "link_target, at, uid, gid, rdev) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (op, ino, kind, path, new_path, base and base.size, base and base.mtime_ns,
             base and base.file_id, target and target.size, target and target.mtime_ns,
             target and target.file_id, mode, mtime_ns, link_target, time.time(), uid, gid,
             rdev))
        return cur.lastrowid

    def journal(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM journal ORDER BY seq")
        names = [d[0] for d in cur.description]
        out = []
        for row in cur:
            e = dict(zip(names, row))
            e["base"] = (Fingerprint(e["base_size"], e["base_mtime_ns"], e["base_file_id"])
                         if e["base_size"] is not None else None)
            e["target"] = (Fingerprint(e["target_size"], e["target_mtime_ns"],
                                       e["target_file_id"])
                           if e["target_size"] is not None else None)
            out.append(e)
        return out

    def journal_rewrite(self, e: dict) -> None:
        """Store a compacted entry (journal.compact merged others into it) in its row."""
        base, target = e["base"], e["target"]
        self.db.execute(
            "UPDATE journal SET path=?, new_path=?, base_size=?, base_mtime_ns=?, "
            "base_file_id=?, target_size=?, target_mtime_ns=?, target_file_id=?, mode=?, "
            "mtime_ns=?, uid=?, gid=? WHERE seq=?",
            (e["path"], e["new_path"], base and base.size, base and base.mtime_ns,
             base and base.file_id, target and target.size, target and target.mtime_ns,
             target and target.file_id, e["mode"], e["mtime_ns"], e.get("uid"), e.get("gid"),
             e["seq"]))

    def journal_done(self, seq: int) -> None:
        self.db.execute("DELETE FROM journal WHERE seq = ?", (seq,))

    def journal_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM journal").fetchone()[0]

    # -- events -------------------------------------------------------------------
    def add_event(self, kind: str, reason: str, *, mode: str | None = None,
                  rtt_ms: float | None = None) -> None:
        self.db.execute("INSERT INTO events (at, kind, mode, reason, rtt_ms) VALUES (?,?,?,?,?)",
                        (time.time(), kind, mode, reason, rtt_ms))

    def events(self, limit: int = 200) -> list[dict]:
        cur = self.db.execute("SELECT at, kind, mode, reason, rtt_ms FROM events "
                              "ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in reversed(cur.fetchall())]
