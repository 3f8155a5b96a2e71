"""Available offline: the filler makes everything pinned readable with the link cut.

A pass lists every pinned folder that is stale (names first: the whole tree's names
are known within seconds, so a cut a moment later still leaves every folder listable
and writable), then fetches the whole content of every pinned file that is absent,
partial or stale, most recently used first, a few at a time. A file the server
changed is dropped by the listing merge (a changed clean copy goes) and so fetched
again by the next pass; a file changed on both sides stays dirty here and becomes a
conflict at its upload, never an overwrite.

Passes run when the link allows background fill (`Link.fill_allowed`: online, or a
first fill of an Always-Offline mount on a fast, free link), when woken (mount,
server back, a pin, a change notification) and every `rescan` seconds (a periodic
rescan of every pinned folder, for servers without change notification). Progress
survives a restart: present ranges are saved with the items, and a pass skips what
is complete. Applications go first: while the mount is busy a pass waits (at most
`MAX_DEFER`), and a reader of the same file goes before the filler's next chunk.
The filler never fetches past the cache quota: pinned content is never evicted, so
what does not fit stays a ghost, and one event says so.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

import trio

from .load import LOAD_WINDOW, MAX_DEFER, LoadMeter
from .ports import Item, Link, LocalTree, Record, RemoteError, SyncFailed, Unavailable
from .vocabulary import EVENT_FILL

log = logging.getLogger("sync.filler")

SETTLE = 1.0  # s of quiet after a change on the server before it is fetched: a file
              # being written there is listed once it is whole, not half-way


@dataclass
class FillProgress:
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    activity: str = "starting"  # listing, fetching, complete, waiting
    waiting_for: str = ""        # why not filling now ("" while filling or complete)
    over_quota: bool = False     # the pinned set does not fit the cache quota


class Filler:
    """`room(n)`: whether n more bytes fit the cache quota; `requests()`: requests
    served so far (how busy the mount is)."""

    def __init__(self, tree: LocalTree, link: Link, record: Record, *, parallel: int,
                 rescan: float, room: Callable[[int], bool], requests: Callable[[], int],
                 monotonic: Callable[[], float]):
        self.tree, self.link, self.record = tree, link, record
        self.parallel, self.rescan = max(1, parallel), rescan
        self.room, self.monotonic = room, monotonic
        self.load = LoadMeter(requests, monotonic)
        self.progress = FillProgress()
        self._wake = trio.Event()
        self._full_rescan = True  # the next pass re-lists every pinned folder
        self._warned_quota = False
        self.on_over_quota: list[Callable[[], None]] = []  # called with the one fill event
        self._quiet_until = -1e9
        self.passes = 0  # completed passes, for status and tests

    def wake(self, rescan: bool = False) -> None:
        """Something may need filling: a pin, the server back, a change there."""
        self._full_rescan |= rescan
        self._wake.set()

    def status(self) -> dict:
        """Progress as of now: what is filled, and why the filler waits (the link's
        state is read now, not when the last pass ended)."""
        out = dataclasses.asdict(self.progress)
        why = self.link.fill_waits_for()
        if why:
            out["waiting_for"] = why
            if out["activity"] != "complete":
                out["activity"] = "waiting"
        return out

    def changed(self) -> None:
        """The server reported a change: fetch it once the server is quiet again."""
        self._quiet_until = self.monotonic() + SETTLE
        self._wake.set()

    async def run(self) -> None:
        last_pass = -1e9
        while True:
            why = self.link.fill_waits_for()
            if why:
                self.progress.activity, self.progress.waiting_for = "waiting", why
                if self._wake.is_set():  # work waits for the link: look again soon
                    await trio.sleep(1.0)
                else:
                    await self._sleep(5.0)
                continue
            if self.monotonic() - last_pass >= self.rescan:
                self._full_rescan = True
            if self._full_rescan or self._wake.is_set():
                while self.monotonic() < self._quiet_until:
                    await trio.sleep(self._quiet_until - self.monotonic())
                self._wake = trio.Event()
                try:
                    with self.link.fill_window():
                        await self.fill_pass(force=self._full_rescan)
                    self._full_rescan = False
                    last_pass = self.monotonic()
                    self.link.fill_done()
                except Unavailable:
                    continue  # the link went: wait for it
            await self._sleep(max(0.0, self.rescan - (self.monotonic() - last_pass)))

    async def _sleep(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._wake.wait()

    # ---------------------------------------------------------------- a pass
    async def fill_pass(self, force: bool = False) -> None:
        """List every pinned folder (stale ones, or all with `force`), then fetch
        every pinned file not fully present."""
        p = self.progress
        p.activity, p.waiting_for = "listing", ""
        files = await self._list_pinned(force)
        self._count(files)
        todo = sorted((f for f in files if not f.complete),
                      key=lambda f: (f.last_access, f.mtime_ns), reverse=True)
        if todo:
            p.activity = "fetching"
            await self._fetch_all(todo)
        self._count(files)
        if p.files_done == p.files_total:
            p.activity = "complete"
        elif p.over_quota:
            p.activity, p.waiting_for = "waiting", "cache quota"
        self.passes += 1

    async def _list_pinned(self, force: bool) -> list[Item]:
        files, stack = [], [self.tree.root()]
        while stack:
            item = stack.pop()
            if self.tree.item(item.ino) is not item:
                continue
            if item.kind == "dir":
                if not self.tree.pinned(item) and not self._has_pinned_below(item):
                    continue
                await self._give_way()
                await self.tree.refresh(item, force=force or not item.listed, background=True)
                stack.extend(self.tree.children(item))
            elif item.kind == "file" and self.tree.pinned(item):
                files.append(item)
        return files

    def _has_pinned_below(self, folder: Item) -> bool:
        """An unpinned folder is still walked when something under it is pinned."""
        stack = list(self.tree.children(folder))
        while stack:
            item = stack.pop()
            if item.pinned > 0:
                return True
            if item.kind == "dir":
                stack.extend(self.tree.children(item))
        return False

    def _count(self, files: list[Item]) -> None:
        p = self.progress
        live = [f for f in files if self.tree.item(f.ino) is f]
        p.files_total, p.bytes_total = len(live), sum(f.size for f in live)
        p.files_done = sum(1 for f in live if f.complete)
        p.bytes_done = sum(min(f.cached_bytes, f.size) for f in live)

    async def _fetch_all(self, todo: list[Item]) -> None:
        limiter = trio.CapacityLimiter(self.parallel)
        lost: list[Unavailable] = []
        async with trio.open_nursery() as nursery:
            for item in todo:
                if lost:
                    break
                if not self.tree.pinned(item):
                    continue  # unpinned since the pass began
                missing = item.size - item.cached_bytes
                if not self.room(missing):
                    self._over_quota()
                    continue
                await self._give_way()
                await limiter.acquire_on_behalf_of(item.ino)
                nursery.start_soon(self._fetch_one, item, limiter, lost)
        if lost:
            raise lost[0]

    async def _fetch_one(self, item: Item, limiter: trio.CapacityLimiter,
                         lost: list) -> None:
        try:
            if self.tree.item(item.ino) is item and not item.complete:
                await self.tree.fetch_all(item)
                self.progress.files_done += 1
                self.progress.bytes_done += item.size
        except Unavailable as exc:
            lost.append(exc)
        except (RemoteError, SyncFailed, OSError) as exc:
            log.info("fill: %s stays a ghost for now: %s", self.tree.path_of(item), exc)
        finally:
            limiter.release_on_behalf_of(item.ino)

    def _over_quota(self) -> None:
        self.progress.over_quota = True
        if not self._warned_quota:
            self._warned_quota = True
            self.record.add_event(EVENT_FILL, "the pinned files do not fit the cache quota: "
                                              "the most recently used are kept offline")
            log.warning("pinned files do not fit the cache quota")
            for callback in self.on_over_quota:
                callback()

    async def _give_way(self) -> None:
        """Wait while applications keep the mount busy, at most MAX_DEFER."""
        started = self.monotonic()
        while self.load.busy(unknown_is_busy=False) and self.monotonic() - started < MAX_DEFER:
            await trio.sleep(LOAD_WINDOW)
