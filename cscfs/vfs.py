"""The file-system core: POSIX operations on inodes, served from the local cache.

No FUSE in here: the adapters (fuse_ops.py, later WinFsp) call these methods and
translate errors. Methods are trio coroutines run on the one dispatch thread.

Concurrency rules:
- Everything in memory (nodes, handles, the state database) is touched only on the
  dispatch thread, so code between two awaits is atomic.
- Remote calls run in worker threads under a deadline (`_remote`); while one is in
  flight other requests are served.
- A per-file lock (`_file_lock`) serialises fetches, revalidation, uploads and the
  namespace operations on that file, so an upload never races a rename of its file.
- A folder's listing refresh takes the folder's refresh lock and merges the server's
  listing only if no namespace operation touched the folder meanwhile (`_changing`
  bumps `dir_gen`); otherwise it is dropped and the folder stays stale.
- Lock order: refresh lock of a folder, then file locks; never two file locks.

Hot path: read() and write() on cached data do one os.pread / os.pwrite on the
content file, no SQLite, no thread hop, no network.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import posixpath
import socket
import stat as statmod
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import trio

from netprobe import LinkPolicy, LinkState
from netprobe.cost import Cost
from netprobe.policy import UNREACHABLE

from sync import reconcile as rc
from sync.conflicts import conflict_name
from sync.reconcile import Side

from . import errors, modes
from .cache import ContentStore, RangeSet
from .config import Options
from .errors import fs_error
from .metadata import ROOT_INO, Node, State
from .remote.base import TEMP_PREFIX, RemoteStat, RemoteStore, join, remove_if

log = logging.getLogger("cscfs.vfs")

XATTR_STATUS = "user.cscfs.status"
XATTR_PINNED = "user.cscfs.pinned"
XATTRS = (XATTR_STATUS, XATTR_PINNED)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_UPLOAD_CHUNK = 1 << 20
_RACY_HASH_MAX = 64 << 20  # larger racy files are trusted to their fingerprint
_FIRST_FETCH = 128 << 10  # at least this much on a file's first read
_PREFETCH_GRACE = 0.05  # s between an open and the background fetch of the rest
# Background uploads give way while applications keep the mount busy (more than
# _BUSY_RATE requests a second, measured over _LOAD_WINDOW), up to _MAX_DEFER past
# their due time. A program polling a file now and then is far below the rate.
_BUSY_RATE = 500
_LOAD_WINDOW = 0.3
_MAX_DEFER = 10.0


class Invalidator(Protocol):
    """How the core tells the kernel that something changed behind its back."""

    def entry(self, parent_ino: int, name: str) -> None: ...


class _NoInvalidator:
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
    name_max: int = 255


_UNKNOWN = object()  # an event whose path was not looked at

_KIND_BITS = {"file": statmod.S_IFREG, "dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK}


class VFS:
    def __init__(self, store: RemoteStore, state: State, content: ContentStore,
                 options: Options, invalidator: Invalidator | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.state = state
        self.content = content
        self.opts = options
        self.invalidate = invalidator or _NoInvalidator()
        self.clock = clock
        self.uid, self.gid = os.getuid(), os.getgid()
        self.host = socket.gethostname()
        self.nodes: dict[int, Node] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        # Mode: the link's state (netprobe policy) + the user's switch + the config.
        self.policy = LinkPolicy(slow_ms=options.slow_link_ms)
        self.link_state: LinkState = self.policy.current
        self.work_offline = state.get_meta("work_offline") == "1"
        self.mode, self.mode_reason, self.mode_since = "", "", time.time()
        self.journal_len = state.journal_count()
        self.sync_active = 0  # manual syncs running: they reach the server in any mode
        self.cost = Cost(None, None)  # the last cost probe's answer
        self.quota = None  # quota.Quota, set by the daemon
        self.replay_lock = trio.Lock()
        self._replaying = False
        self._file_locks: dict[int, trio.Lock] = {}
        self._refresh_locks: dict[int, trio.Lock] = {}
        self.dir_gen: dict[int, int] = {}
        self._busy_dirs: dict[int, int] = {}
        self._due: dict[int, float] = {}      # ino -> monotonic time its upload is due
        self._uploading: set[int] = set()  # inos being uploaded now
        self._wake = trio.Event()
        self._prefetch_queue: list[int] = []
        self._space_cache: tuple[float, FsSpace] | None = None
        self.watching = False  # the server's change notification is armed
        self.remote_busy = 0  # calls to the server under way (the link probe's context)
        self.remote_ok_at = -1e9  # when the last one succeeded (clock())
        self._unsaved: set[int] = set()  # inos whose rows lag behind (see _changed)
        self._last_upload = self._last_upload_unsaved = None  # "time path", saved in batches
        self.requests = 0  # file system requests so far (counted by the FUSE adapter)
        self._load_at, self._load_count, self._busy = -1e9, 0, False
        self._load()
        self._update_mode()

    # ------------------------------------------------------------------ setup
    def _load(self) -> None:
        for node in self.state.load():
            self.nodes[node.ino] = node
            if node.kind == "dir":
                node.children = {}
        for node in self.nodes.values():
            if node.ino != ROOT_INO:
                parent = self.nodes.get(node.parent)
                if parent is not None and parent.children is not None:
                    parent.children[node.name] = node.ino
        self._recover()
        self._conflict_paths = self._load_conflict_paths()

    def _recover(self) -> None:
        """After a crash: the content files of dirty items are the authority; clean
        items keep only ranges their content file really holds; stray content
        files go."""
        fixed = 0
        with self.state.transaction():
            for node in self.nodes.values():
                if node.kind != "file":
                    continue
                on_disk = self.content.size(node.ino)
                if node.dirty:
                    if on_disk is None:
                        self.content.truncate(node.ino, 0)
                        on_disk = 0
                    if node.size != on_disk or not node.complete:
                        node.size = on_disk
                        node.present = RangeSet([(0, on_disk)])
                        self.state.save(node)
                        fixed += 1
                    self._due[node.ino] = 0.0
                elif node.present.spans:
                    have = on_disk or 0
                    if node.present.spans[-1][1] > have:
                        node.present.truncate(have)
                        self.state.save(node)
                        fixed += 1
        for ino in self.content.all_inos() - set(self.nodes):
            self.content.remove(ino)
            fixed += 1
        if fixed:
            log.info("recovery: repaired %d items after an unclean stop", fixed)

    def _load_conflict_paths(self) -> set[str]:
        paths = set()
        for row in self.state.open_conflicts():
            paths.add(row["path"])
            if row["copy_path"]:
                paths.add(row["copy_path"])
        return paths

    # --------------------------------------------------------------- helpers
    def node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise fs_error(errno.ENOENT) from None

    def _dir(self, ino: int) -> Node:
        node = self.node(ino)
        if node.kind != "dir":
            raise fs_error(errno.ENOTDIR)
        return node

    def path_of(self, node: Node) -> str:
        parts = []
        while node.ino != ROOT_INO:
            parts.append(node.name)
            node = self.nodes[node.parent]
        return "/".join(reversed(parts))

    def _file_lock(self, node: Node) -> trio.Lock:
        lock = self._file_locks.get(node.ino)
        if lock is None:
            lock = self._file_locks[node.ino] = trio.Lock()
        return lock

    @property
    def ttl(self) -> float:
        """How long names, attributes and listings are trusted: long while the
        server's change notification is armed (a change marks them stale at once),
        attr_ttl while polling."""
        complete = self.opts.trust_server_notify or getattr(self.store, "notify_complete", False)
        return self.opts.cache_ttl if self.watching and complete else self.opts.attr_ttl

    def _stale(self, node: Node) -> bool:
        return self.clock() - node.checked_at > self.ttl

    @contextlib.contextmanager
    def _changing(self, *dirs: Node) -> Iterator[None]:
        """Mark folders whose entries a namespace operation is changing, so that a
        listing taken meanwhile is not merged over the change."""
        inos = {d.ino for d in dirs}
        for ino in inos:
            self.dir_gen[ino] = self.dir_gen.get(ino, 0) + 1
            self._busy_dirs[ino] = self._busy_dirs.get(ino, 0) + 1
        try:
            yield
        finally:
            for ino in inos:
                self.dir_gen[ino] += 1
                self._busy_dirs[ino] -= 1

    # ----------------------------------------------------------------- modes
    @property
    def online(self) -> bool:
        return self.mode == modes.ONLINE

    @property
    def reachable(self) -> bool:
        return self.link_state.state != UNREACHABLE

    def link_observed(self, rtt_ms: float | None, failure: str = "") -> None:
        """A probe's result (or a failed call to the server) changes the link state."""
        self.link_state = self.policy.observe(rtt_ms, failure)
        self._update_mode()

    @property
    def cost_limited(self) -> bool:
        return self.opts.cost_aware and self.cost.limited

    def cost_observed(self, cost: Cost) -> None:
        if cost != self.cost:
            log.info("link cost: %s", cost.describe())
        self.cost = cost
        self._update_mode()

    def set_work_offline(self, on: bool) -> None:
        """The user's switch, kept in the state database across restarts."""
        self.work_offline = on
        self.state.set_meta("work_offline", "1" if on else "0")
        self._update_mode()

    def _update_mode(self) -> None:
        d = modes.decide(self.link_state, work_offline=self.work_offline,
                         always_offline=self.opts.always_offline,
                         cost=self.cost.describe() if self.cost_limited else "")
        if d.mode == self.mode:
            self.mode_reason = d.reason
            return
        previous, self.mode, self.mode_reason = self.mode, d.mode, d.reason
        self.mode_since = time.time()
        self.state.add_event("mode", d.reason, mode=d.mode, rtt_ms=self.link_state.median_ms)
        log.warning("mode %s -> %s (%s)", previous or "start", d.mode, d.reason)
        if self.online:
            for node in self.nodes.values():
                if node.dirty and node.ino not in self._due and not node.unlinked:
                    self._due[node.ino] = 0.0
            self._wake.set()

    async def _remote(self, fn, *args, background: bool = False):
        """Call the store in a worker thread under the deadline. A failure to reach
        the server makes the link unreachable (offline) and is re-raised. Only the
        online mode calls the server from a request; background work (prefetch,
        replay) also runs on a slow link."""
        if not (self.online or self.reachable and (
                self.sync_active or background and self.mode == modes.SLOW_LINK)):
            raise errors.Unavailable(f"{self.mode}: {self.mode_reason}")
        self.remote_busy += 1
        try:
            with trio.fail_after(self.opts.remote_timeout):
                result = await trio.to_thread.run_sync(
                    functools.partial(fn, *args), abandon_on_cancel=True)
            self.remote_ok_at = self.clock()
            return result
        except trio.TooSlowError:
            exc = errors.Unavailable(f"no answer within {self.opts.remote_timeout:g} s")
        except errors.Unavailable as e:
            exc = e
        finally:
            self.remote_busy -= 1
        self.link_observed(None, str(exc))
        raise exc

    def attr(self, node: Node) -> Attr:
        size = node.size if node.kind == "file" else (
            len(node.target.encode()) if node.kind == "symlink" else 0)
        return Attr(
            ino=node.ino, mode=_KIND_BITS[node.kind] | node.mode, nlink=1,
            uid=self.uid, gid=self.gid, size=size, blocks=(size + 511) // 512,
            atime_ns=node.mtime_ns, mtime_ns=node.mtime_ns, ctime_ns=node.ctime_ns)

    # ------------------------------------------------- nodes and the database
    def _add_node(self, parent: Node, name: str, kind: str, mode: int, size: int = 0,
                  mtime_ns: int | None = None, target: str | None = None,
                  remote: RemoteStat | None = None, dirty: bool = False) -> Node:
        now = time.time_ns()
        node = Node(ino=0, parent=parent.ino, name=name, kind=kind, mode=mode, size=size,
                    mtime_ns=now if mtime_ns is None else mtime_ns, ctime_ns=now,
                    target=target, base=remote.fingerprint if remote else None,
                    dirty=dirty, listed=(kind == "dir" and remote is None))
        if kind == "dir":
            node.children = {}
        if remote is not None:
            node.set_base(remote.fingerprint)
        node.checked_at = self.clock()
        self.state.insert(node)
        self.nodes[node.ino] = node
        parent.children[name] = node.ino
        return node

    def _node_from_remote(self, parent: Node, st: RemoteStat) -> Node:
        node = self._add_node(parent, st.name, st.kind, st.mode, size=st.size,
                              mtime_ns=st.mtime_ns, target=st.target, remote=st)
        node.listed = False
        if node.kind == "dir":
            node.checked_at = -1e9  # its children are not listed yet
        return node

    def _drop(self, node: Node) -> None:
        """Forget a node and everything under it, here and in the database."""
        gone = []
        stack = [node]
        while stack:
            n = stack.pop()
            gone.append(n.ino)
            if n.children:
                stack.extend(self.nodes[i] for i in n.children.values())
        parent = self.nodes.get(node.parent)
        if parent is not None and parent.children.get(node.name) == node.ino:
            del parent.children[node.name]
        self.state.delete(gone)
        for ino in gone:
            n = self.nodes[ino]
            self._due.pop(ino, None)
            if n.opens:
                n.unlinked = True  # content goes at the last release
            else:
                del self.nodes[ino]
                self.content.remove(ino)

    def _move(self, node: Node, new_parent: Node, new_name: str) -> None:
        old_parent = self.nodes[node.parent]
        del old_parent.children[node.name]
        node.parent, node.name = new_parent.ino, new_name
        node.ctime_ns = time.time_ns()
        new_parent.children[new_name] = node.ino
        self.state.save(node)

    def _mark_dirty(self, node: Node) -> None:
        node.dirty = True
        node.unsaved = True
        self.state.save(node)  # before the data lands: a crash then keeps it

    def _drop_content(self, node: Node, st: RemoteStat) -> None:
        """The server has a new version of a clean file: forget our copy."""
        node.size, node.mtime_ns, node.mode = st.size, st.mtime_ns, st.mode
        node.set_base(st.fingerprint)
        node.present.clear()
        node.refetched = True
        if node.fd >= 0:
            os.ftruncate(node.fd, 0)
        else:
            self.content.remove(node.ino)
        self.state.save(node)

    # -------------------------------------------------------- listing refresh
    async def _refresh(self, d: Node) -> None:
        """Bring a folder's children up to date with the server when stale (not
        while offline changes wait for replay: the server is not yet our picture)."""
        if not self.direct or not self._stale(d):
            return
        lock = self._refresh_locks.setdefault(d.ino, trio.Lock())
        async with lock:
            if not self.direct or not self._stale(d) or d.ino not in self.nodes:
                return
            if self._busy_dirs.get(d.ino):
                return  # a listing taken now would be discarded: serve what we have
            gen = self.dir_gen.get(d.ino, 0)
            started = self.clock()
            try:
                entries = await self._remote(self.store.scandir, self.path_of(d))
            except errors.Unavailable:
                return  # serve what we have
            except errors.NotFound:
                return  # the folder itself went; the parent's refresh handles it
            if (self.dir_gen.get(d.ino, 0) != gen or self._busy_dirs.get(d.ino)
                    or d.ino not in self.nodes):
                return  # changed here meanwhile: this listing may be out of date
            with self.state.transaction():
                self._merge(d, entries)
            d.checked_at = started
            if not d.listed:
                d.listed = True
                self.state.save(d)

    def local_side(self, node: Node | None, deep: bool = True) -> Side:
        """What happened to a name here since the last sync. A folder's subtree is
        only searched for changes when `deep`: a listing needs that only for a
        folder gone or changed in kind on the server, and every listing would
        otherwise walk every subtree under it."""
        if node is None or node.unlinked:
            return Side(rc.ABSENT)  # local deletions live in the journal
        if node.base is None:
            return Side(rc.CREATED, node.kind)
        changed = node.dirty or (deep and node.kind == "dir" and self._has_local_changes(node))
        return Side(rc.MODIFIED if changed else rc.UNCHANGED, node.kind)

    @staticmethod
    def remote_side(base, base_kind: str | None, st: RemoteStat | None) -> Side:
        """What happened to a name on the server since the last sync."""
        if st is None:
            return Side(rc.DELETED if base is not None else rc.ABSENT)
        if base is None:
            return Side(rc.CREATED, st.kind)
        if st.kind != base_kind:
            return Side(rc.MODIFIED, st.kind)
        # A folder's own times change with its entries: its children say what changed.
        same = st.kind == "dir" or st.fingerprint == base
        return Side(rc.UNCHANGED if same else rc.MODIFIED, st.kind)

    def _merge(self, d: Node, entries: list[RemoteStat]) -> None:
        """Fold a fresh server listing of folder `d` into our tree, name by name, as
        reconcile() plans it. Conflicts are left for the upload, which keeps both."""
        listed = {st.name: st for st in entries}
        self._follow_renames(d, listed)
        for name in set(listed) | set(d.children):
            st = listed.get(name)
            child = self.nodes[d.children[name]] if name in d.children else None
            if child is None:  # new there, never here: reconcile() says PULL
                self._node_from_remote(d, st)
                continue
            base_kind = child.kind if child.base is not None else None
            deep = st is None or st.kind != child.kind
            plan = rc.reconcile(base_kind, self.local_side(child, deep),
                                self.remote_side(child.base, base_kind, st))
            if plan.action == rc.PULL:
                if child.kind != st.kind:
                    self._drop(child)
                    self._node_from_remote(d, st)
                    self.invalidate.entry(d.ino, name)
                elif child.kind == "file":
                    self._drop_content(child, st)
                else:  # a symlink pointing elsewhere now
                    child.target, child.base, child.mtime_ns = st.target, st.fingerprint, st.mtime_ns
                    self.state.save(child)
            elif plan.action == rc.DELETE_LOCAL:
                self._drop(child)
                self.invalidate.entry(d.ino, name)
            elif plan.action == rc.NOTHING and st is not None:
                if self.store.stores_modes and child.mode != st.mode and not child.dirty:
                    child.mode = st.mode
                    self.state.save(child)
            if child.kind != "dir" and not child.unlinked:
                child.checked_at = self.clock()  # a folder's checked_at dates its listing

    def _follow_renames(self, d: Node, listed: dict[str, RemoteStat]) -> None:
        """A name gone from the listing whose server version shows up under a new
        name was renamed there: move our node (and its cache, and its changes).
        The whole fingerprint must match, not the file id alone: a plain folder
        reuses the inode numbers of deleted files."""
        by_id = {n.base.file_id: n for n in (self.nodes[i] for i in d.children.values())
                 if n.base is not None and n.name not in listed}
        for name, st in listed.items():
            node = by_id.get(st.file_id)
            if (node is not None and name not in d.children and st.kind == node.kind
                    and (node.kind == "dir" or st.fingerprint == node.base)):
                old = node.name
                self._move(node, d, name)
                self.invalidate.entry(d.ino, old)
                log.info("%s was renamed on the server to %s", old, name)

    def _has_local_changes(self, node: Node) -> bool:
        if node.dirty or node.base is None:
            return True
        return bool(node.children) and any(
            self._has_local_changes(self.nodes[i]) for i in node.children.values())

    async def _revalidate(self, node: Node) -> None:
        """Check a file against the server; a clean copy of an older version goes."""
        if node.base is None or not self.direct or not self._stale(node):
            return
        try:
            st = await self._remote(self.store.stat, self.path_of(node))
        except errors.Unavailable:
            return
        except errors.NotFound:
            if not self._has_local_changes(node) and node.ino in self.nodes:
                parent = self.nodes[node.parent]
                with self._changing(parent):
                    self._drop(node)
                self.invalidate.entry(parent.ino, node.name)
                raise fs_error(errno.ENOENT, "deleted on the server") from None
            return
        node.checked_at = self.clock()
        if st.kind == node.kind and st.fingerprint != node.base and not node.dirty:
            self._drop_content(node, st)

    # ------------------------------------------------------------ fetching
    async def _fetch(self, node: Node, start: int, end: int, background: bool = False) -> None:
        """Make [start, end) of a file present, fetching whole chunks (what is missing
        of them), but on a file's first read only what that read needs."""
        end = min(end, node.size)
        if node.present.covers(start, end):
            return
        if not self.online and not background:
            raise errors.Unavailable(f"{self.path_of(node)}: not cached and the mode is "
                                     f"{self.mode} ({self.mode_reason})")
        cs = self.opts.chunk_size
        wanted_end = end
        start, end = start // cs * cs, min(node.size, -(-end // cs) * cs)
        for pos in range(start, end, cs):
            upto = min(pos + cs, end)
            if node.present.covers(pos, upto):
                continue
            # The lock is taken per chunk, so that a reader's chunk never waits
            # behind a whole background fetch of the same file (trio's lock is fair:
            # a waiting reader goes before the background's next chunk).
            await self._fetch_chunk(node, pos, upto, wanted_end, background)
        if node.racy and node.base_sha is None and not node.dirty and node.complete:
            node.base_sha = self._hash_content(node)  # a young base: keep what it held

    async def _fetch_chunk(self, node: Node, pos: int, upto: int, wanted_end: int,
                           background: bool) -> None:
        async with self._file_lock(node):
            if node.unlinked:
                return
            if not background and not node.present.present_bytes():
                # A file's first read gets just what it asked for (the first byte
                # sooner: 1 MiB is several round trips at 50 ms); the next read
                # fetches the rest of the chunk.
                upto = min(upto, max(wanted_end, pos + _FIRST_FETCH))
            for gap_start, gap_end in node.present.missing(pos, upto):
                await self._fetch_range(node, gap_start, gap_end, background)

    async def _fetch_range(self, node: Node, start: int, end: int, background: bool) -> None:
        path = self.path_of(node)
        data = await self._remote(self.store.read, path, start, end - start,
                                  background=background)
        if len(data) < end - start:
            node.checked_at = -1e9  # shorter than we knew: recheck at next open
            raise fs_error(errno.ESTALE, f"{path} changed on the server")
        fd = node.fd if node.fd >= 0 else self.content.open(node.ino)
        try:
            os.pwrite(fd, data, start)
        finally:
            if fd != node.fd:
                os.close(fd)
        node.present.add(start, end)
        self._changed(node)

    # ------------------------------------------------------------ operations
    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self._dir(parent_ino)
        if name == ".":
            return parent
        if name == "..":
            return self.nodes[parent.parent or ROOT_INO]
        await self._refresh(parent)
        ino = parent.children.get(name)
        if ino is None:
            self._require_listing(parent)
            raise fs_error(errno.ENOENT)
        return self.nodes[ino]

    def _require_listing(self, d: Node) -> None:
        """A folder never listed from the server cannot say a name is not there."""
        if not d.listed and not self.online:
            raise errors.Unavailable(f"{self.path_of(d) or '/'} was never listed and the "
                                     f"server is unavailable")

    async def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    async def readdir(self, ino: int) -> list[tuple[str, Node]]:
        d = self._dir(ino)
        await self._refresh(d)
        self._require_listing(d)
        return [(name, self.nodes[i]) for name, i in d.children.items()]

    async def readlink(self, ino: int) -> str:
        node = self.node(ino)
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

    @property
    def direct(self) -> bool:
        """Namespace changes go straight to the server: online (or in a manual
        sync), and nothing of the offline journal still to replay before them."""
        return (self.online or self.sync_active > 0) and self.journal_len == 0

    def _journal(self, op: str, node: Node, path: str, **fields) -> None:
        """Record a namespace change made while not online, for replay in order."""
        self.state.journal_add(op, node.ino, node.kind, path, **fields)
        self.journal_len += 1

    async def mkdir(self, parent_ino: int, name: str, mode: int) -> Node:
        parent = self._dir(parent_ino)
        await self._refresh(parent)
        self._check_new_name(parent, name)
        path = join(self.path_of(parent), name)
        with self._changing(parent):
            if self.direct:
                try:
                    st = await self._remote(self.store.mkdir, path, mode & 0o7777)
                except errors.Unavailable:
                    pass  # the link went: journal it like any offline change
                else:
                    self._check_new_name(parent, name)
                    node = self._add_node(parent, name, "dir", st.mode, mtime_ns=st.mtime_ns,
                                          remote=st)
                    node.listed = True
                    self.state.save(node)
                    return node
            self._check_new_name(parent, name)
            with self.state.transaction():
                node = self._add_node(parent, name, "dir", mode & 0o7777)
                self._journal("mkdir", node, path, mode=mode & 0o7777)
            return node

    async def symlink(self, parent_ino: int, name: str, target: str) -> Node:
        parent = self._dir(parent_ino)
        await self._refresh(parent)
        self._check_new_name(parent, name)
        path = join(self.path_of(parent), name)
        with self._changing(parent):
            if self.direct:
                try:
                    st = await self._remote(self.store.symlink, target, path)
                except errors.Unavailable:
                    pass
                else:
                    self._check_new_name(parent, name)
                    return self._add_node(parent, name, "symlink", 0o777,
                                          mtime_ns=st.mtime_ns, target=target, remote=st)
            self._check_new_name(parent, name)
            with self.state.transaction():
                node = self._add_node(parent, name, "symlink", 0o777, target=target)
                self._journal("symlink", node, path, link_target=target)
            return node

    async def create(self, parent_ino: int, name: str, mode: int, flags: int) -> tuple[int, Node]:
        """A new file lives only here until its first upload (after the last close),
        so a temporary file that is written, renamed over a document and closed
        reaches the server as one atomic replace."""
        parent = self._dir(parent_ino)
        await self._refresh(parent)
        if name in parent.children:
            if flags & os.O_EXCL:
                raise fs_error(errno.EEXIST)
            node = self.nodes[parent.children[name]]
            return await self.open(node.ino, flags), node
        self._check_server_name(name)
        with self._changing(parent):
            node = self._add_node(parent, name, "file", mode & 0o7777, dirty=True)
        node.fd = self.content.open(node.ino, truncate=True)
        return self._new_handle(node, writable=True), node

    async def open(self, ino: int, flags: int) -> int:
        node = self.node(ino)
        if node.kind == "dir":
            raise fs_error(errno.EISDIR)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = writable and bool(flags & os.O_TRUNC)
        await self._revalidate(node)
        if node.unlinked:
            raise fs_error(errno.ENOENT)
        if writable and not truncate:
            await self._fetch(node, 0, node.size)  # a writer needs the whole file
        elif not node.present.spans and node.size and not self.online:
            raise errors.Unavailable(f"{self.path_of(node)} is not cached and the server "
                                     f"is unavailable")
        if not node.complete and self.online:
            self._prefetch_queue.append(node.ino)  # the rest, while the link is up
            self._wake.set()
        fh = self._new_handle(node, writable)
        self.handles[fh].keep_cache = not node.refetched
        node.refetched = False
        if truncate and node.size:
            self._set_size(node, 0)
        node.last_access = time.time_ns() // 1_000_000  # ms, for the quota's LRU order
        return fh

    def _new_handle(self, node: Node, writable: bool) -> int:
        if node.fd < 0:
            node.fd = self.content.open(node.ino)
        node.opens += 1
        if writable:
            node.writers += 1
            self._due.pop(node.ino, None)
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
            await self._fetch(node, offset, offset + size)
        return os.pread(node.fd, size, offset)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        node = self.handles[fh].node
        if not node.dirty:
            self._mark_dirty(node)
        n = os.pwrite(node.fd, data, offset)
        end = offset + n
        node.present.add(min(offset, node.size), end)  # a hole before offset reads as zeros
        if end > node.size:
            node.size = end
        node.mtime_ns = time.time_ns()
        node.generation += 1
        if not node.unsaved:
            self._changed(node)
        return n

    def _set_size(self, node: Node, size: int) -> None:
        if not node.dirty:
            self._mark_dirty(node)
        if node.fd >= 0:
            os.ftruncate(node.fd, size)
        else:
            self.content.truncate(node.ino, size)
        old = node.size
        node.size = size
        node.present.truncate(size)
        node.present.add(min(old, size), size)  # a grown tail reads as zeros
        node.mtime_ns = node.ctime_ns = time.time_ns()
        node.generation += 1
        self.state.save(node)
        if not node.writers:
            self._schedule(node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self.handles[fh].node
        os.fsync(node.fd)
        if not node.unlinked:
            self.state.save(node)
        self.state.sync_to_disk()

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
                self.nodes.pop(node.ino, None)
                self.content.remove(node.ino)
                return
        # The delay runs from the last writer's close: a reader's close must not push it
        # on, or a program that keeps opening the file would keep it from the server.
        if node.dirty and not node.writers and (h.writable or node.ino not in self._due):
            self._schedule(node)

    async def setattr(self, ino: int, *, mode: int | None = None, size: int | None = None,
                      mtime_ns: int | None = None) -> Node:
        node = self.node(ino)
        if size is not None:
            if node.kind == "dir":
                raise fs_error(errno.EISDIR)
            if size != node.size:
                if size:
                    await self._fetch(node, 0, node.size)
                self._set_size(node, size)
        if not self.store.stores_modes:
            mode = None  # like a cifs mount: chmod succeeds and changes nothing
        if mode is None and mtime_ns is None:
            return node
        if node.kind != "file" and not self.direct:
            # A folder or a link changed offline: here now, on the server at replay.
            if mode is not None:
                node.mode = mode & 0o7777
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
            self._journal("setattr", node, self.path_of(node), mode=mode and mode & 0o7777,
                          mtime_ns=mtime_ns)
        elif node.base is not None and not node.dirty and self.direct:
            # Clean and on the server: change it there, keep the new fingerprint.
            path = self.path_of(node)
            async with self._file_lock(node):
                st = None
                if mode is not None and (mode & 0o7777) != node.mode:
                    st = await self._remote(self.store.chmod, path, mode & 0o7777)
                if mtime_ns is not None and node.kind != "symlink":
                    st = await self._remote(self.store.set_mtime, path, mtime_ns)
                if st is not None:
                    node.mode, node.mtime_ns = st.mode, st.mtime_ns
                    if node.kind == "file" and not node.dirty:
                        node.set_base(st.fingerprint, node.base_sha)  # same content
                    node.size = st.size if node.kind == "file" else node.size
        else:
            if mode is not None:
                node.mode = mode & 0o7777
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
            if not node.dirty:
                await self._fetch(node, 0, node.size)
                self._mark_dirty(node)
            if not node.writers:
                self._schedule(node)
        node.ctime_ns = time.time_ns()
        self.state.save(node)
        return node

    @staticmethod
    def _on_server(node: Node) -> bool:
        """Whether removing or moving this node must reach the server: it is there
        (base), or its creation is in the journal (a folder or link made offline).
        A file made here exists only here until its upload."""
        return node.base is not None or node.kind != "file"

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self._dir(parent_ino)
        node = await self.lookup(parent_ino, name)
        if node.kind == "dir":
            raise fs_error(errno.EISDIR)
        async with self._file_lock(node):
            with self._changing(parent):
                path = self.path_of(node)
                if self._on_server(node) and not await self._try_direct(
                        self._remove_remote, node, path):
                    self._journal("unlink", node, path,
                                  base=node.base if node.kind == "file" else None)
                if not node.unlinked and node.ino in self.nodes:
                    self._drop(node)

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
            st = await self._remote(self.store.stat, path)
        except errors.NotFound:
            return
        if node.kind == "file" and st.fingerprint != node.base:
            # Deleted here, changed there: keep theirs (it reappears at the next
            # listing) and record it.
            self._record_conflict(path, "delete/update", None, st, node.base, None)
            return
        if node.kind != "file":
            try:
                await self._remote(self.store.remove, path)
            except errors.NotFound:
                pass
            return
        now = await self._remote(remove_if, self.store, path, node.base)
        if now is not None:  # changed between our look and the delete: theirs stays
            self._record_conflict(path, "delete/update", None, now, node.base, None)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self._dir(parent_ino)
        node = await self.lookup(parent_ino, name)
        if node.kind != "dir":
            raise fs_error(errno.ENOTDIR)
        await self._refresh(node)
        self._require_listing(node)  # offline, only a listed folder is known to be empty
        if node.children:
            raise fs_error(errno.ENOTEMPTY)
        with self._changing(parent, node):
            path = self.path_of(node)
            if not await self._try_direct(self._rmdir_remote, path):
                self._journal("rmdir", node, path)
            if node.children:
                raise fs_error(errno.ENOTEMPTY)
            self._drop(node)

    async def _rmdir_remote(self, path: str) -> None:
        try:
            await self._remote(self.store.rmdir, path)
        except errors.NotFound:
            pass

    async def rename(self, old_parent_ino: int, old_name: str, new_parent_ino: int,
                     new_name: str, flags: int = 0) -> None:
        if flags & RENAME_EXCHANGE:
            raise fs_error(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old_parent, new_parent = self._dir(old_parent_ino), self._dir(new_parent_ino)
        node = await self.lookup(old_parent_ino, old_name)
        await self._refresh(new_parent)
        target_ino = new_parent.children.get(new_name)
        target = self.nodes[target_ino] if target_ino is not None else None
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
                await self._refresh(target)
                if target.children:
                    raise fs_error(errno.ENOTEMPTY)
        if node.kind == "dir":
            p = new_parent
            while p.ino != ROOT_INO:
                if p is node:
                    raise fs_error(errno.EINVAL, "cannot move a folder into itself")
                p = self.nodes[p.parent]
        async with self._file_lock(node):
            with self._changing(old_parent, new_parent):
                old_path = self.path_of(node)
                new_path = join(self.path_of(new_parent), new_name)
                replaces = target is not None and self._on_server(target)
                if self._on_server(node):
                    if not await self._try_direct(self._rename_remote, old_path, new_path,
                                                  target, replaces):
                        self._journal("rename", node, old_path, new_path=new_path,
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
                        self._journal("unlink", target, new_path)
                if target is not None and target.ino in self.nodes:
                    self._drop(target)
                self._move(node, new_parent, new_name)
                node.checked_at = self.clock()

    async def _rename_remote(self, old_path: str, new_path: str, target: Node | None,
                             replaces: bool) -> None:
        if replaces and target.kind == "file" and target.base is not None:
            # Replacing a server file: only the version we knew.
            st = await self._remote_stat_or_none(new_path)
            if st is not None and st.fingerprint != target.base:
                raise fs_error(errno.EBUSY, f"{new_path} changed on the server")
        await self._remote(self.store.rename, old_path, new_path, replaces)

    async def _remote_stat_or_none(self, path: str) -> RemoteStat | None:
        try:
            return await self._remote(self.store.stat, path)
        except errors.NotFound:
            return None

    async def link(self, ino: int, new_parent_ino: int, new_name: str) -> None:
        raise fs_error(errno.EPERM, "hard links are not supported")

    async def statfs(self) -> FsSpace:
        now = self.clock()
        if self._space_cache and now - self._space_cache[0] < 5 and self.online:
            return self._space_cache[1]
        info = None
        if self.online:
            try:
                info = await self._remote(self.store.space)
            except errors.Unavailable:
                pass
        if info is None:
            sv = os.statvfs(self.content.root)
            space = FsSpace(sv.f_frsize, sv.f_blocks, sv.f_bavail, sv.f_files, sv.f_favail)
        else:
            space = FsSpace(4096, info.total_bytes // 4096, info.free_bytes // 4096,
                            info.total_files, info.free_files)
            self._space_cache = (now, space)
        return space

    # ---------------------------------------------------------------- xattrs
    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.node(ino)
        if name == XATTR_STATUS:
            in_conflict = bool(self._conflict_paths) and self.path_of(node) in self._conflict_paths
            return node.status(in_conflict).encode()
        if name == XATTR_PINNED:
            from .syncer import pinned

            return b"1" if pinned(self, node) else b"0"
        raise fs_error(errno.ENODATA)

    async def listxattr(self, ino: int) -> list[str]:
        self.node(ino)
        return list(XATTRS)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self.node(ino)
        if name == XATTR_PINNED:
            if value.strip() not in (b"0", b"1"):
                raise fs_error(errno.EINVAL, "user.cscfs.pinned takes 0 or 1")
            node.pinned = 1 if value.strip() == b"1" else -1
            self.state.save(node)
            return
        if name == XATTR_STATUS:
            raise fs_error(errno.EPERM, "user.cscfs.status is read-only")
        raise fs_error(errno.ENOTSUP)

    async def removexattr(self, ino: int, name: str) -> None:
        self.node(ino)
        raise fs_error(errno.EPERM if name in XATTRS else errno.ENODATA)

    # ------------------------------------------------------------ write-back
    def _schedule(self, node: Node, delay: float | None = None) -> None:
        delay = self.opts.write_back_delay if delay is None else delay
        self._due[node.ino] = self.clock() + delay
        self._wake.set()

    @property
    def pending_uploads(self) -> int:
        return sum(1 for n in self.nodes.values() if n.dirty and not n.unlinked)

    async def run_writeback(self) -> None:
        """Background work, one thing at a time: replay the offline journal, fetch the
        rest of files opened while partly cached, upload files whose write-back delay
        has passed."""
        from .replay import replay

        while True:
            if self.online and self.journal_len:
                await replay(self)  # namespace first: uploads go to today's paths
            if self._prefetch_queue and self.reachable and self.mode in (
                    modes.ONLINE, modes.SLOW_LINK):
                await self._prefetch_one()
                continue
            now = self.clock()
            due = [] if self.journal_len else sorted(
                (t, ino) for ino, t in self._due.items() if t <= now)
            if not due or not self.online:
                wait = min(self._due.values(), default=now + 3600) - now
                with trio.move_on_after(max(wait, 0.01) if self.online else 3600):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            if self._give_way(due[0][0], now):
                await trio.sleep(_LOAD_WINDOW)
                continue
            # Several at a time: on a link with latency, one upload is mostly waiting.
            limiter = trio.CapacityLimiter(max(1, self.opts.parallel_uploads))
            async with trio.open_nursery() as uploads:
                for due_at, ino in due:
                    if not self.online or self._give_way(due_at, self.clock()):
                        break  # the rest stay due
                    node = self.nodes.get(ino)
                    self._due.pop(ino, None)
                    if node is None or not node.dirty or node.writers or node.unlinked:
                        continue
                    await limiter.acquire_on_behalf_of(ino)
                    self._uploading.add(ino)
                    uploads.start_soon(self._upload_due, node, limiter)

    def _give_way(self, due_at: float, now: float) -> bool:
        """Whether a background upload due since `due_at` waits while the mount is
        busy: uploads take CPU from the applications using the files (a 5,000-file
        copy ran at 340 files/s with uploads alongside, 850 without). A manual sync
        is due since 0 and never waits."""
        if now - due_at >= _MAX_DEFER:
            return False
        if now - self._load_at >= _LOAD_WINDOW:
            # After a while unlooked, the average says nothing of now: measure first.
            fresh = now - self._load_at < 2 * _LOAD_WINDOW
            rate = (self.requests - self._load_count) / (now - self._load_at)
            self._load_at, self._load_count = now, self.requests
            self._busy = rate > _BUSY_RATE or not fresh
        return self._busy

    async def _upload_due(self, node: Node, limiter: trio.CapacityLimiter) -> None:
        try:
            await self._upload(node)
        except errors.Unavailable:
            self._due.setdefault(node.ino, 0.0)  # again when the server is back
        except Exception:
            log.exception("upload of %s failed; retrying in 30 s", self.path_of(node))
            self._due[node.ino] = self.clock() + 30
        finally:
            self._uploading.discard(node.ino)
            limiter.release_on_behalf_of(node.ino)

    def _chunks(self, ino: int, size: int, sha=None) -> Iterator[bytes]:
        with open(self.content.path(ino), "rb", buffering=0) as f:
            left = size
            while left > 0:
                data = f.read(min(_UPLOAD_CHUNK, left))
                if not data:
                    raise errors.CscfsError("content file shorter than the item")
                left -= len(data)
                if sha is not None:
                    sha.update(data)
                yield data

    def _hash_content(self, node: Node) -> str | None:
        if node.size > _RACY_HASH_MAX:
            return None
        sha = hashlib.sha256()
        for _ in self._chunks(node.ino, node.size, sha):
            pass
        return sha.hexdigest()

    async def _check_racy_base(self, node: Node, path: str) -> None:
        """A racy base (recorded within a clock tick or two of its own mtime) may
        hide a same-size write in the same tick: let the content decide."""
        if not node.racy or node.base_sha is None:
            return  # never had the base's content: the fingerprint is all we have
        st = await self._remote_stat_or_none(path)
        if st is None or st.fingerprint != node.base:
            return  # the upload's own check sees this
        sha = hashlib.sha256()
        for pos in range(0, st.size, _UPLOAD_CHUNK):
            sha.update(await self._remote(self.store.read, path, pos,
                                          min(_UPLOAD_CHUNK, st.size - pos)))
        if sha.hexdigest() != node.base_sha:
            raise errors.Changed(f"{path}: changed on the server within one clock tick",
                                 current=st)

    async def _upload(self, node: Node) -> None:
        async with self._file_lock(node):
            if not node.dirty or node.unlinked or node.ino not in self.nodes:
                return
            gen, path = node.generation, self.path_of(node)
            if node.unsaved:
                self.state.save(node)
            sha = hashlib.sha256()
            sent = False

            def chunks():
                nonlocal sent
                yield from self._chunks(node.ino, node.size, sha)
                sent = True

            try:
                await self._check_racy_base(node, path)
                # A listing taken while the name is replaced would miss it.
                with self._changing(self.nodes[node.parent]):
                    st = await self._remote(self.store.upload, path, chunks(),
                                            node.base, node.mode, node.mtime_ns)
            except errors.Changed as exc:
                if not await self._upload_conflict(node, path, exc.current):
                    self._schedule(node, 0)
                return
            except errors.NotFound:
                # The folder went on the server: recreate it, nothing written is lost.
                await self._make_parents(path)
                self._schedule(node, 0)
                return
            except errors.Unavailable:
                if sent:  # all of it went out: it may be there, unacknowledged
                    node.sent_sha = sha.hexdigest()
                raise
            if node.ino not in self.nodes or node.unlinked:
                # Deleted here while it was uploading: take it off the server again
                # (else the next listing would bring it back).
                try:
                    await self._remote(remove_if, self.store, path, st.fingerprint)
                except errors.CscfsError as exc:
                    log.warning("%s was deleted during its upload and stays on the server: "
                                "%s", path, exc)
                return
            node.sent_sha = None
            node.set_base(st.fingerprint, sha.hexdigest() if node.generation == gen else None)
            node.mode = st.mode  # what the server keeps (SMB: no POSIX modes)
            node.checked_at = self.clock()
            if node.generation == gen and self.path_of(node) == path:
                node.dirty = False
            else:
                self._schedule(node)  # changed while uploading: again
            # In the next batch: if that is lost in a crash, the next upload finds
            # the server holding this very content and takes it as its base.
            self._changed(node)
            self._last_upload = self._last_upload_unsaved = f"{time.time():.3f} {path}"
            log.info("uploaded %s (%d bytes)", path, st.size)

    async def _make_parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            try:
                await self._remote(self.store.mkdir, "/".join(parts[:i]), 0o755)
            except errors.AlreadyExists:
                pass

    async def _same_content(self, node: Node, path: str, st: RemoteStat | None) -> bool:
        if st is None or st.kind != "file" or st.size != node.size:
            return False
        fd = self.content.open(node.ino)
        try:
            for pos in range(0, node.size, _UPLOAD_CHUNK):
                want = min(_UPLOAD_CHUNK, node.size - pos)
                theirs = await self._remote(self.store.read, path, pos, want)
                if theirs != os.pread(fd, want, pos):
                    return False
        finally:
            os.close(fd)
        return True

    async def _remote_sha(self, path: str, st: RemoteStat | None) -> str | None:
        if st is None or st.kind != "file" or st.size > _RACY_HASH_MAX:
            return None
        sha = hashlib.sha256()
        for pos in range(0, st.size, _UPLOAD_CHUNK):
            sha.update(await self._remote(self.store.read, path, pos,
                                          min(_UPLOAD_CHUNK, st.size - pos)))
        return sha.hexdigest()

    async def _upload_conflict(self, node: Node, path: str, current: RemoteStat | None) -> bool:
        """The server's version is not the one ours started from: apply what
        reconcile() plans, keeping both versions. False: the file was renamed on the
        server meanwhile and followed; upload again at its new name."""
        if await self._same_content(node, path, current):
            # e.g. our own upload whose rename landed just before a crash
            node.set_base(current.fingerprint)
            node.dirty = False
            self.state.save(node)
            return True
        if node.sent_sha and await self._remote_sha(path, current) == node.sent_sha:
            # Our own earlier upload, cut off before its answer came: it is the base
            # of what we have now, not somebody else's version.
            node.sent_sha = None
            node.set_base(current.fingerprint)
            self.state.save(node)
            return False
        parent = self.nodes[node.parent]
        if current is None and node.base is not None:
            # Gone from its name: renamed there? Then the edit lands at the new name.
            parent.checked_at = -1e9
            await self._refresh(parent)
            if self.path_of(node) != path:
                return False
        base_kind = node.kind if node.base is not None else None
        plan = rc.reconcile(base_kind, self.local_side(node),
                            self.remote_side(node.base, base_kind, current))
        if plan.action == rc.PUSH:  # e.g. gone there and never ours: simply create it
            node.set_base(None)
            return False
        kind = plan.conflict or rc.UPDATE_UPDATE
        if plan.keeps_name == "local":
            # Deleted there, changed here: ours goes back at the name.
            copy_path, upload_path = None, path
        else:  # theirs keeps the name (a tie, or their folder): ours beside it
            copy = copy_path = None
        now = time.time()
        for n in range(1, 100):
            if plan.keeps_name != "local":
                copy = conflict_name(node.name, self.host, now, n)
                if copy in parent.children:
                    continue
                copy_path = upload_path = join(self.path_of(parent), copy)
            sha = hashlib.sha256()
            try:
                with self._changing(parent):  # a listing taken meanwhile misses the copy
                    st = await self._remote(self.store.upload, upload_path,
                                            self._chunks(node.ino, node.size, sha), None,
                                            node.mode, node.mtime_ns)
                break
            except errors.Changed:
                if plan.keeps_name == "local":
                    return False  # the name was taken meanwhile: decide again
        else:
            raise errors.CscfsError(f"{path}: no free conflict copy name")
        old_base = node.base
        with self._changing(parent), self.state.transaction():
            if copy_path is not None:
                original = node.name
                self._move(node, parent, copy)
                if original not in parent.children and current is not None:
                    self._node_from_remote(parent, current)
                self.invalidate.entry(parent.ino, original)
            node.set_base(st.fingerprint, sha.hexdigest())
            node.dirty = False
            self.state.save(node)
            self._record_conflict(path, kind, (node.size, node.mtime_ns),
                                  current, old_base, copy_path)
        log.warning("conflict (%s) on %s: both versions kept%s", kind, path,
                    f", ours as {copy_path}" if copy_path else "")
        return True

    def _record_conflict(self, path, kind, local, remote: RemoteStat | None, base, copy_path):
        self.state.add_conflict(path, kind, local, remote.fingerprint if remote else None,
                                base, copy_path)
        self._conflict_paths.add(path)
        if copy_path:
            self._conflict_paths.add(copy_path)

    async def flush_uploads(self, timeout: float) -> int:
        """Upload every changed file now; returns how many remain pending."""
        for node in self.nodes.values():
            if node.dirty and not node.unlinked and not node.writers:
                self._due[node.ino] = 0.0
        self._wake.set()
        with trio.move_on_after(timeout):
            while self.online and (self._uploading or self.journal_len or any(
                    t <= self.clock() for t in self._due.values())):
                await trio.sleep(0.05)
        return self.pending_uploads + self.journal_len

    async def _prefetch_one(self) -> None:
        """Fetch one queued, partly cached file completely, so that it stays readable
        when the link goes (on a slow link too: it is background work)."""
        node = self.nodes.get(self._prefetch_queue.pop(0))
        if node is None or node.unlinked or node.complete:
            return
        # The opener's first read comes right after the open: let it fetch first.
        await trio.sleep(_PREFETCH_GRACE)
        try:
            await self._fetch(node, 0, node.size, background=True)
        except errors.Unavailable:
            self._prefetch_queue.insert(0, node.ino)  # when the link is back
        except (errors.CscfsError, OSError) as exc:
            log.info("prefetch of %s stopped: %s", self.path_of(node), exc)

    # ------------------------------------------------- change notification
    async def run_watch(self) -> None:
        """Follow the server's change notifications where the store has them, so a
        change by another client shows at once, and the kernel may cache for long."""
        watch = getattr(self.store, "watch", None)
        if watch is None:
            return
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()

        def to_trio(fn, *args) -> None:
            try:
                trio.from_thread.run_sync(fn, *args, trio_token=token)
            except trio.RunFinishedError:
                stop.set()

        def on_change(path: str) -> None:
            # Look at what is there now (in this thread): most events are our own
            # uploads and renames, which must not make a whole folder stale.
            if posixpath.basename(path).startswith(TEMP_PREFIX):
                return  # our own uploads' temporary names
            st: RemoteStat | None | object = _UNKNOWN
            if path:
                try:
                    st = self.store.stat(path)
                except errors.NotFound:
                    st = None
                except Exception:
                    pass
            to_trio(self.on_remote_change, path, st)

        try:
            await trio.to_thread.run_sync(
                watch, on_change, stop, lambda armed: to_trio(self._set_watching, armed),
                abandon_on_cancel=True)
        finally:
            stop.set()
            self.watching = False  # shutting down: no kernel to tell

    def _set_watching(self, armed: bool) -> None:
        if armed == self.watching:
            return
        self.watching = armed
        log.info("change notification %s; names and attributes trusted for %g s",
                 "armed" if armed else "off", self.ttl)
        if not armed:
            self._forget_checks()

    def _forget_checks(self) -> None:
        """Everything is to be checked again, also what the kernel holds for long."""
        for node in self.nodes.values():
            node.checked_at = -1e9
            if node.ino != ROOT_INO and not node.unlinked:
                self.invalidate.entry(node.parent, node.name)

    def on_remote_change(self, path: str, now: RemoteStat | None | object = _UNKNOWN) -> None:
        """Something at `path` changed on the server (`now`: what a stat found there
        after the event, None: nothing, _UNKNOWN: not looked): forget what we checked."""
        if not path:
            self._forget_checks()
            return
        node = self.nodes[ROOT_INO]
        known = True
        for part in path.split("/"):
            ino = node.children.get(part) if node.children is not None else None
            if ino is None:
                known = False
                break
            node = self.nodes[ino]
        if now is not _UNKNOWN:
            if not known and now is None:
                return  # gone there, and not here either (e.g. our own delete)
            if known and now is None and self._busy_dirs.get(node.parent):
                return  # our own delete or rename there, still under way
            if known and isinstance(now, RemoteStat) and now.kind == node.kind and (
                    node.kind == "dir" or now.fingerprint == node.base or node.dirty):
                # What we have (e.g. our own upload), or ours will replace it: the
                # upload checks the base and keeps both on a conflict.
                return
        node.checked_at = -1e9
        parent = self.nodes.get(node.parent)
        if parent is not None:
            parent.checked_at = -1e9
            self.invalidate.entry(parent.ino, node.name)

    # ------------------------------------------------------------- status
    def _changed(self, node: Node) -> None:
        """Sizes, times and present ranges go to the database in batches: one commit
        per file operation was the main cost of small files. The dirty flag is not
        among them (_mark_dirty commits it before the data lands), and the content
        file is the authority for a dirty file's size after a crash."""
        node.unsaved = True
        self._unsaved.add(node.ino)

    async def run_saver(self, interval: float = 0.5) -> None:
        while True:
            await trio.sleep(interval)
            if self._unsaved:
                self.save_all()

    def save_all(self) -> None:
        inos, self._unsaved = self._unsaved, set()
        with self.state.transaction():
            if self._last_upload_unsaved:
                self.state.set_meta("last_upload", self._last_upload_unsaved)
                self._last_upload_unsaved = None
            for ino in inos:
                node = self.nodes.get(ino)
                if node is not None and node.unsaved and not node.unlinked:
                    self.state.save(node)

    def status(self) -> dict:
        files = [n for n in self.nodes.values() if n.kind == "file" and not n.unlinked]
        last = self._last_upload or self.state.get_meta("last_upload")
        return {
            "server": self.store.url,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "change_notification": self.watching,
            "names_trusted_s": self.ttl,
            "mode_since": self.mode_since,
            "median_rtt_ms": self.link_state.median_ms,
            "cost": self.cost.describe(),
            "pending_changes": self.journal_len,
            "last_sync": float(self.state.get_meta("last_sync_at", "0")) or None,
            "next_background_sync": float(self.state.get_meta("next_sync_at", "0")) or None,
            "pending_uploads": self.pending_uploads,
            "cached_bytes": sum(n.present.present_bytes() for n in files),
            "cache_quota_bytes": self.quota.limit if self.quota else None,
            "cached_items": sum(1 for n in files if n.present.spans or n.size == 0),
            "items": len(self.nodes),
            "open_conflicts": len(self.state.open_conflicts()),
            "last_upload": ({"at": float(last.split(" ", 1)[0]), "path": last.split(" ", 1)[1]}
                            if last else None),
        }

    def open_unlinked(self) -> set[int]:
        return {n.ino for n in self.nodes.values() if n.unlinked}

    def close(self) -> None:
        self.save_all()
        for node in self.nodes.values():
            if node.fd >= 0:
                os.close(node.fd)
                node.fd = -1
