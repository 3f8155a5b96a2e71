"""SMB end to end against a real Samba server in a network namespace, over a link
the tests slow down and cut."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cscfs import errors
from cscfs.credentials import Credentials
from cscfs.remote import open_store

from .conftest import FAST, Mounted, SmbShare, cscfs, require_fuse, wait_for


def _one_line_error(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cscfs: error: "), proc.stderr
    return lines[0]


def _store(rig, share: SmbShare, host=None, timeout=3.0):
    url = rig.url(host=host, path=share.url.rsplit("/", 1)[1])
    return open_store(url, Credentials(rig.user, rig.password), timeout=timeout)


def test_mount_an_smb_share_end_to_end(smb_mounted):
    m = smb_mounted
    assert sorted(os.listdir(m.mountpoint)) == ["docs", "hello.txt"]
    assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
    data = os.urandom(2_000_000)
    (m.mountpoint / "docs" / "new.bin").write_bytes(data)
    wait_for(lambda: m.status()["pending_uploads"] == 0, what="upload")
    assert (m.server / "docs" / "new.bin").read_bytes() == data
    s = m.status()
    assert s["server"].startswith("smb://smbtest@") and s["mode"] == "online"


def test_smb_fingerprints_have_100ns_times_and_file_ids(samba, smb_share):
    store = _store(samba, smb_share)
    try:
        when = 1_700_000_000_123_456_700
        st = store.upload("f.bin", [b"abc"], None, 0o644, when)
        disk = (smb_share.root / "f.bin").stat()
        assert st.mtime_ns == when == disk.st_mtime_ns
        assert st.file_id == disk.st_ino and st.size == 3
        listed = {e.name: e for e in store.scandir("")}
        assert listed["f.bin"].fingerprint == st.fingerprint
    finally:
        store.close()


def test_a_cut_link_is_unavailable_within_the_deadline_and_reconnects(samba, smb_share):
    store = _store(samba, smb_share, host=samba.wire_host, timeout=3.0)
    try:
        assert store.stat("hello.txt").size == len(b"hello from the server\n")
        samba.cut()
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            store.stat("hello.txt")
        assert time.monotonic() - started < 8.0
        samba.restore()
        wait_for(lambda: _ok(store.stat, "hello.txt"), 15, what="reconnect")
    finally:
        samba.restore()
        store.close()


def test_many_parallel_uploads_keep_the_connection_usable(samba, smb_share):
    # 16 uploads of 512 KiB at once (8 credits a write) ask for more than the 64
    # credits smbprotocol holds after logon; a compound refused half-way would lose
    # its first credits for good and the connection would stall (a mount then stays
    # offline).
    from concurrent.futures import ThreadPoolExecutor
    store = _store(samba, smb_share, host=samba.wire_host, timeout=10.0)
    data = [os.urandom(512 << 10) for _ in range(4)]
    samba.set_rtt(20)  # every upload in flight at once
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: store.upload(f"p{i:03d}.bin", [data[i % 4]], None,
                                                 0o644, 1_700_000_000_000_000_000),
                          range(160)))
        for i in range(160):
            assert (smb_share.root / f"p{i:03d}.bin").read_bytes() == data[i % 4]
        assert store.echo(2.0) > 0
        assert len(store.scandir("")) >= 160
    finally:
        samba.set_rtt(0)
        store.close()


def test_a_connection_without_credits_is_replaced(samba, smb_share):
    store = _store(samba, smb_share)
    try:
        assert store.stat("hello.txt").size > 0
        # Credits that never come back (a server that lost requests): the window is
        # empty and smbprotocol refuses every request on this connection.
        (conn,) = store._cache.values()
        with conn.sequence_lock:
            conn.sequence_window["low"] = conn.sequence_window["high"]
        with pytest.raises(errors.Unavailable):
            store.echo(2.0)
        assert store.echo(2.0) > 0  # a new connection with a full window
        assert store.stat("hello.txt").size > 0
    finally:
        store.close()


def _ok(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except errors.CscfsError:
        return False


@pytest.mark.on_demand
def test_a_cut_link_makes_the_mount_serve_the_cache(wire_mount, samba, smb_share):
    m = wire_mount
    try:
        assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
        samba.cut()
        started = time.monotonic()
        with pytest.raises(OSError) as exc:
            (m.mountpoint / "docs" / "report.txt").read_bytes()  # never cached
        assert exc.value.errno == errno.EHOSTDOWN
        assert time.monotonic() - started < FAST.remote_timeout + 3
        assert m.status()["mode"] == "offline"
        assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
        with open(m.mountpoint / "hello.txt", "ab") as f:
            f.write(b"written while cut\n")
        samba.restore()
        wait_for(lambda: m.status()["mode"] == "online", 20, what="online again")
        wait_for(lambda: m.status()["pending_uploads"] == 0, 20, what="upload after restore")
        assert (smb_share.root / "hello.txt").read_bytes().endswith(b"written while cut\n")
    finally:
        samba.restore()


def test_back_online_as_soon_as_the_network_returns(tmp_path, samba, smb_share, env_dirs):
    """A laptop plugged back into its network is online at once, not after the
    re-probe backoff (a minute here): the kernel's notice that a link came up makes
    the daemon probe. The link is the rig's veth, fenced by an unreachable route."""
    require_fuse()
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "cscfs" / "config.toml"
    config.write_text(f"attr_ttl = {FAST.attr_ttl}\nprobe_interval = 60\n")
    fast = samba.url(host=samba.fast_host, path=smb_share.url.rsplit("/", 1)[1])
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", FAST.write_back_delay,
                source=fast, extra=("--credentials", str(smb_share.credentials)))
    try:
        assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
        samba.veth_down()
        try:
            wait_for(lambda: m.status()["mode"] == "offline", 15, what="offline")
            with open(m.mountpoint / "hello.txt", "ab") as f:
                f.write(b"written while unplugged\n")
            time.sleep(2)  # the probes of the change are over: the next one is a minute off
        finally:
            samba.veth_up()
        wait_for(lambda: m.status()["mode"] == "online", 15, what="online once plugged in")
        wait_for(lambda: m.status()["pending_uploads"] == 0, 20, what="upload")
        assert (smb_share.root / "hello.txt").read_bytes().endswith(b"written while unplugged\n")
    finally:
        samba.veth_up()
        m.unmount(force=True)


def test_names_smb_forbids_are_refused_at_create(smb_mounted):
    m = smb_mounted
    for bad in ("a:b.txt", "what?.txt", "CON", "nul.txt", "trailing.", "space ", "x" * 256):
        with pytest.raises(OSError) as exc:
            (m.mountpoint / bad).write_bytes(b"x")
        assert exc.value.errno in (errno.EINVAL, errno.ENAMETOOLONG), bad
    with pytest.raises(OSError) as exc:
        os.mkdir(m.mountpoint / "lpt1")
    assert exc.value.errno == errno.EINVAL
    (m.mountpoint / "fine.txt").write_bytes(b"x")
    with pytest.raises(OSError) as exc:
        os.rename(m.mountpoint / "fine.txt", m.mountpoint / "bad|name")
    assert exc.value.errno == errno.EINVAL
    log = (m.data_dir / "daemon.log").read_text()
    assert "reserved device name" in log and "character SMB forbids" in log


def test_a_change_by_another_client_shows_within_2s(tmp_path, samba, smb_share, env_dirs):
    """With a long attribute TTL, only change notification can show it this fast."""
    require_fuse()
    cfg = tmp_path / "config" / "cscfs" / "config.toml"
    cfg.write_text("attr_ttl = 60\n")
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2, source=smb_share.url,
                extra=("--credentials", str(smb_share.credentials)))
    other = _store(samba, smb_share, host=samba.wire_host)  # another client, own connection
    try:
        assert (m.mountpoint / "docs" / "report.txt").read_bytes() == b"quarterly report v1\n"
        assert sorted(os.listdir(m.mountpoint / "docs")) == ["report.txt"]
        st = other.stat("docs/report.txt")
        other.upload("docs/report.txt", [b"changed by another client\n"], st.fingerprint,
                     0o644, time.time_ns())
        other.upload("docs/added.txt", [b"added"], None, 0o644, time.time_ns())
        started = time.monotonic()
        wait_for(lambda: sorted(os.listdir(m.mountpoint / "docs")) == ["added.txt", "report.txt"],
                 2.0, what="the new name")
        wait_for(lambda: (m.mountpoint / "docs" / "report.txt").read_bytes()
                 == b"changed by another client\n", 2.0, what="the new content")
        assert time.monotonic() - started < 2.0
    finally:
        other.close()
        m.unmount(force=True)


# ---------------------------------------------------------------- credentials
def test_no_password_in_logs_status_or_cmdline(tmp_path, samba, smb_share, env_dirs, monkeypatch):
    require_fuse()
    monkeypatch.setenv("CSCFS_SMB_PASSWORD", samba.password)
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2, source=smb_share.url)
    try:
        (m.mountpoint / "x.txt").write_bytes(b"x")
        wait_for(lambda: m.status()["pending_uploads"] == 0, what="upload")
        secret = samba.password.encode()
        status = cscfs("status", str(m.mountpoint), "--json").stdout.encode()
        status_text = cscfs("status", str(m.mountpoint)).stdout.encode()
        pid = json.loads(status)["pid"]
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        environ = open(f"/proc/{pid}/environ", "rb").read()
        log = (m.data_dir / "daemon.log").read_bytes()
        for where, blob in (("status --json", status), ("status", status_text),
                            ("cmdline", cmdline), ("environ", environ), ("daemon.log", log)):
            assert secret not in blob, f"password found in {where}"
        assert b"smbtest" in status  # the user name is fine to show
    finally:
        m.unmount(force=True)


def test_bad_credentials_host_share_and_credentials_file(tmp_path, samba, smb_share, env_dirs,
                                                         monkeypatch):
    mp = tmp_path / "mp"
    mp.mkdir()
    name = smb_share.url.rsplit("/", 1)[1]
    monkeypatch.setenv("CSCFS_SMB_PASSWORD", "not-the-password")
    msg = _one_line_error(cscfs("mount", smb_share.url, str(mp), check=False))
    assert "logon failure" in msg
    monkeypatch.setenv("CSCFS_SMB_PASSWORD", samba.password)
    msg = _one_line_error(cscfs("mount", f"smb://{samba.user}@{samba.fast_host}/noshare",
                                str(mp), check=False))
    assert "noshare" in msg
    # A host nobody answers for, resolved against a resolver on loopback only, so no
    # DNS query leaves this machine.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
         str(resolv), sys.executable, "-m", "cscfs", "mount",
         f"smb://{samba.user}@no-such-host.test/share", str(mp)],
        capture_output=True, text=True, timeout=60)
    assert "no-such-host.test" in _one_line_error(proc)
    monkeypatch.delenv("CSCFS_SMB_PASSWORD")
    loose = samba.credentials_file(tmp_path / "loose.cred")
    os.chmod(loose, 0o644)
    msg = _one_line_error(cscfs("mount", smb_share.url, str(mp), "--credentials", str(loose),
                                check=False))
    assert "can be read by group or others" in msg
    msg = _one_line_error(cscfs("mount", smb_share.url, str(mp), check=False))
    assert "no password" in msg
    assert os.listdir(mp) == []
    assert name  # the share folder itself is untouched by all of this
    assert sorted(os.listdir(smb_share.root)) == ["docs", "hello.txt"]


def test_password_from_the_keyring(tmp_path, samba, smb_share, env_dirs, monkeypatch):
    """The system keyring as the password's source (a file-backed keyring here, the
    same keyring API a desktop's Secret Service answers)."""
    require_fuse()
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.delenv("CSCFS_SMB_PASSWORD", raising=False)
    import keyring

    keyring.set_password("cscfs", f"{samba.user}@{samba.wire_host}", samba.password)
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2, source=smb_share.url)
    try:
        assert (m.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
    finally:
        m.unmount(force=True)


def test_an_upload_worker_that_dies_is_started_anew(samba, smb_share):
    """Small files upload in a worker process; one killed mid-way fails its calls as
    'unavailable' (the upload is tried again, nothing is lost) and the next upload
    starts a new worker."""
    import signal
    import threading

    name = smb_share.url.rsplit("/", 1)[1]
    store = open_store(samba.url(host=samba.wire_host, path=name),
                       Credentials(samba.user, samba.password), timeout=5, upload_processes=1)
    try:
        st = store.upload("one.txt", [b"first"], None, 0o644, 10**18)
        assert (smb_share.root / "one.txt").read_bytes() == b"first"
        (worker,) = store._workers._workers
        assert worker.process.pid != os.getpid()
        samba.set_rtt(1000)  # the next upload is under way when the worker goes
        try:
            killer = threading.Timer(0.5, os.kill, (worker.process.pid, signal.SIGKILL))
            killer.start()
            with pytest.raises(errors.Unavailable):
                store.upload("one.txt", [b"second"], st.fingerprint, 0o644, 10**18)
            killer.join()
        finally:
            samba.set_rtt(0)
        store.upload("two.txt", [b"after"], None, 0o644, 10**18)
        assert (smb_share.root / "two.txt").read_bytes() == b"after"
        assert store._workers._workers[0] is not worker
        assert not worker.process.is_alive()
    finally:
        store.close()
