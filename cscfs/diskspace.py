"""The cache disk filling up: an error for the application, never a crash or a loss.

A small reserve file is kept in the data dir. When the disk is full (a write of
content or a commit of the state database meets ENOSPC), the reserve is given up so
that the database can still record what happens (unlink, rmdir, truncate, an
upload's result, `cscfs check`), and the cache counts as full: writes that would
grow a file and fetches of server content get ENOSPC at once, without touching the
disk. A look every second sees space come back (a file deleted, the disk grown):
then the reserve is taken again and writes work, without a remount.
"""

from __future__ import annotations

import errno
import logging
import os

import trio

from sync.vocabulary import EVENT_DISK

log = logging.getLogger("cscfs.diskspace")

RESERVE_MAX = 8 << 20     # bytes kept back for the state database
RESERVE_SHARE = 0.05      # ... but at most this share of a small file system
CHECK_INTERVAL = 1.0      # s between looks at the free space while full


class CacheFull(OSError):
    def __init__(self, detail: str = "the cache disk is full"):
        super().__init__(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {detail}")


class SpaceKeeper:
    def __init__(self, data_dir: str, record_event, pending_bytes):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "reserve")
        self.record_event = record_event    # (kind, reason) -> None
        self.pending_bytes = pending_bytes  # () -> bytes of changes not uploaded yet
        sv = os.statvfs(data_dir)
        self.size = int(min(RESERVE_MAX, sv.f_blocks * sv.f_frsize * RESERVE_SHARE))
        self.full = False
        self._take_reserve()

    def _take_reserve(self) -> bool:
        """Allocate the reserve (real blocks, not a sparse file); False: no room."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot keep a reserve in %s: %s", self.data_dir, exc)
            return False
        try:
            os.posix_fallocate(fd, 0, self.size)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("cannot keep a reserve in %s: %s", self.data_dir, exc)
            os.ftruncate(fd, 0)
            return False
        finally:
            os.close(fd)

    def met_full(self) -> bool:
        """ENOSPC was met: give up the reserve, count the cache as full. True if the
        reserve freed space (worth trying the failed commit again)."""
        freed = False
        try:
            freed = os.stat(self.path).st_size > 0
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if not self.full:
            self.full = True
            self.record_event(EVENT_DISK, f"the cache disk is full: {self.pending_bytes()} "
                                          f"bytes of changes wait for upload; delete files "
                                          f"or make room in {self.data_dir}")
            log.error("the cache disk is full (data dir %s)", self.data_dir)
        return freed

    def check_write(self, grows: bool) -> None:
        """Before a write: while full, one that grows a file is refused at once."""
        if self.full and grows:
            raise CacheFull()

    def free_bytes(self) -> int:
        sv = os.statvfs(self.data_dir)
        return sv.f_bavail * sv.f_frsize

    async def run(self) -> None:
        """While full, watch for space to come back."""
        while True:
            await trio.sleep(CHECK_INTERVAL)
            if self.full and self.free_bytes() >= 2 * self.size and self._take_reserve():
                self.full = False
                self.record_event(EVENT_DISK, "the cache disk has room again")
                log.warning("the cache disk has room again")
