"""Names as long as the server takes them: they upload, survive a conflict (the
copy's name shortened to fit, recognisable, its extension kept), and a name the
server refuses is reported once and retried with backoff, not for ever in a loop.

Over a folder (255 bytes of UTF-8) and over real Samba (255 UTF-16 units by the
protocol; Samba keeps names on a Linux disk, so 255 bytes there as well)."""

from __future__ import annotations

import errno
import json
import logging
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscfs import errors
from cscfs.metadata import ROOT_INO
from cscfs.remote import LocalDirStore
from cscfs.remote.base import TEMP_PREFIX, temp_name
from cscfs.remote.smb import SMBStore
from sync.conflicts import conflict_name
from sync.names import fit, utf8_bytes, utf16_units
from sync.vocabulary import EVENT_UPLOAD
from sync.writeback import RETRY_AFTER, RETRY_MAX

from .conftest import VfsRunner, cscfs, wait_for
from .fsapi import VfsFS

WHEN = 1_795_000_000
# 255 bytes of UTF-8 each: as long as a Linux folder (and Samba's disk) allows.
FOLDER_NAMES = ["é" * 127 + "x", "é" * 125 + "x.odt"]
SMB_NAMES = FOLDER_NAMES + [
    "a" * 251 + ".txt",      # 255 UTF-16 units (and bytes)
    "😀" * 62 + "abc.txt",   # characters outside the BMP (surrogate pairs), 255 bytes
]
# A 255-unit name with a character outside the BMP is over 255 bytes: Samba on Linux
# refuses it (STATUS_OBJECT_NAME_INVALID), so it cannot be among the names above.

MEASURES = {"folder": (LocalDirStore.name_max, LocalDirStore.name_len),
            "smb": (SMBStore.name_max, SMBStore.name_len)}


# ------------------------------------------------------------------ name functions
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                min_size=1, max_size=300)


@given(names, st.sampled_from(["folder", "smb"]), st.integers(1, 99))
def test_conflict_copy_names_fit_the_server(name, server, n):
    max_len, measure = MEASURES[server]
    copy = conflict_name(name, "host-1", WHEN, n, max_len=max_len, measure=measure)
    assert measure(copy) <= max_len
    copy.encode("utf-8")  # strict: no broken character
    copy.encode("utf-16-le")
    assert " (conflict host-1 " in copy
    assert conflict_name(copy, "other", WHEN + 60, max_len=max_len,
                         measure=measure).count("(conflict ") == 1  # never a copy of a copy
    stem, dot, ext = name.rpartition(".")
    if dot and stem and ext and len(ext) <= 10:
        assert copy.endswith(f").{ext}")
        assert stem.startswith(copy[:copy.index(" (conflict ")])


def test_conflict_copy_of_a_long_name_keeps_its_start_and_extension():
    name = "é" * 125 + "x.odt"
    copy = conflict_name(name, "host", WHEN, max_len=255, measure=utf8_bytes)
    assert utf8_bytes(copy) in (254, 255) and copy.endswith(").odt")
    assert copy.startswith("é" * 100) and "(conflict host " in copy
    # Short names are not touched.
    assert conflict_name("report.odt", "h", WHEN, max_len=255, measure=utf8_bytes) == \
        conflict_name("report.odt", "h", WHEN)
    # A name that is mostly "extension" is cut like a stem.
    long_ext = conflict_name("a." + "b" * 252, "h", WHEN, max_len=255, measure=utf8_bytes)
    assert long_ext.startswith("a.bbb") and utf8_bytes(long_ext) <= 255


def test_cuts_fall_between_characters():
    # A surrogate pair, a 4-byte UTF-8 character and a combining accent are never split.
    assert fit("", "a" + "😀" * 3, "", 4, utf16_units) == "a😀"
    assert fit("", "a" + "😀" * 3, "", 4, utf8_bytes) == "a"
    assert fit("", "abe\u0301", "", 4, utf8_bytes) == "ab"
    assert fit("h-", "xyz", ".t", 5, len) == "h-x.t"


@pytest.mark.parametrize("server", ["folder", "smb"])
@pytest.mark.parametrize("name", SMB_NAMES + ["é" * 140, "😀" * 127 + "a"])
def test_temporary_names_fit_whatever_the_name(server, name):
    store = {"folder": LocalDirStore, "smb": SMBStore}[server]
    for tag in ("tmp", "del"):
        tmp = temp_name(store, f"docs/{name}", tag)
        folder, _, base = tmp.partition("/")
        assert folder == "docs" and base.startswith(TEMP_PREFIX) and base.endswith("." + tag)
        assert store.name_len(base) <= store.name_max
        hint = base[len(TEMP_PREFIX) + 13:-len(tag) - 1]  # after the token and its dash
        assert hint and name.startswith(hint)
    assert temp_name(store, name, "tmp") != temp_name(store, name, "tmp")


def test_a_folder_refuses_a_name_over_255_bytes_at_once(tmp_path):
    store = LocalDirStore(str(tmp_path))
    store.check_name("é" * 127 + "x")
    with pytest.raises(errors.InvalidName) as exc:
        store.check_name("é" * 128)
    assert exc.value.errno == errno.ENAMETOOLONG


# --------------------------------------------------------- failure report, backoff
class RefusingStore(LocalDirStore):
    """Refuses uploads of names holding "refused" while `refuse` is set."""

    refuse = True

    def upload(self, path, chunks, expected, mode, mtime_ns, owner=None, expected_sha=None):
        if self.refuse and "refused" in path:
            raise errors.PermissionDenied(f"{path}: access denied")
        return super().upload(path, chunks, expected, mode, mtime_ns, owner, expected_sha)


def test_a_failing_upload_is_reported_once_and_retried_with_backoff(tmp_path, server,
                                                                     caplog):
    caplog.set_level(logging.INFO)
    store = RefusingStore(str(server))
    runner = VfsRunner(server, tmp_path / "data", store=store)
    try:
        fs, client = VfsFS(runner), runner.client
        wb = client.writeback

        def failures():
            return runner.call_sync(client.status)["upload_failures"]

        def upload_events():
            return [e["reason"] for e in runner.state.events() if e["kind"] == EVENT_UPLOAD]

        fs.write("refused.txt", b"kept here until the server takes it\n")
        started = time.time()
        wait_for(lambda: failures(), what="the failure in the status")
        [failure] = failures()
        assert failure["path"] == "refused.txt" and failure["reason"] == "access denied"
        assert started - 1 <= failure["since"] <= time.time()
        item = runner.call(runner.vfs.lookup, ROOT_INO, "refused.txt")

        def retry_in():
            return runner.call_sync(lambda: wb.due[item.ino]) - time.monotonic()

        assert RETRY_AFTER - 2 < retry_in() <= RETRY_AFTER
        for attempt in (2, 3):  # tried again: the wait doubles, nothing is reported again
            runner.call_sync(wb.again, item)
            wait_for(lambda: wb.failures[item.ino].attempts == attempt, what="a retry")
            assert 2 ** (attempt - 1) * RETRY_AFTER - 2 < retry_in() <= RETRY_MAX
        assert len(failures()) == 1
        assert upload_events() == ["refused.txt: upload failed: access denied"]
        errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors_logged) == 1 and "refused.txt" in errors_logged[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)

        store.refuse = False
        runner.call_sync(wb.again, item)
        wait_for(lambda: not failures(), what="the failure cleared")
        assert (server / "refused.txt").read_bytes() == b"kept here until the server takes it\n"
        assert upload_events()[1:] == ["refused.txt: uploaded after 3 failed attempts"]
        assert runner.call_sync(client.status)["pending_uploads"] == 0
    finally:
        runner.stop()


# ------------------------------------------------------------------- over mounts
@pytest.fixture(params=["folder", "smb"])
def long_mount(request):
    return request.getfixturevalue("mounted" if request.param == "folder" else "smb_mounted")


def _conflicts(m) -> list[dict]:
    return json.loads(cscfs("conflicts", str(m.mountpoint), "--json").stdout)


def test_longest_names_upload_intact_and_survive_a_conflict(long_mount):
    m = long_mount
    smb = m.source.startswith("smb://")
    max_len, measure = MEASURES["smb" if smb else "folder"]
    names = SMB_NAMES if smb else FOLDER_NAMES
    seeded = set(os.listdir(m.server))
    for i, name in enumerate(names):
        (m.mountpoint / name).write_bytes(f"first {i}\n".encode())
    wait_for(lambda: all((m.server / n).is_file() and (m.server / n).read_bytes()
                         == f"first {i}\n".encode() for i, n in enumerate(names)),
             timeout=20, what="the uploads")
    assert m.status()["upload_failures"] == []

    cscfs("offline", str(m.mountpoint))
    for i, name in enumerate(names):
        (m.mountpoint / name).write_bytes(f"ours {i}\n".encode())
    time.sleep(0.05)
    for i, name in enumerate(names):
        (m.server / name).write_bytes(f"theirs, longer {i}\n".encode())
    assert cscfs("sync", str(m.mountpoint), check=False).returncode == 3

    conflicts = {c["path"]: c for c in _conflicts(m)}
    assert set(conflicts) == set(names)
    copies = set()
    for i, name in enumerate(names):
        assert conflicts[name]["kind"] == "update/update"
        copy = conflicts[name]["copy_path"]
        copies.add(copy)
        assert (m.server / name).read_bytes() == f"theirs, longer {i}\n".encode()
        assert (m.server / copy).read_bytes() == f"ours {i}\n".encode()
        assert (m.mountpoint / copy).read_bytes() == f"ours {i}\n".encode()
        assert measure(copy) <= max_len and utf8_bytes(copy) <= 255
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        assert " (conflict " in copy and copy.endswith(")" + (f".{ext}" if ext else ""))
        assert copy.startswith(stem[:40])
    # Both versions of each, nothing else: no temporary name left behind.
    assert set(os.listdir(m.server)) == seeded | set(names) | copies
    cscfs("online", str(m.mountpoint))
    wait_for(lambda: m.status()["mode"] == "online", what="online")
    status = m.status()
    assert status["pending_uploads"] == 0 and status["upload_failures"] == []


def test_a_name_over_the_folders_limit_is_refused_at_create(mounted):
    with pytest.raises(OSError) as exc:
        (mounted.mountpoint / ("é" * 128)).write_bytes(b"x")
    assert exc.value.errno == errno.ENAMETOOLONG


def test_a_name_samba_refuses_is_reported_once_then_a_rename_uploads_it(smb_mounted):
    """140 'é' are 140 UTF-16 units (SMB allows 255) but 280 bytes on Samba's disk:
    the server refuses the upload. The file stays here, the failure is shown once,
    and a shorter name makes it upload soon (not at the end of the backoff)."""
    m = smb_mounted
    long_name, short_name = "é" * 140, "é" * 100
    (m.mountpoint / long_name).write_bytes(b"refused by the server\n")
    wait_for(lambda: m.status()["upload_failures"], timeout=15, what="the failure reported")
    [failure] = m.status()["upload_failures"]
    assert failure["path"] == long_name and "refuses this name" in failure["reason"]
    text = cscfs("status", str(m.mountpoint)).stdout
    assert "failing uploads:" in text and "refuses this name" in text
    events = json.loads(cscfs("events", str(m.mountpoint), "--json").stdout)
    assert [e["kind"] for e in events].count("upload") == 1
    assert (m.mountpoint / long_name).read_bytes() == b"refused by the server\n"

    os.rename(m.mountpoint / long_name, m.mountpoint / short_name)
    wait_for(lambda: (m.server / short_name).is_file(), timeout=15, what="the upload")
    assert (m.server / short_name).read_bytes() == b"refused by the server\n"
    wait_for(lambda: not m.status()["upload_failures"], what="the failure cleared")
    log = (m.data_dir / "daemon.log").read_text()
    assert "Traceback" not in log
    assert log.count(f"upload of {long_name} failed") == 1
