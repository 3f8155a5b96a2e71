"""The roaming agent's systemd user unit: logon work at start (READY=1 once done),
background uploads while running, logoff work when stopped (SIGTERM, at the end
of the session), within TimeoutStopSec. After dbus.socket, so that the session
bus (and dconf-service) outlive it at logout. The unit helpers are redirect's."""

from __future__ import annotations

import os

from ..redirect.unit import command, manager_runs, systemctl, unit_dir

UNIT = "cscfs-roam.service"
STOP_TIMEOUT = 300  # s for the logoff upload (a 30 MB profile over a slow link)


def unit_path() -> str:
    return os.path.join(unit_dir(), UNIT)


def unit_text() -> str:
    return f"""\
[Unit]
Description=cscfs: roaming settings (logon, background upload, logoff)
After=dbus.socket
# No network-online.target: logon works from the local settings when the server
# cannot be reached, and says so.

[Service]
Type=notify
NotifyAccess=main
ExecStart={command("roam", "agent")}
Restart=on-failure
RestartSec=30
TimeoutStartSec=300
TimeoutStopSec={STOP_TIMEOUT}

[Install]
WantedBy=default.target
"""


def write() -> str:
    os.makedirs(unit_dir(), exist_ok=True)
    path = unit_path()
    with open(path + ".tmp", "w") as f:
        f.write(unit_text())
    os.replace(path + ".tmp", path)
    return path


def enable(echo) -> str:
    if not manager_runs():
        return (f"no systemd user manager runs here: start it at login with "
                f"systemctl --user enable --now {UNIT}")
    systemctl("daemon-reload")
    proc = systemctl("enable", "--now", UNIT)
    if proc.returncode != 0:
        echo(f"systemctl --user enable --now {UNIT}: {proc.stderr.strip()}")
        return "the unit could not be enabled (see above)"
    return f"run at every login by {UNIT}"
