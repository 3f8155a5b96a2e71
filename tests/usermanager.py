"""A systemd user manager of the test's own (`systemd --user`), for units tested as
a login would run them, also where systemd is not PID 1 (a container).

Three things make that work and keep it to itself:
- its own cgroup (in the cgroup2 and name=systemd hierarchies): a manager takes its
  cgroup for the root of its tree and moves every process in it into init.scope, so
  it must not start in a cgroup shared with anything else;
- its own mount namespace, where /run/systemd/system exists (a user manager refuses
  to run unless the system looks booted with systemd) without touching the real /run;
- `shared`, a folder made a shared mount before the namespace is made: mounts the
  units make under it (a FUSE mount at ~/Documents) appear here too.
Stopped, it stops its units (their ExecStop), then its cgroups and the shared mount
are removed again. Needs root."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

SYSTEMD = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")


def missing() -> str | None:
    if os.geteuid() != 0:
        return "a user manager of the test's own needs root (cgroups, a mount namespace)"
    if not any(os.path.exists(p) for p in SYSTEMD) or shutil.which("systemctl") is None:
        return "systemd is missing (apt-get install systemd)"
    if shutil.which("unshare") is None:
        return "unshare is missing (apt-get install util-linux)"
    if not _hierarchies():
        return "no cgroup hierarchy a user manager can use is mounted"
    return None


def _hierarchies() -> list[str]:
    """The cgroup2 mount and a v1 name=systemd one: where systemd keeps its tree."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _source, options = right.split()[:3]
            mountpoint = left.split()[4]
            if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options):
                out.append(mountpoint)
    return out


def _all_hierarchies() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f
                if line.split(" - ", 1)[1].split()[0] in ("cgroup", "cgroup2")]


class UserManager:
    def __init__(self, shared: Path, env: dict[str, str], log: Path):
        self.shared, self.env, self.log = shared, env, log
        self.name = f"cscfs-test-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.bound = False

    def systemctl(self, *args: str, check: bool = False,
                  timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run(["systemctl", "--user", "--no-pager", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)} -> {proc.returncode}: "
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *[f"--property={p}" for p in props], check=True)
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def start(self, timeout: float = 30) -> None:
        subprocess.run(["mount", "--bind", str(self.shared), str(self.shared)], check=True)
        self.bound = True
        subprocess.run(["mount", "--make-shared", str(self.shared)], check=True)
        cgroups = []
        for root in _hierarchies():
            path = os.path.join(root, self.name)
            os.mkdir(path)
            cgroups.append(os.path.join(path, "cgroup.procs"))
        booted = os.path.isdir("/run/systemd/system")
        script = "".join(f'echo $$ > "{p}" && ' for p in cgroups)
        if not booted:  # only in this namespace; / is not shared there, so it stays here
            script += ("mount -t tmpfs cscfs-test /run/systemd && "
                       "mkdir /run/systemd/system && ")
        script += f'exec {next(p for p in SYSTEMD if os.path.exists(p))} --user'
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script],
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.systemctl("is-active", "default.target").stdout.strip() != "active":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the user manager did not start: {self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM: the manager stops its units (ExecStop runs) and exits. Then
        whatever is left in its cgroups is ours: killed; the cgroups removed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(150)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for root in _all_hierarchies():
            top = os.path.join(root, self.name)
            if not os.path.isdir(top):
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
                _kill_members(dirpath)
                for _ in range(50):
                    try:
                        os.rmdir(dirpath)
                        break
                    except OSError:
                        time.sleep(0.1)
        if self.bound:
            subprocess.run(["umount", "--lazy", str(self.shared)], check=False)
            self.bound = False


def _kill_members(cgroup: str) -> None:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
