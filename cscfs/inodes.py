"""The inode table: every item we know, in memory and in the state database, with
crash recovery at load and the batched saver.

Locks (see docs/ARCHITECTURE.md, "Locking"):
- Everything here is touched only on the one event-loop (dispatch) thread, so code
  between two awaits is atomic and needs no lock.
- `lock(node)`: a per-file trio lock serialising fetches of a chunk, uploads and
  the namespace operations on that file (so an upload never races a rename of it).
- `changing(*folders)`: not a lock but a generation mark; a listing of a folder that
  was changing while it was taken is not merged (listing.py).
- Order: a folder's refresh lock (listing.py), then a file lock; never two file locks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from typing import Callable, Iterator

import trio

from sync.ports import RemoteStat

from . import timestamps
from .cache import ContentStore, RangeSet
from .errors import fs_error
from .metadata import ROOT_INO, Node, State

log = logging.getLogger("cscfs.inodes")


class InodeTable:
    def __init__(self, state: State, content: ContentStore, clock: Callable[[], float]):
        self.state, self.content, self.clock = state, content, clock
        self.nodes: dict[int, Node] = {}
        self._file_locks: dict[int, trio.Lock] = {}
        self.dir_gen: dict[int, int] = {}      # folder ino -> bumped by every change
        self.busy_dirs: dict[int, int] = {}    # folder ino -> changes under way now
        self._unsaved: set[int] = set()        # inos whose rows lag behind (changed())
        self.recovered_dirty: list[Node] = []  # dirty items found at load: upload them
        self._load()

    # ------------------------------------------------------------- loading
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
                    self.recovered_dirty.append(node)
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

    # ------------------------------------------------------------- lookups
    def node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise fs_error(errno.ENOENT) from None

    def dir(self, ino: int) -> Node:
        node = self.node(ino)
        if node.kind != "dir":
            raise fs_error(errno.ENOTDIR)
        return node

    def live(self, ino: int) -> Node | None:
        node = self.nodes.get(ino)
        return None if node is None or node.unlinked else node

    def path_of(self, node: Node) -> str:
        parts = []
        while node.ino != ROOT_INO:
            parts.append(node.name)
            node = self.nodes[node.parent]
        return "/".join(reversed(parts))

    def at_path(self, path: str) -> Node | None:
        """The node at a server path, if every part of it is known here."""
        node = self.nodes[ROOT_INO]
        for part in [p for p in path.split("/") if p]:
            ino = node.children.get(part) if node.children is not None else None
            if ino is None:
                return None
            node = self.nodes[ino]
        return node

    def pinned(self, node: Node) -> bool:
        """Pinned as set on the node (1), unpinned (-1), or as its folder (0); the root
        is pinned unless the user unpinned it: redirected folders are available offline."""
        while True:
            if node.pinned:
                return node.pinned > 0
            if node.ino == ROOT_INO:
                return False
            node = self.nodes[node.parent]

    def has_local_changes(self, node: Node) -> bool:
        if node.dirty or node.base is None:
            return True
        return bool(node.children) and any(
            self.has_local_changes(self.nodes[i]) for i in node.children.values())

    def subtree(self, node: Node) -> Iterator[Node]:
        stack = [node]
        while stack:
            n = stack.pop()
            yield n
            if n.children:
                stack.extend(self.nodes[i] for i in n.children.values())

    def dirty_files(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.dirty and not n.unlinked]

    # --------------------------------------------------------------- locks
    def lock(self, node: Node) -> trio.Lock:
        lock = self._file_locks.get(node.ino)
        if lock is None:
            lock = self._file_locks[node.ino] = trio.Lock()
        return lock

    @contextlib.contextmanager
    def changing(self, *dirs: Node) -> Iterator[None]:
        """Mark folders whose entries a namespace operation is changing, so that a
        listing taken meanwhile is not merged over the change."""
        inos = {d.ino for d in dirs}
        for ino in inos:
            self.dir_gen[ino] = self.dir_gen.get(ino, 0) + 1
            self.busy_dirs[ino] = self.busy_dirs.get(ino, 0) + 1
        try:
            yield
        finally:
            for ino in inos:
                self.dir_gen[ino] += 1
                self.busy_dirs[ino] -= 1

    @staticmethod
    def mark_stale(node: Node) -> None:
        """The server changed something here: check it again at the next look."""
        node.checked_at = -1e9
        node.marked += 1

    # ------------------------------------------------------- tree changes
    def add(self, parent: Node, name: str, kind: str, mode: int, size: int = 0,
            mtime_ns: int | None = None, target: str | None = None,
            remote: RemoteStat | None = None, dirty: bool = False,
            owner: tuple[int | None, int | None] = (None, None), rdev: int = 0) -> Node:
        now = timestamps.now_ns()
        if remote is not None:
            owner = (remote.uid, remote.gid)
        node = Node(ino=0, parent=parent.ino, name=name, kind=kind, mode=mode, size=size,
                    mtime_ns=now if mtime_ns is None else mtime_ns, ctime_ns=now,
                    target=target, dirty=dirty, listed=(kind == "dir" and remote is None),
                    uid=owner[0], gid=owner[1], rdev=rdev)
        if kind == "dir":
            node.children = {}
        if remote is not None:
            node.set_base(remote.fingerprint)
        node.checked_at = self.clock()
        self.state.insert(node)
        self.nodes[node.ino] = node
        parent.children[name] = node.ino
        return node

    def add_remote(self, parent: Node, st: RemoteStat) -> Node:
        return self.add_remote_many(parent, [st])[0]

    def add_remote_many(self, parent: Node, stats: list[RemoteStat]) -> list[Node]:
        """Nodes for names of a listing new here, in one database statement (one
        INSERT each was most of a first listing's time)."""
        if not stats:
            return []
        now, checked = time.time_ns(), self.clock()
        nodes = []
        for st in stats:
            node = Node(ino=0, parent=parent.ino, name=st.name, kind=st.kind, mode=st.mode,
                        size=st.size, mtime_ns=st.mtime_ns, ctime_ns=now, target=st.target,
                        uid=st.uid, gid=st.gid, rdev=st.rdev)
            node.set_base(st.fingerprint)
            if st.kind == "dir":
                node.children = {}
                node.checked_at = -1e9  # its children are not listed yet
            else:
                node.checked_at = checked
            nodes.append(node)
        self.state.insert_many(nodes)
        for node in nodes:
            self.nodes[node.ino] = node
            parent.children[node.name] = node.ino
        return nodes

    def drop(self, node: Node) -> None:
        """Forget a node and everything under it, here and in the database."""
        gone = [n.ino for n in self.subtree(node)]
        parent = self.nodes.get(node.parent)
        if parent is not None and parent.children.get(node.name) == node.ino:
            del parent.children[node.name]
        self.state.delete(gone)
        for ino in gone:
            n = self.nodes[ino]
            if n.opens:
                n.unlinked = True  # content goes at the last release
            else:
                del self.nodes[ino]
                self.content.remove(ino)

    def move(self, node: Node, new_parent: Node, new_name: str) -> None:
        old_parent = self.nodes[node.parent]
        del old_parent.children[node.name]
        node.parent, node.name = new_parent.ino, new_name
        node.ctime_ns = time.time_ns()
        new_parent.children[new_name] = node.ino
        self.state.save(node)

    def mark_dirty(self, node: Node) -> None:
        node.dirty = True
        node.unsaved = True
        self.state.save(node)  # before the data lands: a crash then keeps it

    def drop_content(self, node: Node, st: RemoteStat) -> None:
        """The server has a new version of a clean file: forget our copy. A fetch of
        the old version still under way sees the epoch move and drops its bytes."""
        node.size, node.mtime_ns, node.mode = st.size, st.mtime_ns, st.mode
        node.uid, node.gid = st.uid, st.gid
        node.set_base(st.fingerprint)
        node.present.clear()
        node.epoch += 1
        node.refetched = True
        if node.fd >= 0:
            os.ftruncate(node.fd, 0)
        else:
            self.content.remove(node.ino)
        self.state.save(node)

    # ------------------------------------------------------------- saving
    def changed(self, node: Node) -> None:
        """Sizes, times and present ranges go to the database in batches: one commit
        per file operation was the main cost of small files. The dirty flag is not
        among them (mark_dirty commits it before the data lands), and the content
        file is the authority for a dirty file's size after a crash."""
        node.unsaved = True
        self._unsaved.add(node.ino)

    @property
    def has_unsaved(self) -> bool:
        return bool(self._unsaved)

    def save_all(self, extra: Callable[[], None] | None = None) -> None:
        inos, self._unsaved = self._unsaved, set()
        try:
            with self.state.transaction():
                if extra is not None:
                    extra()
                for ino in inos:
                    node = self.nodes.get(ino)
                    if node is not None and node.unsaved and not node.unlinked:
                        self.state.save(node)
        except BaseException:
            self._unsaved |= inos  # not saved: the next batch tries again
            raise

    def open_unlinked(self) -> set[int]:
        return {n.ino for n in self.nodes.values() if n.unlinked}

    def close(self) -> None:
        for node in self.nodes.values():
            if node.fd >= 0:
                os.close(node.fd)
                node.fd = -1
