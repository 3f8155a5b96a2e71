"""Remote stores: where the server's files live."""

from __future__ import annotations

import os

from .. import errors
from .base import Fingerprint, RemoteStat, RemoteStore, SpaceInfo, join
from .local import LocalDirStore

__all__ = ["Fingerprint", "RemoteStat", "RemoteStore", "SpaceInfo", "join", "open_store",
           "LocalDirStore"]


def open_store(server: str) -> RemoteStore:
    """The store for a SERVER argument (a directory path; smb:// comes later)."""
    if "://" in server:
        raise errors.UserError(f"unsupported server {server!r}: give a directory path")
    return LocalDirStore(os.path.abspath(os.path.expanduser(server)))
