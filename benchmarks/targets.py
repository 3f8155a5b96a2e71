"""The mounts a benchmark compares: cscfs and rclone mount --vfs-cache-mode full, each
over a server (a local folder or an SMB share) and with its own cache, started and
stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rclone_missing() -> str | None:
    """None when rclone can be a target; else why not (one line). Installs Debian's
    package when it is missing and we may (root, apt)."""
    if shutil.which("rclone") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("rclone: not installed; installing Debian's package (apt-get install rclone)",
              flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which("rclone") is None:
        return "rclone is not installed and could not be (apt-get install rclone as root)"
    return None


class CscfsMount:
    """A cscfs mount of `server` (a folder or an smb:// URL) with fresh data and runtime
    dirs. `password` goes in CSCFS_SMB_PASSWORD, as a user would set it."""

    def __init__(self, base: Path, server: str, password: str | None = None,
                 config: str = ""):
        self.base = base
        self.mnt = base / "mnt"
        self.mnt.mkdir(parents=True)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix="csb-"),
                    "XDG_CONFIG_HOME": str(base / "cfg")}
        if password is not None:
            self.env["CSCFS_SMB_PASSWORD"] = password
        if config:
            (base / "cfg" / "cscfs").mkdir(parents=True)
            (base / "cfg" / "cscfs" / "config.toml").write_text(config)
        self.cli("mount", server, str(self.mnt), "--data-dir", str(base / "data"))

    def cli(self, *args, check: bool = True) -> str:
        return subprocess.run([sys.executable, "-m", "cscfs", *args], check=check,
                              env=self.env, stdout=subprocess.PIPE, text=True).stdout

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json", str(self.mnt)))

    def wait_mode(self, mode: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.status()["mode"] != mode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cscfs did not become {mode} in {timeout} s")
            time.sleep(0.1)

    @property
    def path(self) -> Path:
        return self.mnt

    def close(self) -> None:
        self.cli("unmount", "--force", str(self.mnt), check=False)


class RcloneMount:
    """rclone mount --vfs-cache-mode full: what users compare cscfs with. `remote` is
    a local folder or rclone's `:smb:share/path` with `env` holding the connection."""

    def __init__(self, base: Path, remote: str, env: dict | None = None):
        self.base = base
        self.mnt = base / "mnt"
        for sub in ("mnt", "cache"):
            (base / sub).mkdir(parents=True)
        self.proc = subprocess.Popen(
            ["rclone", "mount", remote, str(self.mnt), "--vfs-cache-mode", "full",
             "--cache-dir", str(base / "cache"), "--config", "/dev/null"],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=open(base / "rclone.log", "wb"))
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mnt):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("rclone mount did not come up: "
                                   + (base / "rclone.log").read_text()[-300:])
            time.sleep(0.1)

    @property
    def path(self) -> Path:
        return self.mnt

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], stderr=subprocess.DEVNULL)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
