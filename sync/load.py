"""How busy applications keep the mount: background work (uploads, the filler)
gives way while they do, so that it takes no CPU or link from them."""

from __future__ import annotations

from typing import Callable

BUSY_RATE = 500     # requests a second above which the mount counts as busy
LOAD_WINDOW = 0.3   # s over which that rate is measured
MAX_DEFER = 10.0    # s background work waits at most for a busy mount


class LoadMeter:
    """`requests()`: file-system requests served so far (counted by the adapter)."""

    def __init__(self, requests: Callable[[], int], monotonic: Callable[[], float]):
        self.requests, self.monotonic = requests, monotonic
        self._at, self._count, self._busy = -1e9, 0, False

    def busy(self, unknown_is_busy: bool = True) -> bool:
        """More than BUSY_RATE requests a second over the last window. After a while
        unlooked, the average says nothing of now: the first look starts a fresh
        window and counts as `unknown_is_busy`."""
        now = self.monotonic()
        if now - self._at >= LOAD_WINDOW:
            fresh = now - self._at < 2 * LOAD_WINDOW
            count = self.requests()
            rate = (count - self._count) / (now - self._at)
            self._at, self._count = now, count
            self._busy = rate > BUSY_RATE if fresh else unknown_is_busy
        return self._busy
