"""The RemoteStore contract: every store passes it, the local directory and a real
Samba share alike."""

from __future__ import annotations

import errno
import os

import pytest

from cscfs import errors
from cscfs.remote import LocalDirStore
from cscfs.remote.base import TEMP_PREFIX


@pytest.fixture(params=["local", "smb", "smb-workers"])
def store(request, tmp_path):
    """The local folder, Samba, and Samba with small files' uploads in worker
    processes (as a mount does it): the same answers through the process boundary."""
    if request.param == "local":
        root = tmp_path / "share"
        root.mkdir()
        s = LocalDirStore(str(root))
        s.disk = root
        yield s
        return
    import uuid

    from cscfs.credentials import Credentials
    from cscfs.remote import open_store

    rig = request.getfixturevalue("samba")
    name = f"c-{uuid.uuid4().hex[:10]}"
    rig.server_mkdir(name)
    s = open_store(rig.url(path=name), Credentials(rig.user, rig.password), timeout=5,
                   upload_processes=1 if request.param == "smb-workers" else 0)
    s.disk = rig.share_dir / name
    try:
        yield s
    finally:
        s.close()


def test_stat_and_scandir(store):
    store.mkdir("d", 0o755)
    store.upload("d/f.txt", [b"abc"], None, 0o640, 1_700_000_000_000_000_000)
    st = store.stat("d/f.txt")
    assert (st.name, st.kind, st.size) == ("f.txt", "file", 3)
    assert st.mode == (0o640 if store.stores_modes else 0o644)
    assert st.mtime_ns == 1_700_000_000_000_000_000
    entries = {e.name: e for e in store.scandir("d")}
    assert entries["f.txt"].fingerprint == st.fingerprint
    assert store.stat("").kind == "dir"
    assert store.stat("d").kind == "dir"


def test_read_ranges(store):
    data = os.urandom(10_000)
    store.upload("f", [data[:4000], data[4000:]], None, 0o644, 10**18)
    assert store.read("f", 0, 10) == data[:10]
    assert store.read("f", 9_990, 100) == data[9_990:]
    assert store.read("f", 20_000, 10) == b""


def test_a_big_upload_arrives_whole_with_its_time(store):
    # Bigger than one SMB message: written in several, unlike a small file's one compound.
    data = os.urandom((3 << 20) + 12_345)
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    st = store.upload("big", chunks, None, 0o644, 1_600_000_000_123_456_700)
    assert (st.size, st.mtime_ns) == (len(data), 1_600_000_000_123_456_700)
    assert st.fingerprint == store.stat("big").fingerprint == store.scandir("")[0].fingerprint
    assert (store.disk / "big").read_bytes() == data
    assert store.read("big", 5, 3 << 20) == data[5:5 + (3 << 20)]

    def broken():
        yield from chunks[:2]
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        store.upload("big", broken(), st.fingerprint, 0o644, 10**18)
    assert (store.disk / "big").read_bytes() == data
    assert not any(n.startswith(TEMP_PREFIX) for n in os.listdir(store.disk))


def test_upload_checks_the_expected_fingerprint(store):
    first = store.upload("f", [b"one"], None, 0o644, 10**18)
    with pytest.raises(errors.Changed):
        store.upload("f", [b"again"], None, 0o644, 10**18)  # must not exist
    second = store.upload("f", [b"two"], first.fingerprint, 0o644, 2 * 10**18)
    assert store.read("f", 0, 10) == b"two"
    with pytest.raises(errors.Changed) as exc:
        store.upload("f", [b"three"], first.fingerprint, 0o644, 10**18)
    assert exc.value.current.fingerprint == second.fingerprint
    assert store.read("f", 0, 10) == b"two"
    store.remove("f")
    with pytest.raises(errors.Changed) as exc:
        store.upload("f", [b"four"], second.fingerprint, 0o644, 10**18)
    assert exc.value.current is None


def test_upload_over_a_racy_base_checks_its_content(store):
    """A base recorded within a clock tick of its mtime may hide a same-size write
    in that tick: given the base's content hash, the upload replaces only that
    content, also where the fingerprint still matches."""
    import hashlib

    first = store.upload("f", [b"one"], None, 0o644, 10**18)
    other = hashlib.sha256(b"two").hexdigest()  # what the server would hold after such a write
    with pytest.raises(errors.Changed) as exc:
        store.upload("f", [b"ours"], first.fingerprint, 0o644, 2 * 10**18, expected_sha=other)
    assert exc.value.current.fingerprint == first.fingerprint
    assert store.read("f", 0, 10) == b"one"
    store.upload("f", [b"ours"], first.fingerprint, 0o644, 2 * 10**18,
                 expected_sha=hashlib.sha256(b"one").hexdigest())
    assert store.read("f", 0, 10) == b"ours"
    assert not [n for n in os.listdir(store.disk) if n.startswith(TEMP_PREFIX)]


def test_failed_upload_leaves_no_partial_file(store):
    def broken():
        yield b"first half"
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        store.upload("f", broken(), None, 0o644, 10**18)
    assert [e.name for e in store.scandir("")] == []
    assert not any(n.startswith(TEMP_PREFIX) for n in os.listdir(store.disk))


def test_rename_replace_and_noreplace(store):
    store.upload("a", [b"a"], None, 0o644, 10**18)
    store.upload("b", [b"b"], None, 0o644, 10**18)
    with pytest.raises(errors.AlreadyExists):
        store.rename("a", "b", replace=False)
    store.rename("a", "b", replace=True)
    assert store.read("b", 0, 1) == b"a"
    store.mkdir("d", 0o755)
    store.rename("d", "e", replace=False)
    assert store.stat("e").kind == "dir"


def test_errors_are_classified(store):
    with pytest.raises(errors.NotFound):
        store.stat("missing")
    with pytest.raises(errors.NotFound):
        store.read("missing", 0, 1)
    store.mkdir("d", 0o755)
    with pytest.raises(errors.AlreadyExists):
        store.mkdir("d", 0o755)
    store.upload("d/f", [b"x"], None, 0o644, 10**18)
    with pytest.raises(errors.NotEmpty):
        store.rmdir("d")
    store.remove("d/f")
    store.rmdir("d")
    with pytest.raises(errors.NotFound):
        store.remove("d/f")


def test_symlink_chmod_mtime_space(store):
    if store.stores_modes:
        st = store.symlink("target/path", "ln")
        assert st.kind == "symlink" and st.target == "target/path"
    else:  # SMB: refused with a permanent error, not taken and lost
        with pytest.raises(errors.RemoteError) as exc:
            store.symlink("target/path", "ln")
        assert exc.value.errno == errno.EPERM
    store.upload("f", [b"x"], None, 0o644, 10**18)
    assert store.chmod("f", 0o600).mode == (0o600 if store.stores_modes else 0o644)
    assert store.set_mtime("f", 123_456_789_000).mtime_ns == 123_456_789_000
    space = store.space()
    assert space.total_bytes > 0 and space.free_bytes >= 0


def test_owners_and_special_files(store):
    store.upload("f", [b"x"], None, 0o644, 10**18)
    if isinstance(store, LocalDirStore):
        disk = os.lstat(store.disk / "f")
        assert (store.stat("f").uid, store.stat("f").gid) == (disk.st_uid, disk.st_gid)
        st = store.mknod("p", "fifo", 0o640, 0)
        assert (st.kind, st.mode) == ("fifo", 0o640)
        assert [e.kind for e in store.scandir("") if e.name == "p"] == ["fifo"]
        if os.geteuid() == 0:
            assert store.can_own(65534, 65533)
            assert (store.chown("p", 65534, 65533).uid, store.stat("p").gid) == (65534, 65533)
            st = store.upload("g", [b"y"], None, 0o4755, 10**18, owner=(65534, 65534))
            assert (st.uid, st.gid, st.mode) == (65534, 65534, 0o4755)  # set-ID kept
            dev = store.mknod("d", "chardev", 0o600, os.makedev(1, 3))
            assert (dev.kind, dev.rdev) == ("chardev", os.makedev(1, 3))
    else:  # SMB: no owners (the mounting user's), no special files
        assert store.stat("f").uid is None
        assert not store.can_own(65534, 65534) and store.can_own(os.getuid(), os.getgid())
        assert not store.can_mknod("fifo")
        for call in (lambda: store.mknod("p", "fifo", 0o644, 0),
                     lambda: store.chown("f", 65534, 65534)):
            with pytest.raises(errors.RemoteError) as exc:
                call()
            assert exc.value.errno == errno.EPERM


def test_a_daemon_that_is_not_root_gives_items_only_to_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    monkeypatch.setattr(os, "getgroups", lambda: [1000, 27])
    store = LocalDirStore(str(tmp_path))
    assert store.can_own(1000, 27) and store.can_own(-1, 1000)
    assert not store.can_own(65534, 1000) and not store.can_own(1000, 65534)
    assert store.can_mknod("fifo") and store.can_mknod("socket")
    assert not store.can_mknod("chardev")  # devices need CAP_MKNOD


def test_a_missing_share_is_unavailable_not_missing(tmp_path):
    store = LocalDirStore(str(tmp_path / "unmounted-share"))
    with pytest.raises(errors.Unavailable):
        store.stat("")
    with pytest.raises(errors.Unavailable):
        store.scandir("docs")


def test_remove_if_deletes_only_the_expected_version(store):
    from cscfs.remote.base import remove_if

    first = store.upload("f", [b"one"], None, 0o644, 10**18)
    second = store.upload("f", [b"two!"], first.fingerprint, 0o644, 2 * 10**18)
    now = remove_if(store, "f", first.fingerprint)
    assert now is not None and now.fingerprint.size == second.size
    assert store.read("f", 0, 10) == b"two!"
    assert [e.name for e in store.scandir("")] == ["f"]
    assert remove_if(store, "f", second.fingerprint) is None
    assert store.scandir("") == []
    assert remove_if(store, "f", second.fingerprint) is None  # gone already: fine


def test_remove_if_with_a_racy_base_lets_the_content_decide(store):
    """Same size, same mtime, same file: only the content tells two versions apart."""
    import hashlib

    from cscfs.remote.base import remove_if

    first = store.upload("f", [b"one"], None, 0o644, 10**18)
    now = remove_if(store, "f", first.fingerprint, hashlib.sha256(b"two").hexdigest())
    assert now is not None and store.read("f", 0, 10) == b"one"  # not the version we knew
    assert [e.name for e in store.scandir("")] == ["f"]
    assert remove_if(store, "f", first.fingerprint, hashlib.sha256(b"one").hexdigest()) is None
    assert store.scandir("") == []
