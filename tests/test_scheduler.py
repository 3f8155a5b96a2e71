"""The background-sync schedule with an injected clock: interval, variance bounds,
blackout (also across midnight), and the maximum gap that overrides it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.scheduler import BLACKOUT, RUN, WAIT, Schedule, parse_hhmm

DAY = 86400.0
MIDNIGHT = 1_795_132_800.0  # a UTC midnight


@given(last=st.floats(0, 2e9), draw=st.floats(0, 0.999999))
def test_next_run_is_interval_plus_at_most_the_variance(last, draw):
    s = Schedule(interval_min=120, variance_min=60)
    gap = s.next_run(last, draw) - last
    assert 120 * 60 - 1e-3 <= gap < 180 * 60 + 1e-3


def test_decide_waits_runs_and_respects_the_blackout_across_midnight():
    s = Schedule(blackout_start="23:00", blackout_minutes=120)  # 23:00-01:00
    due = MIDNIGHT - 3600  # due at 23:00
    assert s.decide(due - 1, due, 0, 0) == WAIT
    assert s.decide(due + 60, due, 0, 0) == BLACKOUT            # 23:01
    assert s.decide(MIDNIGHT + 1800, due, 0, 0) == BLACKOUT     # 00:30, next day
    assert s.decide(MIDNIGHT + 3600, due, 0, 0) == RUN          # 01:00: window over
    # The same window in a time zone two hours east of UTC.
    assert s.decide(MIDNIGHT - 3 * 3600 + 60, 0, 0, 2 * 3600) == BLACKOUT


def test_max_gap_runs_inside_the_blackout():
    s = Schedule(blackout_start="00:00", blackout_minutes=24 * 60 - 1, max_gap_min=8 * 60)
    last = MIDNIGHT + 60
    assert s.decide(last + 7 * 3600, last, last, 0) == BLACKOUT
    assert s.decide(last + 8 * 3600, last, last, 0) == RUN


@pytest.mark.parametrize("bad", ["24:00", "7", "12:60", "ab:cd"])
def test_blackout_start_is_validated(bad):
    with pytest.raises(ValueError):
        parse_hhmm(bad)
    assert parse_hhmm("07:30") == "07:30"


# ------------------------------------------------------------ in the daemon's loop
def _events(runner) -> list[str]:
    return [e["reason"] for e in runner.call_sync(runner.state.events)]


def test_background_sync_runs_on_schedule_when_always_offline(tmp_path, server):
    import dataclasses

    from .conftest import FAST, VfsRunner, wait_for
    from .fsapi import VfsFS

    first = VfsRunner(server, tmp_path / "data")  # online once: the root gets listed
    try:
        VfsFS(first).listdir()
    finally:
        first.stop()
    opts = dataclasses.replace(FAST, always_offline=True, sync_interval_min=0.01,
                               sync_variance_min=0.0)
    runner = VfsRunner(server, tmp_path / "data", opts)
    try:
        fs = VfsFS(runner)
        fs.write("made-always-offline.txt", b"reaches the server on schedule")
        assert fs.status()["mode"] == "always-offline"
        wait_for(lambda: (server / "made-always-offline.txt").exists(), 15,
                 what="the scheduled sync")
        assert (server / "made-always-offline.txt").read_bytes() == b"reaches the server on schedule"
        wait_for(lambda: any(e.startswith("background sync finished: 1 uploaded")
                             for e in _events(runner)), 10, what="the finished event")
        assert "background sync started" in _events(runner)
        assert fs.status()["last_sync"] and fs.status()["next_background_sync"]
    finally:
        runner.stop()


def test_the_next_run_survives_a_restart_and_offline_runs_are_skipped(tmp_path, server):
    import dataclasses

    from .conftest import FAST, VfsRunner, wait_for
    from .fsapi import VfsFS

    runner = VfsRunner(server, tmp_path / "data")
    try:
        wait_for(lambda: VfsFS(runner).status()["next_background_sync"], what="a plan")
        planned = VfsFS(runner).status()["next_background_sync"]
    finally:
        runner.stop()
    runner = VfsRunner(server, tmp_path / "data")
    try:
        assert VfsFS(runner).status()["next_background_sync"] == planned
    finally:
        runner.stop()
    opts = dataclasses.replace(FAST, sync_interval_min=0.01, sync_variance_min=0.0)
    runner = VfsRunner(server, tmp_path / "data2", opts)
    try:
        runner.call_sync(VfsFS(runner).client.link.set_work_offline, True)
        wait_for(lambda: "skipped: work offline" in _events(runner), 15, what="a skip")
    finally:
        runner.stop()
