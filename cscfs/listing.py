"""Listing refresh, merge and revalidation: folding what the server holds now into
the tree, name by name, as sync/reconcile.py plans it.

A folder's refresh takes the folder's refresh lock and merges the server's listing
only if no namespace operation touched the folder meanwhile (InodeTable.changing
bumps dir_gen); otherwise it is dropped and the folder stays stale. Lock order:
refresh lock of a folder, then file locks.
"""

from __future__ import annotations

import errno
import logging
from typing import Callable

import trio

from sync import reconcile as rc

from . import errors
from .errors import fs_error
from .gateway import RemoteGateway
from .inodes import InodeTable
from .metadata import Node
from .remote.base import RemoteStat

log = logging.getLogger("cscfs.listing")


class Listing:
    """`direct()` says whether the server is ours to ask now (online, and no offline
    change waits for replay); `ttl()` how long a check is trusted; `invalidate`
    tells the kernel a name changed; `pending()` how many offline changes wait."""

    def __init__(self, table: InodeTable, gateway: RemoteGateway, direct: Callable[[], bool],
                 ttl: Callable[[], float], invalidate, clock: Callable[[], float],
                 pending: Callable[[], int] = lambda: 0):
        self.table, self.gateway = table, gateway
        self.direct, self.ttl, self.invalidate, self.clock = direct, ttl, invalidate, clock
        self.pending = pending
        self._refresh_locks: dict[int, trio.Lock] = {}

    def stale(self, node: Node) -> bool:
        return self.clock() - node.checked_at > self.ttl()

    def require_listing(self, d: Node, online: bool) -> None:
        """A folder never listed from the server cannot say a name is not there."""
        if not d.listed and not online:
            raise errors.Unavailable(f"{self.table.path_of(d) or '/'} was never listed and "
                                     f"the server is unavailable")

    def _may_list(self, background: bool) -> bool:
        """Online (or a sync), or a fill pass the mode allows; never while offline
        changes wait for replay: the server is not yet our picture."""
        return self.direct() or background and self.gateway.allowed(background=True) and (
            self.gateway.filling > 0 and self.pending() == 0)

    async def refresh(self, d: Node, force: bool = False, background: bool = False) -> None:
        """Bring a folder's children up to date with the server when stale."""
        if force:
            d.checked_at = -1e9
        if not self._may_list(background) or not self.stale(d):
            return
        table = self.table
        lock = self._refresh_locks.setdefault(d.ino, trio.Lock())
        async with lock:
            if not self._may_list(background) or not self.stale(d) or d.ino not in table.nodes:
                return
            if table.busy_dirs.get(d.ino):
                return  # a listing taken now would be discarded: serve what we have
            gen, marked = table.dir_gen.get(d.ino, 0), d.marked
            started = self.clock()
            try:
                entries = await self.gateway.scandir(table.path_of(d), background)
            except errors.Unavailable:
                return  # serve what we have
            except errors.NotFound:
                return  # the folder itself went; the parent's refresh handles it
            if (table.dir_gen.get(d.ino, 0) != gen or table.busy_dirs.get(d.ino)
                    or d.ino not in table.nodes):
                return  # changed here meanwhile: this listing may be out of date
            with table.state.transaction():
                self._merge(d, entries)
            # A change reported while the listing was on its way may be missing from
            # it: merged, but not fresh.
            d.checked_at = started if d.marked == marked else -1e9
            if not d.listed:
                d.listed = True
                table.state.save_after_pending(d)  # with its children's rows

    def local_side(self, node: Node | None, deep: bool = True) -> rc.Side:
        """What happened to a name here since the last sync. A folder's subtree is
        only searched for changes when `deep`: a listing needs that only for a
        folder gone or changed in kind on the server, and every listing would
        otherwise walk every subtree under it."""
        if node is None or node.unlinked:
            return rc.local_side(None, False, False)  # local deletions live in the journal
        changed = node.dirty or (deep and node.kind == "dir"
                                 and self.table.has_local_changes(node))
        return rc.local_side(node.kind, node.base is not None, changed)

    def _merge(self, d: Node, entries: list[RemoteStat]) -> None:
        """Fold a fresh server listing of folder `d` into our tree, name by name, as
        reconcile() plans it. Every plan has its place here:
        - PULL: take theirs (a new name, a new version of a clean file, a new kind);
        - DELETE_LOCAL: gone there, unchanged here: forget it;
        - NOTHING, MERGE (folders on both sides: their own listings merge their
          children), PUSH (ours is newer: the upload or the replay takes it there),
          FORGET (gone on both sides: cannot occur, a name gone here is no node);
        - CONFLICT: left to the upload (files) or the replay (folder changes), which
          keep both versions: merging here must not drop either."""
        table = self.table
        listed = {st.name: st for st in entries}
        self._follow_renames(d, listed)
        # New there, never here: reconcile() says PULL; added all at once.
        known = set(d.children)
        table.add_remote_many(d, [st for name, st in listed.items() if name not in known])
        for name in known:
            st = listed.get(name)
            child = table.nodes[d.children[name]]
            base_kind = child.kind if child.base is not None else None
            deep = st is None or st.kind != child.kind
            plan = rc.reconcile(base_kind, self.local_side(child, deep),
                                rc.remote_side(child.base, base_kind, st))
            if plan.action == rc.PULL:
                if child.kind != st.kind:
                    table.drop(child)
                    table.add_remote(d, st)
                    self.invalidate.entry(d.ino, name)
                elif child.kind == "file":
                    table.drop_content(child, st)
                else:  # a symlink pointing elsewhere now, a special file changed
                    child.target, child.base, child.mtime_ns = st.target, st.fingerprint, st.mtime_ns
                    child.rdev, child.uid, child.gid = st.rdev, st.uid, st.gid
                    table.state.save(child)
            elif plan.action == rc.DELETE_LOCAL:
                table.drop(child)
                self.invalidate.entry(d.ino, name)
            elif plan.action == rc.NOTHING and st is not None and not child.dirty:
                # Mode and owner changed there (a chmod, a chown: no new version).
                mode = st.mode if self.gateway.stores_modes else child.mode
                if (child.mode, child.uid, child.gid) != (mode, st.uid, st.gid):
                    child.mode, child.uid, child.gid = mode, st.uid, st.gid
                    table.state.save(child)
            if child.kind != "dir" and not child.unlinked:
                child.checked_at = self.clock()  # a folder's checked_at dates its listing

    def _follow_renames(self, d: Node, listed: dict[str, RemoteStat]) -> None:
        """A name gone from the listing whose server version shows up under a new
        name was renamed there: move our node (and its cache, and its changes).
        The whole fingerprint must match, not the file id alone: a plain folder
        reuses the inode numbers of deleted files."""
        table = self.table
        by_id = {n.base.file_id: n for n in (table.nodes[i] for i in d.children.values())
                 if n.base is not None and n.name not in listed}
        for name, st in listed.items():
            node = by_id.get(st.file_id)
            if (node is not None and name not in d.children and st.kind == node.kind
                    and (node.kind == "dir" or st.fingerprint == node.base)):
                old = node.name
                table.move(node, d, name)
                self.invalidate.entry(d.ino, old)
                log.info("%s was renamed on the server to %s", old, name)

    async def revalidate(self, node: Node) -> None:
        """Check a file against the server; a clean copy of an older version goes
        (without the file's lock: a fetch under way sees the epoch move)."""
        if node.base is None or not self.direct() or not self.stale(node):
            return
        table = self.table
        try:
            st = await self.gateway.stat(table.path_of(node))
        except errors.Unavailable:
            return
        except errors.NotFound:
            if not table.has_local_changes(node) and node.ino in table.nodes:
                parent = table.nodes[node.parent]
                with table.changing(parent):
                    table.drop(node)
                self.invalidate.entry(parent.ino, node.name)
                raise fs_error(errno.ENOENT, "deleted on the server") from None
            return
        node.checked_at = self.clock()
        if st.kind == node.kind and st.fingerprint != node.base and not node.dirty:
            table.drop_content(node, st)
