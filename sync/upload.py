"""One upload: a changed file's content to the server, atomically, and only over
the version it started from; anything else is decided by reconcile() and never
loses a version.

The content sent is a snapshot (`LocalTree.snapshot`), so an application that
keeps writing during the upload cannot make the server hold a mix of two
versions; a write made meanwhile leaves the item dirty for the next upload.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable

from . import reconcile as rc
from .conflicts import conflict_names
from .ports import (Changed, Clock, ConflictLog, Item, LocalTree, NotFound, Remote,
                    RemoteStat, Snapshot, SyncFailed, Unavailable, RemoteError)

log = logging.getLogger("sync.upload")

CHUNK = 1 << 20
RACY_HASH_MAX = 64 << 20  # larger racy files are trusted to their fingerprint


def _owner(item: Item) -> tuple[int, int] | None:
    """The owner the uploaded version gets: the item's, where it has one of its own."""
    return None if item.uid is None or item.gid is None else (item.uid, item.gid)


class Uploader:
    """`again(item)` asks the write-back queue to try the item once more at once."""

    def __init__(self, tree: LocalTree, remote: Remote, conflicts: ConflictLog, clock: Clock,
                 host: str, again: Callable[[Item], None]):
        self.tree, self.remote, self.conflicts = tree, remote, conflicts
        self.clock, self.host, self.again = clock, host, again

    async def upload(self, item: Item) -> None:
        """Upload one dirty item. Raises Unavailable when the server cannot be
        reached (the caller keeps it due), SyncFailed or RemoteError when it failed
        for good this time."""
        async with self.tree.lock(item):
            if not item.dirty or self.tree.item(item.ino) is not item:
                return
            path = self.tree.path_of(item)
            snap = await self.tree.snapshot(item)
            try:
                await self._send(item, path, snap)
            finally:
                snap.close()

    async def _send(self, item: Item, path: str, snap: Snapshot) -> None:
        # A racy base (recorded within a clock tick or two of its own mtime) may hide
        # a same-size write in the same tick: the server's content decides, checked
        # by the store with the base (never had the base's content: the fingerprint
        # is all we have).
        racy_sha = item.base_sha if item.racy and item.base.size <= RACY_HASH_MAX else None
        try:
            # A listing taken while the name is replaced would miss it.
            with self.tree.changing(self.tree.parent_of(item)):
                st = await self.remote.upload(path, snap.chunks(), item.base, item.mode,
                                              item.mtime_ns, _owner(item), racy_sha)
        except Changed as exc:
            if not await self._conflict(item, path, exc.current, snap):
                self.again(item)
            return
        except NotFound:
            # The folder went on the server: recreate it, nothing written is lost.
            await self._make_parents(path)
            self.again(item)
            return
        except Unavailable:
            if snap.sent:  # all of it went out: it may be there, unacknowledged
                item.sent_sha = snap.sha256
            raise
        if self.tree.item(item.ino) is not item:
            # Deleted here while it was uploading: take it off the server again
            # (else the next listing would bring it back).
            try:
                await self.remote.remove_if(path, st.fingerprint)
            except RemoteError as exc:
                log.warning("%s was deleted during its upload and stays on the server: %s",
                            path, exc)
            return
        item.sent_sha = None
        same = item.generation == snap.generation
        clean = same and self.tree.path_of(item) == path
        self.tree.uploaded(item, st, snap.sha256 if same else None, clean, path)
        if not clean:
            self.again(item)  # changed or moved while uploading: once more
        log.info("uploaded %s (%d bytes)", path, st.size)

    async def _make_parents(self, path: str) -> None:
        from .ports import AlreadyExists

        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            try:
                await self.remote.mkdir("/".join(parts[:i]), 0o755)
            except AlreadyExists:
                pass

    async def _remote_sha(self, path: str, st: RemoteStat | None) -> str | None:
        if st is None or st.kind != "file" or st.size > RACY_HASH_MAX:
            return None
        sha = hashlib.sha256()
        for pos in range(0, st.size, CHUNK):
            sha.update(await self.remote.read(path, pos, min(CHUNK, st.size - pos)))
        return sha.hexdigest()

    async def _same_content(self, path: str, st: RemoteStat | None, snap: Snapshot) -> bool:
        if st is None or st.kind != "file" or st.size != snap.size:
            return False
        for pos in range(0, snap.size, CHUNK):
            want = min(CHUNK, snap.size - pos)
            if await self.remote.read(path, pos, want) != snap.read(pos, want):
                return False
        return True

    async def _conflict(self, item: Item, path: str, current: RemoteStat | None,
                        snap: Snapshot) -> bool:
        """The server's version is not the one ours started from: apply what
        reconcile() plans, keeping both versions. False: decide again (the file was
        renamed on the server meanwhile and followed, or the name was taken)."""
        if await self._same_content(path, current, snap):
            # e.g. our own upload whose rename landed just before a crash
            item.set_base(current.fingerprint)
            item.dirty = item.generation != snap.generation
            self.tree.save(item)
            return True
        if item.sent_sha and await self._remote_sha(path, current) == item.sent_sha:
            # Our own earlier upload, cut off before its answer came: it is the base
            # of what we have now, not somebody else's version.
            item.sent_sha = None
            item.set_base(current.fingerprint)
            self.tree.save(item)
            return False
        parent = self.tree.parent_of(item)
        if current is None and item.base is not None:
            # Gone from its name: renamed there? Then the edit lands at the new name.
            await self.tree.refresh(parent)
            if self.tree.path_of(item) != path:
                return False
        base_kind = item.kind if item.base is not None else None
        plan = rc.reconcile(base_kind, self.tree.local_side(item),
                            rc.remote_side(item.base, base_kind, current))
        if plan.action == rc.PUSH:  # e.g. gone there and never ours: simply create it
            item.set_base(None)
            return False
        kind = plan.conflict or rc.UPDATE_UPDATE
        # The name goes to the side the plan names, but the server's version is never
        # moved (other clients may have it open): with theirs at the name, ours goes
        # beside it. For an upload "ours at the name" means theirs is gone.
        ours_at_name = plan.keeps_name == "local" and current is None
        sent = await self._send_conflict_copy(item, path, parent, snap, ours_at_name)
        if sent is None:
            return False  # the name was taken meanwhile: decide again
        st, copy, copy_path = sent
        old_base = item.base
        with self.tree.changing(parent), self.tree.transaction():
            if copy is not None:
                original = item.name
                self.tree.move(item, parent, copy)
                if original not in self.tree.child_names(parent) and current is not None:
                    self.tree.add_remote(parent, current)
                self.tree.invalidate(parent, original)
            item.set_base(st.fingerprint, snap.sha256)
            item.dirty = item.generation != snap.generation
            self.tree.save(item)
            self.conflicts.record(path, kind, (item.size, item.mtime_ns), current, old_base,
                                  copy_path)
        log.warning("conflict (%s) on %s: both versions kept%s", kind, path,
                    f", ours as {copy_path}" if copy_path else "")
        return True

    async def _send_conflict_copy(self, item: Item, path: str, parent: Item, snap: Snapshot,
                                  ours_at_name: bool):
        """Upload our version at the name (ours_at_name) or at the first free
        conflict copy name: (stat, copy name or None, copy path or None)."""
        if ours_at_name:
            try:
                with self.tree.changing(parent):
                    st = await self.remote.upload(path, snap.chunks(), None, item.mode,
                                                  item.mtime_ns, _owner(item))
            except Changed:
                return None
            return st, None, None
        folder = self.tree.path_of(parent)
        taken = self.tree.child_names(parent)
        for copy in conflict_names(item.name, self.host, self.clock.time(),
                                   max_len=self.remote.name_max, measure=self.remote.name_len):
            if copy in taken:
                continue
            copy_path = f"{folder}/{copy}" if folder else copy
            try:
                with self.tree.changing(parent):  # a listing taken meanwhile misses the copy
                    st = await self.remote.upload(copy_path, snap.chunks(), None, item.mode,
                                                  item.mtime_ns, _owner(item))
            except Changed:
                continue  # taken on the server: the next name
            return st, copy, copy_path
        raise SyncFailed(f"{path}: no free conflict copy name")
