"""When the hive's background upload runs (Windows 7's policy): every
`interval_h` hours, or daily at a local time of day, plus a random delay of up to
`delay_min` minutes per run so that clients do not all upload at once. Pure: the
caller gives the time, the random draw in [0, 1) and the local offset from UTC."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True)
class HiveSchedule:
    mode: str = "interval"      # "interval" or "time"
    interval_h: float = 12.0
    at: str = "03:00"           # HH:MM local time, for mode "time"
    delay_min: float = 60.0

    def next_due(self, after: float, draw: float, utc_offset_s: float) -> float:
        """Unix time of the first run after `after` (the last run, or the start)."""
        delay = draw * self.delay_min * 60.0
        if self.mode == "interval":
            return after + self.interval_h * 3600.0 + delay
        hours, minutes = (int(x) for x in self.at.split(":"))
        local = after + utc_offset_s
        day_start = local - local % DAY
        run = day_start + hours * 3600.0 + minutes * 60.0
        if run <= local:
            run += DAY
        return run - utc_offset_s + delay

    @classmethod
    def of(cls, cfg) -> "HiveSchedule":
        return cls(cfg.hive_upload, cfg.hive_upload_interval_h, cfg.hive_upload_time,
                   cfg.hive_upload_delay_min)
