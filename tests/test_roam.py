"""Roaming settings between simulated computers (each its own HOME and private
session bus with the real dconf-service) through a real Samba share: background
upload, logon, logoff, conflicts, data sets, link rules and bad input."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cscfs.roam import hive

from .conftest import IN_CI, private_bus, wait_for
from .roam_machine import ROOT, Machine

KEY = "/org/gnome/desktop/interface/clock-format"
SECRET = "'s3cr3t-wallpaper-value'"


@pytest.fixture
def machines(tmp_path, smb_share):
    made: list[Machine] = []

    rig = smb_share.rig
    folder = smb_share.url.rsplit("/", 1)[1]

    def make(name: str, group: str | None = None, setup: bool = True, config: str = "",
             wire: bool = False):
        """A computer; `wire`: reaching the server over the link that can be slowed
        and cut (else the kernel-speed one)."""
        m = Machine(tmp_path, name, config)
        made.append(m)
        if setup:
            url = rig.url(host=rig.wire_host if wire else rig.fast_host, path=folder)
            args = ["roam", "setup", url, "--credentials", str(smb_share.credentials)]
            m.cscfs(*args, *(["--group", group] if group else []))
        return m

    make.share = smb_share
    make.profile = smb_share.root / getpass.getuser()
    try:
        yield make
    finally:
        smb_share.rig.restore()
        for m in made:
            m.close()


def hive_keys(data: bytes) -> dict:
    return hive.read_file(data)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_key_set_on_a_reaches_the_server_by_a_background_upload_atomically(machines):
    a = machines("a")
    profile = machines.profile
    versions: set[str] = set()
    seen: list[bytes] = []
    stop = threading.Event()

    def reader():  # a reader of the server's copy: never part of a file
        target = profile / "settings.dconf"
        while not stop.is_set():
            try:
                seen.append(target.read_bytes())
            except FileNotFoundError:
                pass

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):
            a.set(KEY, f"'24h-{i}'")
            versions.add(hashlib.sha256(a.hive().read_bytes()).hexdigest())
            inode = (profile / "settings.dconf").stat().st_ino if i else None
            out = a.cscfs("roam", "upload").stdout
            assert "background upload finished successfully" in out
            if inode is not None:  # replaced by a rename, not rewritten in place
                assert (profile / "settings.dconf").stat().st_ino != inode
    finally:
        stop.set()
        thread.join()
    server = (profile / "settings.dconf").read_bytes()
    assert server == a.hive().read_bytes()
    assert hive_keys(server)[KEY] == "'24h-3'"
    assert seen and all(hashlib.sha256(b).hexdigest() in versions for b in seen)
    assert not [n for n in listing(profile) if n.endswith(".tmp") or n.startswith(".~")]
    # one left by a put cut short long ago goes with the next put; a recent one stays
    stale, fresh = (profile / f"settings.dconf.{{{n}}}.tmp" for n in ("old", "new"))
    for leftover in (stale, fresh):
        leftover.write_bytes(b"cut short")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    a.set(KEY, "'24h-4'")
    a.cscfs("roam", "upload")
    assert not stale.exists() and fresh.exists()
    fresh.unlink()
    names = a.event_names()
    assert names.count("background upload started") == 5
    assert names.count("background upload finished successfully") == 5
    status = a.status()
    assert status["last_upload"]["outcome"] == "background upload finished successfully"
    # nothing changed since: the next one says so and does not rewrite the server's copy
    before = (profile / "settings.dconf").stat().st_mtime_ns
    assert "unchanged" in a.cscfs("roam", "upload").stdout
    assert (profile / "settings.dconf").stat().st_mtime_ns == before


def test_logon_on_b_applies_a_and_a_running_client_sees_it(machines):
    a = machines("a")
    a.set(KEY, "'12h'")
    a.set("/org/example/editor/font", "'Monospace 11'")
    (a.config / "app").mkdir()
    (a.config / "app" / "rc").write_text("theme=dark\n")
    (a.config / "app" / "cache").mkdir()
    (a.config / "app" / "cache" / "blob").write_bytes(os.urandom(1000))  # never roams
    a.cscfs("roam", "logoff")
    record = json.loads((machines.profile / "profile.json").read_text())
    assert record["state"] == "complete" and "settings.dconf" in record["uploaded"]

    b = machines("b")
    b.set(KEY, "'24h'")  # b had its own value, older than a's upload... but unsynced:
    os.utime(b.hive(), ns=(1, 1))  # make it clearly the older copy
    b.set("/org/example/only-on-b", "true")
    os.utime(b.hive(), ns=(1, 1))
    watch = subprocess.Popen(["dconf", "watch", "/"], stdout=subprocess.PIPE, text=True,
                             env=b.env)
    try:
        time.sleep(0.5)  # subscribed
        out = b.cscfs("roam", "logon").stdout
        assert "the server's copy applied" in out
        assert b.get(KEY) == "'12h'"
        assert b.get("/org/example/editor/font") == "'Monospace 11'"
        assert b.get("/org/example/only-on-b") == ""  # the winner has no such key: reset
        lines = []

        def saw_it():
            lines.append(watch.stdout.readline())
            return any(KEY in line for line in lines)

        wait_for(saw_it, 10, what="dconf watch to report the change")
    finally:
        watch.terminate()
        watch.wait(5)
    assert (b.config / "app" / "rc").read_text() == "theme=dark\n"
    assert not (b.config / "app" / "cache").exists()
    # b's own older settings are kept in the profile's conflict folder, not dropped
    kept = list((machines.profile / "conflicts").glob("settings (conflict *).dconf"))
    assert len(kept) == 1
    assert hive_keys(kept[0].read_bytes())["/org/example/only-on-b"] == "true"
    assert "conflict: losing copy kept" in b.event_names()


def test_both_change_between_logons_newer_wins_older_kept(machines):
    a = machines("a")
    a.set(KEY, "'base'")
    a.cscfs("roam", "logoff")
    b = machines("b")
    b.cscfs("roam", "logon")
    assert b.get(KEY) == "'base'"
    # both change; a's change is the older one
    a.set(KEY, "'from a (older)'")
    time.sleep(0.05)
    b.set(KEY, "'from b (newer)'")
    a.cscfs("roam", "logoff")                 # a's goes up (the server had not changed)
    out = b.cscfs("roam", "logon").stdout     # b's is newer: kept here
    assert "this computer's copy is kept" in out and b.get(KEY) == "'from b (newer)'"
    b.cscfs("roam", "logoff")                 # b's replaces a's, a's goes to conflicts
    kept = list((machines.profile / "conflicts").glob("settings (conflict *).dconf"))
    assert [hive_keys(k.read_bytes())[KEY] for k in kept] == ["'from a (older)'"]
    a.cscfs("roam", "logon")
    assert a.get(KEY) == "'from b (newer)'"
    # the other way round: the server's copy is the newer one at logon
    b.set(KEY, "'b again (older)'")
    time.sleep(0.05)
    a.set(KEY, "'a again (newer)'")
    a.cscfs("roam", "logoff")
    assert "the server's copy applied" in b.cscfs("roam", "logon").stdout
    assert b.get(KEY) == "'a again (newer)'"
    kept = sorted(hive_keys(k.read_bytes())[KEY]
                  for k in (machines.profile / "conflicts").glob("settings (conflict *)*"))
    assert kept == ["'b again (older)'", "'from a (older)'"]


def test_a_stale_computers_logoff_never_undoes_a_newer_upload(machines):
    a = machines("a")
    a.set(KEY, "'one'")
    a.cscfs("roam", "logoff")
    b = machines("b")
    b.cscfs("roam", "logon")
    a.set(KEY, "'two'")
    a.cscfs("roam", "logoff")
    out = b.cscfs("roam", "logoff").stdout  # b changed nothing: a's stays
    assert hive_keys((machines.profile / "settings.dconf").read_bytes())[KEY] == "'two'"
    assert "comes down at logon" in out


@pytest.mark.parametrize("why", ["slow", "costed", "unavailable"])
def test_no_upload_on_a_slow_or_costed_link_or_without_the_server(machines, tmp_path, why):
    a = machines("a", wire=True)
    a.set(KEY, "'12h'")
    rig = machines.share.rig
    target = machines.profile / "settings.dconf"

    def refused(want: str) -> None:
        out = a.cscfs("roam", "upload", check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stderr.count("\n") == 1 and want in out.stderr
        assert not target.exists()
        names = a.event_names()
        assert names[-2:] == ["background upload started", want]
        assert a.status()["last_upload"]["outcome"] == want

    if why == "slow":
        rig.set_rtt(80)  # above slow_link_ms (35)
        refused("hive not roamed due to a slow link")
        assert a.cscfs("roam", "upload", "--anyway").returncode == 0  # asked for anyway
    elif why == "unavailable":
        rig.cut()
        refused("hive not roamed due to the storage server being unavailable")
    else:
        with private_bus() as address:
            state = tmp_path / "links.json"
            state.write_text(json.dumps({"metered": 1, "registration": 5}))  # metered, roaming
            standin = subprocess.Popen([sys.executable, "-m", "tests.dbus_standin", address,
                                        str(state)], stdout=subprocess.PIPE, text=True,
                                       cwd=ROOT)
            try:
                assert standin.stdout.readline().strip() == "ready"
                a.env["DBUS_SYSTEM_BUS_ADDRESS"] = address
                refused("hive not roamed due to a costed link")
                # cost_aware = false, as for the rest of cscfs: the upload goes ahead
                a.write_config("cost_aware = false\n")
                assert a.cscfs("roam", "upload").returncode == 0
            finally:
                standin.terminate()
                standin.wait(5)
    if why != "unavailable":
        assert hive_keys(target.read_bytes())[KEY] == "'12h'"


def test_data_sets_global_and_by_group(machines):
    lab1 = machines("lab1", group="lab")
    lab1.set("/org/gnome/desktop/background/picture-uri", "'file:///lab.png'")
    lab1.set("/org/example/tools/compiler", "'gcc-13'")
    notes = lab1.home / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("lab work\n")
    for m in (lab1,):
        m.cscfs("roam", "dataset", "add", "desktop", "--scope", "global",
                "--dconf", "/org/gnome/desktop/background/", "--folder", "~/notes")
        m.cscfs("roam", "dataset", "add", "tools", "--scope", "group",
                "--dconf", "/org/example/tools/")
    lab1.roam_config(folders=[])  # the hive and the data sets only
    out = lab1.cscfs("roam", "logoff").stdout
    sid = f"S-1-22-1-{os.getuid()}"
    files = listing(machines.profile / "datasets")
    assert files == [f"{sid}.global.tar.gz", f"{sid}.group-lab.tar.gz"], out
    assert lab1.status()["dataset_files"][f"{sid}.global.tar.gz"] > 0

    office = machines("office", group="office")
    lab2 = machines("lab2", group="lab")
    for m in (office, lab2):
        m.set("/org/example/tools/compiler", "'clang'")
        m.cscfs("roam", "dataset", "add", "tools", "--scope", "group",
                "--dconf", "/org/example/tools/")
        m.cscfs("roam", "logon")
        assert m.get("/org/gnome/desktop/background/picture-uri") == "'file:///lab.png'"
        assert (m.home / "notes" / "todo.txt").read_text() == "lab work\n"
    assert office.get("/org/example/tools/compiler") == "'clang'"   # not of its group
    assert lab2.get("/org/example/tools/compiler") == "'gcc-13'"    # its group's
    # the hive roams too, yet never carries another group's data set paths
    office.cscfs("roam", "logoff")
    lab2.cscfs("roam", "logon")
    assert lab2.get("/org/example/tools/compiler") == "'gcc-13'"


def test_an_interrupted_logoff_is_reported_at_the_next_logon(machines):
    a = machines("a")
    a.set(KEY, "'12h'")
    many = a.config / "many"
    many.mkdir()
    for i in range(400):
        (many / f"f{i:03}.conf").write_text(f"setting {i}\n" * 20)
    record = machines.profile / "profile.json"
    proc = a.popen("roam", "logoff", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def half_way() -> bool:
        return record.exists() and "uploading" in record.read_text() and \
            len(list((machines.profile / "folders" / ".config" / "many").glob("*"))
                if (machines.profile / "folders" / ".config" / "many").exists() else []) > 20

    try:
        wait_for(half_way, 60, interval=0.01, what="the logoff under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert json.loads(record.read_text())["state"] == "uploading"
    b = machines("b")
    out = b.cscfs("roam", "logon").stdout
    assert "previous logoff was interrupted" in out
    assert "previous logoff was interrupted" in b.event_names()
    # what had gone up is taken file by file; a's next logoff finishes the job
    a.cscfs("roam", "logoff")
    assert json.loads(record.read_text())["state"] == "complete"
    many = machines.profile / "folders" / ".config" / "many"
    assert len([p for p in many.iterdir() if not p.name.startswith(".~cscfs-")]) == 400
    assert "previous logoff was interrupted" not in b.cscfs("roam", "logon").stdout


def test_unreachable_server_at_logon_keeps_the_local_settings(machines):
    a = machines("a")
    a.set(KEY, "'from the server'")
    a.cscfs("roam", "logoff")
    b = machines("b", wire=True)
    b.set(KEY, "'mine'")
    os.utime(b.hive(), ns=(1, 1))  # older than the server's copy
    before = b.hive().read_bytes()
    machines.share.rig.cut()
    out = b.cscfs("roam", "logon", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "storage server unavailable, local settings used" in out.stderr
    assert b.get(KEY) == "'mine'" and b.hive().read_bytes() == before
    assert b.status()["last_logon"]["outcome"] == "server unavailable"
    machines.share.rig.restore()
    b.cscfs("roam", "logon")  # back: now the server's newer copy comes down
    assert b.get(KEY) == "'from the server'"
    kept = list((machines.profile / "conflicts").glob("settings (conflict *).dconf"))
    assert [hive_keys(k.read_bytes())[KEY] for k in kept] == ["'mine'"]


def test_a_profile_over_the_size_limit_is_not_uploaded(machines):
    a = machines("a")
    a.set(KEY, "'12h'")
    (a.config / "big.db").write_bytes(os.urandom(200_000))
    a.roam_config(size_limit_mb=0.1)
    out = a.cscfs("roam", "logoff", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "over the size limit" in out.stderr and "big.db" in out.stderr
    assert not (machines.profile / "settings.dconf").exists()
    assert not (machines.profile / "folders").exists()
    assert "profile not uploaded: over the size limit" in a.event_names()
    assert (a.config / "big.db").stat().st_size == 200_000  # nothing lost here


@pytest.mark.parametrize("case", ["unknown dconf path", "not a dconf path", "unknown folder",
                                  "folder outside home", "group without machine_group"])
def test_bad_data_set_input_is_one_line_and_changes_nothing(machines, case):
    a = machines("a")
    a.set(KEY, "'12h'")
    args = ["roam", "dataset", "add", "x", "--dconf", "/org/gnome/desktop/interface/"]
    if case == "unknown dconf path":
        args[-1] = "/org/gnome/desktop/nonesuch/"
    elif case == "not a dconf path":
        args[-1] = "org/gnome//desktop"
    elif case == "unknown folder":
        args += ["--folder", "~/no-such-folder"]
    elif case == "folder outside home":
        args += ["--folder", "/etc"]
    else:
        args += ["--scope", "group"]
    config = (a.config / "cscfs" / "roam.toml").read_text()
    out = a.cscfs(*args, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("cscfs: error: ")
    assert (a.config / "cscfs" / "roam.toml").read_text() == config


def test_setup_refuses_an_unreachable_server_and_writes_nothing(tmp_path, samba):
    m = Machine(tmp_path, "a")
    try:
        out = m.cscfs("roam", "setup", f"smb://{samba.user}@127.0.0.1:1/share",
                      "--credentials", str(samba.credentials_file(tmp_path / "cred")),
                      check=False)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert not (m.config / "cscfs" / "roam.toml").exists()
        assert not (m.config / "systemd").exists()
        out = m.cscfs("roam", "logon", check=False)
        assert out.returncode == 2 and "not set up" in out.stderr
    finally:
        m.close()


def test_no_setting_value_ever_appears_in_output_events_or_logs(machines):
    a = machines("a")
    a.set("/org/gnome/desktop/background/picture-uri", SECRET)
    a.cscfs("roam", "dataset", "add", "bg", "--dconf", "/org/gnome/desktop/background/")
    outputs = [a.cscfs("roam", "upload"), a.cscfs("roam", "logoff")]
    b = machines("b", wire=True)
    b.set("/org/gnome/desktop/background/picture-uri", "'b-own-value'")
    os.utime(b.hive(), ns=(1, 1))
    b.cscfs("roam", "dataset", "add", "bg", "--dconf", "/org/gnome/desktop/background/")
    outputs += [b.cscfs("roam", "logon"), b.cscfs("roam", "status"),
                b.cscfs("roam", "status", "--json"), b.cscfs("roam", "events", "--json")]
    machines.share.rig.cut()
    outputs += [b.cscfs("roam", "logon", check=False), b.cscfs("roam", "upload", check=False)]
    assert b.get("/org/gnome/desktop/background/picture-uri") == SECRET  # it did roam
    bare = SECRET.strip("'")
    for proc in outputs:
        assert bare not in proc.stdout and bare not in proc.stderr
        assert "b-own-value" not in proc.stdout + proc.stderr
    for m in (a, b):
        db = (m.home / ".local" / "share" / "cscfs" / "roam.db").read_bytes()
        assert bare.encode() not in db
    # a value dconf cannot parse is not echoed in the error either
    from cscfs.roam.hive import DconfError, write_live

    os.environ_backup = dict(os.environ)
    try:
        os.environ.update(b.env)
        with pytest.raises(DconfError) as info:
            write_live({"/org/example/broken": "'unterminated " + bare})
        assert bare not in str(info.value)
    finally:
        os.environ.clear()
        os.environ.update(os.environ_backup)


def test_the_agent_logs_on_uploads_and_logs_off_as_the_unit_runs_it(machines, tmp_path):
    import socket as socketmod

    a = machines("a")
    a.set(KEY, "'12h'")
    unit = a.config / "systemd" / "user" / "cscfs-roam.service"
    text = unit.read_text()
    assert "Type=notify" in text and "TimeoutStopSec=300" in text
    if shutil.which("systemd-analyze") is None:
        if IN_CI:
            pytest.fail("systemd-analyze is required in CI (apt-get install systemd)")
    else:
        proc = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)],
                              capture_output=True, text=True, env=a.env)
        assert proc.returncode == 0 and unit.name not in proc.stderr, proc.stderr
    address = str(tmp_path / "notify.sock")
    sock = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(60)
    exec_start = text.split("ExecStart=", 1)[1].splitlines()[0].split()
    assert exec_start[-2:] == ["roam", "agent"]
    a.env["NOTIFY_SOCKET"] = address
    proc = a.popen("roam", "agent")
    try:
        first = sock.recv(4096).decode().splitlines()
        assert "READY=1" in first
        assert any(s.startswith("STATUS=logon: ok; next background upload ") for s in first)
        assert a.status()["next_upload"] > time.time() + 11 * 3600
        proc.send_signal(signal.SIGTERM)  # the end of the session
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert json.loads((machines.profile / "profile.json").read_text())["state"] == "complete"
    assert hive_keys((machines.profile / "settings.dconf").read_bytes())[KEY] == "'12h'"
    names = a.event_names()
    assert names.index("logon finished") < names.index("logoff finished")


def test_primary_computers_apply_to_roaming(machines):
    a = machines("a")
    a.set(KEY, "'from a'")
    a.cscfs("roam", "logoff")
    b = machines("b")
    b.set(KEY, "'b keeps its own'")
    os.utime(b.hive(), ns=(1, 1))
    b.write_config(f'primary_computers_only = true\nprimary_computers = ["{"b":0>32}"]\n')
    server_list = machines.share.root / ".cscfs" / "primary-computers"
    server_list.parent.mkdir()
    server_list.write_text("# the office desktops\n" + f"{'a':0>32}\n")  # the server's wins
    before = (machines.profile / "settings.dconf").read_bytes()
    for command in ("logon", "logoff", "upload"):
        out = b.cscfs("roam", command, check=False)
        assert "not a primary computer" in out.stdout + out.stderr, command
    assert b.get(KEY) == "'b keeps its own'"
    assert (machines.profile / "settings.dconf").read_bytes() == before
    assert b.event_names().count("not roamed: not a primary computer") == 3
    server_list.write_text(f"{'b':0>32}\n")
    b.cscfs("roam", "logon")
    assert b.get(KEY) == "'from a'"


def test_a_data_set_path_gone_since_it_was_added_is_an_event_not_a_failure(machines):
    a = machines("a")
    a.set("/org/example/tools/compiler", "'gcc-13'")
    (a.home / "notes").mkdir()
    a.cscfs("roam", "dataset", "add", "tools", "--dconf", "/org/example/tools/",
            "--folder", "~/notes")
    (a.home / "notes").rmdir()
    a.dconf("reset", "-f", "/org/example/tools/")
    out = a.cscfs("roam", "logoff")
    assert "tools: ~/notes is gone" in out.stdout and "tools: /org/example/tools/ is gone" \
        in out.stdout
    assert a.event_names().count("data set path missing") == 2
    assert (machines.profile / "datasets" / f"S-1-22-1-{os.getuid()}.global.tar.gz").exists()
