"""A simulated computer for the roaming tests: its own HOME and XDG dirs, machine
id and a private session bus (dbus-daemon, session config) started with that
environment, so that the dconf-service it activates writes this HOME's database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent


def require_dconf() -> None:
    missing = [t for t in ("dconf", "dbus-daemon") if shutil.which(t) is None]
    if not os.path.exists("/usr/libexec/dconf-service"):
        missing.append("dconf-service")
    if missing:
        why = f"{', '.join(missing)} missing (apt-get install dconf-cli dconf-service dbus)"
        if IN_CI:
            pytest.fail(f"real dconf is required in CI: {why}")
        pytest.skip(why)


class Machine:
    def __init__(self, base: Path, name: str, config: str = ""):
        require_dconf()
        self.name = name
        self.home = base / name / "home"
        self.config = self.home / ".config"
        (self.config / "cscfs").mkdir(parents=True)
        self.runtime = tempfile.mkdtemp(prefix="cs-")
        (base / name / "machine-id").write_text(f"{name:0>32}\n")
        self.env = {"PATH": os.environ["PATH"], "HOME": str(self.home),
                    "XDG_CONFIG_HOME": str(self.config),
                    "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                    "XDG_RUNTIME_DIR": self.runtime, "LANG": "C.UTF-8",
                    "CSCFS_MACHINE_ID_FILE": str(base / name / "machine-id"),
                    # no NetworkManager here unless a test puts one on a bus
                    "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.runtime}/no-system-bus"}
        self.write_config(config)
        self.bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork",
                                     "--print-address=1"], stdout=subprocess.PIPE,
                                    text=True, env=self.env)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self.bus.stdout.readline().strip()

    def write_config(self, extra: str) -> None:
        (self.config / "cscfs" / "config.toml").write_text(
            f"remote_timeout = 3.0\nprobe_timeout = 1.0\n{extra}")

    def roam_config(self, **changes) -> None:
        import tomllib

        import tomli_w

        path = self.config / "cscfs" / "roam.toml"
        data = tomllib.loads(path.read_text())
        data.update(changes)
        path.write_text(tomli_w.dumps(data))

    def cscfs(self, *args: str, check: bool = True, timeout: float = 120
              ) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "cscfs", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: cscfs {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cscfs", *args], env=self.env,
                                cwd=ROOT, **kw)

    def dconf(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["dconf", *args], capture_output=True, text=True,
                              env=self.env, input=stdin, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def set(self, key: str, value: str) -> None:
        self.dconf("write", key, value)

    def get(self, key: str) -> str:
        return self.dconf("read", key)

    def hive(self) -> Path:
        return self.config / "dconf" / "user"

    def events(self) -> list[dict]:
        return json.loads(self.cscfs("roam", "events", "--json").stdout)

    def event_names(self) -> list[str]:
        return [e["name"] for e in self.events()]

    def status(self) -> dict:
        return json.loads(self.cscfs("roam", "status", "--json").stdout)

    def close(self) -> None:
        self.bus.terminate()
        self.bus.wait(5)
        shutil.rmtree(self.runtime, ignore_errors=True)
