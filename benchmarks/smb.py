"""Workloads against a real Samba server (the test rig: smbd in a network namespace):
first byte and full read of an uncached big file, upload of changed small files, and
reintegration of offline changes once the link returns; each over the fast link
(veth, loopback speed) and at 50 ms RTT (the delaying TUN link).

The reference ("native") is a plain SMB client with no cache (smbprotocol): the limit
for reads and writes; it cannot work offline, so reintegration has no reference. Times
are reported in seconds or ms, and the ratio is reference time / target time (higher is
better, as for throughputs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import smbclient

from .targets import CscfsMount, RcloneMount

MiB = 1 << 20


class Share:
    """One folder on the rig's share: its files are written straight to the server's
    disk (not over SMB) and polled there to see what arrived."""

    def __init__(self, rig, host: str):
        self.rig, self.host = rig, host
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        rig.server_mkdir(self.name)
        self.dir = rig.share_dir / self.name

    def write_big(self, size: int) -> str:
        path = self.dir / "big.bin"
        block = os.urandom(MiB)
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(block)
        os.chown(path, self.rig.uid, self.rig.gid)
        return "big.bin"

    def write_small(self, count: int) -> None:
        self.rig.server_mkdir(f"{self.name}/small")
        for i in range(count):
            self.rig.server_write(f"{self.name}/small/f{i:04d}", b"0" * 4096)

    def arrived(self, count: int, tag: bytes) -> bool:
        for i in range(count):
            try:
                with open(self.dir / "small" / f"f{i:04d}", "rb") as f:
                    if not f.read(64).startswith(tag):
                        return False
            except FileNotFoundError:
                return False
        return True

    def wait_arrived(self, count: int, tag: bytes, timeout: float) -> float | None:
        """Seconds until all `count` files hold `tag` on the server's disk; None past
        the timeout."""
        t = time.perf_counter()
        while not self.arrived(count, tag):
            if time.perf_counter() - t > timeout:
                return None
            time.sleep(0.05)
        return time.perf_counter() - t


def content(tag: bytes, i: int) -> bytes:
    return (tag + b"-%d-" % i).ljust(4096, b"x")


def read_through(path: Path) -> tuple[float, float]:
    """(ms to the first byte, MB/s for the whole file) reading a file as cat would."""
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        n += len(f.read(1))
        first = time.perf_counter() - t
        while chunk := f.read(MiB):
            n += len(chunk)
    return first * 1000, n / MiB / (time.perf_counter() - t)


def write_changes(root: Path, count: int, tag: bytes, timeout: float) -> bool:
    """Rewrite the small files through a mount, in a child process so that a mount
    that blocks while the link is down cannot hang the benchmark."""
    code = ("import sys\nroot, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()\n"
            "for i in range(n):\n"
            "    with open(f'{root}/small/f{i:04d}', 'wb') as f:\n"
            "        f.write((tag + b'-%d-' % i).ljust(4096, b'x'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(count), tag.decode()])
    try:
        return proc.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        proc.kill()  # it may sit in a FUSE request until the mount goes: do not wait
        _blocked.append(proc)
        return False


_blocked: list[subprocess.Popen] = []  # writers killed while stuck in a mount: reaped later


class RawClient:
    """smbprotocol with no cache: the reference."""

    def __init__(self, rig, share: Share):
        self.kw = dict(username=rig.user, password=rig.password, connection_cache={})
        self.root = f"\\\\{share.host}\\{rig.share}\\{share.name}"
        smbclient.register_session(share.host, **self.kw)

    def read_big(self, name: str) -> tuple[float, float]:
        t = time.perf_counter()
        n = 0
        with smbclient.open_file(f"{self.root}\\{name}", "rb", **self.kw) as f:
            n += len(f.read(1))
            first = time.perf_counter() - t
            while chunk := f.read(MiB):
                n += len(chunk)
        return first * 1000, n / MiB / (time.perf_counter() - t)

    def write_small(self, count: int, tag: bytes) -> float:
        t = time.perf_counter()
        for i in range(count):
            with smbclient.open_file(f"{self.root}\\small\\f{i:04d}", "wb", **self.kw) as f:
                f.write(content(tag, i))
        return time.perf_counter() - t

    def close(self) -> None:
        smbclient.reset_connection_cache(connection_cache=self.kw["connection_cache"])


def rclone_env(rig, host: str) -> dict:
    obscured = subprocess.run(["rclone", "obscure", rig.password], capture_output=True,
                              text=True, check=True).stdout.strip()
    return {"RCLONE_SMB_HOST": host, "RCLONE_SMB_USER": rig.user, "RCLONE_SMB_PASS": obscured}


def run_link(rig, base: Path, link: str, targets: list[str], big: int, small: int,
             timeout: float, write_timeout: float) -> dict[str, dict[str, float | None]]:
    """One run of every SMB workload over one link ("fast" or "50 ms") for each target."""
    host = rig.fast_host if link == "fast" else rig.wire_host
    if link == "fast":
        cut, restore = rig.veth_down, rig.veth_up
    else:
        rig.set_rtt(50)
        cut, restore = rig.cut, lambda: (rig.restore(), rig.set_rtt(50))
    out: dict[str, dict[str, float | None]] = {}
    for target in targets:
        share = Share(rig, host)
        big_name = share.write_big(big)
        share.write_small(small)
        res: dict[str, float | None] = {}
        if target == "native":
            raw = RawClient(rig, share)
            try:
                res["first byte ms"], res["full read MB/s"] = raw.read_big(big_name)
                res["upload s"] = raw.write_small(small, b"up")
            finally:
                raw.close()
            res["reintegrate s"] = None
            out[target] = res
            continue
        where = base / f"{target.split()[0]}-{link.split()[0]}-{uuid.uuid4().hex[:6]}"
        if target == "cscfs":
            # At 50 ms the default slow_link_ms (35) would put cscfs in slow-link mode,
            # where reads do not fetch and uploads wait for a sync: measure it online.
            mount = CscfsMount(where, rig.url(host=host, path=share.name),
                               password=rig.password,
                               config=("slow_link_ms = 100\n" if link != "fast" else "")
                               + "offline_by_default = false\n")  # on demand: see ON_DEMAND
        else:
            mount = RcloneMount(where, f":smb:{rig.share}/{share.name}", rclone_env(rig, host))
        try:
            res["first byte ms"], res["full read MB/s"] = read_through(mount.path / big_name)
            for i in range(small):  # cache them: the next writes are changes of known files
                (mount.path / "small" / f"f{i:04d}").read_bytes()
            t = time.perf_counter()
            ok = (write_changes(mount.path, small, b"up", write_timeout)
                  and share.wait_arrived(small, b"up", timeout) is not None)
            res["upload s"] = time.perf_counter() - t if ok else None
            cut()
            try:
                if isinstance(mount, CscfsMount):
                    mount.wait_mode("offline")
                else:
                    time.sleep(3)
                ok = write_changes(mount.path, small, b"off", write_timeout)
            finally:
                restore()
            res["reintegrate s"] = share.wait_arrived(small, b"off", timeout) if ok else None
        except Exception:
            log = where / ("data/daemon.log" if target == "cscfs" else "rclone.log")
            if log.exists():
                print("".join(log.read_text().splitlines(True)[-25:]), file=sys.stderr)
            raise
        finally:
            mount.close()
            for proc in _blocked:
                proc.wait(30)  # the mount is gone, so is its request
            _blocked.clear()
        out[target] = res
    return out
