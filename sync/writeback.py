"""The write-back queue: changed files upload `delay` seconds after their last
writer's close, a few at a time, after the offline journal has been replayed
(namespace first: uploads go to today's paths).

Runs on the client's one event loop: `due` and `uploading` are touched only there,
so the code between two awaits is atomic.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import trio

from .load import LOAD_WINDOW, MAX_DEFER, LoadMeter
from .ports import (Clock, Item, Journal, Link, LocalTree, Record, RemoteError, SyncFailed,
                    Unavailable)
from .replay import Replayer
from .upload import Uploader
from .vocabulary import EVENT_UPLOAD

log = logging.getLogger("sync.writeback")

RETRY_AFTER = 30.0  # s before a failed upload is tried again, doubling each time ...
RETRY_MAX = 3600.0  # ... up to this


@dataclass
class Failure:
    """A file whose upload fails (the server refuses it, or the engine cannot do
    it): reported once, retried with backoff, cleared by a successful upload."""

    reason: str
    since: float     # wall time of the first failure
    attempts: int = 1

    @property
    def retry_in(self) -> float:
        return min(RETRY_AFTER * 2 ** (self.attempts - 1), RETRY_MAX)


class WriteBack:
    def __init__(self, tree: LocalTree, uploader: Uploader, replayer: Replayer,
                 journal: Journal, link: Link, record: Record, clock: Clock, *, delay: float,
                 parallel: int, requests: Callable[[], int]):
        self.tree, self.uploader, self.replayer = tree, uploader, replayer
        self.journal, self.link, self.record, self.clock = journal, link, record, clock
        self.delay, self.parallel = delay, max(1, parallel)
        self.load = LoadMeter(requests, clock.monotonic)
        self.due: dict[int, float] = {}   # ino -> monotonic time its upload is due
        self.uploading: set[int] = set()  # inos being uploaded now
        self.failures: dict[int, Failure] = {}  # ino -> why its upload fails
        # Called with (what failed, why) when a file's upload first fails.
        self.on_failure: list[Callable[[str, str], None]] = []
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

    def renamed(self, item: Item) -> None:
        """A new name may be one the server takes: a failing upload is tried soon."""
        if item.ino in self.failures:
            self.schedule(item)

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
            await self._attempt(item)
        except Unavailable:
            self.due.setdefault(item.ino, 0.0)  # again when the server is back
        except (SyncFailed, RemoteError, OSError):
            pass  # reported and due again (_attempt)
        except Exception as exc:  # a bug: say so with its traceback, keep the queue going
            log.exception("upload of %s failed", self.tree.path_of(item))
            self._failed(item, f"internal error: {type(exc).__name__}: {exc}", logged=True)
        finally:
            self.uploading.discard(item.ino)
            limiter.release_on_behalf_of(item.ino)

    async def upload_now(self, item: Item) -> None:
        """A manual sync's upload: at once, whatever the queue says."""
        self.due.pop(item.ino, None)
        await self._attempt(item)

    async def _attempt(self, item: Item) -> None:
        try:
            await self.uploader.upload(item)
        except Unavailable:
            raise
        except (SyncFailed, RemoteError, OSError) as exc:
            # The server refused (a name, a permission, no room) or the engine could
            # not: not a bug, and retrying at once will not help.
            path = self.tree.path_of(item)
            reason = str(exc) or type(exc).__name__
            self._failed(item, reason.removeprefix(f"{path}: "))
            raise
        if item.dirty and self.tree.item(item.ino) is item:
            return  # to be tried again at once (a conflict decided again, a write meanwhile)
        failure = self.failures.pop(item.ino, None)
        if failure is not None:
            path = self.tree.path_of(item)
            log.info("upload of %s succeeded after %d failures", path, failure.attempts)
            self.record.add_event(EVENT_UPLOAD, f"{path}: uploaded after {failure.attempts} "
                                                f"failed attempts")

    def _failed(self, item: Item, reason: str, logged: bool = False) -> None:
        """Report a failed upload once (an event, the status, one log line); later
        failures of the same file only count, and each waits twice as long."""
        path = self.tree.path_of(item)
        failure = self.failures.get(item.ino)
        if failure is None:
            failure = self.failures[item.ino] = Failure(reason, self.clock.time())
            if not logged:
                log.error("upload of %s failed: %s; retrying in %g s", path, reason,
                          failure.retry_in)
            self.record.add_event(EVENT_UPLOAD, f"{path}: upload failed: {reason}")
            for callback in self.on_failure:
                callback(f"upload of {path}", reason)
        else:
            failure.attempts += 1
            failure.reason = reason
            log.info("upload of %s failed again (%s); next try in %g s", path, reason,
                     failure.retry_in)
        self.due[item.ino] = self.clock.monotonic() + failure.retry_in

    def failing(self) -> list[dict]:
        """The files whose upload fails, and why (for the status)."""
        out = []
        for ino, failure in list(self.failures.items()):
            item = self.tree.item(ino)
            if item is None or not item.dirty:  # gone, or no longer to upload
                del self.failures[ino]
                continue
            out.append({"path": self.tree.path_of(item), "reason": failure.reason,
                        "since": failure.since})
        return sorted(out, key=lambda f: f["path"])

    async def flush(self, items, timeout: float = math.inf) -> None:
        """Upload every changed file now; returns when done, offline, or at timeout."""
        self.all_due(items)
        with trio.move_on_after(timeout):
            while self.link.online:
                # Until nothing is left to upload, not merely nothing due: a file can
                # be dirty between two attempts (changed or moved during its upload,
                # a conflict decided again) without being due or uploading.
                waiting = [i for i in list(items) if i.dirty and not i.unlinked
                           and not i.writers and i.ino not in self.failures]
                if not (self.uploading or self.journal.count or waiting):
                    break
                for item in waiting:
                    if item.ino not in self.uploading and item.ino not in self.due:
                        self.due[item.ino] = 0.0
                        self.wake()
                await trio.sleep(0.05)
