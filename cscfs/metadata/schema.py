"""The state database's schema, said where it is made.

Versioned with PRAGMA user_version; MIGRATIONS[n] takes a database from version n
to n+1 inside one transaction. Add a step, never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

SCHEMA_V1 = """
-- One row per name we know: on the server, created here, or both.
CREATE TABLE items (
    ino        INTEGER PRIMARY KEY AUTOINCREMENT,
                        -- our inode number: stable across restarts, never reused
                        -- (AUTOINCREMENT), 1 is the root
    parent     INTEGER NOT NULL,   -- ino of the containing directory; 0 for the root
    name       TEXT NOT NULL,      -- name in the parent, as on the server; '' for the root
    kind       TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    mode       INTEGER NOT NULL,   -- permission bits (07777), no file-type bits
    size       INTEGER NOT NULL,   -- bytes; after a crash the content file of a dirty
                                   -- item is the authority and recovery copies it here
    mtime_ns   INTEGER NOT NULL,   -- modification time shown to applications
    ctime_ns   INTEGER NOT NULL,   -- last change of this row's attributes, local clock
    target     TEXT,               -- symlink target; NULL for files and directories
    base_size     INTEGER,         -- the server fingerprint at the last sync: size,
    base_mtime_ns INTEGER,         --   mtime in ns,
    base_file_id  INTEGER,         --   and the server's file id (inode / SMB file id);
                                   -- all three NULL: never on the server (created here)
    dirty      INTEGER NOT NULL DEFAULT 0,
                                   -- 1: content or attributes changed here and not yet
                                   -- uploaded; such a row is never dropped or refetched
    present    TEXT NOT NULL DEFAULT '[]',
                                   -- JSON [[start, end], ...]: sorted, disjoint, half-open
                                   -- byte ranges of the content file that hold data;
                                   -- [[0, size]] (or [] when size is 0) is fully cached
    pinned     INTEGER NOT NULL DEFAULT 0,  -- 1: keep fully cached, never evict
    listed     INTEGER NOT NULL DEFAULT 0,  -- directories: 1 once the children were
                                            -- listed from the server (listing complete)
    last_access INTEGER NOT NULL DEFAULT 0, -- unix seconds of the last open, for eviction
    UNIQUE (parent, name)
);

-- Conflicts found while syncing; a row stays until the user resolves it.
CREATE TABLE conflicts (
    id          INTEGER PRIMARY KEY,
    path        TEXT NOT NULL,     -- path of the item when found, from the share root
    kind        TEXT NOT NULL,     -- 'update/update', 'update/delete', 'delete/update',
                                   -- 'create/create'
    local_size     INTEGER,        -- our version (NULL when we deleted it)
    local_mtime_ns INTEGER,
    remote_size     INTEGER,       -- the server's version (NULL when it was deleted)
    remote_mtime_ns INTEGER,
    remote_file_id  INTEGER,
    base_size     INTEGER,         -- the version both started from (NULL: none)
    base_mtime_ns INTEGER,
    base_file_id  INTEGER,
    copy_path   TEXT,              -- where the other version was kept, from the share root
    detected_at REAL NOT NULL,     -- unix seconds
    resolved_at REAL,              -- NULL while open
    resolution  TEXT               -- 'local', 'server', 'both' once resolved
);

-- Small facts about this cache: server, last_upload, ...
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


SCHEMA_V2 = """
-- Namespace changes made while not online, replayed in order on return. Content
-- changes are not here: a dirty item is uploaded after the journal is replayed.
CREATE TABLE journal (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- replay order
    op        TEXT NOT NULL CHECK (op IN ('mkdir', 'rmdir', 'unlink', 'rename',
                                          'symlink', 'setattr')),
    ino       INTEGER NOT NULL,   -- the item changed (its row may be gone: unlink, rmdir)
    kind      TEXT NOT NULL,      -- its kind then: 'file', 'dir' or 'symlink'
    path      TEXT NOT NULL,      -- its server path when changed (rename: the old one)
    new_path  TEXT,               -- rename: the new path; NULL otherwise
    base_size     INTEGER,        -- the server version the change was made to: it is
    base_mtime_ns INTEGER,        --   re-checked at replay; a different version there
    base_file_id  INTEGER,        --   makes a conflict, never a loss. NULL: none
    target_size     INTEGER,      -- rename over an existing server file: the version
    target_mtime_ns INTEGER,      --   it replaced (NULL: the name was free here)
    target_file_id  INTEGER,
    mode      INTEGER,            -- mkdir, setattr: permission bits; NULL: unchanged
    mtime_ns  INTEGER,            -- setattr: new mtime; NULL: unchanged
    link_target TEXT,             -- symlink: its target
    at        REAL NOT NULL       -- unix seconds when made
);

-- What happened, for `cscfs events`: mode changes now, sync runs later.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,        -- unix seconds
    kind    TEXT NOT NULL,        -- 'mode'
    mode    TEXT,                 -- kind 'mode': the mode entered
    reason  TEXT NOT NULL,        -- why: 'median RTT 52 ms > 35 ms', 'unreachable: ...',
                                  -- 'user: cscfs offline', 'config: ...', ...
    rtt_ms  REAL                  -- median round-trip time then, when known
);
"""

SCHEMA_V3 = """
-- items.pinned becomes three-valued: 1 pinned, -1 unpinned, 0 as its folder. The
-- root starts pinned: a redirected folder is available offline as a whole.
UPDATE items SET pinned = 1 WHERE ino = 1;
"""

SCHEMA_V4 = """
-- A fingerprint (size, mtime, file id) cannot tell apart two writes of the same size
-- within one tick of the server's clock. For a base recorded that close to its own
-- mtime ("racy", as git calls it) the content hash decides instead.
ALTER TABLE items ADD COLUMN base_seen_ns INTEGER NOT NULL DEFAULT 0;
                                  -- our clock when the base was recorded; 0: unknown
ALTER TABLE items ADD COLUMN base_sha256 TEXT;
                                  -- hex SHA-256 of the base's content when known; NULL
                                  -- otherwise (kept only for racy bases)
-- items.last_access counts milliseconds from now on: seconds tie too often for the
-- cache quota's least-recently-used order.
UPDATE items SET last_access = last_access * 1000;
"""

# MIGRATIONS[n]: the SQL script from version n to n+1.
MIGRATIONS = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4]
LATEST = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` to the latest version; returns the version it had."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > LATEST:
        from ..errors import UserError

        raise UserError(f"state database has schema version {found}, newer than this "
                        f"cscfs understands ({LATEST}): upgrade cscfs")
    for version in range(found, LATEST):
        # One transaction per step: a crash leaves the database at n or n+1.
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\n"
                             f"PRAGMA user_version = {version + 1};\nCOMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return found
