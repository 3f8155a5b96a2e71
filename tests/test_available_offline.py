"""Available offline: what is pinned (the whole mount by default) is filled in the
background after mount and kept current, so that with the link cut every pinned
name lists and every pinned file reads as the server had it.

Over a folder server and over real Samba, through real mounts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import Mounted, cscfs, require_fuse, wait_for

NAMES = ["plain.txt", "with space.txt", "naïve café.txt", "Ünïcödé ✓.md"]


def make_tree(root: Path, big: int = 2, big_size: int = 1 << 20) -> dict[str, str]:
    """Nested folders, odd names, a few MiB-sized files; path -> sha256."""
    files = {}
    for folder in ["", "a", "a/b c", "a/b c/deep ü", "empty-not"]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(NAMES):
            data = f"{folder}/{name} {i}\n".encode() * (i + 1)
            (root / folder / name).write_bytes(data)
            files[os.path.join(folder, name)] = hashlib.sha256(data).hexdigest()
    (root / "empty").mkdir(exist_ok=True)
    for i in range(big):
        data = os.urandom(big_size)
        (root / "a" / f"big {i}.bin").write_bytes(data)
        files[f"a/big {i}.bin"] = hashlib.sha256(data).hexdigest()
    return files


def folders_of(root: Path) -> dict[str, list[str]]:
    return {os.path.relpath(d, root): sorted(names + subdirs)
            for d, subdirs, names in os.walk(root)}


def offline_view(mp: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    files = {}
    for d, _, names in os.walk(mp):
        for name in names:
            p = Path(d) / name
            files[os.path.relpath(p, mp)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files, folders_of(mp)


def filled(m) -> bool:
    p = m.status()["available_offline"]
    return p["activity"] == "complete" and p["files_done"] == p["files_total"] > 0


def _config(tmp_path, text: str) -> None:
    cfg = tmp_path / "config" / "cscfs" / "config.toml"
    cfg.write_text(cfg.read_text() + text)


@pytest.fixture
def tree_server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    return root, make_tree(root)


def test_a_folder_server_is_available_offline_untouched(tmp_path, tree_server, env_dirs):
    require_fuse()
    root, files = tree_server
    m = Mounted(root, tmp_path / "mnt", tmp_path / "data", 0.2)
    try:
        wait_for(lambda: filled(m), 30, what="the fill")
        p = m.status()["available_offline"]
        assert p["files_total"] == len(files) and p["bytes_done"] == p["bytes_total"]
        assert "available offline:" in cscfs("status", str(m.mountpoint)).stdout
        cscfs("offline", str(m.mountpoint))
        got_files, got_folders = offline_view(m.mountpoint)
        assert got_files == files
        assert got_folders == folders_of(root)
        # A new file in a folder never opened by anyone, while offline.
        (m.mountpoint / "a" / "b c" / "deep ü" / "new offline.txt").write_text("made offline")
        cscfs("online", str(m.mountpoint))
        wait_for(lambda: (root / "a" / "b c" / "deep ü" / "new offline.txt").exists(), 10,
                 what="the upload")
        assert cscfs("check", str(m.mountpoint)).returncode == 0
    finally:
        m.unmount(force=True)


def test_samba_is_available_offline_and_a_cut_leaves_everything_readable(
        tmp_path, samba, smb_share, env_dirs):
    require_fuse()
    files = make_tree(smb_share.root)
    name = smb_share.url.rsplit("/", 1)[1]
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2,
                source=samba.url(host=samba.wire_host, path=name),
                extra=("--credentials", str(smb_share.credentials)))
    try:
        wait_for(lambda: filled(m), 60, what="the fill")
        samba.cut()
        wait_for(lambda: m.status()["mode"] == "offline", 10, what="offline after the cut")
        got_files, got_folders = offline_view(m.mountpoint)
        expected = dict(files)
        expected.update({"hello.txt": hashlib.sha256(b"hello from the server\n").hexdigest(),
                         "docs/report.txt": hashlib.sha256(b"quarterly report v1\n").hexdigest()})
        assert got_files == expected
        assert got_folders == folders_of(smb_share.root)
        assert m.status()["available_offline"]["waiting_for"] == "offline"
    finally:
        samba.restore()
        m.unmount(force=True)


def test_a_fill_killed_with_sigkill_resumes_and_completes(tmp_path, samba, smb_share, env_dirs):
    require_fuse()
    files = make_tree(smb_share.root, big=24, big_size=4 << 20)  # 96 MiB
    name = smb_share.url.rsplit("/", 1)[1]
    samba.set_rtt(30)  # slow enough to stop it half-way (a slow link starts above 35)
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2,
                source=samba.url(host=samba.wire_host, path=name),
                extra=("--credentials", str(smb_share.credentials)))
    try:
        wait_for(lambda: 0 < m.status()["available_offline"]["bytes_done"] < 60 << 20, 60,
                 interval=0.02, what="a fill under way")
        os.kill(m.status()["pid"], signal.SIGKILL)
        time.sleep(0.5)
        m.mount()  # clears the dead mount, starts from what the first one left
        samba.set_rtt(0)
        wait_for(lambda: filled(m), 90, what="the fill after the restart")
        cscfs("offline", str(m.mountpoint))
        got, _ = offline_view(m.mountpoint)
        assert {k: v for k, v in got.items() if k in files} == files
        assert cscfs("check", str(m.mountpoint)).returncode == 0
    finally:
        samba.restore()
        m.unmount(force=True)


def test_a_change_on_the_server_is_in_the_cache_within_the_rescan_bound(
        tmp_path, smb_share, env_dirs):
    """Samba does not report changes made on its own disk: the periodic rescan does."""
    require_fuse()
    _config(tmp_path, "rescan_interval = 1.0\n")
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2,
                source=smb_share.url, extra=("--credentials", str(smb_share.credentials)))
    try:
        wait_for(lambda: filled(m), 30, what="the fill")
        (smb_share.root / "docs" / "report.txt").write_text("quarterly report v2, longer\n")
        (smb_share.root / "docs" / "new.txt").write_text("new on the server\n")
        time.sleep(4.0)  # the rescan bound (1 s) and a pass
        cscfs("offline", str(m.mountpoint))
        assert (m.mountpoint / "docs" / "report.txt").read_text() == "quarterly report v2, longer\n"
        assert (m.mountpoint / "docs" / "new.txt").read_text() == "new on the server\n"
    finally:
        m.unmount(force=True)


def test_a_pinned_set_over_the_quota_says_so_and_keeps_what_it_has(tmp_path, server, env_dirs):
    require_fuse()
    for i in range(5):
        (server / f"f{i}.bin").write_bytes(os.urandom(40_000))
    _config(tmp_path, 'cache_quota = "100000"\nquota_interval = 0.2\n')
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", 0.2)
    try:
        wait_for(lambda: m.status()["available_offline"]["over_quota"], 20, what="over quota")
        s = m.status()
        assert s["cached_bytes"] <= 100_000 and s["available_offline"]["files_done"] >= 2
        assert "do not all fit the cache quota" in cscfs("status", str(m.mountpoint)).stdout
        events = json.loads(cscfs("events", str(m.mountpoint), "--json").stdout)
        assert sum(1 for e in events if e["kind"] == "fill") == 1
        kept = [i for i in range(5)
                if os.getxattr(m.mountpoint / f"f{i}.bin", "user.cscfs.status") == b"cached"]
        time.sleep(1.0)  # several quota checks: pinned content is never evicted
        assert all(os.getxattr(m.mountpoint / f"f{i}.bin", "user.cscfs.status") == b"cached"
                   for i in kept)
    finally:
        m.unmount(force=True)


def test_always_offline_fills_at_once_on_a_fast_link(tmp_path, server, env_dirs):
    require_fuse()
    _config(tmp_path, "always_offline = true\n")
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", 0.2)
    try:
        assert m.status()["mode"] == "always-offline"
        wait_for(lambda: filled(m), 20, what="the first fill")
        assert (m.mountpoint / "docs" / "report.txt").read_text() == "quarterly report v1\n"
        # Later updates follow the background sync, not the filler.
        assert "background sync" in m.status()["available_offline"]["waiting_for"]
    finally:
        m.unmount(force=True)


def test_offline_edge_cases(tmp_path, server, env_dirs):
    """Overwriting a ghost offline updates its last known version; listing a folder
    nobody listed, unpinned, fails at once offline."""
    require_fuse()
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", 0.2)
    try:
        mp = m.mountpoint
        cscfs("unpin", str(mp))  # on demand from here on
        (server / "docs" / "ghost.txt").write_text("theirs, never read here\n")
        (server / "later").mkdir()
        wait_for(lambda: "ghost.txt" in os.listdir(mp / "docs") and "later" in os.listdir(mp),
                 10, what="the new names")
        assert os.getxattr(mp / "docs" / "ghost.txt", "user.cscfs.status") == b"ghost"
        cscfs("offline", str(mp))
        with open(mp / "docs" / "ghost.txt", "w") as f:  # O_TRUNC: no old content needed
            f.write("rewritten offline\n")
        with pytest.raises(OSError) as exc:
            os.listdir(mp / "later")
        assert exc.value.errno == errno.EHOSTDOWN
        cscfs("online", str(mp))
        wait_for(lambda: (server / "docs" / "ghost.txt").read_text() == "rewritten offline\n",
                 10, what="the update")
        assert m.status()["open_conflicts"] == 0
    finally:
        m.unmount(force=True)
