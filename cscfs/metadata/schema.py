"""The state database's schema, said where it is made.

Versioned with PRAGMA user_version; MIGRATIONS[n] takes a database from version n
to n+1 inside one transaction. Add a step, never edit one that has shipped.

The comments inside each step describe the schema as that step left it; CURRENT
below describes it as it is now (tests/test_schema.py checks it names every column).
"""

from __future__ import annotations

import sqlite3

# The schema as of the latest version, column by column. Keep it in step with the
# migrations: a section per table ("table NAME"), a line per column starting with
# its name; tests/test_schema.py compares them with a fresh database.
CURRENT = """\
Schema version 5. Times: *_ns are nanoseconds since the Unix epoch, REAL times are
Unix seconds. A fingerprint is (size, mtime_ns, file_id) as the server reports them.

table items -- one row per name we know: on the server, created here, or both
  ino            INTEGER PK  our inode number, stable across restarts, never reused
                             (AUTOINCREMENT); 1 is the root
  parent         INTEGER     ino of the containing directory; 0 for the root
  name           TEXT        name in the parent as on the server; '' for the root;
                             UNIQUE (parent, name)
  kind           TEXT        'file', 'dir', 'symlink', or a special file (v5): 'fifo',
                             'socket', 'chardev', 'blockdev' (no content, like a link)
  mode           INTEGER     permission bits (07777), no file-type bits
  size           INTEGER     bytes; for a dirty item after a crash the content file is
                             the authority and recovery copies its size here
  mtime_ns       INTEGER     modification time shown to applications (ns)
  ctime_ns       INTEGER     last change of this row's attributes, local clock (ns)
  target         TEXT        symlink target; NULL for files and directories
  base_size      INTEGER     the server fingerprint at the last sync: size in bytes,
  base_mtime_ns  INTEGER       mtime (ns),
  base_file_id   INTEGER       and the server's file id (inode / SMB file id);
                             all three NULL: never on the server (created here)
  dirty          INTEGER     1: content or attributes changed here, not yet uploaded
                             (never dropped or refetched); 0: in step with the base
  present        TEXT        JSON [[start, end], ...]: sorted, disjoint, half-open byte
                             ranges of the content file that hold data; [] none;
                             [[0, size]] fully cached
  pinned         INTEGER     1 pinned (keep fully cached, never evict), -1 unpinned
                             (cached on demand), 0 as its folder; the root starts at 1
                             (v3), so a whole mount is available offline by default
                             (-1 in a new cache with offline_by_default = false);
                             pinned files are filled in the background
  listed         INTEGER     directories: 1 once the children were listed from the
                             server (the listing is complete); 0 otherwise
  last_access    INTEGER     milliseconds since the epoch of the last open, for the
                             cache quota's LRU order (seconds before v4); 0: never
  base_seen_ns   INTEGER     our clock (ns) when the base was recorded; 0: unknown or
                             no base. Within RACY_NS of base_mtime_ns the base is "racy"
  base_sha256    TEXT        hex SHA-256 of the base's content, kept for racy bases;
                             NULL otherwise
  uid            INTEGER     owner: user id and group id as the server keeps them (a
  gid            INTEGER       folder server; SMB keeps none: the mounting user's) or as
                             given here; NULL: the mounting user (rows from before v5,
                             until the next listing)
  rdev           INTEGER     chardev, blockdev: the device number; 0 otherwise

table conflicts -- conflicts found while syncing; a row stays after it is resolved
  id               INTEGER PK
  path             TEXT      the item's path when found, from the share root
  kind             TEXT      local/remote: 'update/update', 'update/delete' (changed
                             here, deleted there), 'delete/update', 'create/create',
                             'file/dir' (a file on one side, a folder on the other),
                             'replay-failed/<op>' (an offline change the server
                             refused for good; <op> a journal op); before the
                             replay used reconcile(), 'rename/delete' (renamed here,
                             gone there) may stand where 'update/delete' stands now.
                             The words: sync/vocabulary.py
  local_size       INTEGER   our version: size and mtime (ns); NULL when we deleted
  local_mtime_ns   INTEGER     it or the kind records none
  remote_size      INTEGER   the server's fingerprint then; NULL when it was deleted
  remote_mtime_ns  INTEGER     there or is not known
  remote_file_id   INTEGER
  base_size        INTEGER   the fingerprint both versions started from; NULL: none
  base_mtime_ns    INTEGER
  base_file_id     INTEGER
  copy_path        TEXT      where the other version was kept (ours, under a conflict
                             name), from the share root; NULL: no copy
  detected_at      REAL      Unix seconds
  resolved_at      REAL      Unix seconds; NULL while open
  resolution       TEXT      NULL while open, then 'local', 'server' or 'both': the
                             version kept ('latest' is stored as the side it chose)

table meta -- small facts about this cache, as text
  key            TEXT PK     one of the keys below
  value          TEXT        see below

  meta keys:
  server         the server URL this cache belongs to; a data dir refuses another
  work_offline   '1' after `cscfs offline` (kept across restarts), '0' after
                 `cscfs online`; absent: never set
  last_upload    "<Unix seconds, 3 decimals> <path>" of the latest upload
  last_sync_at   repr() of the Unix seconds of the last successful sync (manual:
                 when it ended; background: when it started); absent: none yet
  next_sync_at   repr() of the Unix seconds the next background sync is due
  usage_state    JSON of the data-plan meter: {"cycle": ISO date the billing cycle
                 began, "used": bytes this cycle, "last": {interface: counter}}

table journal -- namespace changes made while not online, replayed in order on
                 return (content changes are not here: dirty items upload after)
  seq              INTEGER PK  replay order (AUTOINCREMENT)
  op               TEXT      'mkdir', 'rmdir', 'unlink', 'rename', 'symlink', 'setattr',
                             'mknod' (v5: a special file)
  ino              INTEGER   the item changed (its row may be gone: unlink, rmdir)
  kind             TEXT      its kind then (items.kind)
  path             TEXT      its server path when changed (rename: the old one)
  new_path         TEXT      rename: the new path; NULL otherwise
  base_size        INTEGER   the server fingerprint the change was made to,
  base_mtime_ns    INTEGER     re-checked at replay (a different version there makes
  base_file_id     INTEGER     a conflict, never a loss); NULL: none
  target_size      INTEGER   rename over an existing server file: the fingerprint it
  target_mtime_ns  INTEGER     replaced; NULL: the name was free here
  target_file_id   INTEGER
  mode             INTEGER   mkdir, mknod, setattr: permission bits; NULL: unchanged
  mtime_ns         INTEGER   setattr: new mtime (ns); NULL: unchanged
  link_target      TEXT      symlink: its target; NULL otherwise
  at               REAL      Unix seconds when made
  uid              INTEGER   mkdir, symlink, mknod, setattr: the owner to give the item
  gid              INTEGER     on the server (user id, group id); NULL: unchanged
  rdev             INTEGER   mknod: the device number; NULL otherwise

table events -- what happened, for `cscfs events`
  id             INTEGER PK
  at             REAL        Unix seconds
  kind           TEXT        'mode' (a mode change), 'sync' (a sync ran, finished,
                             failed or was skipped), 'quota' (the cache quota cannot
                             be met), 'fill' (available offline: the pinned files do
                             not fit the cache quota), 'upload' (a file's upload
                             fails, reported once; or succeeds again), 'disk' (the
                             cache disk is full, or has room again), 'redirect' (a
                             redirected folder: files moved in, or not mounted and why);
                             sync/vocabulary.py
  mode           TEXT        kind 'mode': the mode entered ('online', 'slow-link',
                             'offline', 'work-offline', 'always-offline'); else NULL
  reason         TEXT        why or what: 'median RTT 52 ms > 35 ms', 'unreachable:
                             ...', 'user: cscfs offline', 'manual sync finished: ...'
  rtt_ms         REAL        median round-trip time then (ms); NULL: not known
"""

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

SCHEMA_V5 = """
-- Owners, and special files (fifos, sockets, device nodes) as items. items.kind and
-- journal.op have CHECK constraints, which SQLite cannot alter: both tables are
-- rebuilt as https://sqlite.org/lang_altertable.html#otheralter says (new table, copy,
-- drop, rename; no index, trigger, view or foreign key refers to them).
-- The AUTOINCREMENT counters are carried over: inos and seqs are never reused.
CREATE TABLE items_v5 (
    ino        INTEGER PRIMARY KEY AUTOINCREMENT,
                        -- our inode number: stable across restarts, never reused
                        -- (AUTOINCREMENT), 1 is the root
    parent     INTEGER NOT NULL,   -- ino of the containing directory; 0 for the root
    name       TEXT NOT NULL,      -- name in the parent, as on the server; '' for the root
    kind       TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'fifo', 'socket',
                                             'chardev', 'blockdev')),
    mode       INTEGER NOT NULL,   -- permission bits (07777), no file-type bits
    size       INTEGER NOT NULL,   -- bytes; after a crash the content file of a dirty
                                   -- item is the authority and recovery copies it here
    mtime_ns   INTEGER NOT NULL,   -- modification time shown to applications
    ctime_ns   INTEGER NOT NULL,   -- last change of this row's attributes, local clock
    target     TEXT,               -- symlink target; NULL for everything else
    base_size     INTEGER,         -- the server fingerprint at the last sync: size,
    base_mtime_ns INTEGER,         --   mtime in ns,
    base_file_id  INTEGER,         --   and the server's file id (inode / SMB file id);
                                   -- all three NULL: never on the server (created here)
    dirty      INTEGER NOT NULL DEFAULT 0,
                                   -- 1: content or attributes changed here and not yet
                                   -- uploaded; such a row is never dropped or refetched
    present    TEXT NOT NULL DEFAULT '[]',
                                   -- JSON [[start, end], ...]: sorted, disjoint, half-open
                                   -- byte ranges of the content file that hold data
    pinned     INTEGER NOT NULL DEFAULT 0,  -- 1 pinned, -1 unpinned, 0 as its folder
    listed     INTEGER NOT NULL DEFAULT 0,  -- directories: 1 once the children were
                                            -- listed from the server (listing complete)
    last_access INTEGER NOT NULL DEFAULT 0, -- ms since the epoch of the last open
    base_seen_ns INTEGER NOT NULL DEFAULT 0,  -- our clock when the base was recorded
    base_sha256 TEXT,              -- hex SHA-256 of the base's content (racy bases)
    uid        INTEGER,            -- owner (user id); NULL: the mounting user, as every
    gid        INTEGER,            --   item was shown before v5 (the next listing sets
                                   --   the server's owner)
    rdev       INTEGER NOT NULL DEFAULT 0,  -- chardev, blockdev: the device number
    UNIQUE (parent, name)
);
INSERT INTO items_v5 (ino, parent, name, kind, mode, size, mtime_ns, ctime_ns, target,
                      base_size, base_mtime_ns, base_file_id, dirty, present, pinned, listed,
                      last_access, base_seen_ns, base_sha256)
    SELECT ino, parent, name, kind, mode, size, mtime_ns, ctime_ns, target, base_size,
           base_mtime_ns, base_file_id, dirty, present, pinned, listed, last_access,
           base_seen_ns, base_sha256 FROM items;
DELETE FROM sqlite_sequence WHERE name = 'items_v5';
INSERT INTO sqlite_sequence (name, seq) SELECT 'items_v5', seq FROM sqlite_sequence
    WHERE name = 'items';
DROP TABLE items;
ALTER TABLE items_v5 RENAME TO items;

CREATE TABLE journal_v5 (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- replay order
    op        TEXT NOT NULL CHECK (op IN ('mkdir', 'rmdir', 'unlink', 'rename',
                                          'symlink', 'setattr', 'mknod')),
    ino       INTEGER NOT NULL,   -- the item changed (its row may be gone: unlink, rmdir)
    kind      TEXT NOT NULL,      -- its kind then (items.kind)
    path      TEXT NOT NULL,      -- its server path when changed (rename: the old one)
    new_path  TEXT,               -- rename: the new path; NULL otherwise
    base_size     INTEGER,        -- the server version the change was made to,
    base_mtime_ns INTEGER,        --   re-checked at replay; NULL: none
    base_file_id  INTEGER,
    target_size     INTEGER,      -- rename over an existing server file: the version
    target_mtime_ns INTEGER,      --   it replaced (NULL: the name was free here)
    target_file_id  INTEGER,
    mode      INTEGER,            -- mkdir, mknod, setattr: permission bits; NULL: unchanged
    mtime_ns  INTEGER,            -- setattr: new mtime; NULL: unchanged
    link_target TEXT,             -- symlink: its target
    at        REAL NOT NULL,      -- unix seconds when made
    uid       INTEGER,            -- mkdir, symlink, mknod, setattr: the owner to give it;
    gid       INTEGER,            --   NULL: unchanged (as the server makes it)
    rdev      INTEGER             -- mknod: the device number; NULL otherwise
);
INSERT INTO journal_v5 (seq, op, ino, kind, path, new_path, base_size, base_mtime_ns,
                        base_file_id, target_size, target_mtime_ns, target_file_id, mode,
                        mtime_ns, link_target, at)
    SELECT seq, op, ino, kind, path, new_path, base_size, base_mtime_ns, base_file_id,
           target_size, target_mtime_ns, target_file_id, mode, mtime_ns, link_target, at
    FROM journal;
DELETE FROM sqlite_sequence WHERE name = 'journal_v5';
INSERT INTO sqlite_sequence (name, seq) SELECT 'journal_v5', seq FROM sqlite_sequence
    WHERE name = 'journal';
DROP TABLE journal;
ALTER TABLE journal_v5 RENAME TO journal;
"""

# MIGRATIONS[n]: the SQL script from version n to n+1.
MIGRATIONS = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5]
LATEST = len(MIGRATIONS)


def apply_step(db: sqlite3.Connection, version: int) -> None:
    """Take `db` from `version` to version + 1 in one transaction: a failure or a
    crash leaves it at `version`."""
    try:
        db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\n"
                         f"PRAGMA user_version = {version + 1};\nCOMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` to the latest version; returns the version it had."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > LATEST:
        from ..errors import UserError

        raise UserError(f"state database has schema version {found}, newer than this "
                        f"cscfs understands ({LATEST}): upgrade cscfs")
    for version in range(found, LATEST):
        apply_step(db, version)
    return found
