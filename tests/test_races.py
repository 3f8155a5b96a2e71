"""Races between the server's versions and ours, made deterministic with a folder
store that stalls one call until the test lets it go:
- a fetch of an old version that returns after the file was revalidated must not
  leave bytes of two server versions in the cache;
- an upload sends a snapshot: an application writing during the upload never
  makes the server hold a mix of two versions."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading

import pytest

from cscfs.remote import LocalDirStore

from .conftest import FAST, VfsRunner, wait_for


class StallingStore(LocalDirStore):
    """Reads (after taking the bytes) and uploads (after the first chunk) of
    `stall_path` wait until `release` is set."""

    def __init__(self, root: str):
        super().__init__(root)
        self.stall_path: str | None = None
        self.entered, self.release = threading.Event(), threading.Event()
        self.landed: list[bytes] = []  # what the server held after each stalled upload

    def read(self, path, offset, length):
        data = super().read(path, offset, length)
        if path == self.stall_path:
            self.entered.set()
            self.release.wait(20)
        return data

    def upload(self, path, chunks, expected, mode, mtime_ns, owner=None, expected_sha=None):
        stalled = path == self.stall_path
        if stalled:
            it = iter(chunks)
            first = next(it)
            self.entered.set()
            self.release.wait(20)
            chunks = itertools.chain([first], it)
        st = super().upload(path, chunks, expected, mode, mtime_ns, owner, expected_sha)
        if stalled:
            self.landed.append((self.root_path / path).read_bytes())
        return st


@pytest.fixture
def stalling(tmp_path, server):
    store = StallingStore(str(server))
    store.root_path = server
    # On demand: the background fill would fetch the files under test by itself.
    runner = VfsRunner(server, tmp_path / "data",
                       dataclasses.replace(FAST, offline_by_default=False), store=store)
    try:
        yield runner, store
    finally:
        store.release.set()
        runner.stop()


def _read_all(runner, ino: int) -> bytes:
    vfs = runner.vfs

    async def read():
        fh = await vfs.open(ino, os.O_RDONLY)
        try:
            out, off = b"", 0
            while chunk := await vfs.read(fh, off, 1 << 17):
                out += chunk
                off += len(chunk)
            return out
        finally:
            await vfs.release(fh)

    return runner.call(read)


def test_a_fetch_of_the_old_version_never_mixes_into_the_new(stalling, server):
    runner, store = stalling
    size = 300_000
    (server / "big.bin").write_bytes(b"a" * size)

    def looked_up():
        try:
            return runner.call(runner.vfs.lookup, 1, "big.bin")
        except FileNotFoundError:
            return None  # the server's change notification is on its way

    wait_for(looked_up, 10, what="the new name")
    node = looked_up()
    store.stall_path = "big.bin"
    reader = threading.Thread(target=lambda: _read_all(runner, node.ino), daemon=True)
    reader.start()
    assert store.entered.wait(10), "the first fetch never reached the server"
    # The server gets a new version of the same size while the old bytes are on
    # their way; an open revalidates and drops our (clean) copy meanwhile.
    (server / "big.bin").write_bytes(b"b" * size)
    st = os.stat(server / "big.bin")
    os.utime(server / "big.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    # The server's change notification says so (not waited for: inotify may lag).
    runner.call_sync(runner.client.watcher.on_remote_change, "big.bin")

    def revalidated() -> bool:
        fh = runner.call(runner.vfs.open, node.ino, os.O_RDONLY)
        runner.call(runner.vfs.release, fh)
        return runner.call_sync(lambda: node.base.mtime_ns) == st.st_mtime_ns + 5_000_000_000

    wait_for(revalidated, 10, interval=0.1, what="the open to see the new version")
    store.stall_path = None
    store.release.set()
    reader.join(20)
    assert _read_all(runner, node.ino) == b"b" * size


@pytest.mark.parametrize("size", [3 << 20, 6 << 20], ids=["in-memory", "copied"])
def test_an_upload_sends_a_snapshot_never_a_mix(stalling, server, size):
    runner, store = stalling
    vfs = runner.vfs
    store.stall_path = "doc.bin"

    async def write(data: bytes, create: bool):
        if create:
            fh, node = await vfs.create(1, "doc.bin", 0o644, os.O_WRONLY | os.O_CREAT)
        else:
            node = await vfs.lookup(1, "doc.bin")
            fh = await vfs.open(node.ino, os.O_RDWR)
        for off in range(0, len(data), 1 << 20):
            await vfs.write(fh, off, data[off:off + (1 << 20)])
        await vfs.release(fh)

    v1, v2 = b"1" * size, b"2" * size
    runner.call(write, v1, True)
    assert store.entered.wait(10), "the upload never started"
    runner.call(write, v2, False)  # while the first chunk of v1 is on its way
    store.stall_path = None
    store.release.set()
    wait_for(lambda: store.landed, 10, what="the stalled upload")
    assert store.landed[0] == v1  # all of the version it started with
    wait_for(lambda: (server / "doc.bin").read_bytes() == v2, 10, what="the second version")
    wait_for(lambda: runner.call_sync(runner.client.status)["pending_uploads"] == 0, 10,
             what="nothing pending")
