"""The roaming agent (the user unit's main process): logon, then background
uploads on schedule while the session lasts, then logoff on SIGTERM.

The clock, the sleep and the random draw are injected (tests drive a whole day in
no time). Sleeps are at most a minute long and the wall clock is read again after
each, so a laptop that slept past the due time uploads on waking."""

from __future__ import annotations

import random
import signal
import threading
import time
from typing import Callable

from ..sd_notify import Notifier
from .flows import Roamer
from .schedule import HiveSchedule

MAX_NAP = 60.0


def utc_offset(t: float) -> float:
    return float(time.localtime(t).tm_gmtoff)


class Agent:
    def __init__(self, roamer: Roamer, clock: Callable[[], float] = time.time,
                 draw: Callable[[], float] = random.random,
                 stop: threading.Event | None = None, offset=utc_offset,
                 notifier: Notifier | None = None):
        self.roamer, self.clock, self.draw, self.offset = roamer, clock, draw, offset
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier()
        self.schedule = HiveSchedule.of(roamer.cfg)

    def nap(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def run(self, logon: bool = True, logoff: bool = True) -> None:
        if logon:
            self.roamer.logon()
            self.roamer.release()
        due = self._plan(self.clock())
        self.notifier.ready(self._status())
        while not self.stop.is_set():
            now = self.clock()
            if now >= due:
                self.roamer.upload()
                self.roamer.release()
                last = self.clock()
                due = self._plan(last)
                self.notifier.status(self._status())
                continue
            self.nap(min(MAX_NAP, due - now))
        self.notifier.stopping()
        if logoff:
            self.roamer.logoff()

    def _plan(self, after: float) -> float:
        due = self.schedule.next_due(after, self.draw(), self.offset(after))
        self.roamer.state.set_fact("next_upload", due)
        return due

    def _status(self) -> str:
        nxt = self.roamer.state.fact("next_upload")
        last = self.roamer.state.fact("last_logon") or {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(nxt)) if nxt else "not planned"
        return f"logon: {last.get('outcome', 'none')}; next background upload {when}"


def run_agent() -> int:
    roamer = Roamer()
    agent = Agent(roamer)

    def on_term(signum, frame):
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        agent.run()
    finally:
        roamer.close()
    return 0
