"""Conflicts of every kind, end to end over real Samba: one side works through the
mount while offline (the user's switch), the other changes the server's disk; then
`cscfs sync`, `cscfs conflicts`, `cscfs resolve`."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from .conftest import cscfs, wait_for


def _conflicts(m) -> list[dict]:
    return json.loads(cscfs("conflicts", str(m.mountpoint), "--json").stdout)


def _sync(m) -> int:
    return cscfs("sync", str(m.mountpoint), check=False).returncode


def _offline(m):
    (m.mountpoint / "hello.txt").read_bytes()
    (m.mountpoint / "docs" / "report.txt").read_bytes()
    cscfs("offline", str(m.mountpoint))


def _copies(folder, stem):
    return sorted(n for n in os.listdir(folder) if n.startswith(f"{stem} (conflict "))


@pytest.mark.parametrize("keep", ["local", "server", "both", "latest"])
def test_update_update_then_resolve(smb_mounted, keep):
    m = smb_mounted
    _offline(m)
    with open(m.mountpoint / "docs" / "report.txt", "w") as f:
        f.write("ours, written offline\n")
    time.sleep(0.05)
    (m.server / "docs" / "report.txt").write_text("theirs, written on the server\n")
    assert _sync(m) == 3
    [c] = _conflicts(m)
    assert c["kind"] == "update/update" and c["path"] == "docs/report.txt"
    copy = c["copy_path"].rpartition("/")[2]
    assert _copies(m.server / "docs", "report") == [copy]
    assert (m.server / "docs" / copy).read_text() == "ours, written offline\n"
    assert (m.server / "docs" / "report.txt").read_text() == "theirs, written on the server\n"
    out = cscfs("resolve", str(m.mountpoint / "docs" / "report.txt"), "--keep", keep).stdout
    assert f"kept {'server' if keep == 'latest' else keep}" in out  # theirs is newer
    assert _sync(m) == 0 and _conflicts(m) == []
    final = (m.server / "docs" / "report.txt").read_text()
    copies = _copies(m.server / "docs", "report")
    if keep == "local":
        assert final == "ours, written offline\n" and copies == []
    elif keep in ("server", "latest"):
        assert final == "theirs, written on the server\n" and copies == []
    else:
        assert final == "theirs, written on the server\n" and copies == [copy]
    assert sorted(os.listdir(m.mountpoint / "docs")) == sorted(os.listdir(m.server / "docs"))


def test_deleted_here_changed_there(smb_mounted):
    m = smb_mounted
    _offline(m)
    os.unlink(m.mountpoint / "docs" / "report.txt")
    (m.server / "docs" / "report.txt").write_text("changed on the server\n")
    assert _sync(m) == 3
    [c] = _conflicts(m)
    assert c["kind"] == "delete/update"
    assert (m.server / "docs" / "report.txt").read_text() == "changed on the server\n"
    assert (m.mountpoint / "docs" / "report.txt").read_text() == "changed on the server\n"
    cscfs("resolve", str(m.mountpoint / "docs" / "report.txt"), "--keep", "local")
    assert _sync(m) == 0
    assert not (m.server / "docs" / "report.txt").exists()
    assert not (m.mountpoint / "docs" / "report.txt").exists()


def test_changed_here_deleted_there(smb_mounted):
    m = smb_mounted
    _offline(m)
    with open(m.mountpoint / "docs" / "report.txt", "a") as f:
        f.write("edited offline\n")
    (m.server / "docs" / "report.txt").unlink()
    assert _sync(m) == 3
    [c] = _conflicts(m)
    assert c["kind"] == "update/delete"
    assert (m.server / "docs" / "report.txt").read_text().endswith("edited offline\n")
    cscfs("resolve", str(m.mountpoint / "docs" / "report.txt"), "--keep", "both")
    assert _sync(m) == 0
    assert (m.server / "docs" / "report.txt").exists()


def test_both_created_the_same_name(smb_mounted):
    m = smb_mounted
    _offline(m)
    (m.mountpoint / "plan.txt").write_text("our plan\n")
    (m.server / "plan.txt").write_text("their plan\n")
    assert _sync(m) == 3
    [c] = _conflicts(m)
    assert c["kind"] == "create/create"
    assert (m.server / "plan.txt").read_text() == "their plan\n"
    [copy] = _copies(m.server, "plan")
    assert (m.server / copy).read_text() == "our plan\n"


def test_a_file_here_and_a_folder_there(smb_mounted):
    m = smb_mounted
    _offline(m)
    (m.mountpoint / "thing").write_text("a file of ours\n")
    (m.server / "thing").mkdir()
    (m.server / "thing" / "inside.txt").write_text("theirs\n")
    assert _sync(m) == 3
    [c] = _conflicts(m)
    assert c["kind"] == "file/dir"
    assert (m.server / "thing" / "inside.txt").read_text() == "theirs\n"
    [copy] = _copies(m.server, "thing")
    assert (m.server / copy).read_text() == "a file of ours\n"


def test_an_edit_follows_a_rename_on_the_server(smb_mounted):
    m = smb_mounted
    _offline(m)
    with open(m.mountpoint / "docs" / "report.txt", "a") as f:
        f.write("edited offline\n")
    os.rename(m.server / "docs" / "report.txt", m.server / "docs" / "renamed.txt")
    assert _sync(m) == 0
    assert _conflicts(m) == []
    assert sorted(os.listdir(m.server / "docs")) == ["renamed.txt"]
    assert (m.server / "docs" / "renamed.txt").read_text().endswith("edited offline\n")


def test_a_folder_renamed_offline_arrives_as_one_rename(smb_mounted):
    m = smb_mounted
    (m.server / "tree" / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (m.server / "tree" / "a" / "b" / f"f{i}").write_text(str(i))
    ids = {p.name: p.stat().st_ino for p in (m.server / "tree" / "a" / "b").iterdir()}
    wait_for(lambda: (m.mountpoint / "tree").exists(), what="listing")
    cscfs("offline", str(m.mountpoint))
    os.rename(m.mountpoint / "tree", m.mountpoint / "moved")
    assert _sync(m) == 0
    moved = m.server / "moved" / "a" / "b"
    # Same server files (same inodes), not copies.
    assert {p.name: p.stat().st_ino for p in moved.iterdir()} == ids
    assert not (m.server / "tree").exists()
    shutil.rmtree(m.server / "moved")


def test_an_upload_whose_answer_was_lost_is_no_conflict(vfs_runner, server):
    """The link drops after the server took our upload but before its answer came:
    the next upload finds the server changed, recognises that version as its own (by
    its hash) and replaces it, with no conflict copy."""
    from cscfs import errors

    from .fsapi import VfsFS

    fs = VfsFS(vfs_runner)
    fs.write("notes.txt", b"v1")
    fs.settle()
    store = fs.vfs.store
    real_upload = store.upload
    lost = []

    def upload_then_lose_the_answer(*args):
        st = real_upload(*args)
        if not lost:
            lost.append(st)
            raise errors.Unavailable("the link dropped before the answer")
        return st

    store.upload = upload_then_lose_the_answer
    try:
        fs.write("notes.txt", b"v2, sent")
        wait_for(lambda: lost, what="the upload")
        assert (server / "notes.txt").read_bytes() == b"v2, sent"
        fs.write("notes.txt", b"v3, written after")
        wait_for(lambda: fs.status()["mode"] == "online", what="online again")
        fs.settle()
    finally:
        store.upload = real_upload
    assert (server / "notes.txt").read_bytes() == b"v3, written after"
    assert fs.client.state.open_conflicts() == []
    assert sorted(p.name for p in server.iterdir() if p.name.startswith("notes")) == ["notes.txt"]


def test_a_file_deleted_during_its_upload_leaves_the_server(vfs_runner, server):
    """Deleted here while its first upload runs: the upload lands, then goes again;
    the next listing must not bring it back."""
    from .fsapi import VfsFS

    fs = VfsFS(vfs_runner)
    store = fs.vfs.store
    real_upload = store.upload
    started = []

    def slow_upload(*args):
        started.append(True)
        time.sleep(0.5)
        return real_upload(*args)

    store.upload = slow_upload
    try:
        fs.write("draft.txt", b"short-lived")
        wait_for(lambda: started, what="the upload")
        fs.unlink("draft.txt")
        time.sleep(0.7)
        fs.settle()
    finally:
        store.upload = real_upload
    assert not (server / "draft.txt").exists()
    time.sleep(0.3)  # past attr_ttl: a fresh listing
    assert "draft.txt" not in fs.listdir()


def test_a_delete_here_never_takes_a_same_tick_rewrite_there(vfs_runner, server):
    """The server rewrites a file in place with the same size and mtime as the version
    we read (two writes in one tick of its clock): same fingerprint. Deleting it here
    must not delete their version: the content decides, theirs stays, a conflict says so."""
    from .fsapi import VfsFS

    fs = VfsFS(vfs_runner)
    path = server / "same-tick.txt"
    path.write_bytes(b"version 1 written on the server\n")
    wait_for(lambda: fs.exists("same-tick.txt"), what="the new name")
    assert fs.read("same-tick.txt") == b"version 1 written on the server\n"
    before = path.stat()
    with open(path, "r+b") as f:  # in place: same file id
        f.write(b"version 2 written on the server\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    fs.unlink("same-tick.txt")
    assert path.read_bytes() == b"version 2 written on the server\n"
    [c] = fs.client.state.open_conflicts()
    assert c["path"] == "same-tick.txt" and c["kind"] == "delete/update"
