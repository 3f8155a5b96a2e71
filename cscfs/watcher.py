"""Server change notification: follow the store's change events where it has them,
so a change by another client shows at once and the kernel may keep names and
attributes for long (`ttl`). Without them, names are trusted for attr_ttl.

The store's watch runs blocking in a worker thread; each event is looked at there
(a stat) and handed to the event loop, where the tree is touched.
"""

from __future__ import annotations

import logging
import posixpath
import threading

import trio

from . import errors
from .config import Options
from .inodes import InodeTable
from .metadata import ROOT_INO
from .remote.base import TEMP_PREFIX, RemoteStat, RemoteStore

log = logging.getLogger("cscfs.watcher")

UNKNOWN = object()  # an event whose path was not looked at


class ChangeWatcher:
    def __init__(self, store: RemoteStore, table: InodeTable, options: Options, invalidate):
        self.store, self.table, self.opts, self.invalidate = store, table, options, invalidate
        self.watching = False  # the server's change notification is armed
        self.on_change: list = []  # called after a change marked something stale

    @property
    def ttl(self) -> float:
        """How long names, attributes and listings are trusted: long while the
        server's change notification is armed (a change marks them stale at once),
        attr_ttl while polling."""
        complete = self.opts.trust_server_notify or getattr(self.store, "notify_complete", False)
        return self.opts.cache_ttl if self.watching and complete else self.opts.attr_ttl

    async def run(self) -> None:
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
            st: RemoteStat | None | object = UNKNOWN
            if path:
                try:
                    st = self.store.stat(path)
                except errors.NotFound:
                    st = None
                except Exception as exc:  # unknown then: the event counts fully
                    log.debug("after a change event, stat %s failed: %s", path, exc)
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
        before = self.ttl
        self.watching = armed
        log.info("change notification %s; names and attributes trusted for %g s",
                 "armed" if armed else "off", self.ttl)
        if not armed:
            self.forget_checks()
        elif self.ttl > before:
            # What was checked before the watch was in place may have changed unseen:
            # it keeps the trust it had, not the long one.
            for node in self.table.nodes.values():
                node.checked_at -= self.ttl - before

    def forget_checks(self) -> None:
        """Everything is to be checked again, also what the kernel holds for long."""
        for node in self.table.nodes.values():
            self.table.mark_stale(node)
            if node.ino != ROOT_INO and not node.unlinked:
                self.invalidate.entry(node.parent, node.name)
        for callback in self.on_change:
            callback()

    def _same_attrs(self, node, now: RemoteStat) -> bool:
        """Mode and owner as we show them (a chmod or chown there makes no new version)."""
        return not self.store.stores_modes or (now.mode, now.uid, now.gid) == (
            node.mode, node.uid, node.gid)

    def on_remote_change(self, path: str, now: RemoteStat | None | object = UNKNOWN) -> None:
        """Something at `path` changed on the server (`now`: what a stat found there
        after the event, None: nothing, UNKNOWN: not looked): forget what we checked."""
        if not path:
            self.forget_checks()
            return
        table = self.table
        node = table.nodes[ROOT_INO]
        known = True
        for part in path.split("/"):
            ino = node.children.get(part) if node.children is not None else None
            if ino is None:
                known = False
                break
            node = table.nodes[ino]
        if now is not UNKNOWN:
            if not known and now is None:
                return  # gone there, and not here either (e.g. our own delete)
            if known and now is None and table.busy_dirs.get(node.parent):
                return  # our own delete or rename there, still under way
            if known and isinstance(now, RemoteStat) and now.kind == node.kind and (
                    node.dirty or self._same_attrs(node, now) and (
                        node.kind == "dir" or now.fingerprint == node.base)):
                # What we have (e.g. our own upload), or ours will replace it: the
                # upload checks the base and keeps both on a conflict.
                return
        table.mark_stale(node)
        parent = table.nodes.get(node.parent)
        if parent is not None:
            table.mark_stale(parent)
            self.invalidate.entry(parent.ino, node.name)
        for callback in self.on_change:
            callback()
