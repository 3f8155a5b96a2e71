"""Roaming's pure parts and local pieces: which copy wins (table, both directions),
the background upload schedule and the agent loop with an injected clock, the SID,
dconf's dump read back exactly, the config's bad input."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from pathlib import Path

import pytest

from cscfs.errors import UserError
from cscfs.roam import datasets, hive, settings
from cscfs.roam.decide import (DELETE_LOCAL, DELETE_SERVER, DOWNLOAD, LOGOFF, LOGON, NOTHING,
                               UPLOAD, Base, Copy, Decision, decide)
from cscfs.roam.schedule import HiveSchedule

from .roam_machine import Machine

OLD, NEW = 100, 200
BASE = Base("L0", "S0")

# (name, base, local, server, at logon, at logoff)
TABLE = [
    ("nothing changed", BASE, Copy("L0", OLD), Copy("S0", OLD),
     Decision(NOTHING), Decision(NOTHING)),
    ("changed here", BASE, Copy("L1", NEW), Copy("S0", OLD),
     Decision(NOTHING), Decision(UPLOAD)),
    ("changed there", BASE, Copy("L0", OLD), Copy("S1", NEW),
     Decision(DOWNLOAD), Decision(NOTHING)),
    ("both, ours newer", BASE, Copy("L1", NEW), Copy("S1", OLD),
     Decision(NOTHING), Decision(UPLOAD, True)),
    ("both, theirs newer", BASE, Copy("L1", OLD), Copy("S1", NEW),
     Decision(DOWNLOAD, True), Decision(NOTHING)),
    ("deleted here", BASE, Copy(None), Copy("S0", OLD),
     Decision(NOTHING), Decision(DELETE_SERVER)),
    ("deleted there", BASE, Copy("L0", OLD), Copy(None),
     Decision(DELETE_LOCAL), Decision(NOTHING)),
    ("deleted here, changed there", BASE, Copy(None), Copy("S1", NEW),
     Decision(DOWNLOAD), Decision(NOTHING)),
    ("changed here, deleted there", BASE, Copy("L1", NEW), Copy(None),
     Decision(NOTHING), Decision(UPLOAD)),
    ("new here", None, Copy("L1", NEW), Copy(None), Decision(NOTHING), Decision(UPLOAD)),
    ("new there", None, Copy(None), Copy("S1", NEW), Decision(DOWNLOAD), Decision(NOTHING)),
    ("new on both, theirs newer", None, Copy("L1", OLD), Copy("S1", NEW),
     Decision(DOWNLOAD, True), Decision(NOTHING)),
    ("gone on both", BASE, Copy(None), Copy(None), Decision(NOTHING), Decision(NOTHING)),
]


@pytest.mark.parametrize("name,base,local,server,logon,logoff", TABLE, ids=[t[0] for t in TABLE])
def test_decide(name, base, local, server, logon, logoff):
    assert decide(base, local, server, LOGON) == logon
    assert decide(base, local, server, LOGOFF) == logoff


MIRROR = {NOTHING: NOTHING, UPLOAD: DOWNLOAD, DOWNLOAD: UPLOAD,
          DELETE_SERVER: DELETE_LOCAL, DELETE_LOCAL: DELETE_SERVER}


# An equal timestamp goes to this computer: ties are not symmetric, by design.
UNTIED = [t for t in TABLE if not (t[2].sig and t[3].sig and t[2].mtime_ns == t[3].mtime_ns)]


@pytest.mark.parametrize("name,base,local,server,logon,logoff", UNTIED,
                         ids=[t[0] for t in UNTIED])
def test_decide_mirrors_when_the_sides_swap(name, base, local, server, logon, logoff):
    """Logon with the sides swapped is logoff mirrored: neither side is favoured."""
    swapped = Base(base.server_sig, base.local_sig) if base else None
    d = decide(swapped, server, local, LOGON)
    assert Decision(MIRROR[d.action], d.keep_loser) == logoff


def test_nothing_is_ever_dropped_when_both_sides_changed():
    for _, base, local, server, logon, logoff in TABLE:
        for d in (logon, logoff):
            if d.action in (UPLOAD, DOWNLOAD) and local.sig and server.sig \
                    and local.sig != (base or Base()).local_sig \
                    and server.sig != (base or Base()).server_sig:
                assert d.keep_loser


# -- the schedule ------------------------------------------------------------
UTC2 = 2 * 3600.0  # a local time zone 2 h east of UTC


def at(text: str) -> float:
    """Unix time of a local time in the UTC+2 zone."""
    return dt.datetime.fromisoformat(text).replace(
        tzinfo=dt.timezone(dt.timedelta(hours=2))).timestamp()


@pytest.mark.parametrize("mode,after,draw,want", [
    ("interval", "2026-11-23 10:00", 0.0, "2026-11-23 22:00"),
    ("interval", "2026-11-23 10:00", 0.5, "2026-11-23 22:30"),
    ("interval", "2026-11-23 10:00", 0.999, "2026-11-23 22:59:56.400"),
    ("time", "2026-11-23 01:00", 0.0, "2026-11-23 03:00"),
    ("time", "2026-11-23 03:00", 0.0, "2026-11-24 03:00"),   # never twice at once
    ("time", "2026-11-23 03:40", 0.25, "2026-11-24 03:15"),
    ("time", "2026-11-23 23:59", 1 / 6, "2026-11-24 03:10"),
])
def test_schedule(mode, after, draw, want):
    s = HiveSchedule(mode, 12.0, "03:00", 60.0)
    assert s.next_due(at(after), draw, UTC2) == pytest.approx(at(want))


def test_schedule_interval_limits_and_time_format_are_checked(tmp_path):
    cfg = settings.RoamConfig(server="x")
    for field, bad in [("hive_upload_interval_h", 0.5), ("hive_upload_interval_h", 721),
                       ("hive_upload_time", "3am"), ("hive_upload_time", "24:00"),
                       ("hive_upload", "hourly"), ("hive_upload_delay_min", 61)]:
        bad_cfg = settings.RoamConfig(**{**cfg.__dict__, field: bad})
        with pytest.raises(UserError, match=field.split("_min")[0]):
            settings.validate(bad_cfg, "roam.toml")
    path = tmp_path / "roam.toml"
    path.write_text('server = "x"\nhive_upload_interval_h = "12"\n')
    with pytest.raises(UserError, match="hive_upload_interval_h must be a float"):
        settings.load(str(path))
    path.write_text('server = "x"\nhive_upload_intervall_h = 12\n')
    with pytest.raises(UserError, match="unknown option"):
        settings.load(str(path))
    path.write_text('server = "x"\n[datasets.d]\ndconf = "/org/x/"\n')
    with pytest.raises(UserError, match="data set d: dconf and folders are lists"):
        settings.load(str(path))


class FakeClock:
    """Time that moves only when the agent naps."""

    def __init__(self, start: float, end: float, stop: threading.Event):
        self.now, self.end, self.stop = start, end, stop
        self.naps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def nap(self, seconds: float) -> None:
        assert 0 < seconds <= 60.0  # never sleeps through a suspend unawares
        self.naps.append(seconds)
        self.now += seconds
        if self.now >= self.end:
            self.stop.set()


class CountingRoamer:
    """The agent's view of a Roamer, recording when each upload ran."""

    def __init__(self, cfg, state):
        self.cfg, self.state = cfg, state
        self.uploads: list[float] = []
        self.clock = None
        self.logons = self.logoffs = 0

    def logon(self):
        self.logons += 1

    def logoff(self):
        self.logoffs += 1

    def upload(self):
        self.uploads.append(self.clock())

    def release(self):
        pass


@pytest.mark.parametrize("mode,draws,want", [
    ("interval", [0.0, 0.5, 0.0, 0.0], ["2026-11-23 21:00", "2026-11-24 09:30"]),
    ("time", [0.5, 0.0, 0.0], ["2026-11-24 03:30", "2026-11-25 03:00"]),
])
def test_the_agent_uploads_on_schedule_with_an_injected_clock(tmp_path, mode, draws, want):
    from cscfs.roam.agent import Agent
    from cscfs.roam.state import RoamState

    cfg = settings.RoamConfig(server="x", hive_upload=mode)
    stop = threading.Event()
    clock = FakeClock(at("2026-11-23 09:00"), at("2026-11-25 08:00"), stop)
    state = RoamState(str(tmp_path / "roam.db"), clock=clock)
    roamer = CountingRoamer(cfg, state)
    roamer.clock = clock
    draw = iter(draws)
    agent = Agent(roamer, clock=clock, draw=lambda: next(draw), stop=stop,
                  offset=lambda t: UTC2)
    agent.nap = clock.nap
    if mode == "interval":  # 12 h + the draw, from the start and then from each run
        clock.end = at("2026-11-24 12:00")
    agent.run()
    assert [dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(hours=2)))
            .strftime("%Y-%m-%d %H:%M") for t in roamer.uploads] == want
    assert roamer.logons == roamer.logoffs == 1
    assert state.fact("next_upload") > roamer.uploads[-1]


# -- the SID ----------------------------------------------------------------
def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_sid_is_the_unix_user_sid_when_not_joined(monkeypatch, tmp_path):
    """What is really here: a joined machine answers wbinfo; else S-1-22-1-<uid>."""
    sid, source = datasets.user_sid()
    import shutil
    import subprocess

    wbinfo = shutil.which("wbinfo")
    joined = wbinfo and subprocess.run([wbinfo, "--uid-to-sid", str(os.getuid())],
                                       capture_output=True).returncode == 0
    if not joined:
        try:
            import pysss_nss_idmap  # noqa: F401
            joined = source == "sssd"
        except ImportError:
            pass
    if not joined:
        assert (sid, source) == (f"S-1-22-1-{os.getuid()}", "unix")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    fake_tool(tmp_path / "bin", "wbinfo", 'echo "failed to call wbcUidToSid: '
                                          'WBC_ERR_WINBIND_NOT_AVAILABLE" >&2; exit 1')
    assert datasets.user_sid(1234) == ("S-1-22-1-1234", "unix")


def test_the_domain_sid_comes_from_winbind_when_joined(monkeypatch, tmp_path):
    fake_tool(tmp_path / "bin", "wbinfo",
              '[ "$1" = --uid-to-sid ] && [ "$2" = 1234 ] && echo S-1-5-21-1-2-3-1104')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert datasets.user_sid(1234) == ("S-1-5-21-1-2-3-1104", "winbind")


# -- dconf, for real -----------------------------------------------------------
TRICKY = {
    "/org/example/plain": "'12h'",
    "/org/example/sub/dir/list": "['a', 'b=c', '#not a comment']",
    "/org/example/escapes": "'tab\\there \\\\ and \\'quote\\''",
    "/org/example/unicode": "'Grüße 🌍'",
    "/org/example/number": "uint32 7",
    "/org/example/dict": "{'k': <'v'>}",
    "/rootkey": "true",
}


def test_a_database_read_back_through_dconf_is_exact(tmp_path):
    m = Machine(tmp_path, "m")
    try:
        m.dconf("load", "/", stdin=hive.keyfile(TRICKY))
        first = hive.read_file(m.hive().read_bytes())
        assert set(first) == set(TRICKY)  # dconf prints values in its canonical form
        assert first["/org/example/unicode"] == TRICKY["/org/example/unicode"]
        # written back through dconf and read again: exactly the same
        m.dconf("reset", "-f", "/")
        m.dconf("load", "/", stdin=hive.keyfile(first))
        assert hive.read_file(m.hive().read_bytes()) == first
        assert m.get("/org/example/escapes") == first["/org/example/escapes"]
        assert hive.read_file(None) == {}
        assert hive.digest(TRICKY) == hive.digest(dict(reversed(TRICKY.items())))
        # a key under a path, a folder path, and not a prefix of a name
        assert hive.under("/org/example/sub/dir/list", ["/org/example/sub/"])
        assert not hive.under("/org/example/subway", ["/org/example/sub/"])
        assert hive.under("/org/example/plain", ["/org/example/plain"])
    finally:
        m.close()


@pytest.mark.parametrize("path", ["org/x", "/a//b", "/a b/", ""])
def test_a_bad_dconf_path_is_refused(path):
    with pytest.raises(UserError):
        settings.check_dconf_path(path)
