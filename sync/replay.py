"""Replay of the offline journal when the server is back: each namespace change in
the order it was made (after compact() has dropped what cancels out), each
decided by reconcile() against what the server holds now. A change that no longer
fits becomes a recorded conflict; nothing either side wrote is discarded. Content
changes are not journaled: dirty files upload after the replay.

How reconcile's plans are applied here (the same policy as the upload's):
- the name goes to the side the plan names, but the server's version is never
  moved (other clients may have it open): when theirs holds the name, ours goes
  beside it under a conflict copy name;
- a rename moves a name, not content: its source is checked for a delete there
  (then ours is put back at the new name), its destination like a create.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

from . import reconcile as rc
from .conflicts import conflict_names
from .journal import changed_entries, compact, dropped_seqs
from .ports import (AlreadyExists, Clock, ConflictLog, Item, Journal, Link, LocalTree,
                    NotEmpty, NotFound, Remote, RemoteError, RemoteStat, SyncFailed,
                    Unavailable)
from .vocabulary import REPLAY_FAILED

log = logging.getLogger("sync.replay")


class Replayer:
    def __init__(self, journal: Journal, tree: LocalTree, remote: Remote,
                 conflicts: ConflictLog, link: Link, clock: Clock, host: str,
                 again: Callable[[Item], None]):
        self.journal, self.tree, self.remote, self.conflicts = journal, tree, remote, conflicts
        self.link, self.clock, self.host, self.again = link, clock, host, again
        self._lock = trio.Lock()  # the write-back loop and a manual sync may both ask

    async def replay(self) -> int:
        """Apply the journal in order; returns how many entries were applied. Stops,
        keeping the rest, when the server becomes unavailable."""
        async with self._lock:
            entries = self.journal.entries()
            kept = compact(entries)
            dropped = dropped_seqs(entries, kept)
            if dropped:  # merged entries first: a crash between keeps the journal whole
                self.journal.rewrite(changed_entries(entries, kept))
                self.journal.done(sorted(dropped))
                log.info("offline journal: %d changes cancel out", len(dropped))
            done = 0
            for entry in kept:
                if not self.link.may_reach():
                    break
                try:
                    await getattr(self, "_" + entry["op"])(entry)
                except Unavailable:
                    break
                except (RemoteError, SyncFailed) as exc:
                    # Permanent (permission, a name the server refuses...): keep the
                    # local state as it is, say so, and go on with the rest.
                    log.error("replay of %s %s failed: %s", entry["op"], entry["path"], exc)
                    self.conflicts.record(entry["path"], f"{REPLAY_FAILED}/{entry['op']}",
                                          None, None, entry["base"], None)
                self.journal.done([entry["seq"]])
                done += 1
            if done:
                log.info("replayed %d offline changes", done)
            return done + len(dropped)

    # ------------------------------------------------------------- helpers
    def _adopt(self, ino: int, st: RemoteStat) -> None:
        """Our item made on the server: its version there is its base now."""
        item = self.tree.item(ino)
        if item is not None and item.base is None:
            item.set_base(st.fingerprint)
            self.tree.save(item)

    def _rename_here(self, ino: int, new_name: str) -> None:
        item = self.tree.item(ino)
        if item is None:
            return
        parent = self.tree.parent_of(item)
        old = item.name
        if new_name in self.tree.child_names(parent):
            return
        with self.tree.changing(parent):
            self.tree.move(item, parent, new_name)
        self.tree.invalidate(parent, old)
        self.tree.invalidate(parent, new_name)

    async def _beside(self, path: str, make) -> str:
        """Put ours beside the server's version: `make(copy_path)` at the first free
        conflict copy name; returns that path."""
        folder, _, name = path.rpartition("/")
        for copy in conflict_names(name, self.host, self.clock.time(),
                                   max_len=self.remote.name_max, measure=self.remote.name_len):
            copy_path = f"{folder}/{copy}" if folder else copy
            try:
                await make(copy_path)
                return copy_path
            except AlreadyExists:
                continue
        raise SyncFailed(f"{path}: no free conflict copy name")

    @staticmethod
    def _server_side(e: dict, st: RemoteStat | None) -> rc.Side:
        """The server's side of a journaled item. Only files carry a base in the
        journal; a folder or link that was there is unchanged while it keeps its kind."""
        if e["kind"] == "file" and e["base"] is not None:
            return rc.remote_side(e["base"], "file", st)
        if st is None:
            return rc.Side(rc.DELETED)
        return rc.Side(rc.UNCHANGED if st.kind == e["kind"] else rc.MODIFIED, st.kind)

    # -------------------------------------------------------------- creates
    async def _create(self, e: dict, make) -> None:
        """mkdir, symlink and mknod: the plan for a free name is PUSH; the server says
        otherwise by AlreadyExists, and the plan is made again with what is there."""
        try:
            st = await make(e["path"])
        except AlreadyExists:
            theirs = await self.remote.stat_or_none(e["path"])
            plan = rc.reconcile(None, rc.Side(rc.CREATED, e["kind"]),
                                rc.remote_side(None, None, theirs))
            if plan.action == rc.PUSH:  # gone again meanwhile
                st = await make(e["path"])
            elif plan.action == rc.MERGE:
                st = theirs  # a folder there too: ours is that folder now
            else:  # theirs keeps the name: ours beside it
                copy = await self._beside(e["path"], make)
                st = await self.remote.stat(copy)
                self._rename_here(e["ino"], copy.rpartition("/")[2])
                self.conflicts.record(e["path"], plan.conflict, None, theirs, None, copy)
        self._adopt(e["ino"], st)

    async def _owned(self, e: dict, made, path: str) -> RemoteStat:
        """An item just made (`made`, awaited), with the owner the entry asks for: the
        server makes it the daemon's."""
        st = await made
        uid, gid = e.get("uid"), e.get("gid")
        if uid is not None and (st.uid, st.gid) != (uid, gid):
            st = await self.remote.chown(path, uid, gid)
        return st

    async def _mkdir(self, e: dict) -> None:
        await self._create(e, lambda path: self._owned(
            e, self.remote.mkdir(path, e["mode"] or 0o755), path))

    async def _symlink(self, e: dict) -> None:
        await self._create(e, lambda path: self._owned(
            e, self.remote.symlink(e["link_target"], path), path))

    async def _mknod(self, e: dict) -> None:
        await self._create(e, lambda path: self._owned(
            e, self.remote.mknod(path, e["kind"], e["mode"] or 0, e.get("rdev") or 0), path))

    # -------------------------------------------------------------- deletes
    async def _unlink(self, e: dict) -> None:
        st = await self.remote.stat_or_none(e["path"])
        plan = rc.reconcile(e["kind"], rc.Side(rc.DELETED), self._server_side(e, st))
        if plan.action == rc.DELETE_REMOTE:
            if e["base"] is None:
                await self._ignore_missing(self.remote.remove(e["path"]))
                return
            st = await self.remote.remove_if(e["path"], e["base"])
            if st is None:
                return
            plan = rc.reconcile(e["kind"], rc.Side(rc.DELETED), self._server_side(e, st))
        if plan.action == rc.CONFLICT:
            # Deleted here, changed there: theirs stays (the next listing shows it).
            self.conflicts.record(e["path"], plan.conflict, None, st, e["base"], None)

    async def _rmdir(self, e: dict) -> None:
        """The plan for a folder unchanged there is DELETE_REMOTE; the server tells
        the other cases by its answer (gone: FORGET; not empty: changed there)."""
        try:
            await self.remote.rmdir(e["path"])
            return
        except NotFound:
            there = rc.Side(rc.DELETED)
        except NotEmpty:
            there = rc.Side(rc.MODIFIED, "dir")  # someone put files there meanwhile
        plan = rc.reconcile("dir", rc.Side(rc.DELETED), there)
        if plan.action == rc.CONFLICT:  # the folder stays with what is in it
            self.conflicts.record(e["path"], plan.conflict, None, None, None, None)

    @staticmethod
    async def _ignore_missing(call) -> None:
        try:
            await call
        except NotFound:
            pass

    # -------------------------------------------------------------- renames
    async def _rename(self, e: dict) -> None:
        old, new, base, target = e["path"], e["new_path"], e["base"], e["target"]
        st_old = await self.remote.stat_or_none(old)
        if st_old is None:
            st_new = await self.remote.stat_or_none(new)
            if st_new is not None and base is not None and (
                    st_new.fingerprint == base or st_new.kind == "dir" == e["kind"]
                    and st_new.file_id == base.file_id):
                return  # done before the link dropped; only its answer was lost
            # Renamed here, gone there: reconcile says ours is put back (at the new name).
            plan = rc.reconcile(e["kind"], rc.Side(rc.MODIFIED, e["kind"]), rc.Side(rc.DELETED))
            self.conflicts.record(old, plan.conflict, None, None, base, new)
            await self._put_back(e, new)
            return
        # The destination, as reconcile sees it: ours arrives there (a create, or a
        # change of the version we replaced); the server's side is what it holds now.
        st_new = await self.remote.stat_or_none(new)
        plan = rc.reconcile(
            e["kind"] if target is not None else None,
            rc.Side(rc.MODIFIED if target is not None else rc.CREATED, e["kind"]),
            rc.remote_side(target, e["kind"] if target is not None else None, st_new))
        if plan.action == rc.PUSH or plan.action == rc.MERGE or (
                plan.action == rc.CONFLICT and plan.keeps_name == "local" and st_new is None):
            # PUSH: free, or the version we replaced; MERGE: an empty folder there may be
            # replaced (the server refuses otherwise); theirs deleted: ours takes it.
            await self.remote.rename(old, new, st_new is not None)
            return
        # The new name holds something we never saw: ours goes beside it.
        copy = await self._beside(new, lambda path: self._rename_noreplace(old, path))
        self._rename_here(e["ino"], copy.rpartition("/")[2])
        self.conflicts.record(new, plan.conflict or rc.CREATE_CREATE, None, st_new, target, copy)

    async def _rename_noreplace(self, old: str, new: str) -> None:
        await self.remote.rename(old, new, False)

    async def _put_back(self, e: dict, path: str) -> None:
        item = self.tree.item(e["ino"])
        if item is None:
            return
        if item.kind == "dir":
            await self._mkdir({**e, "path": path, "mode": item.mode})
        elif item.kind == "file" and item.complete:
            item.set_base(None)
            self.tree.mark_dirty(item)
            self.again(item)

    # ------------------------------------------------------------- setattr
    async def _setattr(self, e: dict) -> None:
        try:
            uid, gid = e.get("uid"), e.get("gid")
            if uid is not None or gid is not None:
                # First: a change of owner clears the set-id bits the mode may set.
                await self.remote.chown(e["path"], -1 if uid is None else uid,
                                        -1 if gid is None else gid)
            if e["mode"] is not None and self.remote.stores_modes:
                await self.remote.chmod(e["path"], e["mode"])
            if e["mtime_ns"] is not None and e["kind"] != "symlink":
                await self.remote.set_mtime(e["path"], e["mtime_ns"])
        except NotFound:
            pass
