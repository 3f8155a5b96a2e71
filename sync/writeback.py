"""The write-back queue: changed files upload `delay` seconds after their last
writer's close, a few at a time, after the offline journal has been replayed
(namespace first: uploads go to today's paths).

Runs on the client's one event loop: `due` and `uploading` are touched only there,
so the code between two awaits is atomic.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import trio

from .load import LOAD_WINDOW, MAX_DEFER, LoadMeter
from .ports import Clock, Item, Journal, Link, LocalTree, RemoteError, SyncFailed, Unavailable
from .replay import Replayer
from .upload import Uploader

log = logging.getLogger("sync.writeback")

RETRY_AFTER = 30.0  # s before a failed upload is tried again


class WriteBack:
    def __init__(self, tree: LocalTree, uploader: Uploader, replayer: Replayer,
                 journal: Journal, link: Link, clock: Clock, *, delay: float, parallel: int,
                 requests: Callable[[], int]):
        self.tree, self.uploader, self.replayer = tree, uploader, replayer
        self.journal, self.link, self.clock = journal, link, clock
        self.delay, self.parallel = delay, max(1, parallel)
        self.load = LoadMeter(requests, clock.monotonic)
        self.due: dict[int, float] = {}   # ino -> monotonic time its upload is due
        self.uploading: set[int] = set()  # inos being uploaded now
        self._wake = trio.Event()

    # ------------------------------------------------------------- the queue
    def schedule(self, item: Item, delay: float | None = None) -> None:
        self.due[item.ino] = self.clock.monotonic() + (self.delay if delay is None else delay)
        self.wake()

    def again(self, item: Item) -> None:
        self.schedule(item, 0)

    def hold(self, item: Item) -> None:
        """A writer has the file open: its upload waits for the last close."""
        self.due.pop(item.ino, None)

    def is_due(self, item: Item) -> bool:
        return item.ino in self.due

    def all_due(self, items) -> None:
        """Every changed file now (back online, unmount, recovery)."""
        for item in items:
            if item.dirty and not item.unlinked and not item.writers:
                self.due[item.ino] = 0.0
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # -------------------------------------------------------------- the loop
    async def run(self) -> None:
        while True:
            if self.link.online and self.journal.count:
                await self.replayer.replay()
            now = self.clock.monotonic()
            due = [] if self.journal.count else sorted(
                (t, ino) for ino, t in self.due.items() if t <= now)
            if not due or not self.link.online:
                wait = min(self.due.values(), default=now + 3600) - now
                with trio.move_on_after(max(wait, 0.01) if self.link.online else 3600):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            if self._give_way(due[0][0], now):
                await trio.sleep(LOAD_WINDOW)
                continue
            # Several at a time: on a link with latency, one upload is mostly waiting.
            limiter = trio.CapacityLimiter(self.parallel)
            async with trio.open_nursery() as uploads:
                for due_at, ino in due:
                    if not self.link.online or self._give_way(due_at, self.clock.monotonic()):
                        break  # the rest stay due
                    self.due.pop(ino, None)
                    item = self.tree.item(ino)
                    if item is None or not item.dirty or item.writers:
                        continue
                    await limiter.acquire_on_behalf_of(ino)
                    self.uploading.add(ino)
                    uploads.start_soon(self._upload_due, item, limiter)

    def _give_way(self, due_at: float, now: float) -> bool:
        """Whether a background upload due since `due_at` waits while the mount is
        busy (at most MAX_DEFER past its time): uploads take CPU from the applications
        using the files (a 5,000-file copy ran at 340 files/s with uploads alongside,
        850 without). A manual sync is due since 0 and never waits."""
        return now - due_at < MAX_DEFER and self.load.busy()

    async def _upload_due(self, item: Item, limiter: trio.CapacityLimiter) -> None:
        try:
            await self.uploader.upload(item)
        except Unavailable:
            self.due.setdefault(item.ino, 0.0)  # again when the server is back
        except (SyncFailed, RemoteError, OSError) as exc:
            log.error("upload of %s failed (%s); retrying in %g s", self.tree.path_of(item),
                      exc, RETRY_AFTER)
            self.due[item.ino] = self.clock.monotonic() + RETRY_AFTER
        except Exception:  # a bug: say so with its traceback, keep the queue going
            log.exception("upload of %s failed; retrying in %g s", self.tree.path_of(item),
                          RETRY_AFTER)
            self.due[item.ino] = self.clock.monotonic() + RETRY_AFTER
        finally:
            self.uploading.discard(item.ino)
            limiter.release_on_behalf_of(item.ino)

    async def upload_now(self, item: Item) -> None:
        """A manual sync's upload: at once, whatever the queue says."""
        self.due.pop(item.ino, None)
        await self.uploader.upload(item)

    async def flush(self, items, timeout: float = math.inf) -> None:
        """Upload every changed file now; returns when done, offline, or at timeout."""
        self.all_due(items)
        with trio.move_on_after(timeout):
            while self.link.online and (self.uploading or self.journal.count or any(
                    t <= self.clock.monotonic() for t in self.due.values())):
                await trio.sleep(0.05)
