"""The FUSE binding's ceiling beside native, in one run: the workloads where cscfs is
furthest from native, on a file system that answers from memory
(`cscfs.fuse_ceiling`). No FUSE file system on this binding gets past these figures.

    python -m benchmarks.ceiling [--runs N]     (root, for page-cache drops)

Prints a table of medians: native, the memory file system, and the memory file
system with the kernel's writeback cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .__main__ import MiB, drop_caches, seq_write

FILES = 10_000
STATS = 5_000
SEQ_BYTES = 1024 * MiB


def stats(d: Path) -> float:
    """stat of names the kernel knows (as after creating or reading them)."""
    for i in range(STATS):
        os.stat(d / f"f{i:05d}")
    t = time.perf_counter()
    for i in range(STATS):
        os.stat(d / f"f{i:05d}")
    return STATS / (time.perf_counter() - t)


def first_listing(d: Path) -> float:
    drop_caches()
    t = time.perf_counter()
    n = len(os.listdir(d))
    return n / (time.perf_counter() - t)


def workloads(d: Path) -> dict[str, float]:
    out = {"small stat/s": stats(d), "readdir entries/s": first_listing(d)}
    out["seq write MB/s"] = seq_write(d, SEQ_BYTES)
    (d / "seq.bin").unlink()
    return out


def native(base: Path) -> dict[str, float]:
    d = base / "native"
    d.mkdir()
    for i in range(FILES):
        os.close(os.open(d / f"f{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
    return workloads(d)


def memory(base: Path, writeback: bool) -> dict[str, float]:
    mnt = base / ("memory-wb" if writeback else "memory")
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cscfs.fuse_ceiling", str(mnt),
                             str(FILES), *(["--writeback"] if writeback else [])])
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the memory file system did not mount at {mnt}")
            time.sleep(0.05)
        return workloads(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"native": [], "memory": [], "memory+wb": []}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="cscfs-ceiling-", dir="/var/tmp") as tmp:
            base = Path(tmp)
            runs["native"].append(native(base))
            runs["memory"].append(memory(base, writeback=False))
            runs["memory+wb"].append(memory(base, writeback=True))
    medians = {target: {k: statistics.median(r[k] for r in results) for k in results[0]}
               for target, results in runs.items()}
    print("| workload | native | memory FUSE | memory FUSE, writeback cache |")
    print("|---|---|---|---|")
    for key, value in medians["native"].items():
        cells = [f"{medians[t][key]:,.0f} ({medians[t][key] / value:.2f}x)"
                 for t in ("memory", "memory+wb")]
        print(f"| {key} | {value:,.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
