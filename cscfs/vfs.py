"""The file-system core: POSIX operations on inodes, served from the local cache.

No FUSE in here: the adapters (fuse_ops.py, later WinFsp) call these methods and
translate errors. Methods are trio coroutines run on the one dispatch thread. What
is not a file-system operation lives in a collaborator, wired in client.py:
the inode table (inodes.py), the link/mode keeper (link.py), the remote gateway
(gateway.py), the fetcher (fetcher.py), the listing (listing.py), the change
watcher (watcher.py) and the sync engine (sync/: write-back, upload, replay).

Concurrency rules (docs/ARCHITECTURE.md, "Locking", has the whole picture):
- Everything in memory (nodes, handles, the state database) is touched only on the
  dispatch thread, so code between two awaits is atomic.
- Remote calls run in worker threads under a deadline (gateway.call); while one is
  in flight other requests are served.
- A file's lock (InodeTable.lock) serialises fetches of a chunk, uploads, clean
  setattr and the namespace operations on that file (unlink, rename), so an upload
  never races a rename of its file. Reads and writes of cached data take no lock.
- Revalidation and listing merges drop a stale clean copy without the file's lock;
  a fetch of the old version under way sees the file's epoch move and discards its
  bytes (fetcher.py), so a file never holds bytes of two server versions.
- An upload sends a snapshot taken under the file's lock (engine_ports.py), so a
  write meanwhile never reaches the server half-way; it leaves the file dirty.
- Lock order: a folder's refresh lock, then a file lock; never two file locks.

Hot path: read() and write() on cached data do one os.pread / os.pwrite on the
content file, no SQLite, no thread hop, no network.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import stat as statmod
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from sync.ports import SPECIAL_KINDS
from sync.vocabulary import DELETE_UPDATE

from . import errors, timestamps
from .config import Options
from .diskspace import SpaceKeeper
from .engine_ports import ConflictPort, JournalPort
from .errors import fs_error
from .fetcher import Fetcher
from .gateway import RemoteGateway
from .inodes import InodeTable
from .link import LinkKeeper
from .listing import Listing
from .metadata import ROOT_INO, Node
from .owners import Owner, Owners
from .remote.base import RemoteStore, join

log = logging.getLogger("cscfs.vfs")

XATTR_STATUS = "user.cscfs.status"
XATTR_PINNED = "user.cscfs.pinned"
XATTRS = (XATTR_STATUS, XATTR_PINNED)
NAME_MAX = 255  # bytes, as statfs says
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class Invalidator(Protocol):
    """How the core tells the kernel that something changed behind its back."""

    def entry(self, parent_ino: int, name: str) -> None: ...


class NoInvalidator:
    def entry(self, parent_ino: int, name: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    mode: int  # with file-type bits
    nlink: int
    uid: int
    gid: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0


@dataclass(slots=True)
class Handle:
    node: Node
    writable: bool
    keep_cache: bool = True  # False: our copy was refetched, the kernel must drop its pages


@dataclass(frozen=True, slots=True)
class FsSpace:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int = NAME_MAX


_KIND_BITS = {"file": statmod.S_IFREG, "dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK,
              "fifo": statmod.S_IFIFO, "socket": statmod.S_IFSOCK,
              "chardev": statmod.S_IFCHR, "blockdev": statmod.S_IFBLK}
_SPECIAL_BY_BITS = {_KIND_BITS[k]: k for k in SPECIAL_KINDS}


class VFS:
    def __init__(self, store: RemoteStore, options: Options, table: InodeTable,
                 link: LinkKeeper, gateway: RemoteGateway, fetcher: Fetcher, listing: Listing,
                 journal: JournalPort, conflicts: ConflictPort, writeback,
                 space: SpaceKeeper, clock: Callable[[], float] = time.monotonic):
        self.store, self.opts, self.table, self.link_keeper = store, options, table, link
        self.gateway, self.fetcher, self.listing = gateway, fetcher, listing
        self.journal, self.conflicts, self.writeback = journal, conflicts, writeback
        self.space = space
        self.clock = clock
        self.owners = Owners(store)
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._space_cache: tuple[float, FsSpace] | None = None
        self.requests = 0  # file system requests so far (counted by the FUSE adapter)
        self.request_counts: collections.Counter[str] = collections.Counter()  # per operation

    @property
    def online(self) -> bool:
        return self.link_keeper.online

    @property
    def ttl(self) -> float:
        """How long the kernel may keep names and attributes."""
        return self.listing.ttl()

    @property
    def direct(self) -> bool:
        """Namespace changes go to the server now: online (or syncing), no journal left."""
        return (self.link_keeper.online or self.gateway.sync_active > 0) and self.journal.count == 0

    def attr(self, node: Node) -> Attr:
        size = node.size if node.kind == "file" else (
            len(node.target.encode()) if node.kind == "symlink" else 0)
        uid, gid = self.owners.of(node)
        return Attr(
            ino=node.ino, mode=_KIND_BITS[node.kind] | node.mode, nlink=self._nlink(node),
            uid=uid, gid=gid, size=size, blocks=(size + 511) // 512,
            atime_ns=node.mtime_ns, mtime_ns=node.mtime_ns, ctime_ns=node.ctime_ns,
            rdev=node.rdev)

    def _nlink(self, node: Node) -> int:
        """A folder's links: its name, its '.', each subfolder's '..'; counted only
        when its listing is complete (1, as btrfs says, where the count is unknown:
        `find` then does not skip subfolders it was never told of)."""
        if node.unlinked:
            return 0  # still open, no name left
        if node.kind != "dir" or not node.listed:
            return 1
        nodes = self.table.nodes
        return 2 + sum(nodes[i].kind == "dir" for i in node.children.values())

    # ------------------------------------------------------------ operations
    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.table.dir(parent_ino)
        if name == ".":
            return parent
        if name == "..":
            return self.table.nodes[parent.parent or ROOT_INO]
        await self.listing.refresh(parent)
        ino = parent.children.get(name)
        if ino is None:
            self.listing.require_listing(parent, self.online)
            try:  # too long for the server (its own unit): say so, as its mount would
                self.store.check_name(name)
            except errors.InvalidName as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    raise fs_error(errno.ENAMETOOLONG) from None
            raise fs_error(errno.ENOENT)
        return self.table.nodes[ino]

    async def getattr(self, ino: int) -> Attr:
        return self.attr(self.table.node(ino))

    async def readdir(self, ino: int) -> list[tuple[str, Node]]:
        d = self.table.dir(ino)
        await self.listing.refresh(d)
        self.listing.require_listing(d, self.online)
        return [(name, self.table.nodes[i]) for name, i in d.children.items()]

    async def releasedir(self) -> None:
        self.table.state.flush_pending()  # a listing ended: the rows it brought, now

    async def readlink(self, ino: int) -> str:
        node = self.table.node(ino)
        if node.kind != "symlink":
            raise fs_error(errno.EINVAL)
        return node.target

    def _check_new_name(self, parent: Node, name: str) -> None:
        if name in parent.children:
            raise fs_error(errno.EEXIST)
        self._check_server_name(name)

    def _check_server_name(self, name: str) -> None:
        """Refuse now a name the server would refuse at upload time."""
        try:
            self.store.check_name(name)
        except errors.InvalidName as exc:
            log.warning("refused name: %s", exc)
            raise

    async def mkdir(self, parent_ino: int, name: str, mode: int,
                    owner: Owner | None = None) -> Node:
        parent = self.table.dir(parent_ino)
        mode &= 0o7777
        if parent.mode & statmod.S_ISGID:
            mode |= statmod.S_ISGID  # a set-group-ID folder's subfolders are too
        return await self._make(parent, name, "dir", mode, owner,
                                lambda path: self.store.mkdir(path, mode))

    async def symlink(self, parent_ino: int, name: str, target: str,
                      owner: Owner | None = None) -> Node:
        return await self._make(self.table.dir(parent_ino), name, "symlink", 0o777, owner,
                                lambda path: self.store.symlink(target, path), target=target)

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int,
                    owner: Owner | None = None) -> Node:
        """A fifo, socket or device node: on the server where it can hold one (a
        folder server; SMB refuses with EPERM, as a cifs mount does)."""
        kind = _SPECIAL_BY_BITS.get(statmod.S_IFMT(mode))
        if kind is None:
            if statmod.S_IFMT(mode) not in (0, statmod.S_IFREG):
                raise fs_error(errno.EINVAL)
            fh, node = await self.create(parent_ino, name, mode,
                                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, owner)
            await self.release(fh)
            return node
        if not self.store.can_mknod(kind):
            raise fs_error(errno.EPERM, f"the server cannot hold a {kind}")
        rdev = rdev if kind in ("chardev", "blockdev") else 0
        mode &= 0o7777
        return await self._make(self.table.dir(parent_ino), name, kind, mode, owner,
                                lambda path: self.store.mknod(path, kind, mode, rdev), rdev=rdev)

    async def _make(self, parent: Node, name: str, kind: str, mode: int,
                    owner: Owner | None, make, target: str | None = None,
                    rdev: int = 0) -> Node:
        """mkdir, symlink, mknod: a namespace item with no content. On the server now
        (`make(path)`, then its owner) if we may; else here, and in the journal."""
        await self.listing.refresh(parent)
        self._check_new_name(parent, name)
        path = join(self.table.path_of(parent), name)
        uid, gid = self.owners.for_new(parent, owner)
        op, fields = {"dir": ("mkdir", {"mode": mode}),
                      "symlink": ("symlink", {"link_target": target})}.get(
            kind, ("mknod", {"mode": mode, "rdev": rdev}))
        with self.table.changing(parent):
            if self.direct:
                try:
                    st = await self.gateway.call(make, path)
                except errors.Unavailable:
                    pass  # the link went: journal it like any offline change
                else:
                    self._check_new_name(parent, name)
                    node = self.table.add(parent, name, kind, st.mode, mtime_ns=st.mtime_ns,
                                          target=target, remote=st, rdev=rdev)
                    node.listed = kind == "dir"
                    await self._give(node, path, uid, gid, mode)
                    self.table.state.save(node)
                    self._touched(parent)
                    return node
            self._check_new_name(parent, name)
            with self.table.state.transaction():
                node = self.table.add(parent, name, kind, mode, target=target,
                                      owner=(uid, gid), rdev=rdev)
                self.journal.add(op, node, path, uid=uid, gid=gid, **fields)
            self._touched(parent)
            return node

    async def _give(self, node: Node, path: str, uid: int | None, gid: int | None,
                    mode: int) -> None:
        """An item just made on the server (as the daemon's): give it its owner, then
        its mode again (a chown clears set-ID bits). Cut off: the journal does it."""
        try:
            if uid is not None and (node.uid, node.gid) != (uid, gid):
                st = await self.gateway.call(self.store.chown, path, uid, gid)
                node.uid, node.gid, node.mode = st.uid, st.gid, st.mode
            if self.store.stores_modes and node.kind != "symlink" and node.mode != mode:
                node.mode = (await self.gateway.call(self.store.chmod, path, mode)).mode
        except errors.Unavailable:
            node.uid, node.gid, node.mode = uid, gid, mode
            self.journal.add("setattr", node, path, uid=uid, gid=gid,
                             mode=None if node.kind == "symlink" else mode)

    async def create(self, parent_ino: int, name: str, mode: int, flags: int,
                     owner: Owner | None = None) -> tuple[int, Node]:
        """A new file lives only here until its first upload (after the last close),
        so a temporary file that is written, renamed over a document and closed
        reaches the server as one atomic replace (with its owner and mode)."""
        parent = self.table.dir(parent_ino)
        await self.listing.refresh(parent)
        if name in parent.children:
            if flags & os.O_EXCL:
                raise fs_error(errno.EEXIST)
            node = self.table.nodes[parent.children[name]]
            return await self.open(node.ino, flags), node
        self._check_server_name(name)
        with self.table.changing(parent):
            node = self.table.add(parent, name, "file", mode & 0o7777, dirty=True,
                                  owner=self.owners.for_new(parent, owner))
            self._touched(parent)
        node.fd = self.table.content.open(node.ino, truncate=True)
        return self._new_handle(node, writable=True), node

    async def open(self, ino: int, flags: int) -> int:
        node = self.table.node(ino)
        if node.kind == "dir":
            raise fs_error(errno.EISDIR)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = writable and bool(flags & os.O_TRUNC)
        await self.listing.revalidate(node)
        if node.unlinked:
            raise fs_error(errno.ENOENT)
        # Opened for overwrite (O_TRUNC), a ghost needs none of its content, also
        # offline: it becomes an update of its last known server version.
        if writable and not truncate:
            await self.fetcher.fetch(node, 0, node.size)  # a writer needs the whole file
        elif not truncate and not node.present.spans and node.size and not self.online:
            raise errors.Unavailable(f"{self.table.path_of(node)} is not cached and the "
                                     f"server is unavailable")
        if not node.complete and self.online:
            self.fetcher.complete_later(node)  # the rest, while the link is up
        fh = self._new_handle(node, writable)
        self.handles[fh].keep_cache = not node.refetched
        node.refetched = False
        if truncate and node.size:
            self._set_size(node, 0)
        node.last_access = time.time_ns() // 1_000_000  # ms, for the quota's LRU order
        return fh

    def _new_handle(self, node: Node, writable: bool) -> int:
        if node.fd < 0:
            node.fd = self.table.content.open(node.ino)
        node.opens += 1
        if writable:
            node.writers += 1
            self.writeback.hold(node)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(node, writable)
        return fh

    def content_fd(self, fh: int) -> int:
        """The cache file's descriptor behind an open handle (for kernel passthrough)."""
        return self.handles[fh].node.fd

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        node = self.handles[fh].node
        if not node.present.covers(offset, min(offset + size, node.size)):
            await self.fetcher.fetch(node, offset, offset + size)
        return os.pread(node.fd, size, offset)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        node = self.handles[fh].node
        self.space.check_write(grows=offset + len(data) > node.size)
        if not node.dirty:
            self.table.mark_dirty(node)
        try:
            n = os.pwrite(node.fd, data, offset)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.space.met_full()
            raise
        end = offset + n
        node.present.add(min(offset, node.size), end)  # a hole before offset reads as zeros
        if end > node.size:
            node.size = end
        node.mtime_ns = max(timestamps.now_ns(), node.mtime_ns)  # never back in time
        node.generation += 1
        if not node.unsaved:
            self.table.changed(node)
        return n

    def _set_size(self, node: Node, size: int) -> None:
        if not node.dirty:
            self.table.mark_dirty(node)
        if node.fd >= 0:
            os.ftruncate(node.fd, size)
        else:
            self.table.content.truncate(node.ino, size)
        old = node.size
        node.size = size
        node.present.truncate(size)
        node.present.add(min(old, size), size)  # a grown tail reads as zeros
        node.mtime_ns = node.ctime_ns = max(timestamps.now_ns(), node.mtime_ns)
        node.generation += 1
        node.epoch += 1  # a fetch of server bytes under way must not land on this size
        self.table.state.save(node)
        if not node.writers:
            self.writeback.schedule(node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self.handles[fh].node
        os.fsync(node.fd)
        if not node.unlinked:
            self.table.state.save(node)
        self.table.state.sync_to_disk()

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh)
        node = h.node
        node.opens -= 1
        if h.writable:
            node.writers -= 1
        if node.opens == 0:
            os.close(node.fd)
            node.fd = -1
            if node.unlinked:
                self.table.nodes.pop(node.ino, None)
                self.table.content.remove(node.ino)
                return
        # The delay runs from the last writer's close: a reader's close must not push it
        # on, or a program that keeps opening the file would keep it from the server.
        if node.dirty and not node.writers and (h.writable or not self.writeback.is_due(node)):
            self.writeback.schedule(node)

    async def setattr(self, ino: int, *, mode: int | None = None, size: int | None = None,
                      mtime_ns: int | None = None, uid: int | None = None,
                      gid: int | None = None) -> Node:
        node = self.table.node(ino)
        owner = self.owners.change(node, uid, gid)  # EPERM before anything changes
        if size is not None:
            if node.kind == "dir":
                raise fs_error(errno.EISDIR)
            if size != node.size:
                if size:
                    await self.fetcher.fetch(node, 0, node.size)
                self._set_size(node, size)
        if not self.store.stores_modes:
            mode = None  # like a cifs mount: chmod succeeds and changes nothing
        if mode is not None:
            mode &= 0o7777
        if mode is None and mtime_ns is None and owner is None:
            return node
        if node.kind != "file" and not self.direct:
            # A folder, link or special file changed offline: here now, on the server
            # at replay.
            self._set_here(node, mode, mtime_ns, owner)
            self.journal.add("setattr", node, self.table.path_of(node), mode=mode,
                             mtime_ns=mtime_ns, uid=owner and owner[0], gid=owner and owner[1])
        elif self.direct and not node.dirty and (node.base is not None or node.kind != "file"):
            # Clean and on the server: change it there, keep the new fingerprint.
            path = self.table.path_of(node)
            async with self.table.lock(node):
                st = None
                if owner is not None:  # first: a chown clears set-ID bits
                    st = await self.gateway.call(self.store.chown, path, *owner)
                if mode is not None and mode != (node.mode if st is None else st.mode):
                    st = await self.gateway.call(self.store.chmod, path, mode)
                if mtime_ns is not None and node.kind != "symlink":
                    st = await self.gateway.call(self.store.set_mtime, path, mtime_ns)
                if st is not None:
                    node.mode, node.mtime_ns, node.uid, node.gid = (
                        st.mode, st.mtime_ns, st.uid, st.gid)
                    if node.kind != "dir" and not node.dirty and node.base is not None:
                        node.set_base(st.fingerprint, node.base_sha)  # same content
                    node.size = st.size if node.kind == "file" else node.size
        else:
            # A file changed here or not on the server yet: its upload carries these.
            self._set_here(node, mode, mtime_ns, owner)
            node.generation += 1  # an upload under way sends the old ones: once more
            if not node.dirty:
                await self.fetcher.fetch(node, 0, node.size)
                self.table.mark_dirty(node)
            if not node.writers:
                self.writeback.schedule(node)
        node.ctime_ns = time.time_ns()
        self.table.state.save(node)
        return node

    def _touched(self, *folders: Node) -> None:
        """An entry of these folders was made, removed or renamed: their mtime and
        ctime move, as POSIX asks (a folder's times are never compared with the
        server's, so ours may run ahead of them)."""
        now = time.time_ns()
        for d in folders:
            d.mtime_ns = d.ctime_ns = now
            self.table.changed(d)

    @staticmethod
    def _set_here(node: Node, mode: int | None, mtime_ns: int | None,
                  owner: Owner | None) -> None:
        if mode is not None:
            node.mode = mode
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        if owner is not None:
            node.uid, node.gid = owner

    @staticmethod
    def _on_server(node: Node) -> bool:
        """Whether removing or moving this node must reach the server: it is there
        (base), or its creation is in the journal (a folder or link made offline).
        A file made here exists only here until its upload."""
        return node.base is not None or node.kind != "file"

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.table.dir(parent_ino)
        node = await self.lookup(parent_ino, name)
        if node.kind == "dir":
            raise fs_error(errno.EISDIR)
        async with self.table.lock(node):
            with self.table.changing(parent):
                path = self.table.path_of(node)
                if self._on_server(node) and not await self._try_direct(
                        self._remove_remote, node, path):
                    self.journal.add("unlink", node, path,
                                  base=node.base if node.kind == "file" else None)
                if not node.unlinked and node.ino in self.table.nodes:
                    self.table.drop(node)
                    self._touched(parent)

    async def _try_direct(self, fn, *args) -> bool:
        """Do a namespace change on the server now if we may; False: journal it."""
        if not self.direct:
            return False
        try:
            await fn(*args)
            return True
        except errors.Unavailable:
            return False

    async def _remove_remote(self, node: Node, path: str) -> None:
        """Delete a server file only if it is still the version we knew."""
        try:
            st = await self.gateway.call(self.store.stat, path)
        except errors.NotFound:
            return
        if node.kind == "file" and st.fingerprint != node.base:
            # Deleted here, changed there: keep theirs (it reappears at the next
            # listing) and record it.
            self.conflicts.record(path, DELETE_UPDATE, None, st, node.base, None)
            return
        if node.kind != "file":
            try:
                await self.gateway.call(self.store.remove, path)
            except errors.NotFound:
                pass
            return
        now = await self.gateway.remove_if(path, node.base,
                                           node.base_sha if node.racy else None)
        if now is not None:  # changed between our look and the delete: theirs stays
            self.conflicts.record(path, DELETE_UPDATE, None, now, node.base, None)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.table.dir(parent_ino)
        node = await self.lookup(parent_ino, name)
        if node.kind != "dir":
            raise fs_error(errno.ENOTDIR)
        await self.listing.refresh(node)
        self.listing.require_listing(node, self.online)  # offline, only a listed folder is known to be empty
        if node.children:
            raise fs_error(errno.ENOTEMPTY)
        with self.table.changing(parent, node):
            path = self.table.path_of(node)
            if not await self._try_direct(self._rmdir_remote, path):
                self.journal.add("rmdir", node, path)
            if node.children:
                raise fs_error(errno.ENOTEMPTY)
            self.table.drop(node)
            self._touched(parent)

    async def _rmdir_remote(self, path: str) -> None:
        try:
            await self.gateway.call(self.store.rmdir, path)
        except errors.NotFound:
            pass

    async def rename(self, old_parent_ino: int, old_name: str, new_parent_ino: int,
                     new_name: str, flags: int = 0) -> None:
        if flags & RENAME_EXCHANGE:
            raise fs_error(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old_parent, new_parent = self.table.dir(old_parent_ino), self.table.dir(new_parent_ino)
        node = await self.lookup(old_parent_ino, old_name)
        await self.listing.refresh(new_parent)
        target_ino = new_parent.children.get(new_name)
        target = self.table.nodes[target_ino] if target_ino is not None else None
        if target is node:
            return
        self._check_server_name(new_name)
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise fs_error(errno.EEXIST)
            if node.kind == "dir" and target.kind != "dir":
                raise fs_error(errno.ENOTDIR)
            if node.kind != "dir" and target.kind == "dir":
                raise fs_error(errno.EISDIR)
            if target.kind == "dir":
                await self.listing.refresh(target)
                if target.children:
                    raise fs_error(errno.ENOTEMPTY)
        if node.kind == "dir":
            p = new_parent
            while p.ino != ROOT_INO:
                if p is node:
                    raise fs_error(errno.EINVAL, "cannot move a folder into itself")
                p = self.table.nodes[p.parent]
        async with self.table.lock(node):
            with self.table.changing(old_parent, new_parent):
                old_path = self.table.path_of(node)
                new_path = join(self.table.path_of(new_parent), new_name)
                replaces = target is not None and self._on_server(target)
                if self._on_server(node):
                    if not await self._try_direct(self._rename_remote, old_path, new_path,
                                                  target, replaces):
                        self.journal.add("rename", node, old_path, new_path=new_path,
                                      base=node.base,
                                      target=target.base if replaces else None)
                elif replaces and target.kind == "file":
                    # A file new here replaces a server file (an editor's save): it
                    # takes over the replaced file's server version, so its upload
                    # replaces that version atomically, and only that version.
                    node.base, node.base_seen_ns, node.base_sha = (
                        target.base, target.base_seen_ns, target.base_sha)
                elif replaces:  # a file new here replaces a server symlink
                    if not await self._try_direct(self._remove_remote, target, new_path):
                        self.journal.add("unlink", target, new_path)
                if target is not None and target.ino in self.table.nodes:
                    self.table.drop(target)
                self.table.move(node, new_parent, new_name)
                node.checked_at = self.clock()
                self._touched(old_parent, new_parent)
        self.writeback.renamed(node)

    async def _rename_remote(self, old_path: str, new_path: str, target: Node | None,
                             replaces: bool) -> None:
        if replaces and target.kind == "file" and target.base is not None:
            # Replacing a server file: only the version we knew.
            st = await self.gateway.stat_or_none(new_path)
            if st is not None and st.fingerprint != target.base:
                raise fs_error(errno.EBUSY, f"{new_path} changed on the server")
        await self.gateway.call(self.store.rename, old_path, new_path, replaces)

    async def link(self, ino: int, new_parent_ino: int, new_name: str) -> None:
        raise fs_error(errno.EPERM, "hard links are not supported")

    async def statfs(self) -> FsSpace:
        now = self.clock()
        if self._space_cache and now - self._space_cache[0] < 5 and self.online:
            return self._space_cache[1]
        info = None
        if self.online:
            try:
                info = await self.gateway.call(self.store.space)
            except errors.Unavailable:
                pass
        if info is None:
            sv = os.statvfs(self.table.content.root)
            space = FsSpace(sv.f_frsize, sv.f_blocks, sv.f_bavail, sv.f_files, sv.f_favail)
        else:
            space = FsSpace(4096, info.total_bytes // 4096, info.free_bytes // 4096,
                            info.total_files, info.free_files)
            self._space_cache = (now, space)
        return space

    # ---------------------------------------------------------------- xattrs
    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.table.node(ino)
        if name == XATTR_STATUS:
            in_conflict = bool(self.conflicts.paths) and self.table.path_of(node) in self.conflicts.paths
            return node.status(in_conflict).encode()
        if name == XATTR_PINNED:
            return b"1" if self.table.pinned(node) else b"0"
        raise fs_error(errno.ENODATA)

    async def listxattr(self, ino: int) -> list[str]:
        self.table.node(ino)
        return list(XATTRS)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self.table.node(ino)
        if name == XATTR_PINNED:
            if value.strip() not in (b"0", b"1"):
                raise fs_error(errno.EINVAL, "user.cscfs.pinned takes 0 or 1")
            node.pinned = 1 if value.strip() == b"1" else -1
            self.table.state.save(node)
            return
        if name == XATTR_STATUS:
            raise fs_error(errno.EPERM, "user.cscfs.status is read-only")
        raise fs_error(errno.ENOTSUP)

    async def removexattr(self, ino: int, name: str) -> None:
        self.table.node(ino)
        raise fs_error(errno.EPERM if name in XATTRS else errno.ENODATA)
