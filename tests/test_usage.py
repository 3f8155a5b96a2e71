"""Data usage against a plan: counters that grow, reset and roll into a new cycle."""

from __future__ import annotations

import datetime as dt

from netprobe.usage import APPROACHING, OVER, UsageMeter, cycle_start, read_counters

D = dt.date


def test_cycle_start():
    assert cycle_start(D(2026, 11, 21), 15) == D(2026, 11, 15)
    assert cycle_start(D(2026, 11, 3), 15) == D(2026, 10, 15)
    assert cycle_start(D(2026, 1, 3), 28) == D(2025, 12, 28)


def test_counting_through_resets_and_cycles():
    m = UsageMeter(limit_bytes=1000, billing_day=1)
    s = m.update({}, {"wlan0": 5000}, D(2026, 11, 10))  # first sight: a baseline only
    assert s["used"] == 0 and m.level(s) is None
    s = m.update(s, {"wlan0": 5600}, D(2026, 11, 10))
    assert s["used"] == 600
    s = m.update(s, {"wlan0": 300, "wwan0": 0}, D(2026, 11, 11))  # reboot: counters reset
    assert s["used"] == 900 and m.level(s) == APPROACHING
    s = m.update(s, {"wlan0": 500, "wwan0": 100}, D(2026, 11, 12))
    assert s["used"] == 1200 and m.level(s) == OVER
    s = m.update(s, {"wlan0": 600, "wwan0": 100}, D(2026, 12, 1))  # a new cycle
    assert s["used"] == 100 and m.level(s) is None


def test_no_plan_means_no_limit_and_real_counters_read():
    assert UsageMeter(limit_bytes=0).level({"used": 10**12}) is None
    counters = read_counters()
    assert "lo" not in counters and all(v >= 0 for v in counters.values())
