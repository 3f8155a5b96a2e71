"""The cache quota over a real mount: least-recently-used clean, unpinned content
goes; pinned and dirty content stays; when that is not enough, one warning event."""

from __future__ import annotations

import json
import os

from .conftest import Mounted, cscfs, require_fuse, wait_for


def _status(path) -> bytes:
    return os.getxattr(path, "user.cscfs.status")


def _mount(tmp_path, server, quota, extra=""):
    require_fuse()
    cfg = tmp_path / "config" / "cscfs" / "config.toml"
    cfg.write_text(cfg.read_text() + f'cache_quota = "{quota}"\nquota_interval = 0.2\n{extra}')
    return Mounted(server, tmp_path / "mnt", tmp_path / "data", write_back_delay=600)


def test_lru_eviction_spares_pinned_and_dirty_files(tmp_path, server, env_dirs):
    for i in range(6):
        (server / f"f{i}.bin").write_bytes(os.urandom(20_000))
    # Cached on demand (nothing pinned at first), as `cscfs unpin` of the mount makes it.
    m = _mount(tmp_path, server, 60_000, "offline_by_default = false\n")
    try:
        mp = m.mountpoint
        cscfs("pin", str(mp / "f0.bin"))
        (mp / "dirty.bin").write_bytes(os.urandom(20_000))  # not uploaded for 10 minutes
        for i in range(6):
            (mp / f"f{i}.bin").read_bytes()
        wait_for(lambda: m.status()["cached_bytes"] <= 60_000, 10, what="eviction")
        assert m.status()["cache_quota_bytes"] == 60_000
        assert _status(mp / "f0.bin") == b"cached"      # pinned
        assert _status(mp / "dirty.bin") == b"dirty"    # the only copy of new work
        assert _status(mp / "f5.bin") == b"cached"      # the most recently used
        evicted = [i for i in range(1, 5) if _status(mp / f"f{i}.bin") == b"ghost"]
        assert evicted, "nothing was evicted"
        # An evicted file is a ghost: opened online, it comes back.
        assert (mp / f"f{evicted[0]}.bin").read_bytes() == (server / f"f{evicted[0]}.bin").read_bytes()
        assert cscfs("check", str(mp)).returncode == 0
    finally:
        m.unmount(force=True)


def test_a_quota_that_cannot_be_met_warns_once(tmp_path, server, env_dirs):
    m = _mount(tmp_path, server, 1000)
    try:
        (m.mountpoint / "dirty.bin").write_bytes(os.urandom(5000))
        wait_for(lambda: any(e["kind"] == "quota" for e in _events(m)), 10, what="a warning")
        import time

        time.sleep(1.0)  # five more checks
        assert sum(1 for e in _events(m) if e["kind"] == "quota") == 1
        assert _status(m.mountpoint / "dirty.bin") == b"dirty"
    finally:
        m.unmount(force=True)


def _events(m):
    return json.loads(cscfs("events", str(m.mountpoint), "--json").stdout)
