"""Data used in the current billing cycle, from per-interface byte counters.

Counters come from psutil (nowrap). The meter keeps, per interface, the last
counter seen and the bytes used this cycle; the caller persists `state` (JSON) so
that restarts keep the count. A counter lower than the last one was reset (a
reboot, a re-created interface): what it shows now is all new traffic. A new
billing cycle starts on `billing_day` (1-28) and sets the count back to zero.
Pure: the caller gives the counters and the date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

APPROACHING, OVER = "approaching its data limit", "over its data limit"


def cycle_start(today: dt.date, billing_day: int) -> dt.date:
    """The date the billing cycle containing `today` began."""
    if today.day >= billing_day:
        return today.replace(day=billing_day)
    first = today.replace(day=1)
    previous = first - dt.timedelta(days=1)
    return previous.replace(day=billing_day)


@dataclass
class UsageMeter:
    limit_bytes: int            # 0: no plan limit
    billing_day: int = 1
    warn_ratio: float = 0.9

    def update(self, state: dict, counters: dict[str, int], today: dt.date) -> dict:
        """The new state after a reading; state["used"] is this cycle's bytes."""
        start = cycle_start(today, self.billing_day).isoformat()
        last = dict(state.get("last", {}))
        used = state.get("used", 0) if state.get("cycle") == start else 0
        for iface, counter in counters.items():
            before = last.get(iface)
            if before is not None:
                used += counter - before if counter >= before else counter
            last[iface] = counter
        return {"cycle": start, "used": used, "last": last}

    def level(self, state: dict) -> str | None:
        if not self.limit_bytes:
            return None
        used = state.get("used", 0)
        if used >= self.limit_bytes:
            return OVER
        if used >= self.warn_ratio * self.limit_bytes:
            return APPROACHING
        return None


def read_counters(interfaces: list[str] | None = None) -> dict[str, int]:
    """Bytes sent + received per interface (loopback excluded), never wrapping."""
    import psutil

    counters = psutil.net_io_counters(pernic=True, nowrap=True)
    return {name: c.bytes_sent + c.bytes_recv for name, c in counters.items()
            if name != "lo" and (not interfaces or name in interfaces)}
