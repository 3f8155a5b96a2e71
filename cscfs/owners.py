"""Who owns an item: what the VFS reports to the kernel (which checks permissions on
it, with default_permissions), gives new items and lets a chown change.

The server decides what it can keep: a folder server whose daemon is root gives
items to anyone, an unprivileged daemon only to itself and its groups, SMB keeps no
owners at all (its items are the mounting user's, as on a cifs mount). A change it
cannot carry out fails with EPERM instead of pretending.
"""

from __future__ import annotations

import errno
import os
import stat as statmod

from .errors import fs_error
from .metadata import Node
from .remote.base import RemoteStore

Owner = tuple[int, int]  # (uid, gid)


class Owners:
    def __init__(self, store: RemoteStore):
        self.store = store
        self.uid, self.gid = os.getuid(), os.getgid()  # the mounting user

    def of(self, node: Node) -> Owner:
        """The item's own, or the mounting user's where it has none (SMB; rows from
        before owners were kept)."""
        return (self.uid if node.uid is None else node.uid,
                self.gid if node.gid is None else node.gid)

    def for_new(self, parent: Node, owner: Owner | None) -> tuple[int | None, int | None]:
        """The owner of an item `owner` makes in `parent`: that user, with the folder's
        group where the folder is set-group-ID (as Linux does); None (the mounting
        user) where that is who it is, or where the server cannot give items away."""
        uid, gid = owner if owner is not None else (self.uid, self.gid)
        if parent.mode & statmod.S_ISGID:
            gid = self.of(parent)[1]
        if (uid, gid) == (self.uid, self.gid) or not self.store.can_own(uid, gid):
            return None, None
        return uid, gid

    def change(self, node: Node, uid: int | None, gid: int | None) -> Owner | None:
        """The new (uid, gid) a chown asks for (None or -1: keep that one); None if it
        changes nothing. Who may ask is the kernel's check; what the server cannot
        carry out is EPERM."""
        current = self.of(node)
        new = (current[0] if uid in (None, -1) else uid,
               current[1] if gid in (None, -1) else gid)
        if new == current:
            return None
        if not self.store.can_own(*new):
            raise fs_error(errno.EPERM, f"the server cannot give items to {new[0]}:{new[1]}")
        return new
