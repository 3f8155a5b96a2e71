"""When the background sync runs: every `interval` minutes plus a random extra of up
to `variance` minutes, never inside an optional daily blackout window, except when
`max_gap` minutes have passed since the last run (Windows' Configure Background Sync
semantics). Pure: the caller gives the clock, the local time zone offset and the
random draw.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN, WAIT, BLACKOUT = "run", "wait", "blackout"


@dataclass(frozen=True)
class Schedule:
    interval_min: float = 120.0
    variance_min: float = 60.0
    blackout_start: str = ""        # "HH:MM" local time; "" for none
    blackout_minutes: float = 0.0
    max_gap_min: float = 0.0        # 0: the blackout always wins

    def next_run(self, last_run: float, draw: float) -> float:
        """Unix time of the run after `last_run`; `draw` in [0, 1) picks the extra."""
        return last_run + 60.0 * (self.interval_min + draw * self.variance_min)

    def in_blackout(self, now: float, utc_offset_s: float) -> bool:
        if not self.blackout_start or self.blackout_minutes <= 0:
            return False
        hours, minutes = (int(x) for x in self.blackout_start.split(":"))
        start = (hours * 60 + minutes) * 60.0
        day_s = (now + utc_offset_s) % 86400.0
        into = (day_s - start) % 86400.0  # seconds since the window opened (wraps midnight)
        return into < self.blackout_minutes * 60.0

    def decide(self, now: float, due: float, last_run: float, utc_offset_s: float) -> str:
        """RUN, WAIT (not due yet) or BLACKOUT (due, but inside the window)."""
        if now < due:
            return WAIT
        if not self.in_blackout(now, utc_offset_s):
            return RUN
        if self.max_gap_min > 0 and last_run and now - last_run >= 60.0 * self.max_gap_min:
            return RUN  # too long without a sync: run even inside the blackout
        return BLACKOUT


def parse_hhmm(value: str) -> str:
    """Validate "HH:MM" (or ""), for the config loader."""
    if not value:
        return value
    hours, sep, minutes = value.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24
            and int(minutes) < 60):
        raise ValueError(f"{value!r} is not HH:MM")
    return value
