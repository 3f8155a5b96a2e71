"""Desktop notifications on the session bus (org.freedesktop.Notifications, via
jeepney): a new conflict, the server unreachable for a while and back, a failed
sync, pinned content over the cache quota.

The client calls the Notifier on the event-loop thread; each call only queues a
note (the latest per kind: one bubble per kind, replaced in place through the id
the server returned). `run` sends them from a worker thread with a time limit, so
a slow or absent notification server never holds up a request. No session bus is
one debug line, never an error.
"""

from __future__ import annotations

import html
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import trio

from . import modes
from .config import Options

log = logging.getLogger("cscfs.notify")

BUS, PATH, IFACE = ("org.freedesktop.Notifications", "/org/freedesktop/Notifications",
                    "org.freedesktop.Notifications")
APP = "cscfs"
CALL_TIMEOUT = 2.0  # s for one call to the notification server
ONLINE_SETTLE = 5.0  # s the link stays up before an outage counts as over

CONFLICT, LINK, SYNC, QUOTA = "conflict", "link", "sync", "quota"
OFFLINE_NOTE, ONLINE_NOTE = "offline", "online"
KEEP_HINT = "--keep local|server|both"


def failed_files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''} failed (cscfs status lists failing uploads)"


@dataclass
class Note:
    kind: str
    summary: str
    body: str
    hints: dict = field(default_factory=dict)


class LinkNotices:
    """When to say "offline" and "back online". Pure: the caller passes the time.

    An outage is announced once the link has been down `offline_after` seconds;
    it ends when the link has stayed up `settle` seconds (so a flapping link is one
    outage), and "back online" follows only an announced one. Announcements are at
    least `window` seconds apart: at most one pair per window, however the link
    flaps; an outage still going on when the window ends is announced then."""

    def __init__(self, offline_after: float, window: float, settle: float = ONLINE_SETTLE):
        self.offline_after, self.window, self.settle = offline_after, window, settle
        self.down_since: float | None = None  # start of the current outage
        self.up_since: float | None = None    # the link came back during it
        self.announced = False
        self.last_announced = -math.inf

    def changed(self, offline: bool, now: float) -> None:
        if offline:
            if self.down_since is None:
                self.down_since = now
            self.up_since = None
        elif self.down_since is not None and self.up_since is None:
            self.up_since = now

    def due_at(self) -> float | None:
        """When `poll` may have something to say (None: only after a change)."""
        if self.down_since is None:
            return None
        if self.up_since is not None:
            return self.up_since + self.settle
        if self.announced:
            return None
        return max(self.down_since + self.offline_after, self.last_announced + self.window)

    def poll(self, now: float) -> str | None:
        due = self.due_at()
        if due is None or now < due:
            return None
        if self.up_since is not None:  # up long enough: the outage is over
            self.down_since = self.up_since = None
            was, self.announced = self.announced, False
            return ONLINE_NOTE if was else None
        self.announced, self.last_announced = True, now
        return OFFLINE_NOTE


class DBusSender:
    """Notify calls over one session bus connection; used from one worker thread
    at a time. Keeps the id the server returned per kind, for `replaces_id`."""

    def __init__(self, timeout: float = CALL_TIMEOUT):
        self.timeout = timeout
        self.ids: dict[str, int] = {}
        self._conn = None
        self._markup = False
        self._quiet = False  # said once that there is no notification server

    def _unavailable(self, why) -> None:
        self.close()
        if not self._quiet:
            self._quiet = True
            log.debug("no desktop notifications: %s", why)

    def _connect(self):
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        if self._conn is None:
            conn = open_dbus_connection(bus="SESSION", auth_timeout=self.timeout)
            try:
                caps = conn.send_and_get_reply(new_method_call(
                    DBusAddress(PATH, bus_name=BUS, interface=IFACE), "GetCapabilities"),
                    timeout=self.timeout)
            except BaseException:
                conn.close()
                raise
            # Servers with body-markup read the body as markup: names must be escaped.
            self._markup = (caps.header.message_type.name == "method_return"
                            and "body-markup" in caps.body[0])
            self._conn = conn
        return self._conn

    def send(self, note: Note) -> int | None:
        """The server's id for the note, or None when it could not be shown."""
        from jeepney import DBusAddress, new_method_call

        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            self._unavailable("DBUS_SESSION_BUS_ADDRESS is not set")
            return None
        try:
            conn = self._connect()
            body = html.escape(note.body, quote=False) if self._markup else note.body
            call = new_method_call(
                DBusAddress(PATH, bus_name=BUS, interface=IFACE), "Notify", "susssasa{sv}i",
                (APP, self.ids.get(note.kind, 0), "folder-remote", note.summary, body, [],
                 note.hints, -1))
            reply = conn.send_and_get_reply(call, timeout=self.timeout)
        except Exception as exc:  # no bus, no server, no answer: never the caller's problem
            self._unavailable(f"{type(exc).__name__}: {exc}")
            return None
        if reply.header.message_type.name != "method_return":
            self._unavailable(f"Notify refused: {reply.body}")
            return None
        self._quiet = False
        self.ids[note.kind] = reply.body[0]
        return reply.body[0]

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Notifier:
    """What the client reports; `run` (a background task) sends it. `mountpoint`,
    set by the daemon, makes the resolve command in a conflict note copyable."""

    def __init__(self, options: Options, server: str = "",
                 clock: Callable[[], float] = time.monotonic, sender: DBusSender | None = None):
        self.enabled = options.notify
        self.server, self.clock = server, clock
        self.mountpoint = ""
        self.sender = sender or DBusSender()
        self.link = LinkNotices(options.notify_offline_after, options.notify_window)
        self.mode = ""
        self._outbox: dict[str, Note] = {}
        self._conflicts: list[str] = []  # paths not yet shown
        self._wake = trio.Event()
        self._sending = trio.Lock()  # one send at a time, in order; flush waits for it

    # ------------------------------------------------ what the client reports
    def conflict(self, path: str, kind: str = "", copy_path: str | None = None) -> None:
        if not self.enabled:
            return
        self._conflicts.append(path)
        paths = self._conflicts
        name = os.path.basename(path) or path
        if len(paths) == 1:
            summary = f"Conflict: {name}"
            body = (f"{path} was changed here and on the server"
                    f"{f' ({kind})' if kind else ''}; nothing was discarded"
                    f"{f', ours is {copy_path}' if copy_path else ''}.\n"
                    f"Resolve it: cscfs resolve {self._full(path)} {KEEP_HINT}")
        else:
            shown = ", ".join(os.path.basename(p) for p in paths[:3])
            summary = f"{len(paths)} conflicts: {shown}{', ...' if len(paths) > 3 else ''}"
            body = (f"Nothing was discarded. `cscfs conflicts {self.mountpoint or 'MOUNT'}` "
                    f"lists them; resolve each: cscfs resolve PATH {KEEP_HINT}")
        self._queue(Note(CONFLICT, summary, body, {"urgency": ("y", 1)}))

    def link_state(self, mode: str) -> None:
        if not self.enabled:
            return
        self.mode = mode
        self.link.changed(mode == modes.OFFLINE, self.clock())
        self._wake.set()

    def sync_failed(self, what: str, reason: str) -> None:
        if self.enabled:
            self._queue(Note(SYNC, f"cscfs: {what} failed", f"{self.server}: {reason}",
                             {"category": ("s", "transfer.error"), "urgency": ("y", 1)}))

    def over_quota(self) -> None:
        if self.enabled:
            self._queue(Note(QUOTA, "Pinned files do not fit the cache quota",
                             f"{self.server}: the most recently used are kept available "
                             "offline, the rest only on the server. Raise cache_quota in "
                             "the config or unpin folders (cscfs unpin PATH).",
                             {"urgency": ("y", 1)}))

    # ------------------------------------------------------------- sending
    def _full(self, path: str) -> str:
        return os.path.join(self.mountpoint, path) if self.mountpoint else path

    def _queue(self, note: Note) -> None:
        self._outbox[note.kind] = note  # a newer note of a kind replaces a queued one
        self._wake.set()

    def _link_note(self, which: str) -> Note:
        if which == OFFLINE_NOTE:
            return Note(LINK, "Working offline: the server is unreachable",
                        f"{self.server}: changes are kept on this computer and uploaded "
                        "when the server is back.", {"category": ("s", "network.disconnected")})
        if self.mode == modes.ONLINE:
            summary, body = "Back online", "changes made offline are synced now."
        else:  # slow link, or the user's or the config's offline mode
            summary, body = f"No longer offline: {self.mode}", f"the mode is {self.mode}."
        return Note(LINK, summary, f"{self.server}: {body}",
                    {"category": ("s", "network.connected")})

    def take(self) -> list[Note]:
        """Everything due now, in the order to send."""
        which = self.link.poll(self.clock())
        if which:
            self._outbox[LINK] = self._link_note(which)
        notes, self._outbox = list(self._outbox.values()), {}
        if any(n.kind == CONFLICT for n in notes):
            self._conflicts = []
        return notes

    async def flush(self) -> None:
        """Send what is due; returns once everything queued before it was tried."""
        async with self._sending:
            for note in self.take():
                await trio.to_thread.run_sync(self.sender.send, note, abandon_on_cancel=True)

    async def run(self) -> None:
        if not self.enabled:
            return
        while True:
            self._wake = trio.Event()
            await self.flush()
            due = self.link.due_at()
            wait = math.inf if due is None else max(0.0, due - self.clock())
            with trio.move_on_after(wait):
                await self._wake.wait()

    def close(self) -> None:
        self.sender.close()
