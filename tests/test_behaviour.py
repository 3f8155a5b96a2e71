"""The behaviour suite: what a user does in the folder, run straight on the VFS and
through a real FUSE mount (the `fs` fixture), with the server folder as the oracle."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time

import pytest


from .conftest import wait_for
from .fsapi import errno_of


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lists_and_reads_what_the_server_has(fs):
    assert fs.listdir() == ["docs", "hello.txt"]
    assert fs.listdir("docs") == ["report.txt"]
    assert fs.read("hello.txt") == b"hello from the server\n"
    st = fs.stat("hello.txt")
    assert stat.S_ISREG(st.st_mode) and st.st_size == len(b"hello from the server\n")
    # SMB keeps time in 100 ns units
    assert abs(st.st_mtime_ns - (fs.server / "hello.txt").stat().st_mtime_ns) < (100 if fs.smb else 1)
    assert stat.S_ISDIR(fs.stat("docs").st_mode)
    assert errno_of(fs.read, "missing.txt") == errno.ENOENT


def test_new_file_reaches_the_server_intact(fs):
    data = os.urandom(3 * 1024 * 1024 + 17)
    fs.write("docs/big.bin", data)
    assert fs.read("docs/big.bin") == data
    fs.settle()
    assert sha((fs.server / "docs" / "big.bin").read_bytes()) == sha(data)
    assert fs.status()["pending_uploads"] == 0


def test_edit_of_a_server_file_reaches_the_server(fs):
    fs.append("hello.txt", b"and from the client\n")
    assert fs.read("hello.txt") == b"hello from the server\nand from the client\n"
    fs.settle()
    assert (fs.server / "hello.txt").read_bytes() == b"hello from the server\nand from the client\n"


def test_mkdir_rmdir_and_unlink(fs):
    fs.mkdir("a")
    fs.mkdir("a/b")
    assert (fs.server / "a" / "b").is_dir()
    fs.write("a/b/f.txt", b"x")
    assert errno_of(fs.rmdir, "a") == errno.ENOTEMPTY
    assert errno_of(fs.mkdir, "a") == errno.EEXIST
    fs.settle()
    assert (fs.server / "a" / "b" / "f.txt").read_bytes() == b"x"
    fs.unlink("a/b/f.txt")
    assert not (fs.server / "a" / "b" / "f.txt").exists()
    fs.rmdir("a/b")
    fs.rmdir("a")
    assert not (fs.server / "a").exists()
    assert fs.listdir() == ["docs", "hello.txt"]


def test_a_file_created_and_deleted_before_upload_never_reaches_the_server(fs):
    fs.write("scratch.tmp", b"temporary")
    fs.unlink("scratch.tmp")
    fs.settle()
    assert not (fs.server / "scratch.tmp").exists()
    assert not fs.exists("scratch.tmp")


def test_rename_replace_and_noreplace(fs):
    fs.rename("hello.txt", "docs/hello-moved.txt")
    assert (fs.server / "docs" / "hello-moved.txt").read_bytes() == b"hello from the server\n"
    assert not (fs.server / "hello.txt").exists()
    fs.write("other.txt", b"other")
    fs.settle()
    assert errno_of(fs.rename, "other.txt", "docs/hello-moved.txt", True) == errno.EEXIST
    assert fs.read("docs/hello-moved.txt") == b"hello from the server\n"
    fs.rename("other.txt", "docs/hello-moved.txt")
    assert fs.read("docs/hello-moved.txt") == b"other"
    assert (fs.server / "docs" / "hello-moved.txt").read_bytes() == b"other"
    assert fs.listdir("docs") == ["hello-moved.txt", "report.txt"]


def test_rename_a_folder_with_contents(fs):
    fs.write("docs/new.txt", b"new")
    fs.settle()
    fs.rename("docs", "archive")
    assert fs.listdir("archive") == ["new.txt", "report.txt"]
    assert sorted(os.listdir(fs.server / "archive")) == ["new.txt", "report.txt"]
    assert fs.read("archive/report.txt") == b"quarterly report v1\n"
    assert errno_of(fs.rename, "archive", "archive/inner") == errno.EINVAL


def test_editor_save_replaces_the_server_file_atomically(fs):
    """Write a temporary file, rename it over the original: a reader polling the
    server copy sees the old or the new content, never anything else."""
    old = (fs.server / "docs" / "report.txt").read_bytes()
    new = b"quarterly report v2\n" * 50_000  # about 1 MB: an upload takes a while
    seen, stop = set(), threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.add(sha((fs.server / "docs" / "report.txt").read_bytes()))
            except FileNotFoundError:
                seen.add("missing")

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        fs.write("docs/.report.txt.swp", new)
        fs.rename("docs/.report.txt.swp", "docs/report.txt")
        fs.settle()
        time.sleep(0.1)
    finally:
        stop.set()
        poller.join()
    assert (fs.server / "docs" / "report.txt").read_bytes() == new
    assert seen <= {sha(old), sha(new)}, "a reader saw a partial or missing file"
    assert sorted(os.listdir(fs.server / "docs")) == ["report.txt"]


def test_symlinks(fs):
    if fs.smb:  # SMB shares do not store symbolic links: refused, never stuck later
        assert errno_of(fs.symlink, "docs/report.txt", "link") == errno.EPERM
        return
    fs.symlink("docs/report.txt", "link")
    assert fs.readlink("link") == "docs/report.txt"
    assert os.readlink(fs.server / "link") == "docs/report.txt"
    assert stat.S_ISLNK(fs.stat("link").st_mode)


def test_chmod_truncate_and_utime(fs):
    fs.chmod("hello.txt", 0o600)
    # SMB keeps no POSIX modes: like a cifs mount, chmod succeeds and changes nothing
    mode = 0o644 if fs.smb else 0o600
    assert stat.S_IMODE(fs.stat("hello.txt").st_mode) == mode
    fs.truncate("hello.txt", 5)
    assert fs.read("hello.txt") == b"hello"
    fs.truncate("hello.txt", 8)
    assert fs.read("hello.txt") == b"hello\0\0\0"
    when = 1_600_000_000_123_456_700
    fs.utime("hello.txt", when)
    assert fs.stat("hello.txt").st_mtime_ns == when
    fs.settle()
    st = (fs.server / "hello.txt").stat()
    assert (fs.server / "hello.txt").read_bytes() == b"hello\0\0\0"
    assert st.st_mtime_ns == when
    if not fs.smb:
        assert stat.S_IMODE(st.st_mode) == 0o600
        fs.chmod("docs", 0o700)
        assert stat.S_IMODE((fs.server / "docs").stat().st_mode) == 0o700


def test_hard_links_are_refused(fs):
    assert errno_of(fs.link, "hello.txt", "hard") == errno.EPERM


def test_folder_times_link_counts_and_long_names(fs):
    assert "new.txt" not in fs.listdir("docs")  # listed: its subfolders are known
    before = fs.stat("docs")
    assert before.st_nlink == 2
    fs.write("docs/new.txt", b"x")
    after = fs.stat("docs")  # an entry made: the folder's mtime and ctime move
    assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    fs.mkdir("docs/sub")
    assert fs.stat("docs").st_nlink == 3  # its name, its '.', the subfolder's '..'
    fs.rmdir("docs/sub")
    assert fs.stat("docs").st_nlink == 2
    fs.unlink("docs/new.txt")
    assert fs.stat("docs").st_mtime_ns > after.st_mtime_ns
    long = "x" * 256  # past NAME_MAX (255 bytes), which FUSE does not check itself
    for call in (fs.stat, fs.mkdir, lambda name: fs.write(name, b"x")):
        assert errno_of(call, long) == errno.ENAMETOOLONG
    assert long not in fs.listdir()


def _owner(path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _owner_of(fs, path) -> tuple[int, int]:
    st = fs.stat(path)
    return st.st_uid, st.st_gid


def test_items_have_owners_and_chown_reaches_the_server_or_fails(fs):
    me = (os.getuid(), os.getgid())
    assert _owner_of(fs, "hello.txt") == me
    if fs.smb or os.geteuid() != 0:
        # SMB keeps no owners (the mounting user's, as on a cifs mount), a daemon that
        # is not root cannot give items away: refused, never pretended.
        assert errno_of(fs.chown, "hello.txt", 65534, 65534) == errno.EPERM
        fs.chown("hello.txt", *me)  # no change: fine
        assert _owner_of(fs, "hello.txt") == me
        return
    assert _owner_of(fs, "docs/report.txt") == (0, 0)
    wait_for(lambda: fs.status()["change_notification"], what="inotify armed")
    os.chown(fs.server / "docs" / "report.txt", 65533, 65532)  # changed on the server
    wait_for(lambda: _owner_of(fs, "docs/report.txt") == (65533, 65532), what="owner seen")
    fs.chown("hello.txt", 65534, 65534)  # a clean server file: there at once
    assert _owner(fs.server / "hello.txt") == _owner_of(fs, "hello.txt") == (65534, 65534)
    fs.mkdir("shared")
    fs.chown("shared", 65534, 65533)
    assert _owner(fs.server / "shared") == (65534, 65533)
    fs.chown("shared", -1, 0)  # only the group
    assert _owner(fs.server / "shared") == (65534, 0)
    fs.write("new.txt", b"made here")  # only here until its upload, which carries it
    fs.chown("new.txt", 65534, 65534)
    fs.settle()
    assert _owner(fs.server / "new.txt") == (65534, 65534)
    assert (fs.server / "new.txt").read_bytes() == b"made here"


def test_fifos_sockets_and_device_nodes(fs):
    if fs.smb:  # SMB cannot hold them (as a cifs mount without unix extensions)
        assert errno_of(fs.mkfifo, "pipe") == errno.EPERM
        assert errno_of(fs.mknod, "sock", stat.S_IFSOCK | 0o600) == errno.EPERM
        assert not fs.exists("pipe") and not fs.exists("sock")
        return
    fs.mkfifo("pipe", 0o640)
    fs.mknod("sock", stat.S_IFSOCK | 0o600)
    st = fs.stat("pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_ISSOCK(fs.stat("sock").st_mode)
    on_server = os.lstat(fs.server / "pipe")
    assert stat.S_ISFIFO(on_server.st_mode) and stat.S_IMODE(on_server.st_mode) == 0o640
    assert stat.S_ISSOCK(os.lstat(fs.server / "sock").st_mode)
    if os.geteuid() == 0:  # device nodes need CAP_MKNOD on the server
        fs.mknod("null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert fs.stat("null").st_rdev == os.lstat(fs.server / "null").st_rdev == os.makedev(1, 3)
        assert stat.S_ISCHR(os.lstat(fs.server / "null").st_mode)
    fs.rename("pipe", "docs/pipe")
    assert stat.S_ISFIFO(os.lstat(fs.server / "docs" / "pipe").st_mode)
    fs.unlink("docs/pipe")
    fs.unlink("sock")
    assert not os.path.lexists(fs.server / "docs" / "pipe")
    assert not os.path.lexists(fs.server / "sock")
    os.mkfifo(fs.server / "theirs")  # made on the server: listed as what it is
    wait_for(lambda: fs.exists("theirs") and stat.S_ISFIFO(fs.stat("theirs").st_mode),
             what="the server's fifo listed")


def test_xattrs_show_status_and_pinning(fs):
    assert set(fs.listxattr("hello.txt")) >= {"user.cscfs.status", "user.cscfs.pinned"}
    # The whole mount is pinned by default (available offline): filled untouched.
    assert fs.getxattr("hello.txt", "user.cscfs.pinned") == b"1"
    wait_for(lambda: fs.getxattr("hello.txt", "user.cscfs.status") == b"cached",
             what="the fill")
    # An unpinned folder's new file stays a ghost until read.
    fs.setxattr("docs", "user.cscfs.pinned", b"0")
    assert fs.getxattr("docs/report.txt", "user.cscfs.pinned") == b"0"
    (fs.server / "docs" / "fresh.txt").write_bytes(b"new on the server\n")
    wait_for(lambda: "fresh.txt" in fs.listdir("docs"), what="the new name")
    assert fs.getxattr("docs/fresh.txt", "user.cscfs.status") == b"ghost"
    assert fs.read("docs/fresh.txt") == b"new on the server\n"
    assert fs.getxattr("docs/fresh.txt", "user.cscfs.status") == b"cached"
    assert errno_of(fs.setxattr, "hello.txt", "user.cscfs.status", b"x") == errno.EPERM
    assert errno_of(fs.getxattr, "hello.txt", "user.other") == errno.ENODATA


def test_dirty_status_until_uploaded(tmp_path, server, env_dirs):
    # Its own write-back delay, long enough to look at the dirty state.
    from .conftest import FAST, VfsRunner
    from .fsapi import VfsFS

    runner = VfsRunner(server, tmp_path / "data", FAST.__class__(**{**FAST.__dict__,
                                                                     "write_back_delay": 30}))
    try:
        fs = VfsFS(runner)
        fs.write("hello.txt", b"changed")
        assert fs.getxattr("hello.txt", "user.cscfs.status") == b"dirty"
        assert fs.status()["pending_uploads"] == 1
        assert (server / "hello.txt").read_bytes() == b"hello from the server\n"
        fs.settle()
        assert (server / "hello.txt").read_bytes() == b"changed"
        assert fs.getxattr("hello.txt", "user.cscfs.status") == b"cached"
    finally:
        runner.stop()


def test_statfs(fs):
    bsize, blocks, namemax = fs.statfs()
    assert bsize > 0 and blocks > 0 and namemax == 255


def test_a_partly_read_large_file_is_completed_in_the_background(fs):
    data = os.urandom(16 * 1024 * 1024)
    (fs.server / "large.bin").write_bytes(data)
    # The root was listed as the mount came up: a new name there shows within attr_ttl.
    wait_for(lambda: "large.bin" in fs.listdir(), what="the new name")
    assert fs.read_at("large.bin", 9_000_000, 5000) == data[9_000_000:9_005_000]
    # Opened online and partly cached: the rest comes without being read.
    wait_for(lambda: fs.getxattr("large.bin", "user.cscfs.status") == b"cached",
             what="the background fetch")
    assert sha(fs.read("large.bin")) == sha(data)


@pytest.mark.on_demand
def test_the_first_bytes_do_not_wait_for_the_whole_file(vfs_runner):
    """Read at once after open, in one task: only what the read needs is there yet
    (not even the whole first chunk: over a slow link the first byte comes sooner);
    the next reads fill in the rest, byte for byte."""
    data = os.urandom(16 * 1024 * 1024)
    (vfs_runner.server / "large.bin").write_bytes(data)
    vfs = vfs_runner.vfs

    async def first_bytes():
        node = await vfs.lookup(1, "large.bin")
        fh = await vfs.open(node.ino, os.O_RDONLY)
        try:
            got = await vfs.read(fh, 0, 4096)
            present = node.present.present_bytes()  # no await in between
            more = await vfs.read(fh, 100_000, 3_000_000)
            return got, present, more
        finally:
            await vfs.release(fh)

    got, present, more = vfs_runner.call(first_bytes)
    assert got == data[:4096] and more == data[100_000:3_100_000]
    assert 4096 <= present <= 128 * 1024 < vfs.opts.chunk_size


def test_a_change_on_the_server_is_seen_at_the_next_open(fs):
    assert fs.read("docs/report.txt") == b"quarterly report v1\n"
    time.sleep(0.05)
    (fs.server / "docs" / "report.txt").write_bytes(b"rewritten on the server, longer\n")
    (fs.server / "docs" / "added.txt").write_bytes(b"added")
    time.sleep(0.5)  # past the attribute TTL
    assert fs.read("docs/report.txt") == b"rewritten on the server, longer\n"
    assert fs.listdir("docs") == ["added.txt", "report.txt"]
    (fs.server / "docs" / "added.txt").unlink()
    time.sleep(0.5)
    assert fs.listdir("docs") == ["report.txt"]


def test_a_server_change_to_a_locally_changed_file_keeps_both(fs):
    """Changed on the server while dirty here: both versions kept, conflict recorded."""
    fs.read("docs/report.txt")
    time.sleep(0.5)
    if fs.kind == "mount":
        f = open(os.path.join(fs.root, "docs/report.txt"), "r+b")
        try:
            (fs.server / "docs" / "report.txt").write_bytes(b"their version\n")
            f.write(b"our version!!!!!\n")
        finally:
            f.close()
    else:
        vfs, c = fs.vfs, fs._c
        fh = c(vfs.open, fs._resolve("docs/report.txt"), os.O_RDWR)
        (fs.server / "docs" / "report.txt").write_bytes(b"their version\n")
        c(vfs.write, fh, 0, b"our version!!!!!\n")
        c(vfs.release, fh)
    fs.settle()
    names = sorted(os.listdir(fs.server / "docs"))
    assert len(names) == 2, names
    copy = next(n for n in names if n != "report.txt")
    assert copy.startswith("report (conflict ") and copy.endswith(").txt")
    assert (fs.server / "docs" / "report.txt").read_bytes() == b"their version\n"
    assert (fs.server / "docs" / copy).read_bytes().startswith(b"our version!!!!!\n")
    assert fs.status()["open_conflicts"] == 1
    time.sleep(0.5)
    assert fs.listdir("docs") == sorted(["report.txt", copy])
    assert fs.read("docs/report.txt") == b"their version\n"
    assert fs.getxattr(f"docs/{copy}", "user.cscfs.status") == b"conflict"
