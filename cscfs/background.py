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

import trio

from sync.scheduler import BLACKOUT, WAIT, Schedule

from . import errors, modes
from .syncer import manual_sync

log = logging.getLogger("cscfs.background")


class BackgroundSync:
    def __init__(self, vfs, monitor, clock=time.time, draw=random.random):
        self.vfs, self.monitor, self.clock, self.draw = vfs, monitor, clock, draw
        o = vfs.opts
        self.schedule = Schedule(o.sync_interval_min, o.sync_variance_min,
                                 o.sync_blackout_start, o.sync_blackout_minutes,
                                 o.sync_max_gap_min)

    def _meta(self, key: str) -> float:
        return float(self.vfs.state.get_meta(key, "0"))

    def _plan_next(self, after: float) -> float:
        due = self.schedule.next_run(after, self.draw())
        self.vfs.state.set_meta("next_sync_at", repr(due))
        return due

    async def run(self) -> None:
        while True:
            now = self.clock()
            due = self._meta("next_sync_at")
            longest = 60.0 * (self.schedule.interval_min + self.schedule.variance_min)
            if not due or due > now + longest:  # none yet, or planned under a longer interval
                due = self._plan_next(now)
            last = self._meta("last_sync_at")
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
        self.vfs.state.add_event("sync", f"skipped: {why}")
        log.info("background sync skipped: %s", why)

    async def run_once(self, now: float) -> None:
        vfs = self.vfs
        if vfs.cost_limited:
            return self._skip(f"cost ({vfs.cost.describe()})")
        if vfs.mode == modes.ONLINE:
            return  # changes already write back continuously
        if vfs.mode == modes.OFFLINE:
            return self._skip("server unavailable")
        if vfs.mode == modes.WORK_OFFLINE and not vfs.opts.sync_when_work_offline:
            return self._skip("work offline")
        vfs.state.add_event("sync", "background sync started")
        try:
            async for progress in manual_sync(vfs, self.monitor, [], label="background"):
                pass
        except errors.CscfsError as exc:
            vfs.state.add_event("sync", f"background sync failed: {exc}")
            log.warning("background sync failed: %s", exc)
            return
        vfs.state.set_meta("last_sync_at", repr(now))
