"""Modes: offline work and its replay, the user's switch, the config's, and the
transitions a real link causes (Samba over the link lab: cut, restore, 50 ms RTT)."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import threading
import time

import pytest

from cscfs import modes

from .conftest import FAST, VfsRunner, cscfs, wait_for
from .fsapi import VfsFS, errno_of


def _switch(fs: VfsFS, offline: bool):
    fs.r.call_sync(fs.client.link.set_work_offline, offline)


def test_offline_changes_replay_in_order_when_back(vfs_runner, server):
    fs = VfsFS(vfs_runner)
    fs.read("hello.txt")
    assert fs.listdir("docs") == ["report.txt"]
    _switch(fs, True)
    assert fs.status()["mode"] == modes.WORK_OFFLINE
    fs.mkdir("new")
    fs.mkdir("new/deeper")
    fs.write("new/deeper/notes.txt", b"written offline")
    fs.rename("hello.txt", "new/hello-moved.txt")
    fs.append("new/hello-moved.txt", b"and edited offline\n")
    fs.unlink("docs/report.txt")
    fs.rmdir("docs")
    fs.symlink("new/deeper/notes.txt", "shortcut")
    fs.write("tmp.swp", b"created and deleted offline")
    fs.unlink("tmp.swp")
    # Nothing reached the server, nothing waited for it.
    assert sorted(os.listdir(server)) == ["docs", "hello.txt"]
    assert fs.status()["pending_changes"] >= 6
    assert fs.listdir() == ["new", "shortcut"]
    _switch(fs, False)
    fs.settle()
    assert sorted(os.listdir(server)) == ["new", "shortcut"]
    assert (server / "new" / "deeper" / "notes.txt").read_bytes() == b"written offline"
    assert (server / "new" / "hello-moved.txt").read_bytes() == (
        b"hello from the server\nand edited offline\n")
    assert os.readlink(server / "shortcut") == "new/deeper/notes.txt"
    assert fs.status()["pending_changes"] == 0 and fs.status()["pending_uploads"] == 0
    assert fs.status()["open_conflicts"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="giving items away on the server needs root")
def test_offline_chown_and_special_files_are_journaled_and_replayed(vfs_runner, server):
    fs = VfsFS(vfs_runner)
    fs.mkdir("shared")
    fs.read("hello.txt")
    _switch(fs, True)
    fs.chown("shared", 65534, 65533)
    fs.mknod("pipe", stat.S_IFIFO | 0o620)
    fs.chown("pipe", 65534, 65534)
    fs.mkdir("shared/inner")
    fs.chown("shared/inner", 65533, 65533)
    fs.chown("hello.txt", 65534, 65534)  # a file: its upload carries it
    st = fs.stat("pipe")
    assert stat.S_ISFIFO(st.st_mode) and (st.st_uid, st.st_gid) == (65534, 65534)
    assert (server / "shared").stat().st_uid == 0 and not (server / "pipe").exists()
    kinds = [(e["op"], e["uid"]) for e in fs.r.call_sync(fs.client.journal.entries)]
    assert ("mknod", None) in kinds and ("setattr", 65534) in kinds
    _switch(fs, False)
    fs.settle()
    assert fs.status()["pending_changes"] == 0 and fs.status()["open_conflicts"] == 0
    pipe = os.lstat(server / "pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620
    assert (pipe.st_uid, pipe.st_gid) == (65534, 65534)
    assert ((server / "shared").stat().st_uid, (server / "shared").stat().st_gid) == (65534, 65533)
    assert (server / "shared" / "inner").stat().st_uid == 65533
    assert (server / "hello.txt").stat().st_uid == 65534
    assert (server / "hello.txt").read_text() == "hello from the server\n"


def test_replay_never_overwrites_what_changed_on_the_server(vfs_runner, server):
    fs = VfsFS(vfs_runner)
    fs.read("docs/report.txt")
    fs.listdir()
    _switch(fs, True)
    fs.unlink("docs/report.txt")            # deleted here ...
    fs.rename("hello.txt", "taken.txt")     # ... renamed to a name ...
    time.sleep(0.05)
    (server / "docs" / "report.txt").write_text("changed on the server\n")  # ... changed there
    (server / "taken.txt").write_text("theirs\n")                           # ... taken there
    _switch(fs, False)
    fs.settle()
    assert (server / "docs" / "report.txt").read_text() == "changed on the server\n"
    assert (server / "taken.txt").read_text() == "theirs\n"
    copies = [n for n in os.listdir(server) if n.startswith("taken (conflict ")]
    assert len(copies) == 1
    assert (server / copies[0]).read_text() == "hello from the server\n"
    assert not (server / "hello.txt").exists()
    assert fs.status()["open_conflicts"] == 2


@pytest.mark.on_demand
def test_ghosts_are_listed_but_fail_at_once_offline(vfs_runner):
    fs = VfsFS(vfs_runner)
    assert fs.listdir("docs") == ["report.txt"]  # listed, never read: a ghost
    _switch(fs, True)
    assert fs.getxattr("docs/report.txt", "user.cscfs.status") == b"ghost"
    assert fs.stat("docs/report.txt").st_size == len(b"quarterly report v1\n")
    started = time.monotonic()
    assert errno_of(fs.read, "docs/report.txt") == errno.EHOSTDOWN
    assert time.monotonic() - started < 1.0


def test_work_offline_survives_a_restart_and_always_offline_comes_from_config(tmp_path, server):
    runner = VfsRunner(server, tmp_path / "data")
    try:
        _switch(VfsFS(runner), True)
    finally:
        runner.stop()
    runner = VfsRunner(server, tmp_path / "data")
    try:
        fs = VfsFS(runner)
        assert fs.status()["mode"] == modes.WORK_OFFLINE
        _switch(fs, False)
        assert fs.status()["mode"] == modes.ONLINE
        reasons = [(e["mode"], e["reason"]) for e in runner.state.events()]
        assert (modes.WORK_OFFLINE, "user: cscfs offline") in reasons
    finally:
        runner.stop()
    always = dataclasses.replace(FAST, always_offline=True)
    runner = VfsRunner(server, tmp_path / "data", always)
    try:
        assert VfsFS(runner).status()["mode"] == modes.ALWAYS_OFFLINE
    finally:
        runner.stop()


def test_mode_decisions():
    from netprobe.policy import FAST as F, SLOW, UNREACHABLE, LinkState

    def d(state, **kw):
        kw = {"work_offline": False, "always_offline": False, **kw}
        return modes.decide(LinkState(state, 1.0, "r"), **kw).mode

    assert d(F) == modes.ONLINE
    assert d(SLOW) == modes.SLOW_LINK
    assert d(UNREACHABLE) == modes.OFFLINE
    assert d(F, work_offline=True) == modes.WORK_OFFLINE
    assert d(UNREACHABLE, work_offline=True) == modes.WORK_OFFLINE
    assert d(F, always_offline=True, work_offline=True) == modes.ALWAYS_OFFLINE


# ------------------------------------------------------------ over a real link
def _mode(m) -> str:
    return m.status()["mode"]


def test_cut_and_restore_while_an_application_writes_and_reads(wire_mount):
    m, rig = wire_mount, wire_mount.rig
    cached = (m.mountpoint / "hello.txt").read_bytes()
    written, errors_seen, stop = [], [], threading.Event()

    def writer():
        with open(m.mountpoint / "stream.log", "ab") as f:
            i = 0
            while not stop.is_set():
                line = f"line {i}\n".encode()
                try:
                    f.write(line)
                    f.flush()
                    written.append(line)
                    assert (m.mountpoint / "hello.txt").read_bytes() == cached
                except OSError as exc:
                    errors_seen.append(exc)
                i += 1
                time.sleep(0.01)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        rig.cut()
        cut_at = time.monotonic()
        wait_for(lambda: _mode(m) == modes.OFFLINE, 5.0, what="offline after the cut")
        went_offline = time.monotonic() - cut_at
        time.sleep(1.0)
        rig.restore()
        restored_at = time.monotonic()
        wait_for(lambda: _mode(m) == modes.ONLINE, 15.0, what="online after restore")
        came_back = time.monotonic() - restored_at
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert not errors_seen, errors_seen
    wait_for(lambda: m.status()["pending_uploads"] == 0, 20, what="the upload")
    assert (m.server / "stream.log").read_bytes() == b"".join(written)
    print(f"offline after {went_offline:.1f} s, online after {came_back:.1f} s")
    events = [e["mode"] for e in json_events(m)]
    assert modes.OFFLINE in events and events[-1] == modes.ONLINE


def json_events(m):
    import json

    return json.loads(cscfs("events", str(m.mountpoint), "--json").stdout)


@pytest.mark.on_demand
def test_a_slow_link_switches_to_slow_link_and_back(wire_mount):
    m, rig = wire_mount, wire_mount.rig
    os.listdir(m.mountpoint / "docs")
    (m.mountpoint / "hello.txt").read_bytes()
    rig.set_rtt(50)
    started = time.monotonic()
    wait_for(lambda: _mode(m) == modes.SLOW_LINK, 30, what="slow-link at 50 ms")
    print(f"slow-link after {time.monotonic() - started:.1f} s")
    s = m.status()
    assert s["median_rtt_ms"] > 35 and "ms" in s["mode_reason"]
    # Cache only: what is cached reads, what is not fails at once; changes wait.
    assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
    with pytest.raises(OSError) as exc:
        (m.mountpoint / "docs" / "report.txt").read_bytes()
    assert exc.value.errno == errno.EHOSTDOWN
    os.mkdir(m.mountpoint / "made-on-a-slow-link")
    assert not (m.server / "made-on-a-slow-link").exists()
    rig.set_rtt(0)
    started = time.monotonic()
    wait_for(lambda: _mode(m) == modes.ONLINE, 30, what="online below 10 ms")
    print(f"online after {time.monotonic() - started:.1f} s")
    wait_for(lambda: (m.server / "made-on-a-slow-link").is_dir(), 10, what="replay")
    text = cscfs("events", str(m.mountpoint)).stdout
    assert "slow-link" in text and "median RTT" in text


def test_cold_start_with_the_server_unreachable(wire_mount):
    m, rig = wire_mount, wire_mount.rig
    (m.mountpoint / "hello.txt").read_bytes()
    m.unmount()
    rig.cut()
    started = time.monotonic()
    m.mount()
    assert time.monotonic() - started < FAST.remote_timeout + 5
    assert _mode(m) == modes.OFFLINE
    assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
    rig.restore()
    wait_for(lambda: _mode(m) == modes.ONLINE, 20, what="online after restore")


def test_work_offline_survives_a_daemon_restart(wire_mount):
    m = wire_mount
    (m.mountpoint / "hello.txt").read_bytes()
    assert "work-offline" in cscfs("offline", str(m.mountpoint)).stdout
    with open(m.mountpoint / "hello.txt", "ab") as f:
        f.write(b"offline by choice\n")
    m.unmount(force=True)
    m.mount()
    assert _mode(m) == modes.WORK_OFFLINE
    assert m.status()["pending_uploads"] == 1
    assert b"offline by choice" not in (m.server / "hello.txt").read_bytes()
    assert "online" in cscfs("online", str(m.mountpoint)).stdout
    wait_for(lambda: m.status()["pending_uploads"] == 0, 20, what="upload")
    assert (m.server / "hello.txt").read_bytes().endswith(b"offline by choice\n")


def test_a_flush_waits_for_every_change_not_only_what_is_due(tmp_path):
    """Offline: an edit renamed, its old name deleted on the server, a new file at the
    old name. Back online, settle (the flush of `cscfs sync` and unmount) returns
    only once both are on the server (it returned with one left, 1 run in 5)."""
    import dataclasses

    from .conftest import FAST, VfsRunner, seed_server
    from .fsapi import VfsFS

    server = tmp_path / "server"
    server.mkdir()
    seed_server(server)
    runner = VfsRunner(server, tmp_path / "data", dataclasses.replace(FAST, write_back_delay=3600))
    fs = VfsFS(runner)
    try:
        fs.write("a.txt", b"first\n")
        fs.settle()
        runner.call_sync(fs.client.link.set_work_offline, True)
        fs.write("a.txt", b"edited offline\n")
        fs.rename("a.txt", "b.txt")
        (server / "a.txt").unlink()
        fs.write("a.txt", b"new offline\n")
        runner.call_sync(fs.client.link.set_work_offline, False)
        fs.settle()
        assert (server / "a.txt").read_bytes() == b"new offline\n"
        assert (server / "b.txt").read_bytes() == b"edited offline\n"
    finally:
        runner.stop()


def test_a_big_upload_over_a_slow_link_is_not_a_dead_server(tmp_path, samba, smb_share,
                                                            env_dirs):
    """A transfer that keeps moving may take far longer than the deadline of one call
    (a big file, a slow link): the deadline counts from its last step, so the file
    arrives whole and the mount never takes the busy link for a dead server."""
    from .conftest import Mounted, require_fuse

    require_fuse()
    cfg = tmp_path / "config" / "cscfs" / "config.toml"
    cfg.write_text(cfg.read_text() + "remote_timeout = 1.5\nprobe_timeout = 1.0\n")
    name = smb_share.url.rsplit("/", 1)[1]
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2,
                source=samba.url(host=samba.wire_host, path=name),
                extra=("--credentials", str(smb_share.credentials)))
    try:
        assert "hello.txt" in os.listdir(m.mountpoint)
        samba.set_rate(16_000)  # 2 MB/s: 8 MiB take about 4 s, almost 3 deadlines
        data = os.urandom(8 << 20)
        (m.mountpoint / "big.bin").write_bytes(data)
        started = time.monotonic()
        wait_for(lambda: m.status()["pending_uploads"] == 0, 60, what="the upload")
        took = time.monotonic() - started
        print(f"8 MiB uploaded in {took:.1f} s with a deadline of 1.5 s")
        assert took > 3  # it did outlast the deadline
        assert (smb_share.root / "big.bin").read_bytes() == data
        assert modes.OFFLINE not in [e["mode"] for e in json_events(m)]
    finally:
        samba.restore()
        m.unmount(force=True)
