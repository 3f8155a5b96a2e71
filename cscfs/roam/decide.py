"""Which copy of a roamed item wins: a pure function of what was last synced (the
base), this computer's copy and the server's. No I/O, no clock.

Beyond Windows' "newer timestamp wins": a side that has not changed since the last
sync never overwrites one that has (so a stale machine's logoff cannot undo another
machine's newer upload), and when both changed the newer wins and the older is kept
in the profile's conflict folder, never dropped."""

from __future__ import annotations

from dataclasses import dataclass

NOTHING, UPLOAD, DOWNLOAD, DELETE_SERVER, DELETE_LOCAL = (
    "nothing", "upload", "download", "delete-server", "delete-local")
LOGON, LOGOFF = "logon", "logoff"


@dataclass(frozen=True)
class Copy:
    sig: str | None       # what it is now (None: absent)
    mtime_ns: int = 0


@dataclass(frozen=True)
class Base:
    local_sig: str | None = None   # this computer's copy right after the last sync
    server_sig: str | None = None  # the server's copy right after the last sync


@dataclass(frozen=True)
class Decision:
    action: str
    keep_loser: bool = False  # the other side's copy goes to the conflict folder first


def decide(base: Base | None, local: Copy, server: Copy, phase: str) -> Decision:
    """LOGON brings the server's copy down where it wins; LOGOFF (and the background
    upload) takes ours up where it wins. What the other phase would do is NOTHING."""
    base = base or Base()
    local_changed = local.sig != base.local_sig
    server_changed = server.sig != base.server_sig
    if local.sig is None and server.sig is None:
        return Decision(NOTHING)
    if not local_changed and not server_changed:
        return Decision(NOTHING)
    if local_changed and server_changed:
        if local.sig is None or server.sig is None:
            # deleted on one side, changed on the other: the change wins
            winner_local = local.sig is not None
        else:
            winner_local = local.mtime_ns >= server.mtime_ns
        keep = local.sig is not None and server.sig is not None
        if winner_local:
            return Decision(UPLOAD, keep) if phase == LOGOFF else Decision(NOTHING)
        return Decision(DOWNLOAD, keep) if phase == LOGON else Decision(NOTHING)
    if local_changed:
        if phase != LOGOFF:
            return Decision(NOTHING)
        return Decision(DELETE_SERVER if local.sig is None else UPLOAD)
    if phase != LOGON:
        return Decision(NOTHING)
    return Decision(DELETE_LOCAL if server.sig is None else DOWNLOAD)
