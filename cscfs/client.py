"""The client as one object: every collaborator built and wired in one place, and
every background task started in one place (`run`). The daemon serves it over
FUSE and the control socket; the tests drive the same object without a mount.

    store, state, content -> InodeTable, LinkKeeper, RemoteGateway, Fetcher,
    Listing, ChangeWatcher -> VFS (POSIX operations)
    the same parts behind sync/ports.py -> SyncEngine (write-back, upload, replay)
    LinkMonitor (probes) -> LinkKeeper; Quota; BackgroundSync (schedule)
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from typing import Callable

import trio

from netprobe.policy import FAST

from sync.engine import SyncEngine
from sync.filler import Filler
from sync.vocabulary import META_LAST_SYNC, META_LAST_UPLOAD, META_NEXT_SYNC

from .background import BackgroundSync
from .cache import ContentStore
from .config import Options
from .diskspace import SpaceKeeper
from .engine_ports import Clock, ConflictPort, JournalPort, RecordPort, TreePort
from .fetcher import Fetcher
from .gateway import RemoteGateway
from .inodes import InodeTable
from .link import LinkKeeper
from .linkmon import LinkMonitor
from .listing import Listing
from .metadata import ROOT_INO, State
from . import errors, modes
from .notify import Notifier
from .quota import Quota
from .remote.base import RemoteStore
from .vfs import VFS, Invalidator, NoInvalidator
from .watcher import ChangeWatcher

log = logging.getLogger("cscfs.client")


RESTART_AFTER = 5.0  # s before a background task that met a failure of its own runs again
PENDING_ROWS_MAX = 1.0  # s a first listing's rows may wait for the listing to end


async def _supervised(task) -> None:
    """Run a background task; a failure of the machine under it (a full disk, a
    state database that cannot write) is logged and the task runs again later:
    the daemon stays up and keeps serving what it can."""
    while True:
        try:
            return await task()
        except (OSError, sqlite3.Error) as exc:
            log.error("%s stopped: %s; again in %g s", getattr(task, "__qualname__", task),
                      exc, RESTART_AFTER)
            await trio.sleep(RESTART_AFTER)


class LinkPort:
    """sync.ports.Link: the mode's view of the link, for the engine."""

    def __init__(self, link: LinkKeeper, gateway: RemoteGateway, monitor: LinkMonitor):
        self._link, self._gateway, self._monitor = link, gateway, monitor
        self.space_full = lambda: False  # set by the client: the cache disk is full
        # Always-Offline works from the cache by choice, not from an empty one: its
        # first fill (after mount, after a pin) runs at once on a fast, free link.
        self.first_fill_pending = True

    @property
    def online(self) -> bool:
        return self._link.online

    @property
    def reachable(self) -> bool:
        return self._link.reachable

    @property
    def reason(self) -> str:
        return self._link.link_state.reason

    @property
    def costed(self) -> str:
        return self._link.costed

    def may_reach(self) -> bool:
        return self._gateway.may_reach()

    def syncing(self):
        return self._gateway.syncing()

    async def probe(self) -> None:
        await self._monitor.probe_once(reconnect=True)

    def fill_waits_for(self) -> str:
        link = self._link
        if self.space_full():
            return "cache disk full"
        if link.online:
            return ""
        if link.mode == modes.ALWAYS_OFFLINE:
            if (self.first_fill_pending and link.link_state.state == FAST
                    and not link.costed):
                return ""
            return "always offline: updates follow the background sync"
        if link.mode == modes.SLOW_LINK:
            return f"costed link ({link.costed})" if link.costed else "slow link"
        return {modes.OFFLINE: "offline", modes.WORK_OFFLINE: "work offline"}.get(
            link.mode, link.mode)

    def fill_window(self):
        return self._gateway.fill_window()

    def fill_done(self) -> None:
        self.first_fill_pending = False


class Client:
    def __init__(self, store: RemoteStore, state: State, content: ContentStore,
                 options: Options, data_dir: str, invalidator: Invalidator | None = None,
                 probe_target: tuple[str, int] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.state, self.content, self.opts = store, state, content, options
        self.invalidate = invalidator or NoInvalidator()
        self.table = InodeTable(state, content, clock)
        self.space = SpaceKeeper(data_dir, state.add_event, self.pending_upload_bytes)
        state.db.on_full = self.space.met_full
        if state.created and not options.offline_by_default:
            root = self.table.nodes[ROOT_INO]
            root.pinned = -1  # on demand; `cscfs pin` names what is available offline
            state.save(root)
        self.link = LinkKeeper(state, options)
        self.gateway = RemoteGateway(store, self.link, options, clock)
        self.watcher = ChangeWatcher(store, self.table, options, self.invalidate)
        self.journal = JournalPort(state)
        self.conflicts = ConflictPort(state)
        self.fetcher = Fetcher(self.table, self.gateway, self.link, options, self.space)
        self.listing = Listing(self.table, self.gateway, lambda: self.vfs.direct,
                               lambda: self.watcher.ttl, self.invalidate, clock,
                               pending=lambda: self.journal.count)
        self.tree = TreePort(self.table, self.listing, self.fetcher, self.invalidate)
        self.monitor = LinkMonitor(self.link, self.gateway, state, probe_target)
        self.records = RecordPort(state)
        self.link_port = LinkPort(self.link, self.gateway, self.monitor)
        self.link_port.space_full = lambda: self.space.full
        self.engine = SyncEngine(
            self.tree, self.gateway, self.journal, self.conflicts, self.link_port,
            self.records, Clock(clock),
            host=socket.gethostname(), delay=options.write_back_delay,
            parallel=options.parallel_uploads, requests=lambda: self.vfs.requests)
        self.writeback = self.engine.writeback
        self.vfs = VFS(store, options, self.table, self.link, self.gateway, self.fetcher,
                       self.listing, self.journal, self.conflicts, self.writeback, self.space,
                       clock)
        self.quota = Quota(self.table, options, data_dir)
        self.filler = Filler(self.tree, self.link_port, self.records,
                             parallel=options.parallel_fetches, rescan=options.rescan_interval,
                             room=self.quota.room, requests=lambda: self.vfs.requests,
                             monotonic=clock)
        self.background = BackgroundSync(self.link, self.records, self.engine, options)
        # Back online: every changed file is due (it waited for the link), and what is
        # pinned is filled.
        self.link.on_online.append(lambda: self.writeback.all_due(self.table.nodes.values()))
        self.link.on_online.append(self.filler.wake)
        self.watcher.on_change.append(self.filler.changed)
        self.notifier = Notifier(options, store.url, clock)
        self.link.on_mode_change.append(self.notifier.link_state)
        self.conflicts.on_record.append(self.notifier.conflict)
        self.writeback.on_failure.append(self.notifier.sync_failed)
        self.background.on_failure.append(self.notifier.sync_failed)
        self.filler.on_over_quota.append(self.notifier.over_quota)
        self.writeback.all_due(self.table.recovered_dirty)  # left dirty by a crash

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Every background task of a mount, until cancelled."""
        tasks = [self.writeback.run, self.fetcher.run, self.filler.run, self.monitor.run,
                 self.monitor.run_cost, self.quota.run, self.background.run, self.watcher.run,
                 self.run_saver, self.space.run, self.notifier.run]
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(_supervised, task)
            task_status.started()

    async def list_root(self) -> None:
        """Names first: the mount's own folder is listed before the mount reports
        ready, so a cut right after still leaves it listable."""
        if self.link.online:
            root = self.table.nodes[ROOT_INO]
            with trio.move_on_after(self.opts.remote_timeout):
                await self.listing.refresh(root, force=True)
                # The mount point shows the server folder's own mode and owner.
                try:
                    st = await self.gateway.stat_or_none("")
                except errors.RemoteError:
                    st = None
                if st is not None and self.store.stores_modes:
                    root.mode, root.uid, root.gid = st.mode, st.uid, st.gid
                    self.state.save(root)

    def pinned_changed(self) -> None:
        """A pin: fill what it asks for now (Always-Offline too, on a fast link)."""
        self.link_port.first_fill_pending = True
        self.filler.wake()

    # ------------------------------------------------------------ saving
    async def run_saver(self, interval: float = 0.5) -> None:
        while True:
            await trio.sleep(interval)
            if self.table.has_unsaved or self.tree.last_upload_unsaved:
                self.save_all()
            since = self.state.pending_since
            if since is not None and time.monotonic() - since > PENDING_ROWS_MAX:
                self.state.flush_pending()  # a listing still open: write its rows anyway

    def save_all(self) -> None:
        self.table.save_all(extra=self.tree.save_last_upload)

    def close(self) -> None:
        self.save_all()
        self.table.close()
        self.notifier.close()

    # ---------------------------------------------------------- uploads
    @property
    def pending_uploads(self) -> int:
        return len(self.table.dirty_files())

    def pending_upload_bytes(self) -> int:
        return sum(n.size for n in self.table.dirty_files())

    async def flush_uploads(self, timeout: float) -> int:
        """Upload every changed file now; returns how many changes remain pending."""
        await self.writeback.flush(self.table.nodes.values(), timeout)
        return self.pending_uploads + self.journal.count

    # ----------------------------------------------------------- status
    def status(self) -> dict:
        files = [n for n in self.table.nodes.values() if n.kind == "file" and not n.unlinked]
        last = self.tree.last_upload or self.state.get_meta(META_LAST_UPLOAD)
        link = self.link
        return {
            "server": self.store.url,
            "mode": link.mode,
            "mode_reason": link.reason,
            "change_notification": self.watcher.watching,
            "names_trusted_s": self.watcher.ttl,
            "mode_since": link.since,
            "median_rtt_ms": link.link_state.median_ms,
            "cost": link.cost.describe(),
            "pending_changes": self.journal.count,
            "last_sync": float(self.state.get_meta(META_LAST_SYNC, "0")) or None,
            "next_background_sync": float(self.state.get_meta(META_NEXT_SYNC, "0")) or None,
            "pending_uploads": self.pending_uploads,
            "upload_failures": self.writeback.failing(),
            "cached_bytes": sum(n.cached_bytes for n in files),
            "cache_quota_bytes": self.quota.limit,
            "cached_items": sum(1 for n in files if n.present.spans or n.size == 0),
            "items": len(self.table.nodes),
            "open_conflicts": self.conflicts.open_count(),
            "available_offline": self.filler.status(),
            "cache_disk_full": self.space.full,
            "pending_upload_bytes": self.pending_upload_bytes(),
            "requests": dict(self.vfs.request_counts),
            "last_upload": ({"at": float(last.split(" ", 1)[0]), "path": last.split(" ", 1)[1]}
                            if last else None),
        }
