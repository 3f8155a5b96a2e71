"""Remote stores: where the server's files live."""

from __future__ import annotations

import os

from .. import errors
from .base import Fingerprint, RemoteStat, RemoteStore, SpaceInfo, join
from .local import LocalDirStore

__all__ = ["Fingerprint", "RemoteStat", "RemoteStore", "SpaceInfo", "join", "open_store",
           "LocalDirStore"]


def open_store(server: str, credentials=None, *, timeout: float = 5.0,
               encrypt: bool = False, upload_processes: int = 0,
               upload_threads: int = 4) -> RemoteStore:
    """The store for a SERVER argument: smb://... or a directory path."""
    if server.startswith("smb://"):
        from .smb import SMBStore, parse_url

        target = parse_url(server)
        if credentials is not None and credentials.username and not target.username:
            target = target.__class__(target.host, target.port, target.share, target.path,
                                      credentials.username, credentials.domain)
        if not target.username:
            raise errors.UserError(f"no user name for {server}: smb://USER@HOST/SHARE or "
                                   f"username= in the credentials file")
        return SMBStore(target, credentials.password if credentials else None,
                        True if encrypt else None, timeout, upload_processes=upload_processes,
                        upload_threads=upload_threads)
    if "://" in server:
        raise errors.UserError(f"unsupported server {server!r}: give smb://... or a folder")
    return LocalDirStore(os.path.abspath(os.path.expanduser(server)))
