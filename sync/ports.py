"""What the sync engine needs from the client, and the values it speaks.

The engine (write-back, upload, replay, manual sync) works on the client only
through these Protocols; `cscfs` implements them (cscfs/engine_ports.py) and wires
them in cscfs/client.py. Nothing in `sync/` imports `cscfs`.

Remote failures are classified by the store that meets them; the engine only
tells these classes apart. The client's own error classes inherit from them, so a
store raises one exception that both sides understand.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Iterator, Protocol

# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies one version of a server file: if any part changed, the
    content may have changed."""

    size: int
    mtime_ns: int
    file_id: int


# Special files: namespace items without content, like a symlink (made by mknod).
SPECIAL_KINDS = ("fifo", "socket", "chardev", "blockdev")


@dataclass(frozen=True, slots=True)
class RemoteStat:
    name: str
    kind: str  # "file", "dir", "symlink" or one of SPECIAL_KINDS
    size: int
    mtime_ns: int
    mode: int  # permission bits only
    file_id: int
    target: str | None = None  # symlink target
    uid: int | None = None  # owner; None: the server keeps none (SMB), the mounting user's
    gid: int | None = None
    rdev: int = 0  # device number of a chardev or blockdev

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.size, self.mtime_ns, self.file_id)


# ------------------------------------------------------------------ errors


class RemoteError(Exception):
    """The server refused or failed for good (retrying will not help)."""


class NotFound(RemoteError):
    pass


class AlreadyExists(RemoteError):
    pass


class NotEmpty(RemoteError):
    pass


class Unavailable(RemoteError):
    """The server cannot be reached now: offline, not failure."""


class Changed(RemoteError):
    """The server's copy is not the version the change expected."""

    current: RemoteStat | None = None  # what the server holds now (None: nothing)


class SyncFailed(Exception):
    """The engine could not do this item for a reason of its own (no free conflict
    name, content shorter than recorded): reported, retried later."""


# ------------------------------------------------------------------ ports


class Item(Protocol):
    """One name of the local tree, as the engine sees it (cscfs: metadata.Node)."""

    ino: int
    name: str
    kind: str
    mode: int
    uid: int | None            # owner; None: the mounting user's
    gid: int | None
    size: int
    mtime_ns: int
    base: Fingerprint | None   # the server version at the last sync; None: never there
    base_sha: str | None       # SHA-256 of the base's content, kept for racy bases
    sent_sha: str | None       # SHA-256 of an upload cut off before its answer
    dirty: bool                # changed here, not yet uploaded
    generation: int            # bumped by every local change of content
    writers: int               # open for writing now
    unlinked: bool             # removed from the tree, still open
    listed: bool               # folders: the children were listed from the server
    pinned: int                # 1 pinned, -1 unpinned, 0 as its folder
    last_access: int           # ms, last open (most recently used is filled first)

    @property
    def racy(self) -> bool: ...

    @property
    def complete(self) -> bool: ...

    @property
    def cached_bytes(self) -> int: ...

    def set_base(self, fp: Fingerprint | None, sha: str | None = None) -> None: ...


class Snapshot(Protocol):
    """A stable copy of an item's content for one upload: later writes by
    applications do not reach it."""

    size: int
    generation: int  # the item's generation the copy was taken at

    def chunks(self) -> Iterator[bytes]:
        """The content in order (run in a worker thread); each full pass leaves its
        SHA-256 in `sha256`."""
        ...

    def read(self, offset: int, size: int) -> bytes: ...

    sha256: str | None  # after a full pass of chunks()
    sent: bool          # a pass of chunks() reached its end

    def close(self) -> None: ...


class LocalTree(Protocol):
    """The client's tree of items (cscfs: the inode table, listing and fetcher)."""

    def item(self, ino: int) -> Item | None:
        """The live item with this number, or None (gone or unlinked)."""
        ...

    def root(self) -> Item: ...

    def parent_of(self, item: Item) -> Item: ...

    def children(self, folder: Item) -> list[Item]: ...

    def child_names(self, folder: Item) -> set[str]: ...

    def path_of(self, item: Item) -> str: ...

    def lock(self, item: Item) -> AbstractAsyncContextManager:
        """The item's lock: uploads, fetches and namespace changes of it in turn."""
        ...

    def changing(self, *folders: Item) -> AbstractContextManager:
        """Mark folders whose entries are being changed: a listing taken meanwhile
        is not merged over the change."""
        ...

    def transaction(self) -> AbstractContextManager: ...

    async def snapshot(self, item: Item) -> Snapshot: ...

    def pinned(self, item: Item) -> bool: ...

    def local_side(self, item: Item | None):
        """sync.reconcile.Side of an item: what changed here since the last sync."""
        ...

    async def refresh(self, folder: Item, force: bool = True, background: bool = False
                      ) -> None:
        """List the folder on the server and merge it (renames followed): now, or
        only when its listing is stale (`force` False); `background`: for a fill pass
        (allowed where the link's fill window is open)."""
        ...

    async def fetch_all(self, item: Item) -> None:
        """Make the item's content fully present (background priority)."""
        ...

    def save(self, item: Item) -> None: ...

    def mark_dirty(self, item: Item) -> None: ...

    def uploaded(self, item: Item, st: RemoteStat, sha: str | None, clean: bool,
                 path: str) -> None:
        """The server holds the item's content as `st`: the new base."""
        ...

    def move(self, item: Item, folder: Item, name: str) -> None: ...

    def add_remote(self, folder: Item, st: RemoteStat) -> Item: ...

    def invalidate(self, folder: Item, name: str) -> None: ...


class Remote(Protocol):
    """The server, called under the client's deadline and offline gate (async)."""

    stores_modes: bool
    name_max: int  # the longest name the server takes, in name_len's unit

    def name_len(self, name: str) -> int:
        """A name's length as the server counts it (sync.names: bytes, UTF-16 units)."""
        ...

    async def stat(self, path: str) -> RemoteStat: ...

    async def stat_or_none(self, path: str) -> RemoteStat | None: ...

    async def read(self, path: str, offset: int, length: int, background: bool = True
                   ) -> bytes: ...

    async def upload(self, path: str, chunks: Iterator[bytes], expected: Fingerprint | None,
                     mode: int, mtime_ns: int, owner: tuple[int, int] | None = None,
                     expected_sha: str | None = None) -> RemoteStat:
        """Atomically, only over the `expected` version (None: a free name) and, for
        a racy base, only if the server's content hashes to `expected_sha`; else
        Changed. `owner` (uid, gid): give the new version this owner; None: as the
        server makes it."""
        ...

    async def mkdir(self, path: str, mode: int) -> RemoteStat: ...

    async def rmdir(self, path: str) -> None: ...

    async def remove(self, path: str) -> None: ...

    async def remove_if(self, path: str, expected: Fingerprint,
                        expected_sha: str | None = None) -> RemoteStat | None:
        """Delete `path` only if it still is `expected` (and, given `expected_sha`,
        still has that content: a racy base); else return what is there."""
        ...

    async def rename(self, old: str, new: str, replace: bool) -> None: ...

    async def symlink(self, target: str, path: str) -> RemoteStat: ...

    async def mknod(self, path: str, kind: str, mode: int, rdev: int) -> RemoteStat: ...

    async def chown(self, path: str, uid: int, gid: int) -> RemoteStat: ...

    async def chmod(self, path: str, mode: int) -> RemoteStat: ...

    async def set_mtime(self, path: str, mtime_ns: int) -> RemoteStat: ...


class Link(Protocol):
    """The link as the client's mode sees it."""

    online: bool      # the online mode: background work may use the server
    reachable: bool   # the server answers (maybe slowly, maybe costed)
    reason: str       # why the link is as it is, for messages
    costed: str       # why background sync must spare the link ("" when it need not)

    def may_reach(self) -> bool:
        """Online, or a manual sync is running and the server is reachable."""
        ...

    def syncing(self) -> AbstractContextManager:
        """A manual sync runs: the server may be used in any mode that reaches it."""
        ...

    async def probe(self) -> None:
        """Look at the link now (reconnecting if needed)."""
        ...

    def fill_waits_for(self) -> str:
        """Why background fill may not run now ('' when it may): a slow, costed or
        absent link, or the user's choice to work offline."""
        ...

    def fill_window(self) -> AbstractContextManager:
        """A fill pass runs: background fetches and listings may reach the server
        (the application's requests still follow the mode)."""
        ...

    def fill_done(self) -> None:
        """A fill pass completed (an Always-Offline mount's first fill is over)."""
        ...


class ConflictLog(Protocol):
    def record(self, path: str, kind: str, local: tuple[int, int] | None,
               remote: RemoteStat | None, base: Fingerprint | None,
               copy_path: str | None) -> None: ...

    def open_count(self) -> int: ...


class Journal(Protocol):
    """Namespace changes made while not online, in order (sync.journal's entries)."""

    count: int

    def entries(self) -> list[dict]: ...

    def rewrite(self, entries: list[dict]) -> None:
        """Store entries that compaction changed (same seq, new fields)."""
        ...

    def done(self, seqs: list[int]) -> None: ...


class Record(Protocol):
    """Events and small facts the engine leaves for `cscfs events` and `status`."""

    def add_event(self, kind: str, reason: str) -> None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...
