"""Cache throughput: the same workloads on a native directory and through cscfs, in
one run, with the ratio to native.

    python -m benchmarks [--quick] [--out DIR] [--runs N]     (root, for page-cache drops)

Writes DIR/results.json (machine, date, versions, medians) and DIR/results.md.
rclone mount is a target when the `rclone` command is installed; otherwise one line
says it was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

MiB = 1 << 20


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def seq_write(d: Path, size: int) -> float:
    block = os.urandom(MiB)
    t = time.perf_counter()
    fd = os.open(d / "seq.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / MiB / (time.perf_counter() - t)


def seq_read(d: Path, cold: bool) -> float:
    if cold:
        drop_caches()
    t = time.perf_counter()
    n = 0
    with open(d / "seq.bin", "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            n += len(chunk)
    return n / MiB / (time.perf_counter() - t)


def random_reads(d: Path, size: int, count: int) -> float:
    path = d / "rand.bin"
    if not path.exists():
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
    rng = random.Random(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, 4096, 0)
        t = time.perf_counter()
        for _ in range(count):
            os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
        return count / (time.perf_counter() - t)
    finally:
        os.close(fd)


def small_files(d: Path, count: int) -> dict[str, float]:
    sub = d / "small"
    sub.mkdir(exist_ok=True)
    data = os.urandom(4096)
    out = {}
    t = time.perf_counter()
    for i in range(count):
        with open(sub / f"f{i}", "wb") as f:
            f.write(data)
    out["small create/s"] = count / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(count):
        with open(sub / f"f{i}", "rb") as f:
            f.read()
    out["small read/s"] = count / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(count):
        os.stat(sub / f"f{i}")
    out["small stat/s"] = count / (time.perf_counter() - t)
    t = time.perf_counter()
    with os.scandir(sub) as it:
        for e in it:
            e.stat()
    out["ls -l entries/s"] = count / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(count):
        os.unlink(sub / f"f{i}")
    out["small delete/s"] = count / (time.perf_counter() - t)
    return out


def run_workloads(d: Path, quick: bool) -> dict[str, float]:
    size = (64 if quick else 1024) * MiB
    out = {"seq write MB/s": seq_write(d, size),
           "seq read cold MB/s": seq_read(d, cold=True),
           "seq read warm MB/s": seq_read(d, cold=False),
           "rand 4k reads/s": random_reads(d, (32 if quick else 256) * MiB,
                                           2000 if quick else 20000)}
    out.update(small_files(d, 500 if quick else 5000))
    for name in ("seq.bin", "rand.bin"):
        (d / name).unlink(missing_ok=True)
    shutil.rmtree(d / "small", ignore_errors=True)
    return out


class CscfsTarget:
    """A cscfs mount of a fresh server folder, with its own data and runtime dirs."""

    def __init__(self, base: Path):
        self.base = base
        (base / "server").mkdir(parents=True)
        (base / "mnt").mkdir()
        self.env = {**os.environ, "XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix="csb-"),
                    "XDG_CONFIG_HOME": str(base / "cfg")}
        self._cli("mount", str(base / "server"), str(base / "mnt"), "--data-dir",
                  str(base / "data"))

    def _cli(self, *args):
        subprocess.run([sys.executable, "-m", "cscfs", *args], check=True, env=self.env,
                       stdout=subprocess.DEVNULL)

    @property
    def path(self) -> Path:
        return self.base / "mnt"

    def close(self):
        self._cli("unmount", "--force", str(self.base / "mnt"))


class RcloneTarget:
    """rclone mount --vfs-cache-mode full over a fresh server folder: what users
    compare cscfs with."""

    def __init__(self, base: Path):
        self.base = base
        for sub in ("server", "mnt", "cache"):
            (base / sub).mkdir(parents=True)
        self.proc = subprocess.Popen(
            ["rclone", "mount", str(base / "server"), str(base / "mnt"),
             "--vfs-cache-mode", "full", "--cache-dir", str(base / "cache"),
             "--config", "/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.ismount(base / "mnt"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("rclone mount did not come up")
            time.sleep(0.1)

    @property
    def path(self) -> Path:
        return self.base / "mnt"

    def close(self):
        subprocess.run(["fusermount3", "-u", "-z", str(self.base / "mnt")],
                       stderr=subprocess.DEVNULL)
        self.proc.terminate()
        self.proc.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="cscfs cache throughput against native disk")
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    ap.add_argument("--out", default="bench-out", help="where results go")
    ap.add_argument("--runs", type=int, default=3, help="runs per target (medians)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="cscfs-bench-", dir="/var/tmp"))
    results: dict[str, dict[str, float]] = {}
    try:
        native = base / "native"
        native.mkdir()
        targets = {"native": lambda: (native, None)}

        def cscfs_target():
            t = CscfsTarget(base / f"cscfs-{time.monotonic_ns()}")
            return t.path, t

        targets["cscfs"] = cscfs_target
        if shutil.which("rclone") is None:
            print("rclone: not installed (apt-get install rclone); that target is skipped")
        else:
            def rclone_target():
                t = RcloneTarget(base / f"rclone-{time.monotonic_ns()}")
                return t.path, t

            targets["rclone mount"] = rclone_target
        for name, make in targets.items():
            runs = []
            for _ in range(args.runs):
                path, handle = make()
                try:
                    runs.append(run_workloads(path, args.quick))
                finally:
                    if handle is not None:
                        handle.close()
            results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{name}: done", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "cscfs": version("cscfs"), "pyfuse3": version("pyfuse3"),
            "quick": args.quick, "runs": args.runs, "page cache dropped": drop_caches()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    names = list(results)
    lines = [f"cscfs benchmarks, {meta['date']}, {meta['machine']} ({meta['cpus']} cores, "
             f"kernel {meta['kernel']}), Python {meta['python']}, pyfuse3 {meta['pyfuse3']}; "
             f"medians of {args.runs} runs{', quick sizes' if args.quick else ''}", "",
             "| workload | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for workload in results["native"]:
        native_value = results["native"][workload]
        cells = [f"{results[n][workload]:,.0f}" + (
            f" ({results[n][workload] / native_value:.2f}x)" if n != "native" else "")
            for n in names]
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
