"""Cache throughput: the same workloads on a native directory and through cscfs, in
one run, with the ratio to native.

    python -m benchmarks [--quick] [--out DIR] [--runs N]     (root, for page-cache drops)

Writes DIR/results.json (machine, date, versions, medians), DIR/results.md and
DIR/ratios.png. rclone mount is a target when Debian's rclone is installed (installed
here when missing, as root); the SMB workloads run over the test suite's Samba rig
(root). A target that cannot run is skipped with one line saying why.
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

from .targets import CscfsMount, RcloneMount, rclone_missing

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
    for i in range(count):
        os.unlink(sub / f"f{i}")
    out["small delete/s"] = count / (time.perf_counter() - t)
    return out


def make_listing(server: Path, count: int) -> None:
    """A folder of `count` empty files, made on the server before the mount."""
    big = server / "big"
    big.mkdir()
    for i in range(count):
        os.close(os.open(big / f"f{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))


def listing(d: Path) -> dict[str, float]:
    """`ls -f` of a folder the mount has not listed yet (the server is asked), then
    `ls -l` (names and attributes) with the kernel's caches dropped."""
    drop_caches()
    t = time.perf_counter()
    n = len(os.listdir(d / "big"))
    out = {"readdir entries/s": n / (time.perf_counter() - t)}
    drop_caches()
    t = time.perf_counter()
    with os.scandir(d / "big") as it:
        for e in it:
            e.stat(follow_symlinks=False)
    out["ls -l entries/s"] = n / (time.perf_counter() - t)
    return out


def run_workloads(d: Path, quick: bool) -> dict[str, float]:
    size = (64 if quick else 1024) * MiB
    out = {"seq write MB/s": seq_write(d, size),
           "seq read cold MB/s": seq_read(d, cold=True),
           "seq read warm MB/s": seq_read(d, cold=False),
           "rand 4k reads/s": random_reads(d, (32 if quick else 256) * MiB,
                                           2000 if quick else 20000)}
    out.update(small_files(d, 500 if quick else 5000))
    out.update(listing(d))
    for name in ("seq.bin", "rand.bin"):
        (d / name).unlink(missing_ok=True)
    shutil.rmtree(d / "small", ignore_errors=True)
    return out


# The cache and on-demand workloads measure reads, writes and listings through the
# mount, not the background fill (it would list and fetch the test data first); the
# fill has its own section.
ON_DEMAND = "offline_by_default = false\n"

LOWER_IS_BETTER = (" s", " ms")  # units of times: the ratio is native / target


def ratio(workload: str, native: float | None, value: float | None) -> float | None:
    if not native or not value:
        return None
    return native / value if workload.endswith(LOWER_IS_BETTER) else value / native


def medians(runs: list[dict]) -> dict[str, float | None]:
    """Per workload, the median of the runs that finished (None: none did)."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def local_section(base: Path, args, log) -> dict[str, dict]:
    """Native directory, cscfs and rclone mount over a local folder."""
    entries = 2000 if args.quick else 10000

    def server_dir() -> Path:
        server = base / f"server-{time.monotonic_ns()}"
        server.mkdir()
        make_listing(server, entries)
        return server

    def native_target():
        return server_dir(), None

    def cscfs_target():
        t = CscfsMount(base / f"cscfs-{time.monotonic_ns()}", str(server_dir()),
                       config=ON_DEMAND)
        return t.path, t

    targets = {"native": native_target, "cscfs": cscfs_target}
    if args.rclone_missing:
        log(f"rclone mount: skipped: {args.rclone_missing}")
    else:
        def rclone_target():
            t = RcloneMount(base / f"rclone-{time.monotonic_ns()}", str(server_dir()))
            return t.path, t

        targets["rclone mount"] = rclone_target
    results = {}
    for name, make in targets.items():
        runs = []
        for _ in range(args.runs):
            path, handle = make()
            try:
                runs.append(run_workloads(path, args.quick))
            finally:
                if handle is not None:
                    handle.close()
        results[name] = medians(runs)
        log(f"local folder, {name}: done")
    return results


def smb_section(base: Path, args, log, on_section) -> dict[str, dict[str, dict]]:
    """The SMB workloads over the Samba rig, fast link and 50 ms RTT."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.linklab import SambaRig

    from .smb import run_link

    reason = SambaRig.missing()
    if reason:
        log(f"SMB workloads: skipped: {reason}")
        return {}
    targets = ["native", "cscfs"] + ([] if args.rclone_missing else ["rclone mount"])
    rig = SambaRig(base / "rig")
    rig.start()
    out = {}
    try:
        for link in ("fast", "50 ms"):
            # At 50 ms every round trip counts: smaller sizes keep the run within reach.
            if args.quick:
                big, small = (32 * MiB, 100) if link == "fast" else (8 * MiB, 30)
            else:
                big, small = (1024 * MiB, 1000) if link == "fast" else (64 * MiB, 200)
            runs: dict[str, list] = {t: [] for t in targets}
            for _ in range(args.runs):
                for target, res in run_link(rig, base, link, targets, big, small,
                                            timeout=120 if args.quick else 300,
                                            write_timeout=30 if args.quick else 120).items():
                    runs[target].append(res)
            out[f"SMB {link}"] = {t: medians(r) for t, r in runs.items()}
            out[f"SMB {link}"]["sizes"] = {"big file MiB": big // MiB, "small files": small}
            log(f"SMB {link}: done")
            on_section(out)
    finally:
        rig.stop()
    return out


def fill_section(base: Path, args, log, on_section) -> dict[str, dict[str, dict]]:
    """Time until a server tree is available offline, fast link and 50 ms RTT."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.linklab import SambaRig

    from .fill import run_fill

    reason = SambaRig.missing()
    if reason:
        log(f"fill workloads: skipped: {reason}")
        return {}
    targets = ["native", "cscfs"] + ([] if args.rclone_missing else ["rclone copy"])
    rig = SambaRig(base / "rig-fill")
    rig.start()
    out = {}
    try:
        for link in ("fast", "50 ms"):
            small, big = (200, 32 * MiB) if args.quick else (1000, 256 * MiB)
            runs: dict[str, list] = {t: [] for t in targets}
            for _ in range(args.runs):
                for target, res in run_fill(rig, base, link, targets, small, big,
                                            timeout=600).items():
                    runs[target].append(res)
            key = f"available offline, SMB {link}"
            out[key] = {t: medians(r) for t, r in runs.items()}
            out[key]["sizes"] = {"small files": small, "big file MiB": big // MiB}
            log(f"{key}: done")
            on_section(out)
    finally:
        rig.stop()
    return out


def roam_section(base: Path, args, log, on_section) -> dict[str, dict]:
    """Export and import of a 200 KB data set over the Samba rig (fast link)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.linklab import SambaRig

    from .roam import run_roam

    reason = SambaRig.missing()
    if reason or shutil.which("dconf") is None:
        log(f"roam workloads: skipped: {reason or 'dconf is missing'}")
        return {}
    rig = SambaRig(base / "rig-roam")
    rig.start()
    out = {}
    try:
        for link, host, rtt in (("fast", rig.fast_host, 0), ("50 ms", rig.wire_host, 50)):
            rig.set_rtt(rtt)
            runs = run_roam(rig, base, args.runs, host)
            out[f"data set (roam), SMB {link}"] = {t: medians(r) for t, r in runs.items()}
            log(f"roam, SMB {link}: done")
            on_section(out)
    finally:
        rig.stop()
    return out


def chart(sections: dict, path: Path) -> bool:
    """Bar chart of every target's ratio to native, per workload (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("chart: skipped: matplotlib is missing (pip install -e '.[bench]')")
        return False
    rows = []  # (label, {target: ratio})
    for section, results in sections.items():
        for workload, native_value in results["native"].items():
            label = workload if section == "local folder" else f"{section}: {workload}"
            rows.append((label, {t: ratio(workload, native_value, results[t].get(workload))
                                 for t in results if t not in ("native", "sizes")}))
    targets = sorted({t for _, r in rows for t in r})
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    height = 0.8 / max(1, len(targets))
    for k, target in enumerate(targets):
        ys = [i + k * height for i in range(len(rows))]
        xs = [r.get(target) or 0 for _, r in rows]
        ax.barh(ys, xs, height=height, label=target)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(0.5, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xlabel("ratio to native (higher is better; times: native / target)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def table(sections: dict, meta: dict) -> str:
    lines = [f"cscfs benchmarks, {meta['date']}, {meta['machine']} ({meta['cpus']} cores, "
             f"kernel {meta['kernel']}), Python {meta['python']}, pyfuse3 {meta['pyfuse3']}, "
             f"rclone {meta['rclone'] or 'not installed'}; medians of {meta['runs']} runs"
             f"{', quick sizes' if meta['quick'] else ''}. Ratio: target / native "
             f"(for times native / target): higher is better."]
    for section, results in sections.items():
        names = [n for n in results if n != "sizes"]
        sizes = results.get("sizes")
        lines += ["", f"**{section}**" + (
            " (" + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ")" if sizes else ""), "",
            "| workload | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for workload, native_value in results["native"].items():
            cells = []
            for n in names:
                value = results[n].get(workload)
                if value is None:
                    cells.append("n/a" if n == "native" else "did not finish")
                    continue
                r = ratio(workload, native_value, value)
                text = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
                cells.append(text + (f" ({r:.2f}x)" if n != "native" and r else ""))
            lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="cscfs cache throughput against native disk "
                                             "and rclone mount")
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    ap.add_argument("--out", default="bench-out", help="where results go")
    ap.add_argument("--runs", type=int, default=3, help="runs per target (medians)")
    ap.add_argument("--only", choices=["local", "smb", "fill", "roam"],
                    help="one section only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {msg}", flush=True)

    args.rclone_missing = rclone_missing()
    base = Path(tempfile.mkdtemp(prefix="cscfs-bench-", dir="/var/tmp"))
    base.chmod(0o755)  # the rig's smbd serves a folder below it
    sections: dict[str, dict] = {}
    rclone = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout \
        .split("\n")[0].split()[-1] if not args.rclone_missing else None
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "cscfs": version("cscfs"), "pyfuse3": version("pyfuse3"),
            "smbprotocol": version("smbprotocol"), "rclone": rclone,
            "quick": args.quick, "runs": args.runs, "page cache dropped": drop_caches()}

    def save(more: dict | None = None) -> str:
        """Written after every section, so that a long run interrupted keeps its part."""
        sections.update(more or {})
        meta["seconds"] = round(time.monotonic() - started)
        (out / "results.json").write_text(json.dumps({"meta": meta, "results": sections},
                                                     indent=2))
        text = table(sections, meta)
        (out / "results.md").write_text(text + "\n")
        return text

    try:
        if args.only in (None, "local"):
            save({"local folder": local_section(base, args, log)})
        if args.only in (None, "smb"):
            smb_section(base, args, log, save)
        if args.only in (None, "fill"):
            fill_section(base, args, log, save)
        if args.only in (None, "roam"):
            roam_section(base, args, log, save)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = save()
    charted = chart(sections, out / "ratios.png")
    print(text)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}"
        + (f", {out / 'ratios.png'}" if charted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
