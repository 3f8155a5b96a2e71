"""The cost probe against a real D-Bus: a private dbus-daemon, with stand-ins for
NetworkManager and ModemManager on it (tests/dbus_standin.py); flip Metered and the
registration state and watch the mode, the background sync and the events."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from netprobe.cost import Cost, read_cost

from .conftest import FAST, VfsRunner, private_bus, wait_for
from .fsapi import VfsFS

METERED_YES, METERED_NO, GUESS_YES = 1, 2, 3
HOME, ROAMING, ROAMING_SMS_ONLY = 1, 5, 7


@pytest.fixture
def bus(tmp_path, monkeypatch):
    with private_bus() as address:
        state = tmp_path / "links.json"

        def set_state(metered, registration):
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"metered": metered, "registration": registration}))
            os.replace(tmp, state)

        set_state(METERED_NO, HOME)
        standin = subprocess.Popen([sys.executable, "-m", "tests.dbus_standin", address, str(state)],
                                   stdout=subprocess.PIPE, text=True,
                                   cwd=os.path.dirname(os.path.dirname(__file__)))
        try:
            assert standin.stdout.readline().strip() == "ready"
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
            yield set_state
        finally:
            standin.terminate()
            standin.wait(5)


def test_read_cost_follows_the_services(bus):
    assert read_cost() == Cost(metered=False, roaming=False)
    bus(METERED_YES, ROAMING)
    assert read_cost() == Cost(True, True) and read_cost().limited
    bus(GUESS_YES, ROAMING_SMS_ONLY)
    assert read_cost().limited
    bus(GUESS_YES, HOME)
    assert read_cost() == Cost(True, False) and not read_cost().limited


def test_no_services_means_unknown_not_metered(tmp_path, monkeypatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    cost = read_cost()
    assert cost == Cost(None, None) and not cost.limited


def test_a_costly_link_pauses_background_sync_but_not_a_manual_one(tmp_path, server, bus):
    opts = dataclasses.replace(FAST, cost_probe_interval=0.2, sync_interval_min=0.01,
                               sync_variance_min=0.0)
    runner = VfsRunner(server, tmp_path / "data", opts)
    try:
        fs = VfsFS(runner)
        fs.read("hello.txt")
        bus(METERED_YES, ROAMING)
        wait_for(lambda: fs.status()["mode"] == "slow-link", 10, what="slow-link for cost")
        assert fs.status()["mode_reason"] == "cost: metered, roaming"
        fs.write("written-while-roaming.txt", b"waits for a cheap link")
        reasons = lambda: [e["reason"] for e in runner.call_sync(runner.state.events)]
        wait_for(lambda: any(r.startswith("skipped: cost") for r in reasons()), 10,
                 what="a skipped background sync")
        assert not (server / "written-while-roaming.txt").exists()

        from cscfs import commands

        async def sync():
            return [p async for p in commands.sync(fs.client, [])][-1]

        summary = runner.call(sync)["summary"]
        assert summary["costed"] == "metered, roaming" and summary["uploaded"] == 1
        assert (server / "written-while-roaming.txt").read_bytes() == b"waits for a cheap link"
        bus(METERED_YES, HOME)
        wait_for(lambda: fs.status()["mode"] == "online", 10, what="online again")
        assert "cost: metered, roaming" in reasons()
    finally:
        runner.stop()


def test_a_metered_link_over_its_plan_counts_as_costly(tmp_path, server, bus):
    import datetime

    from netprobe.usage import cycle_start

    opts = dataclasses.replace(FAST, cost_probe_interval=0.2, data_plan_mb=100)
    runner = VfsRunner(server, tmp_path / "data", opts)
    try:
        fs = VfsFS(runner)
        cycle = cycle_start(datetime.date.today(), 1).isoformat()
        runner.call_sync(runner.state.set_meta, "usage_state",
                         json.dumps({"cycle": cycle, "used": 95_000_000, "last": {}}))
        bus(METERED_YES, HOME)
        wait_for(lambda: fs.status()["mode"] == "slow-link", 10, what="slow-link for usage")
        assert fs.status()["mode_reason"] == (
            "cost: metered, not roaming, approaching its data limit")
        bus(METERED_NO, HOME)
        wait_for(lambda: fs.status()["mode"] == "online", 10, what="online: not metered")
    finally:
        runner.stop()


def test_cost_aware_false_keeps_syncing_on_a_costly_link(tmp_path, server, bus):
    opts = dataclasses.replace(FAST, cost_probe_interval=0.2, cost_aware=False)
    runner = VfsRunner(server, tmp_path / "data", opts)
    try:
        fs = VfsFS(runner)
        bus(METERED_YES, ROAMING)
        wait_for(lambda: fs.status()["cost"] == "metered, roaming", 10, what="the reading")
        assert fs.status()["mode"] == "online"
    finally:
        runner.stop()
