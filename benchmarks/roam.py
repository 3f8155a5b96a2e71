"""Data sets: export (at logoff) and import (at logon) of a 200 KB data set over the
Samba rig, on the kernel-speed link and at 50 ms RTT. Each computer has its own HOME and private session
bus with the real dconf-service (the import writes the keys through it).

The set: 300 dconf keys and a folder of 20 files of 8 KiB (incompressible), about
200 KB compressed. Export = read the hive, build the archive, put it atomically;
import = stat and read the archive, merge keys through dconf and files. The
reference ("native") is the store alone moving the same bytes: one upload, one read.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

KEYS = 300
FILES, FILE_SIZE = 20, 8192


class Computer:
    def __init__(self, base: Path, name: str):
        self.home = base / name
        (self.home / ".config").mkdir(parents=True)
        self.runtime = tempfile.mkdtemp(prefix="cs-")
        self.env = {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                    "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                    "XDG_RUNTIME_DIR": self.runtime}
        self.bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork",
                                     "--print-address=1"], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, **self.env})
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self.bus.stdout.readline().strip()

    def enter(self) -> None:
        os.environ.update(self.env)

    def close(self) -> None:
        self.bus.terminate()
        self.bus.wait(5)


def run_roam(rig, base: Path, runs: int, host: str) -> dict[str, list[dict]]:
    from cscfs import credentials
    from cscfs.config import Options
    from cscfs.remote import open_store
    from cscfs.roam import hive
    from cscfs.roam.flows import Roamer
    from cscfs.roam.settings import DataSet, RoamConfig
    from cscfs.roam.state import RoamState

    saved = dict(os.environ)
    base = base / uuid.uuid4().hex[:8]
    a, b = Computer(base, "a"), Computer(base, "b")
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    rig.server_mkdir(folder)
    url = rig.url(host=host, path=folder)
    creds = credentials.Credentials(rig.user, rig.password, None)
    results: dict[str, list[dict]] = {"native": [], "cscfs": []}
    try:
        a.enter()
        keys = {f"/org/example/bench/k{i:03}": f"'{os.urandom(40).hex()}'" for i in range(KEYS)}
        hive.write_live(keys)
        notes = a.home / "notes"
        notes.mkdir()
        cfg = RoamConfig(server=url, datasets={"bench": DataSet(
            "global", ["/org/example/bench/"], ["~/notes"])})
        options = Options()
        for run in range(runs):
            for i in range(FILES):
                (notes / f"f{i:02}.bin").write_bytes(os.urandom(FILE_SIZE))
            a.enter()
            store = open_store(url, creds)
            roamer = Roamer(cfg, options, RoamState(str(base / f"a-{run}.db")), store)
            roamer.profile.ensure()
            started = time.perf_counter()
            roamer.export_datasets([])
            export_s = time.perf_counter() - started
            size = sum(roamer.state.fact("datasets").values())
            roamer.close()

            b.enter()
            store = open_store(url, creds)
            roamer = Roamer(cfg, options, RoamState(str(base / f"b-{run}.db")), store)
            started = time.perf_counter()
            lines = roamer.import_datasets()
            import_s = time.perf_counter() - started
            assert lines and f"{KEYS} settings, {FILES} files" in lines[0], lines
            assert hive.read_live()["/org/example/bench/k000"] == keys["/org/example/bench/k000"]
            # the reference: the same bytes, moved by the store alone
            rel = f"{roamer.profile.root}/datasets"
            name = next(iter(roamer.state.fact("datasets", {})), None) or \
                [s.name for s in store.scandir(rel)][0]
            blob = roamer.profile.read(f"datasets/{name}")
            started = time.perf_counter()
            store.upload(f"{rel}/native-{run}", [blob], None, 0o600, time.time_ns())
            put_s = time.perf_counter() - started
            started = time.perf_counter()
            st = store.stat(f"{rel}/native-{run}")
            store.read(f"{rel}/native-{run}", 0, st.size)
            get_s = time.perf_counter() - started
            roamer.close()
            # the next run imports again: b forgets what it merged
            for p in (b.home / "notes").glob("*"):
                p.unlink()
            subprocess.run(["dconf", "reset", "-f", "/org/example/bench/"], env=os.environ,
                           check=True)
            results["cscfs"].append({"export ms": export_s * 1000, "import ms": import_s * 1000,
                                     "set KB": size / 1000})
            results["native"].append({"export ms": put_s * 1000, "import ms": get_s * 1000,
                                      "set KB": len(blob) / 1000})
    finally:
        a.close()
        b.close()
        os.environ.clear()
        os.environ.update(saved)
    return results
