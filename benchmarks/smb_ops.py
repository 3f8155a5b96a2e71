"""Per-operation latency and 100 MiB throughput of the SMB store against a real Samba
server, beside raw smbprotocol in the same run, on the fast link and at 50 ms RTT.

    python -m benchmarks.smb_ops [--quick]      (root; needs the test rig's Samba)

Prints a markdown table with the machine, the date and the versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import smbclient

from cscfs.credentials import Credentials
from cscfs.remote import open_store
from tests.linklab import SambaRig

MiB = 1 << 20


def timed(fn, n: int) -> float:
    """Median milliseconds of n calls."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run(rig: SambaRig, host: str, n: int, big: int) -> dict[str, tuple[float, float]]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    rig.server_mkdir(f"{name}/many")
    for i in range(1000):
        rig.server_write(f"{name}/many/f{i:04d}", b"x")
    rig.server_write(f"{name}/small", os.urandom(4096))
    store = open_store(rig.url(host=host, path=name), Credentials(rig.user, rig.password),
                       timeout=30)
    kw = dict(username=rig.user, password=rig.password, connection_cache={})
    raw = f"\\\\{host}\\share\\{name}"
    smbclient.register_session(host, **kw)
    data = os.urandom(big)
    counter = iter(range(10**6))

    def raw_read():
        with smbclient.open_file(raw + "\\small", "rb", **kw) as f:
            f.read(4096)

    def raw_write():
        with smbclient.open_file(raw + f"\\w{next(counter)}", "wb", **kw) as f:
            f.write(data[:4096])

    def raw_list():
        for e in smbclient.scandir(raw + "\\many", **kw):
            e.smb_info

    def raw_big_write():
        with smbclient.open_file(raw + "\\big-raw", "wb", **kw) as f:
            for pos in range(0, big, MiB):
                f.write(data[pos:pos + MiB])

    def raw_big_read():
        with smbclient.open_file(raw + "\\big-raw", "rb", **kw) as f:
            while f.read(MiB):
                pass

    def store_big_write():
        store.upload("big", (data[p:p + MiB] for p in range(0, big, MiB)), None, 0o644,
                     time.time_ns())

    def store_big_read():
        for pos in range(0, big, MiB):
            store.read("big", pos, MiB)

    out = {
        "stat": (timed(lambda: store.stat("small"), n),
                 timed(lambda: smbclient.stat(raw + "\\small", **kw), n)),
        "read 4 KiB": (timed(lambda: store.read("small", 0, 4096), n), timed(raw_read, n)),
        "write 4 KiB (new file)": (
            timed(lambda: store.upload(f"s{next(counter)}", [data[:4096]], None, 0o644,
                                       time.time_ns()), n),
            timed(raw_write, n)),
        "list 1,000 entries": (timed(lambda: store.scandir("many"), max(3, n // 5)),
                               timed(raw_list, max(3, n // 5))),
    }
    t_sw = timed(store_big_write, 1) / 1000
    t_rw = timed(raw_big_write, 1) / 1000
    t_sr = timed(store_big_read, 1) / 1000
    t_rr = timed(raw_big_read, 1) / 1000
    out[f"write {big // MiB} MiB (MiB/s)"] = (big / MiB / t_sw, big / MiB / t_rw)
    out[f"read {big // MiB} MiB (MiB/s)"] = (big / MiB / t_sr, big / MiB / t_rr)
    store.close()
    smbclient.reset_connection_cache(connection_cache=kw["connection_cache"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, 20 MiB transfers")
    args = ap.parse_args(argv)
    n, big = (5, 20 * MiB) if args.quick else (20, 100 * MiB)
    reason = SambaRig.missing()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    rig = SambaRig(Path(tempfile.mkdtemp(prefix="cscfs-bench-")))
    rig.start()
    try:
        fast = run(rig, rig.fast_host, n, big)
        rig.set_rtt(50)
        slow = run(rig, rig.wire_host, max(3, n // 4), big)
    finally:
        rig.stop()
    print(f"SMB store vs raw smbprotocol; {platform.node()} {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"smbprotocol {version('smbprotocol')}, Samba in a netns; medians, ms unless noted\n")
    print("| operation | fast link: cscfs store | raw smbprotocol | 50 ms RTT: cscfs store | raw smbprotocol |")
    print("|---|---|---|---|---|")
    for op in fast:
        print(f"| {op} | {fast[op][0]:.1f} | {fast[op][1]:.1f} | {slow[op][0]:.1f} | {slow[op][1]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
