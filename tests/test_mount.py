"""Through a real mount only: real tools in the folder, crashes, cold starts and the
command line as a user meets it."""

from __future__ import annotations

import errno
import filecmp
import os
import signal
import stat
import subprocess

import pytest

from .conftest import Mounted, cscfs, require_fuse, wait_for


def run(*args, cwd=None):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)


def settle(m: Mounted, timeout=20):
    wait_for(lambda: m.status()["pending_uploads"] == 0, timeout, what="uploads")


def same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files, cmp.report()
    for sub in cmp.common_dirs:
        same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_git_init_add_commit_in_the_mount(mounted):
    repo = mounted.mountpoint / "project"
    repo.mkdir()
    (repo / "main.py").write_text("print('hi')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for args in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "first"]):
        subprocess.run(args, cwd=repo, check=True, env=env, capture_output=True)
    log = subprocess.run(["git", "log", "--oneline"], cwd=repo, check=True, env=env,
                         capture_output=True, text=True).stdout
    assert "first" in log
    assert subprocess.run(["git", "fsck", "--strict"], cwd=repo, env=env,
                          capture_output=True).returncode == 0
    settle(mounted)
    # The server holds a working repository too.
    server_log = subprocess.run(["git", "log", "--oneline"], cwd=mounted.server / "project",
                                check=True, env=env, capture_output=True, text=True).stdout
    assert server_log == log


def test_rsync_in_and_out(mounted, tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    for i in range(30):
        (src / "deep" / f"f{i}.txt").write_bytes(os.urandom(i * 997))
    (src / "deep" / "er" / "big.bin").write_bytes(os.urandom(2_500_000))
    os.symlink("f1.txt", src / "deep" / "link")
    run("rsync", "-a", f"{src}/", str(mounted.mountpoint / "copy"))
    same_tree(src, mounted.mountpoint / "copy")
    out = tmp_path / "out"
    run("rsync", "-a", f"{mounted.mountpoint / 'copy'}/", str(out))
    same_tree(src, out)
    assert os.readlink(out / "deep" / "link") == "f1.txt"
    settle(mounted)
    same_tree(src, mounted.server / "copy")


def test_tar_round_trip(mounted, tmp_path):
    src = tmp_path / "t"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.bin").write_bytes(os.urandom(300_000))
    (src / "a" / "y.txt").write_text("y")
    run("tar", "-cf", str(tmp_path / "in.tar"), "-C", str(tmp_path), "t")
    run("tar", "-xf", str(tmp_path / "in.tar"), "-C", str(mounted.mountpoint))
    same_tree(src, mounted.mountpoint / "t")
    run("tar", "-cf", str(tmp_path / "out.tar"), "-C", str(mounted.mountpoint), "t")
    (tmp_path / "back").mkdir()
    run("tar", "-xf", str(tmp_path / "out.tar"), "-C", str(tmp_path / "back"))
    same_tree(src, tmp_path / "back" / "t")


def test_kill_9_during_a_write_stream_loses_no_fsynced_data(mounted):
    pid = mounted.status()["pid"]
    target = mounted.mountpoint / "stream.bin"
    block = os.urandom(64 * 1024)
    synced = 0
    f = open(target, "wb")
    try:
        for i in range(200):
            f.write(block)
            if i % 20 == 19:
                f.flush()
                os.fsync(f.fileno())
                synced = f.tell()
            if i == 150:
                os.kill(pid, signal.SIGKILL)
                break
    except OSError:
        pass  # the mount died under us: expected
    finally:
        try:
            f.close()
        except OSError:
            pass
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")
    assert synced >= 20 * len(block)
    mounted.mount()  # over the dead mount: it is cleaned up by itself
    assert cscfs("check", str(mounted.mountpoint)).returncode == 0
    data = (mounted.mountpoint / "stream.bin").read_bytes()
    assert len(data) >= synced
    assert data[:synced] == block * (synced // len(block))
    settle(mounted)
    assert (mounted.server / "stream.bin").read_bytes() == data


@pytest.mark.on_demand
def test_cold_start_with_the_server_missing_serves_the_cache(mounted):
    assert (mounted.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
    assert os.listdir(mounted.mountpoint / "docs") == ["report.txt"]  # listed, not cached
    mounted.unmount()
    moved = mounted.server.with_name("server-away")
    mounted.server.rename(moved)
    try:
        mounted.mount()
        s = mounted.status()
        assert s["mode"] == "offline"
        assert (mounted.mountpoint / "hello.txt").read_bytes() == b"hello from the server\n"
        assert os.listdir(mounted.mountpoint / "docs") == ["report.txt"]
        assert os.getxattr(mounted.mountpoint / "docs" / "report.txt",
                           "user.cscfs.status") == b"ghost"
        with pytest.raises(OSError) as exc:
            (mounted.mountpoint / "docs" / "report.txt").read_bytes()
        assert exc.value.errno == errno.EHOSTDOWN
        # A cached file can be changed offline; it uploads when the server is back.
        with open(mounted.mountpoint / "hello.txt", "ab") as f:
            f.write(b"offline edit\n")
        assert mounted.status()["pending_uploads"] == 1
    finally:
        moved.rename(mounted.server)
    wait_for(lambda: mounted.status()["mode"] == "online", 20, what="back online")
    settle(mounted)
    assert (mounted.server / "hello.txt").read_bytes() == b"hello from the server\noffline edit\n"


def test_unmount_waits_for_pending_uploads(tmp_path, server, env_dirs):
    require_fuse()
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", write_back_delay=60)
    try:
        (m.mountpoint / "late.txt").write_bytes(b"uploaded at unmount")
        (m.mountpoint / "late2.txt").write_bytes(b"me too")
        assert m.status()["pending_uploads"] == 2
        out = cscfs("unmount", str(m.mountpoint)).stdout
        assert "uploaded 2 pending files" in out
        assert (server / "late.txt").read_bytes() == b"uploaded at unmount"
        assert not m.is_mounted()
    finally:
        m.unmount(force=True)


def test_forced_unmount_keeps_changes_for_the_next_mount(tmp_path, server, env_dirs):
    require_fuse()
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", write_back_delay=60)
    try:
        (m.mountpoint / "kept.txt").write_bytes(b"kept")
        out = cscfs("unmount", "--force", str(m.mountpoint)).stdout
        assert "1 changed files not uploaded yet" in out
        assert not (server / "kept.txt").exists()
        m.write_back_delay = 0.1
        m.mount()
        assert (m.mountpoint / "kept.txt").read_bytes() == b"kept"
        settle(m)
        assert (server / "kept.txt").read_bytes() == b"kept"
    finally:
        m.unmount(force=True)


def test_an_open_file_that_was_unlinked_has_no_links_left(mounted):
    path = mounted.mountpoint / "hello.txt"
    with open(path, "rb") as f:
        assert os.fstat(f.fileno()).st_nlink == 1
        os.unlink(path)
        assert os.fstat(f.fileno()).st_nlink == 0
        assert f.read() == b"hello from the server\n"


def test_status_json_and_socket_permissions(mounted):
    (mounted.mountpoint / "hello.txt").read_bytes()
    s = mounted.status()
    assert s["server"] == str(mounted.server)
    assert s["mode"] == "online"
    assert s["cached_items"] >= 1 and s["cached_bytes"] >= len(b"hello from the server\n")
    for key in ("pending_uploads", "last_upload", "open_conflicts", "pid"):
        assert key in s
    from cscfs.config import socket_path

    assert stat.S_IMODE(os.stat(socket_path(str(mounted.mountpoint))).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(mounted.data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(mounted.data_dir / "state.db").st_mode) == 0o600
    text = cscfs("status", str(mounted.mountpoint)).stdout
    assert "mode:" in text and "online" in text


def test_status_counts_the_kernels_requests_per_operation(mounted):
    before = mounted.status()["requests"]
    os.listdir(mounted.mountpoint / "docs")  # never listed: one opendir, readdirs
    with open(mounted.mountpoint / "new.txt", "wb", buffering=0) as f:
        f.write(b"x")
        f.write(b"y")
    after = mounted.status()["requests"]
    grew = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    assert grew["opendir"] == 1 and grew["readdir"] >= 1 and grew["releasedir"] == 1
    assert grew["create"] == 1 and grew["write"] == 2 and grew["release"] == 1


# ---------------------------------------------------------------- bad input
def _one_line_error(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cscfs: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def mp(tmp_path):
    p = tmp_path / "mp"
    p.mkdir()
    return p


def test_bad_server(tmp_path, mp, env_dirs):
    msg = _one_line_error(cscfs("mount", str(tmp_path / "nope"), str(mp), check=False))
    assert "does not exist" in msg
    (tmp_path / "file").write_text("x")
    msg = _one_line_error(cscfs("mount", str(tmp_path / "file"), str(mp), check=False))
    assert "not a folder" in msg
    assert os.listdir(mp) == [] and not os.path.exists(tmp_path / "xdg-data")


def test_bad_mountpoint(tmp_path, server, env_dirs):
    msg = _one_line_error(cscfs("mount", str(server), str(tmp_path / "nope"), check=False))
    assert "does not exist" in msg
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    msg = _one_line_error(cscfs("mount", str(server), str(tmp_path / "full"), check=False))
    assert "not empty" in msg
    assert not os.path.exists(tmp_path / "xdg-data")


def test_unwritable_data_dir(tmp_path, server, mp, env_dirs):
    (tmp_path / "afile").write_text("x")
    msg = _one_line_error(cscfs("mount", str(server), str(mp), "--data-dir",
                                str(tmp_path / "afile" / "data"), check=False))
    assert "cannot use data dir" in msg


def test_unknown_option(server, mp, env_dirs):
    msg = _one_line_error(cscfs("mount", str(server), str(mp), "--frobnicate", check=False))
    assert "--frobnicate" in msg


def test_already_mounted_and_second_mount_of_a_data_dir(mounted, tmp_path):
    msg = _one_line_error(cscfs("mount", str(mounted.server), str(mounted.mountpoint),
                                check=False))
    assert "already mounted" in msg
    other = tmp_path / "other"
    other.mkdir()
    msg = _one_line_error(cscfs("mount", str(mounted.server), str(other), "--data-dir",
                                str(mounted.data_dir), check=False))
    assert "in use by another cscfs mount" in msg
    assert os.listdir(other) == []
    assert mounted.status()["mode"] == "online"  # the first mount is untouched


def test_status_of_something_not_mounted(mp, env_dirs):
    msg = _one_line_error(cscfs("status", str(mp), check=False))
    assert "not a cscfs mount" in msg


def test_bad_config_file(server, mp, env_dirs, tmp_path):
    cfg = tmp_path / "config" / "cscfs" / "config.toml"
    cfg.write_text("write_back_delay = 'soon'\n")
    msg = _one_line_error(cscfs("mount", str(server), str(mp), check=False))
    assert "write_back_delay" in msg
    cfg.write_text("no_such_option = 1\n")
    assert "unknown option" in _one_line_error(cscfs("mount", str(server), str(mp), check=False))


def test_a_local_folder_server_is_watched_so_names_are_cached_long(tmp_path, server, env_dirs):
    """On a local file system inotify reports every change: the kernel may keep names
    and attributes for cache_ttl, and changes on the server still show at once."""
    require_fuse()
    (tmp_path / "config" / "cscfs" / "config.toml").write_text("attr_ttl = 60\n")
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", 0.2)
    try:
        wait_for(lambda: m.status()["change_notification"], what="the watch")
        assert m.status()["names_trusted_s"] == 300
        docs = m.mountpoint / "docs"
        assert (docs / "report.txt").read_bytes() == b"quarterly report v1\n"
        assert sorted(os.listdir(docs)) == ["report.txt"]
        (docs / "mine.txt").write_bytes(b"written here")
        settle(m)  # our own upload must not hide what the server does next
        (server / "docs" / "report.txt").write_bytes(b"rewritten on the server, longer\n")
        (server / "docs" / "added.txt").write_bytes(b"added")
        wait_for(lambda: sorted(os.listdir(docs)) == ["added.txt", "mine.txt", "report.txt"],
                 2.0, what="the new name")
        wait_for(lambda: (docs / "report.txt").read_bytes()
                 == b"rewritten on the server, longer\n", 2.0, what="the new content")
        assert os.stat(docs / "report.txt").st_size == len(b"rewritten on the server, longer\n")
        (server / "docs" / "added.txt").unlink()
        wait_for(lambda: not (docs / "added.txt").exists(), 2.0, what="the deletion")
        assert (docs / "mine.txt").read_bytes() == b"written here"
    finally:
        m.unmount(force=True)


def test_uploads_give_way_to_a_busy_mount_but_not_for_ever(mounted, server):
    """A program hammering the folder gets the CPU first; its changes still reach the
    server within _MAX_DEFER (10 s) of their due time, busy or not."""
    import time

    docs = mounted.mountpoint / "docs"
    (docs / "report.txt").write_bytes(b"changed while busy\n")
    written = time.monotonic()
    arrived = None
    while time.monotonic() - written < 20:
        for _ in range(200):  # open and close: requests the kernel cannot answer itself
            os.close(os.open(docs / "report.txt", os.O_RDONLY))
        if (server / "docs" / "report.txt").read_bytes() == b"changed while busy\n":
            arrived = time.monotonic() - written
            break
    assert arrived is not None, "not uploaded within 20 s of a busy mount"
    assert 3 < arrived < 15  # due after 0.2 s; waited while busy, then went anyway
    (docs / "quiet.txt").write_bytes(b"written, then left alone")
    settle(mounted, 5)  # quiet again: the usual write-back delay
    assert (server / "docs" / "quiet.txt").read_bytes() == b"written, then left alone"
