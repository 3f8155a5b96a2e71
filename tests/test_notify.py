"""Desktop notifications against a real session bus: a private dbus-daemon with a
stand-in notification server (tests/dbus_standin.py) that records every Notify
call. Conflicts, failed syncs and the quota go through the real client; the
offline / back-online debounce drives the real LinkKeeper with an injected clock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from cscfs import commands, errors
from cscfs.config import Options, load_options
from cscfs.link import LinkKeeper
from cscfs.metadata import State
from cscfs.notify import OFFLINE_NOTE, ONLINE_NOTE, DBusSender, LinkNotices, Notifier

from .conftest import FAST, VfsRunner, private_bus, wait_for
from .fsapi import VfsFS

ROOT = Path(__file__).resolve().parent.parent
KEEP = "--keep local|server|both"


class Server:
    """The stand-in notification server's record of Notify calls."""

    def __init__(self, record: Path):
        self.record = record

    def calls(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def summaries(self) -> list[str]:
        return [c["summary"] for c in self.calls()]


@contextlib.contextmanager
def notification_server(tmp_path: Path, monkeypatch, silent: bool = False):
    with private_bus() as address:
        record = tmp_path / "notifications.jsonl"
        standin = subprocess.Popen(
            [sys.executable, "-m", "tests.dbus_standin", "--notifications",
             *(["--silent"] if silent else []), address, str(record)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert standin.stdout.readline().strip() == "ready"
            monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
            yield Server(record)
        finally:
            standin.terminate()
            standin.wait(5)


@pytest.fixture
def notifications(tmp_path, monkeypatch):
    with notification_server(tmp_path, monkeypatch) as server:
        yield server


def make_conflict(runner: VfsRunner, server: Path) -> dict:
    """Change docs/report.txt on both sides while working offline, then sync."""
    fs = VfsFS(runner)
    fs.read("docs/report.txt")
    runner.call_sync(runner.client.link.set_work_offline, True)
    fs.write("docs/report.txt", b"edited here while offline\n")
    (server / "docs" / "report.txt").write_text("edited on the server meanwhile, longer\n")

    async def sync():
        return [p async for p in commands.sync(runner.client, [])][-1]["summary"]

    summary = runner.call(sync)
    assert summary["new_conflicts"] == 1 and fs.status()["open_conflicts"] == 1
    return summary


# ------------------------------------------------------------ conflicts
def test_a_new_conflict_is_notified_with_the_file_and_how_to_resolve_it(
        tmp_path, server, notifications):
    runner = VfsRunner(server, tmp_path / "data", FAST)
    try:
        make_conflict(runner, server)
        runner.call(runner.client.notifier.flush)
        conflicts = [c for c in notifications.calls() if c["summary"].startswith("Conflict")]
        assert len(conflicts) == 1
        note = conflicts[0]
        assert note["app_name"] == "cscfs" and note["summary"] == "Conflict: report.txt"
        assert f"cscfs resolve docs/report.txt {KEEP}" in note["body"]
        assert "nothing was discarded" in note["body"]
    finally:
        runner.stop()


def test_notify_false_sends_nothing(tmp_path, server, notifications):
    cfg = tmp_path / "config.toml"
    cfg.write_text("notify = false\n")
    assert load_options(str(cfg)).notify is False
    runner = VfsRunner(server, tmp_path / "data", dataclasses.replace(FAST, notify=False))
    try:
        make_conflict(runner, server)
        runner.call_sync(runner.client.notifier.over_quota)
        runner.call(runner.client.notifier.flush)
        assert notifications.calls() == []
    finally:
        runner.stop()


# ------------------------------------------------------ one bubble per kind
def test_one_notification_per_kind_is_replaced_in_place(notifications):
    notifier = Notifier(Options(), "smb://alice@files/home")

    async def scenario():
        notifier.conflict("a.txt", "update/update", "a (conflict x).txt")
        await notifier.flush()
        notifier.conflict("docs/b.txt")
        await notifier.flush()
        notifier.over_quota()
        notifier.sync_failed("manual sync", "1 file failed")
        await notifier.flush()
        notifier.conflict("c.txt")
        notifier.conflict("d.txt")  # a burst is one note, not two
        await notifier.flush()

    trio.run(scenario)
    first, second, quota, failed, burst = notifications.calls()
    assert first["replaces_id"] == 0 and first["summary"] == "Conflict: a.txt"
    assert second["replaces_id"] == first["id"] and second["summary"] == "Conflict: b.txt"
    assert quota["replaces_id"] == 0 and quota["id"] != first["id"]
    assert quota["summary"] == "Pinned files do not fit the cache quota"
    assert failed["replaces_id"] == 0 and failed["summary"] == "cscfs: manual sync failed"
    assert failed["hints"]["category"] == "transfer.error"
    assert burst["replaces_id"] == first["id"] and burst["summary"] == "2 conflicts: c.txt, d.txt"


# ------------------------------------------------------------ the link
def test_link_notices_policy():
    p = LinkNotices(offline_after=30, window=300, settle=5)

    def run(events, until):
        """events: {time: offline?}; poll every second; what was said, when."""
        said = []
        for t in range(int(until) + 1):
            if t in events:
                p.changed(events[t], t)
            which = p.poll(t)
            if which:
                said.append((t, which))
        return said

    # Short outages: nothing.
    assert run({0: True, 10: False, 20: True, 49: False}, 100) == []
    p = LinkNotices(30, 300, 5)
    # A long one: "offline" once after 30 s, "back online" once it stays up.
    assert run({0: True, 60: False}, 100) == [(30, OFFLINE_NOTE), (65, ONLINE_NOTE)]
    p = LinkNotices(30, 300, 5)
    # Flapping (down 2 s, up 2 s for 200 s): one outage, one pair.
    flaps = {t: (t // 2) % 2 == 0 for t in range(0, 200, 2)}
    flaps[200] = False
    assert run(flaps, 300) == [(32, OFFLINE_NOTE), (203, ONLINE_NOTE)]
    p = LinkNotices(30, 300, 5)
    # Long outages in a row: at most one pair per window; an outage still on when the
    # window ends is said then.
    cycles = {}
    for start in range(0, 600, 50):
        cycles[start], cycles[start + 40] = True, False
    said = run(cycles, 700)
    offline = [t for t, w in said if w == OFFLINE_NOTE]
    assert offline == [30, 330]
    assert [w for _, w in said] == [OFFLINE_NOTE, ONLINE_NOTE, OFFLINE_NOTE, ONLINE_NOTE]


def test_offline_and_back_online_are_debounced(tmp_path, notifications):
    """The real LinkKeeper's mode changes, a clock the test moves, the real bus."""
    now = [0.0]
    opts = Options(notify_offline_after=30, notify_window=300)
    state = State(str(tmp_path / "state.db"))
    link = LinkKeeper(state, opts)
    notifier = Notifier(opts, "smb://alice@files/home", clock=lambda: now[0])
    link.on_mode_change.append(notifier.link_state)
    said: list[tuple[float, str]] = []

    async def at(t: float, up: bool | None = None):
        now[0] = t
        if up:
            link.observed(5.0)
        elif up is not None:
            link.observed(None, "connection refused")
        before = len(notifications.calls())
        await notifier.flush()
        said.extend((t, c["summary"]) for c in notifications.calls()[before:])

    async def scenario():
        # Short offline periods: nothing.
        for start in (0, 100, 200):
            await at(start, up=False)
            for t in range(start + 1, start + 25):
                await at(t)
            await at(start + 25, up=True)
            for t in range(start + 26, start + 40):
                await at(t)
        assert said == []
        # A long one: one "offline", then one "back online".
        await at(1000, up=False)
        for t in range(1001, 1100):
            await at(t)
        await at(1100, up=True)
        for t in range(1101, 1120):
            await at(t)
        assert [s for _, s in said] == ["Working offline: the server is unreachable",
                                        "Back online"]
        assert said[0][0] == 1030
        # A link that drops for 40 s every 50 s, for 20 minutes: "offline" at most once
        # per window (300 s), each followed by one "back online".
        flapping_from = len(said)
        for t in range(2000, 3200):
            phase = (t - 2000) % 50
            await at(t, up=False if phase == 0 else True if phase == 40 else None)
        for t in range(3200, 3220):
            await at(t)
        storm = said[flapping_from:]
        offline = [t for t, s in storm if s.startswith("Working offline")]
        assert 1 <= len(offline) <= 1 + 1200 // 300
        assert all(b - a >= 300 for a, b in itertools.pairwise(offline))
        assert [s for _, s in storm] == ["Working offline: the server is unreachable",
                                         "Back online"] * len(offline)
        # A link flapping every second for 10 minutes: one outage, one pair.
        fast_from = len(said)
        for t in range(5000, 5600):
            await at(t, up=t % 2 == 1)
        for t in range(5600, 5620):
            await at(t)
        assert said[fast_from:] == [(5030, "Working offline: the server is unreachable"),
                                    (5604, "Back online")]

    try:
        trio.run(scenario)
    finally:
        state.close()
    calls = notifications.calls()
    # The offline and back-online notes are one bubble, replaced in place.
    assert all(c["replaces_id"] == calls[0]["id"] for c in calls[1:])
    assert calls[0]["hints"]["category"] == "network.disconnected"
    assert calls[1]["hints"]["category"] == "network.connected"


# -------------------------------------------------- failures and the quota
def test_a_failed_manual_sync_is_notified(tmp_path, server, notifications):
    runner = VfsRunner(server, tmp_path / "data", FAST)
    try:
        VfsFS(runner).read("hello.txt")
        server.rename(tmp_path / "server-gone")
        # A probe that overlaps a successful call of the background fill does not
        # count: probe until one sees the folder gone.
        wait_for(lambda: (runner.call(runner.client.monitor.probe_once, True),
                          runner.client.link.mode)[1] == "offline", 10, what="offline")

        async def sync():
            return [p async for p in commands.sync(runner.client, [])]

        with pytest.raises(errors.CscfsError):
            runner.call(sync)
        runner.call(runner.client.notifier.flush)
        failed = [c for c in notifications.calls() if c["summary"] == "cscfs: manual sync failed"]
        assert len(failed) == 1 and "unreachable" in failed[0]["body"]
    finally:
        runner.stop()


def test_pinned_files_over_the_quota_are_notified_once(tmp_path, server, notifications):
    (server / "big.bin").write_bytes(b"x" * 4096)
    runner = VfsRunner(server, tmp_path / "data",
                       dataclasses.replace(FAST, cache_quota="1024"))
    try:
        wait_for(lambda: "Pinned files do not fit the cache quota" in notifications.summaries(),
                 15, what="the quota notification")
        runner.call(runner.client.notifier.flush)
        assert notifications.summaries().count("Pinned files do not fit the cache quota") == 1
    finally:
        runner.stop()


# ------------------------------------------------------ no session bus
@pytest.mark.parametrize("bus", ["unset", "nowhere", "silent"])
def test_without_a_notification_server_nothing_fails(tmp_path, server, monkeypatch, caplog,
                                                      bus):
    caplog.set_level(logging.DEBUG, logger="cscfs.notify")
    with contextlib.ExitStack() as stack:
        if bus == "unset":
            monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        elif bus == "nowhere":
            monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
        else:  # owns the name, never answers
            stack.enter_context(notification_server(tmp_path, monkeypatch, silent=True))
        runner = VfsRunner(server, tmp_path / "data", FAST)
        stack.callback(runner.stop)
        runner.client.notifier.sender.timeout = 0.5
        summary = make_conflict(runner, server)  # the request succeeds
        assert summary["failed"] == 0
        runner.call_sync(runner.client.notifier.sync_failed, "manual sync", "test")
        runner.call(runner.client.notifier.flush)
    said = [r for r in caplog.records if r.name == "cscfs.notify"]
    assert len(said) == 1 and said[0].levelno == logging.DEBUG


def test_a_server_that_does_not_answer_never_holds_the_loop(tmp_path, monkeypatch):
    with notification_server(tmp_path, monkeypatch, silent=True):
        notifier = Notifier(Options(), "srv", sender=DBusSender(timeout=1.0))
        seen_while_sending: list[bool] = []

        async def scenario():
            done = trio.Event()

            async def send():
                await notifier.flush()
                done.set()

            notifier.conflict("a.txt")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                for _ in range(5):
                    await trio.sleep(0.01)
                    seen_while_sending.append(done.is_set())

        trio.run(scenario)
        assert seen_while_sending == [False] * 5
