"""systemd's service notification (sd_notify(3)): one datagram per message to the
AF_UNIX socket named by NOTIFY_SOCKET ("@name" is the abstract namespace).

Written against the documented protocol rather than the `sdnotify` package: that
package has had no release since 2017 and hides send errors; the protocol is a
single sendto() and stable since systemd 209."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("cscfs.sd_notify")


class Notifier:
    """Sends READY=1, STATUS=..., STOPPING=1 when started by systemd; does nothing
    otherwise. A lost message never takes the daemon down (logged once)."""

    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address if address.startswith(("/", "\0")) else ""
        self._sock = None
        self._warned = False
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))
        self.last_status = status

    def status(self, text: str) -> None:
        """Only a changed text is sent: systemd keeps the last one."""
        if text != self.last_status and self.send(f"STATUS={text}"):
            self.last_status = text

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(s: dict) -> str:
    """One line for `systemctl --user status`, from Client.status()."""
    line = f"{s['mode']}; {s['pending_uploads']} pending uploads"
    if s.get("pending_changes"):
        line += f", {s['pending_changes']} offline changes"
    p = s.get("available_offline")
    if p:
        line += (f"; available offline {p['files_done']}/{p['files_total']} files "
                 f"({p['activity']})")
    if s.get("open_conflicts"):
        line += f"; {s['open_conflicts']} open conflicts"
    if s.get("cache_disk_full"):
        line += "; cache disk FULL"
    return line
