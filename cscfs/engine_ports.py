"""The client's side of the sync engine's ports (sync/ports.py): the tree, the
journal, the conflict log, events and meta, the clock, and upload snapshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import time
from typing import Callable, Iterator

import trio

from sync import ports
from sync.vocabulary import META_LAST_UPLOAD

from .cache import ContentStore
from .fetcher import Fetcher
from .inodes import InodeTable
from .listing import Listing
from .metadata import ROOT_INO, Node, State
from .remote.base import RemoteStat

CHUNK = 1 << 20
IN_MEMORY_MAX = 4 << 20  # smaller files are snapshot in memory, larger ones in a copy
_SNAPSHOT_TRIES = 3


class Clock:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self.monotonic = monotonic

    @staticmethod
    def time() -> float:
        return time.time()


# ------------------------------------------------------------ snapshots
class _Snapshot:
    sha256: str | None = None
    sent: bool = False

    def __init__(self, size: int, generation: int):
        self.size, self.generation = size, generation

    def chunks(self) -> Iterator[bytes]:
        self.sent, sha = False, hashlib.sha256()
        for pos in range(0, self.size, CHUNK):
            data = self.read(pos, min(CHUNK, self.size - pos))
            if len(data) < min(CHUNK, self.size - pos):
                raise ports.SyncFailed("content file shorter than the item")
            sha.update(data)
            yield data
        self.sha256, self.sent = sha.hexdigest(), True


class _BytesSnapshot(_Snapshot):
    def __init__(self, data: bytes, generation: int):
        super().__init__(len(data), generation)
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]

    def close(self) -> None:
        self.data = b""


class _FileSnapshot(_Snapshot):
    def __init__(self, path: str, size: int, generation: int):
        super().__init__(size, generation)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _copy(src: str, dst: str, size: int) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = size
        while left > 0:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
            if n == 0:
                break
            left -= n


# ----------------------------------------------------------------- tree
class TreePort:
    """sync.ports.LocalTree over the inode table, the listing and the fetcher."""

    def __init__(self, table: InodeTable, listing: Listing, fetcher: Fetcher, invalidate):
        self.table, self.listing, self.fetcher = table, listing, fetcher
        self._invalidate = invalidate
        self.last_upload: str | None = None  # "time path" of the last upload
        self.last_upload_unsaved = False
        self._snapshot_dir = os.path.join(table.content.root, "snapshots")
        self._snapshot_ids = itertools.count()
        clear_snapshots(table.content)

    def item(self, ino: int) -> Node | None:
        return self.table.live(ino)

    def root(self) -> Node:
        return self.table.nodes[ROOT_INO]

    def parent_of(self, item: Node) -> Node:
        return self.table.nodes[item.parent]

    def children(self, folder: Node) -> list[Node]:
        return [self.table.nodes[i] for i in folder.children.values()]

    def child_names(self, folder: Node) -> set[str]:
        return set(folder.children)

    def path_of(self, item: Node) -> str:
        return self.table.path_of(item)

    def lock(self, item: Node) -> trio.Lock:
        return self.table.lock(item)

    def changing(self, *folders: Node):
        return self.table.changing(*folders)

    def transaction(self):
        return self.table.state.transaction()

    def pinned(self, item: Node) -> bool:
        return self.table.pinned(item)

    def local_side(self, item: Node | None):
        return self.listing.local_side(item)

    async def refresh(self, folder: Node, force: bool = True, background: bool = False) -> None:
        await self.listing.refresh(folder, force=force, background=background)

    async def fetch_all(self, item: Node) -> None:
        await self.fetcher.fetch(item, 0, item.size, background=True)

    def save(self, item: Node) -> None:
        self.table.state.save(item)

    def mark_dirty(self, item: Node) -> None:
        self.table.mark_dirty(item)

    def move(self, item: Node, folder: Node, name: str) -> None:
        self.table.move(item, folder, name)

    def add_remote(self, folder: Node, st: RemoteStat) -> Node:
        return self.table.add_remote(folder, st)

    def invalidate(self, folder: Node, name: str) -> None:
        self._invalidate.entry(folder.ino, name)

    def uploaded(self, item: Node, st: RemoteStat, sha: str | None, clean: bool,
                 path: str) -> None:
        item.set_base(st.fingerprint, sha)
        item.checked_at = self.table.clock()
        if clean:
            item.dirty = False
            # What the server keeps (SMB: no POSIX modes, no owners); a change made
            # meanwhile stays for the next upload.
            item.mode, item.uid, item.gid = st.mode, st.uid, st.gid
        # In the next batch: if that is lost in a crash, the next upload finds the
        # server holding this very content and takes it as its base.
        self.table.changed(item)
        self.last_upload, self.last_upload_unsaved = f"{time.time():.3f} {path}", True

    def save_last_upload(self) -> None:
        """Part of the saver's batch (InodeTable.save_all)."""
        if self.last_upload_unsaved:
            self.table.state.set_meta(META_LAST_UPLOAD, self.last_upload)
            self.last_upload_unsaved = False

    async def snapshot(self, item: Node) -> ports.Snapshot:
        """The content as it is now. Small files are read at once on this thread
        (no write can come between); larger ones are copied in a worker thread, and
        the copy counts only if no write came meanwhile (the generation is the same)."""
        content = self.table.content
        if item.unsaved:
            self.table.state.save(item)
        if item.size <= IN_MEMORY_MAX:
            fd = item.fd if item.fd >= 0 else content.open(item.ino)
            try:
                return _BytesSnapshot(os.pread(fd, item.size, 0), item.generation)
            finally:
                if fd != item.fd:
                    os.close(fd)
        os.makedirs(self._snapshot_dir, mode=0o700, exist_ok=True)
        for _ in range(_SNAPSHOT_TRIES):
            generation, size = item.generation, item.size
            path = os.path.join(self._snapshot_dir, f"{item.ino}.{next(self._snapshot_ids)}")
            await trio.to_thread.run_sync(_copy, content.path(item.ino), path, size)
            if item.generation == generation:
                return _FileSnapshot(path, size, generation)
            os.unlink(path)
        raise ports.SyncFailed(f"{self.path_of(item)} keeps changing: upload later")


def clear_snapshots(content: ContentStore) -> None:
    """Snapshots of uploads a crash interrupted: the content files still hold the data."""
    folder = os.path.join(content.root, "snapshots")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))


# ---------------------------------------------------- journal and records
class JournalPort:
    """sync.ports.Journal over the state database, with its length at hand (the
    core asks for it on every namespace operation)."""

    def __init__(self, state: State):
        self.state = state
        self.count = state.journal_count()

    def add(self, op: str, node: Node, path: str, **fields) -> None:
        """Record a namespace change made while not online, for replay in order."""
        self.state.journal_add(op, node.ino, node.kind, path, **fields)
        self.count += 1

    def entries(self) -> list[dict]:
        return self.state.journal()

    def rewrite(self, entries: list[dict]) -> None:
        with self.state.transaction():
            for e in entries:
                self.state.journal_rewrite(e)

    def done(self, seqs: list[int]) -> None:
        with self.state.transaction():
            for seq in seqs:
                self.state.journal_done(seq)
        self.count = self.state.journal_count()


class ConflictPort:
    """sync.ports.ConflictLog over the state database, with the set of paths in
    conflict at hand (the status xattr asks on every getxattr)."""

    def __init__(self, state: State):
        self.state = state
        self.paths: set[str] = set()
        self.on_record: list[Callable[[str, str, str | None], None]] = []  # path, kind, copy
        self.reload()

    def reload(self) -> None:
        self.paths = set()
        for row in self.state.open_conflicts():
            self.paths.add(row["path"])
            if row["copy_path"]:
                self.paths.add(row["copy_path"])

    def record(self, path: str, kind: str, local, remote: RemoteStat | None, base,
               copy_path: str | None) -> None:
        self.state.add_conflict(path, kind, local, remote.fingerprint if remote else None,
                                base, copy_path)
        self.paths.add(path)
        if copy_path:
            self.paths.add(copy_path)
        for callback in self.on_record:
            callback(path, kind, copy_path)

    def open_count(self) -> int:
        return len(self.state.open_conflicts())


class RecordPort:
    """sync.ports.Record: events and meta in the state database."""

    def __init__(self, state: State):
        self.state = state

    def add_event(self, kind: str, reason: str) -> None:
        self.state.add_event(kind, reason)

    def set_meta(self, key: str, value: str) -> None:
        self.state.set_meta(key, value)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        return self.state.get_meta(key, default)
