"""The roaming agent's own small database, roam.db in the user's data dir (apart
from any mount's state.db). Schema version in PRAGMA user_version.

Concurrency: the agent and a `cscfs roam` command may both write; SQLite's own
locking (WAL, a 10 s busy timeout) orders them, each call is one transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import platformdirs

from ..config import APP

SCHEMA_VERSION = 1
SCHEMA = """
-- What happened, by the Windows events' names ("background upload started", ...).
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,   -- Unix time
    name   TEXT NOT NULL,   -- the event's name, one of flows.EVENTS
    detail TEXT NOT NULL    -- one line for a person; never a setting's value
);
-- Per roamed item, what both copies were right after the last sync (decide.Base).
CREATE TABLE IF NOT EXISTS bases (
    item       TEXT PRIMARY KEY, -- "hive", "file:<folder>/<path>", "dataset:<file name>"
    local_sig  TEXT,             -- this computer's copy: the hive's settings digest, a
                                 -- file's "size:mtime_ns"; NULL: absent
    server_sig TEXT              -- the server's copy: "size:mtime_ns"; NULL: absent
);
-- Facts for `cscfs roam status`: last_upload, next_upload, last_logon, last_logoff
-- (JSON objects: at, outcome, detail), datasets (name -> size in bytes).
CREATE TABLE IF NOT EXISTS facts (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL      -- JSON
);
"""


def db_path() -> str:
    return os.path.join(platformdirs.user_data_dir(APP), "roam.db")


class RoamState:
    def __init__(self, path: str | None = None, clock=time.time):
        path = path or db_path()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.clock = clock
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path} is of a newer cscfs (schema {version})")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def event(self, name: str, detail: str = "") -> None:
        self.db.execute("INSERT INTO events (at, name, detail) VALUES (?, ?, ?)",
                        (self.clock(), name, detail))

    def events(self, limit: int = 200) -> list[dict]:
        rows = self.db.execute("SELECT at, name, detail FROM events ORDER BY id DESC LIMIT ?",
                               (limit,)).fetchall()
        return [{"at": at, "name": n, "detail": d} for at, n, d in reversed(rows)]

    def base(self, item: str):
        from .decide import Base

        row = self.db.execute("SELECT local_sig, server_sig FROM bases WHERE item = ?",
                              (item,)).fetchone()
        return Base(*row) if row else None

    def set_base(self, item: str, local_sig: str | None, server_sig: str | None) -> None:
        if local_sig is None and server_sig is None:
            self.db.execute("DELETE FROM bases WHERE item = ?", (item,))
            return
        self.db.execute("INSERT OR REPLACE INTO bases VALUES (?, ?, ?)",
                        (item, local_sig, server_sig))

    def items(self, prefix: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT item FROM bases WHERE substr(item, 1, ?) = ?", (len(prefix), prefix))]

    def fact(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_fact(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        self.db.close()
