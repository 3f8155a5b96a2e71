"""Available offline: the time from mount until a server tree (many small files in
folders, and one big file) is fully available offline, over the Samba rig on the fast
link and at 50 ms RTT.

The reference ("native") is a plain smbprotocol copy of the same tree to a local
folder, one file after another: the limit a client without parallel requests gets.
`rclone copy` (its default 4 transfers) is the other tool users would reach for.
cscfs is mounted with its defaults (the whole mount pinned) and timed until
`cscfs status` says every pinned file is complete.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import smbclient

from .smb import Share, rclone_env
from .targets import CscfsMount

MiB = 1 << 20
FOLDERS = 20


def make_tree(rig, share: Share, small: int, big: int) -> int:
    """`small` files of 4 KiB spread over FOLDERS folders, and `big` bytes in one file;
    returns the number of files."""
    for d in range(FOLDERS):
        rig.server_mkdir(f"{share.name}/d{d:02d}")
    for i in range(small):
        rig.server_write(f"{share.name}/d{i % FOLDERS:02d}/f{i:04d}.txt",
                         (b"%d " % i).ljust(4096, b"."))
    share.write_big(big)
    return small + 1


def raw_copy(rig, share: Share, dest: Path) -> float:
    kw = dict(username=rig.user, password=rig.password, connection_cache={})
    root = f"\\\\{share.host}\\{rig.share}\\{share.name}"
    smbclient.register_session(share.host, **kw)
    t = time.perf_counter()
    try:
        stack = [("", root)]
        while stack:
            rel, unc = stack.pop()
            (dest / rel).mkdir(parents=True, exist_ok=True)
            for entry in smbclient.scandir(unc, **kw):
                if entry.is_dir():
                    stack.append((os.path.join(rel, entry.name), f"{unc}\\{entry.name}"))
                    continue
                with smbclient.open_file(f"{unc}\\{entry.name}", "rb", **kw) as src, \
                        open(dest / rel / entry.name, "wb") as out:
                    while chunk := src.read(MiB):
                        out.write(chunk)
        return time.perf_counter() - t
    finally:
        smbclient.reset_connection_cache(connection_cache=kw["connection_cache"])


def cscfs_fill(rig, share: Share, where: Path, files: int, link: str, timeout: float
               ) -> float | None:
    config = "slow_link_ms = 100\n" if link != "fast" else ""  # online at 50 ms, as in smb.py
    t = time.perf_counter()
    mount = CscfsMount(where, rig.url(host=share.host, path=share.name), rig.password, config)
    try:
        while True:
            p = mount.status()["available_offline"]
            if p["activity"] == "complete" and p["files_done"] == p["files_total"] >= files:
                return time.perf_counter() - t
            if time.perf_counter() - t > timeout:
                return None
            time.sleep(0.05)
    finally:
        mount.close()


def rclone_copy(rig, share: Share, dest: Path, timeout: float) -> float | None:
    t = time.perf_counter()
    proc = subprocess.run(["rclone", "copy", f":smb:{rig.share}/{share.name}", str(dest)],
                          env={**os.environ, **rclone_env(rig, share.host)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    return time.perf_counter() - t if proc.returncode == 0 else None


def run_fill(rig, base: Path, link: str, targets: list[str], small: int, big: int,
             timeout: float) -> dict[str, dict[str, float | None]]:
    host = rig.fast_host if link == "fast" else rig.wire_host
    rig.set_rtt(0 if link == "fast" else 50)
    out: dict[str, dict[str, float | None]] = {}
    for target in targets:
        share = Share(rig, host)
        files = make_tree(rig, share, small, big)
        where = base / f"fill-{target.split()[0]}-{uuid.uuid4().hex[:6]}"
        where.mkdir(parents=True)
        if target == "native":
            seconds = raw_copy(rig, share, where / "copy")
        elif target == "cscfs":
            seconds = cscfs_fill(rig, share, where, files, link, timeout)
        else:
            seconds = rclone_copy(rig, share, where / "copy", timeout)
        out[target] = {"available offline s": seconds}
    return out
