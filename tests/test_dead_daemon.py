"""A daemon that dies (kill -9, a crash) never leaves a hung mount: what waits on the
mount gets an error, and `cscfs mount` or `cscfs unmount --force` over it works. And
`cscfs unmount` returns only once the daemon is gone, so a mount can follow at once.

A regression here hangs processes in the kernel for ever: every test ends what it
started in a finally, by aborting the mount's FUSE connection, and never looks into
a mount that may hang (no stat; /proc only).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from cscfs import mounts
from cscfs.config import daemon_record_path

from .conftest import FAST, IN_CI, Mounted, cscfs, require_fuse, wait_for

KILLS = 30  # per way of invalidating: with the thread, most of them hit the window
KERNEL_HAS_EPOCH = tuple(
    int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups()) >= (6, 16)


# -- processes the tests start, and how to tell one hangs on FUSE -------------------

def proc_stat(pid: int) -> tuple[str, str]:
    """(state, start time) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def waits_on_fuse(pid: int) -> bool:
    where = wchan(pid)
    return where == "request_wait_answer" or where.startswith("fuse_")


def daemon_tasks(record: mounts.DaemonRecord) -> dict[str, str]:
    """thread -> where it waits, for a daemon that has not fully exited."""
    if mounts.daemon_state(record) == mounts.GONE:
        return {}
    try:
        return {t: wchan(f"{record.pid}/task/{t}")
                for t in os.listdir(f"/proc/{record.pid}/task")}
    except OSError:
        return {}


class Children:
    """Forked workers; each ends at its first error (its mount went away)."""

    def __init__(self):
        self.running: set[int] = set()

    def start(self, work, *args) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                work(*args)
            finally:  # an error ends the worker: never back into pytest
                os._exit(0)
        self.running.add(pid)
        return pid

    def reap(self) -> set[int]:
        for pid in list(self.running):
            if os.waitpid(pid, os.WNOHANG)[0]:
                self.running.discard(pid)
        return self.running

    def wait(self, timeout: float, pids: set[int] | None = None) -> set[int]:
        """Those of `pids` (all by default) still running after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.reap() if pids is None else self.reap() & pids
            if not left or time.monotonic() > deadline:
                return set(left)
            time.sleep(0.02)

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.running.discard(pid)

    def hung(self) -> dict[int, str]:
        return {pid: wchan(pid) for pid in self.reap() if waits_on_fuse(pid)}

    def end(self) -> None:
        for pid in list(self.running):
            os.kill(pid, signal.SIGKILL)
        if self.wait(10):
            raise AssertionError(f"workers left hung: {self.hung()}")


def connection_of(mountpoint) -> int:
    return mounts.fuse_mounts()[str(mountpoint)].connection


def end_mount(mountpoint, connections=()) -> None:
    """Abort the mount's FUSE connection and those given (ours from before, maybe
    detached already; not one another mount uses now), then unmount it."""
    mp = str(mountpoint)
    others = {m.connection for m in mounts.fuse_mounts().values() if m.mountpoint != mp}
    mount = mounts.fuse_mounts().get(mp)
    for n in {*connections, *([mount.connection] if mount else [])} - others:
        if os.path.exists(f"{mounts.FUSECTL}/{n}"):
            with open(f"{mounts.FUSECTL}/{n}/abort", "w") as f:
                f.write("1")
    mounts.detach(mp)


# -- what applications and the server do meanwhile ----------------------------------

def renamer(folder: str, k: int) -> None:
    while True:
        a, b = f"{folder}/a{k}", f"{folder}/b{k}"
        with open(a, "wb") as f:
            f.write(b"y" * 4096)
        os.rename(a, b)
        os.rename(b, a)
        os.unlink(a)


def writer(folder: str) -> None:
    with open(f"{folder}/stream.bin", "wb") as f:
        for i in range(1_000_000):
            f.write(os.urandom(65536))
            if i % 16 == 15:
                f.seek(0)
                f.truncate()


def server_changes(folder: str) -> None:
    """Another client renames and writes there: each change makes the daemon
    invalidate names in the folder the applications work in."""
    for i in range(1_000_000):
        path = f"{folder}/s{i % 20}"
        try:
            os.rename(path, path + "x")
            os.rename(path + "x", path)
            with open(f"{folder}/n{i % 7}", "w") as f:
                f.write(str(i))
        except OSError:
            pass
        time.sleep(0.002)


def record_of(m: Mounted) -> mounts.DaemonRecord:
    record = mounts.read_record(daemon_record_path(str(m.mountpoint)))
    assert record is not None and mounts.daemon_state(record) == mounts.ALIVE
    return record


# -- the tests ----------------------------------------------------------------------

@pytest.mark.parametrize("invalidation", ["epoch", "thread"])
def test_a_daemon_killed_amid_renames_and_writes_leaves_nothing_hung(
        tmp_path, server, env_dirs, monkeypatch, invalidation):
    """kill -9 of the daemon while applications rename and write in a folder whose
    names it is invalidating (the server changes there). With the kernel's epoch
    notification nothing can hang at all; with an invalidation thread (kernels before
    6.16) a thread of the dead daemon can stay in the kernel holding /dev/fuse, and
    `cscfs mount` or `cscfs unmount --force` over the mount must end it."""
    require_fuse()
    if invalidation == "thread":
        monkeypatch.setenv("CSCFS_FUSE_EPOCH", "0")
    (server / "d").mkdir()
    for i in range(20):
        (server / "d" / f"s{i}").write_text("x" * 100)
    folder = str(tmp_path / "mnt" / "d")
    children = Children()
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", FAST.write_back_delay)
    dying = 0
    connections = set()
    try:
        for i in range(KILLS):
            record = record_of(m)
            connections.add(connection_of(m.mountpoint))
            changer = children.start(server_changes, str(server / "d"))
            apps = {children.start(renamer, folder, k) for k in range(3)}
            apps.add(children.start(writer, folder))
            time.sleep(random.uniform(0.15, 0.4))
            os.kill(record.pid, signal.SIGKILL)
            deadline = time.monotonic() + 0.5  # a daemon killed whole is gone at once
            while mounts.daemon_state(record) != mounts.GONE and time.monotonic() < deadline:
                time.sleep(0.02)
            if mounts.daemon_state(record) == mounts.DYING:
                dying += 1  # a thread of it stuck in the kernel: the window was hit
            if invalidation == "epoch" and KERNEL_HAS_EPOCH:
                # Nothing to clean up: the kernel ended the connection by itself.
                left = children.wait(3, apps)
                assert mounts.daemon_state(record) == mounts.GONE, daemon_tasks(record)
                assert not left, {pid: wchan(pid) for pid in left}
            if i % 2:
                out = cscfs("unmount", "--force", str(m.mountpoint)).stdout
                assert "stale mount" in out
                assert not m.is_mounted()
            m.mount()  # over the dead mount, or where it was
            children.kill(changer)
            left = children.wait(5)
            assert not left, f"kill {i + 1}: still waiting: {children.hung() or left}"
            assert mounts.daemon_state(record) == mounts.GONE, daemon_tasks(record)
        # The mount works, and shows what the server's changes left there.
        assert "n0" in os.listdir(folder)
        assert (tmp_path / "mnt" / "hello.txt").read_text() == "hello from the server\n"
        if invalidation == "thread":
            assert dying > 0, f"no kill of {KILLS} hit the window: the test proves nothing"
    finally:
        end_mount(m.mountpoint, connections)
        children.end()
        m.unmount(force=True)


def hold_dev_fuse(pid: int) -> int:
    """A copy of the daemon's /dev/fuse in this process (pidfd_getfd): while it is
    open the kernel cannot end the connection when the daemon dies, as when a thread
    of the daemon is stuck in the kernel."""
    target = next(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse")
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(438, pidfd, target, 0)  # SYS_pidfd_getfd
    finally:
        os.close(pidfd)
    if fd < 0:
        reason = f"pidfd_getfd: {os.strerror(ctypes.get_errno())} (needs CAP_SYS_PTRACE)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return fd


def rename_reporting(src: str, dst: str, report: int) -> None:
    try:
        os.rename(src, dst)
        os.write(report, b"0")
    except OSError as exc:
        os.write(report, str(exc.errno).encode())


@pytest.mark.parametrize("recovery", ["mount", "unmount --force"])
def test_a_dead_daemon_whose_connection_stays_open_is_aborted(mounted, recovery):
    """The daemon is stopped with a rename waiting for its answer, then killed while
    its /dev/fuse stays open: the rename waits for ever, until `cscfs mount` or
    `cscfs unmount --force` aborts the connection; then it fails with an error."""
    m = mounted
    mp = str(m.mountpoint)
    record = record_of(m)
    connection = connection_of(mp)
    held = hold_dev_fuse(record.pid)
    children = Children()
    read_end, write_end = os.pipe()
    recovered = False
    try:
        os.kill(record.pid, signal.SIGSTOP)
        app = children.start(rename_reporting, f"{mp}/hello.txt", f"{mp}/bye.txt", write_end)
        wait_for(lambda: waits_on_fuse(app), 5, what="the rename to wait for the daemon")
        os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: mounts.daemon_state(record) == mounts.GONE, 5, what="daemon exit")
        time.sleep(0.3)
        assert waits_on_fuse(app), "the kernel ended the connection: the test proves nothing"
        if recovery == "mount":
            m.mount()
        else:
            out = cscfs("unmount", "--force", mp).stdout
            assert "stale mount" in out
            assert not m.is_mounted()
        recovered = True
        assert not children.wait(5), f"the rename still waits: {wchan(app)}"
        result = int(os.read(read_end, 16))
        assert result in (errno.ENOTCONN, errno.ECONNABORTED), os.strerror(result)
        if recovery == "mount":
            assert (m.mountpoint / "hello.txt").read_text() == "hello from the server\n"
    finally:
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not recovered:
            end_mount(m.mountpoint, [connection])
        os.close(held)
        children.end()
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("server_kind", ["folder", "smb"])
def test_unmount_returns_once_the_daemon_is_gone_and_a_mount_can_follow(request, server_kind):
    """`cscfs unmount` then `cscfs mount` of the same folder and data dir at once: the
    data dir is free (no "in use by another cscfs mount"). Over SMB the daemon's exit
    takes longest (it logs off the server)."""
    m = request.getfixturevalue("mounted" if server_kind == "folder" else "smb_mounted")
    for i in range(5):
        record = record_of(m)
        (m.mountpoint / f"late{i}.txt").write_text("uploaded at unmount")
        (m.mountpoint / "docs" / "report.txt").read_bytes()
        cscfs("unmount", str(m.mountpoint))
        assert mounts.daemon_state(record) == mounts.GONE, daemon_tasks(record)
        with open(m.data_dir / "lock") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: nobody holds it
        m.mount()
        assert (m.mountpoint / f"late{i}.txt").read_text() == "uploaded at unmount"
    assert (m.server / "late4.txt").read_text() == "uploaded at unmount"


def test_mount_over_a_stopped_daemon_is_refused(mounted):
    """A stopped daemon is alive (under a debugger, say): its mount is not taken
    over, and deciding so looks at /proc only. A one-line error."""
    record = record_of(mounted)
    os.kill(record.pid, signal.SIGSTOP)
    try:
        proc = cscfs("mount", str(mounted.server), str(mounted.mountpoint),
                     "--data-dir", str(mounted.data_dir), check=False, timeout=30)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"cscfs: error: mount point {mounted.mountpoint} is already mounted"]
    finally:
        os.kill(record.pid, signal.SIGCONT)


def test_forced_unmount_ends_the_mount_of_a_daemon_that_does_not_answer(mounted):
    """A daemon that is stuck (here: stopped) does not answer `cscfs unmount --force`:
    its connection is aborted and the mount removed all the same. Resumed, it finds
    its mount gone and exits; the next mount keeps what it had."""
    m = mounted
    (m.mountpoint / "kept.txt").write_text("changed before")
    record = record_of(m)
    os.kill(record.pid, signal.SIGSTOP)
    try:
        out = cscfs("unmount", "--force", str(m.mountpoint), timeout=60).stdout
        assert "did not answer" in out
        assert not m.is_mounted()
    finally:
        os.kill(record.pid, signal.SIGCONT)
    assert mounts.wait_gone(record, 10), daemon_tasks(record)
    m.mount()
    assert (m.mountpoint / "kept.txt").read_text() == "changed before"


def test_the_daemon_state_comes_from_proc():
    """A process whose main thread ended while another is still in it is dying (as a
    killed daemon with a thread stuck in the kernel): it will never answer. Stopped is
    alive; a PID now used by another process is gone."""
    code = ("import ctypes, threading, time; threading.Thread(target=time.sleep, "
            "args=(3,)).start(); ctypes.CDLL(None).pthread_exit(None)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: proc_stat(proc.pid)[0] == "Z", 5, what="the main thread to end")
        record = mounts.DaemonRecord(proc.pid, proc_stat(proc.pid)[1])
        assert mounts.daemon_state(record) == mounts.DYING
        assert mounts.daemon_state(mounts.DaemonRecord(proc.pid, "1")) == mounts.GONE
    finally:
        proc.kill()
        proc.wait()
    assert mounts.daemon_state(record) == mounts.GONE
    assert mounts.daemon_state(mounts.this_process()) == mounts.ALIVE
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        wait_for(lambda: proc_stat(sleeper.pid)[0] == "T", 5, what="the process to stop")
        record = mounts.DaemonRecord(sleeper.pid, proc_stat(sleeper.pid)[1])
        assert mounts.daemon_state(record) == mounts.ALIVE
    finally:
        sleeper.kill()
        sleeper.wait()
