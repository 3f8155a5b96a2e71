"""The cache disk fills up: the application gets ENOSPC, the daemon stays up, what
was written before still uploads intact, a file deleted to make room never reaches
the server, and writes work again once there is room, without a remount."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from .conftest import IN_CI, Mounted, cscfs, require_fuse, wait_for

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs for the data dir (mounting one needs root, as CI has)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the disk-full tests need root in CI (a tmpfs mount)")
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "cscfs-test", str(disk)],
                   check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(path, limit: int = 64 * MiB) -> int:
    """Write until the disk is full; returns the bytes written (ENOSPC expected)."""
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    try:
        while written < limit:
            written += os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return written
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    raise AssertionError(f"{limit} bytes written and the disk is not full")


def test_a_full_cache_disk_is_an_error_never_a_crash_or_a_loss(tmp_path, server, env_dirs,
                                                                small_disk):
    require_fuse()
    m = Mounted(server, tmp_path / "mnt", small_disk / "data", 0.2)
    try:
        mp = m.mountpoint
        cscfs("offline", str(mp))  # uploads wait: both files are only here for now
        (mp / "early.txt").write_bytes(b"written before the disk filled\n")
        written = _fill(mp / "big.bin")
        assert written > 8 * MiB
        s = m.status()  # the daemon is up and answers
        assert s["cache_disk_full"] and s["pending_upload_bytes"] >= 30
        assert "FULL" in cscfs("status", str(mp)).stdout
        events = json.loads(cscfs("events", str(mp), "--json").stdout)
        assert any(e["kind"] == "disk" and "full" in e["reason"] for e in events)
        # Growing any file is refused at once; deleting works and frees the space.
        with pytest.raises(OSError) as exc:
            (mp / "more.txt").write_bytes(b"x" * 100_000)
        assert exc.value.errno == errno.ENOSPC
        os.unlink(mp / "big.bin")
        assert cscfs("check", str(mp)).returncode == 0
        wait_for(lambda: not m.status()["cache_disk_full"], 10, what="room again")
        (mp / "after.txt").write_bytes(b"y" * MiB)  # writes work again, no remount
        cscfs("online", str(mp))
        wait_for(lambda: (server / "after.txt").exists()
                 and (server / "early.txt").exists(), 15, what="the uploads")
        assert (server / "early.txt").read_bytes() == b"written before the disk filled\n"
        assert (server / "after.txt").read_bytes() == b"y" * MiB
        assert not (server / "big.bin").exists()
        assert not [n for n in os.listdir(server) if n.startswith("big")]
        assert cscfs("check", str(mp)).returncode == 0
    finally:
        m.unmount(force=True)
    # Nothing of the deleted file reaches the server at unmount either, and nothing
    # failed on the way (a full disk is an error for the application, not a crash).
    assert not (server / "big.bin").exists()
    log = (small_disk / "data" / "daemon.log").read_text()
    assert "Traceback" not in log and "the cache disk is full" in log


def test_the_state_database_meets_a_full_disk_as_enospc_and_uses_the_reserve(small_disk):
    from cscfs.metadata import Node, State
    from cscfs.metadata.state import DiskFull

    state = State(str(small_disk / "state.db"))
    reserve = small_disk / "reserve"
    reserve.write_bytes(b"r" * (2 * MiB))
    with pytest.raises(OSError) as exc:
        (small_disk / "filler").write_bytes(b"f" * (40 * MiB))
    assert exc.value.errno == errno.ENOSPC
    freed = []

    def on_full() -> bool:
        if reserve.exists():
            reserve.unlink()
            freed.append(True)
            return True
        return False

    state.db.on_full = on_full
    node = Node(ino=0, parent=1, name="n" * 200, kind="file", mode=0o644, size=0,
                mtime_ns=0, ctime_ns=0)
    inserted = 0
    with pytest.raises(DiskFull) as full:
        for i in range(200_000):
            node.name = f"{i:08d}" + "n" * 200
            state.insert(node)
            inserted += 1
    assert full.value.errno == errno.ENOSPC
    assert freed == [True] and inserted > 50  # the reserve was used before giving up
    os.unlink(small_disk / "filler")
    node.name = "after the disk had room again"
    state.insert(node)  # works again, same connection
    state.close()
