"""The background syncer: runs sync/scheduler's schedule in the daemon.

While online, changes write back continuously and a scheduled run has nothing to
add. In slow-link and always-offline (and work-offline when the config allows it)
a run replays, uploads and fetches pinned files like `cscfs sync`. A run that cannot
or may not happen is an event ("skipped: ..."), and the next one is scheduled.
The next run's time is kept in the state database, so a restart does not reset it.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable

import trio

from sync import ports
from sync.scheduler import BLACKOUT, WAIT, Schedule
from sync.vocabulary import EVENT_SYNC, META_LAST_SYNC, META_NEXT_SYNC

from . import modes
from .notify import failed_files

log = logging.getLogger("cscfs.background")


class BackgroundSync:
    """`link` the LinkKeeper, `records` events and meta, `engine` the SyncEngine."""

    def __init__(self, link, records, engine, options, clock=time.time, draw=random.random):
        self.link, self.records, self.engine = link, records, engine
        self.opts, self.clock, self.draw = options, clock, draw
        self.on_failure: list[Callable[[str, str], None]] = []  # (what failed, why)
        o = options
        self.schedule = Schedule(o.sync_interval_min, o.sync_variance_min,
                                 o.sync_blackout_start, o.sync_blackout_minutes,
                                 o.sync_max_gap_min)

    def _meta(self, key: str) -> float:
        return float(self.records.get_meta(key, "0"))

    def _plan_next(self, after: float) -> float:
        due = self.schedule.next_run(after, self.draw())
        self.records.set_meta(META_NEXT_SYNC, repr(due))
        return due

    async def run(self) -> None:
        while True:
            now = self.clock()
            due = self._meta(META_NEXT_SYNC)
            longest = 60.0 * (self.schedule.interval_min + self.schedule.variance_min)
            if not due or due > now + longest:  # none yet, or planned under a longer interval
                due = self._plan_next(now)
            last = self._meta(META_LAST_SYNC)
            decision = self.schedule.decide(now, due, last, time.localtime(now).tm_gmtoff)
            if decision == WAIT:
                await trio.sleep(min(due - now, 30.0))  # re-read: the user may sync meanwhile
                continue
            if decision == BLACKOUT:
                self._skip("blackout")
            else:
                await self.run_once(now)
            self._plan_next(now)

    def _skip(self, why: str) -> None:
        self.records.add_event(EVENT_SYNC, f"skipped: {why}")
        log.info("background sync skipped: %s", why)

    async def run_once(self, now: float) -> None:
        link = self.link
        if link.cost_limited:
            return self._skip(f"cost ({link.cost.describe()})")
        if link.mode == modes.ONLINE:
            return  # changes already write back continuously
        if link.mode == modes.OFFLINE:
            return self._skip("server unavailable")
        if link.mode == modes.WORK_OFFLINE and not self.opts.sync_when_work_offline:
            return self._skip("work offline")
        self.records.add_event(EVENT_SYNC, "background sync started")
        try:
            async for progress in self.engine.manual_sync([], label="background"):
                failed = progress.get("summary", {}).get("failed")
                if failed:
                    self._failed(failed_files(failed))
        except (ports.RemoteError, ports.SyncFailed, OSError) as exc:
            self.records.add_event(EVENT_SYNC, f"background sync failed: {exc}")
            log.warning("background sync failed: %s", exc)
            self._failed(str(exc) or type(exc).__name__)
            return
        self.records.set_meta(META_LAST_SYNC, repr(now))

    def _failed(self, reason: str) -> None:
        for callback in self.on_failure:
            callback("background sync", reason)
