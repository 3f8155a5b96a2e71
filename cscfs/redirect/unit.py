"""The systemd user unit of a redirected folder: mounted at login, flushed at logout.

Type=notify: the daemon says READY=1 once the mount answers and keeps STATUS=
current. No network-online.target: cscfs starts from the cache and follows the
link, so login never waits for the network."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

STOP_TIMEOUT = 90  # s systemd gives ExecStop (TimeoutStopSec)
FLUSH_WITHIN = 75  # s of those for uploading pending changes; the rest for the exit


def unit_name(folder: str) -> str:
    return f"cscfs-redirect-{folder}.service"


def unit_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "systemd", "user")


def unit_path(folder: str) -> str:
    return os.path.join(unit_dir(), unit_name(folder))


def command(*args: str) -> str:
    """This cscfs, as the unit runs it: the same interpreter and package."""
    return shlex.join([sys.executable, "-m", "cscfs", *args])


def unit_text(folder: str, path: str, server: str) -> str:
    return f"""\
[Unit]
Description=cscfs: {path} redirected to {server}
# No network-online.target: the mount starts from the cache and follows the link.

[Service]
Type=notify
ExecStart={command("redirect", "--login", folder)}
ExecStop={command("redirect", "--logout", folder)}
Restart=on-failure
RestartSec=10
# 2: bad input (the folder no longer redirected, a broken config): a restart cannot help
RestartPreventExitStatus=2
TimeoutStartSec=120
TimeoutStopSec={STOP_TIMEOUT}

[Install]
WantedBy=default.target
"""


def write(folder: str, path: str, server: str) -> str:
    os.makedirs(unit_dir(), exist_ok=True)
    target = unit_path(folder)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(unit_text(folder, path, server))
    os.replace(tmp, target)
    return target


def systemctl(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["systemctl", "--user", *args], capture_output=True,
                              text=True, timeout=120)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", "systemctl is missing")


def manager_runs() -> bool:
    """A user manager answers (not so in a container, over ssh without lingering...)."""
    return systemctl("show-environment").returncode == 0


def state(folder: str) -> str:
    if not os.path.exists(unit_path(folder)):
        return "no unit"
    proc = systemctl("is-active", unit_name(folder))
    if proc.returncode not in (0, 3):  # 3: inactive or failed
        return "no user manager"
    return proc.stdout.strip() or "unknown"


def remove(folder: str) -> None:
    if os.path.exists(unit_path(folder)):
        systemctl("disable", unit_name(folder))
        os.unlink(unit_path(folder))
        systemctl("daemon-reload")
