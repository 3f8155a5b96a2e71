"""Range fetching and background completion: a read of an absent range fetches
it (on a file's first read only what that read needs, so its first byte comes
after one round trip); a file opened while partly cached is completed in the
background so that it stays readable offline.

Version safety: every chunk is fetched under the file's lock and stored only if
the file's epoch is still the one it started under. Revalidation and listings drop
a stale clean copy without waiting for that lock (a reader must not wait for a
whole background fetch), so a fetch of the old version that returns afterwards
finds the epoch moved and discards its bytes instead of mixing two versions.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os

import trio

from . import errors
from .config import Options
from .diskspace import SpaceKeeper
from .errors import fs_error
from .gateway import RemoteGateway
from .inodes import InodeTable
from .link import LinkKeeper
from .metadata import Node

log = logging.getLogger("cscfs.fetcher")

FIRST_FETCH = 128 << 10  # at least this much on a file's first read
PREFETCH_GRACE = 0.05    # s between an open and the background fetch of the rest
RACY_HASH_MAX = 64 << 20  # larger racy files are trusted to their fingerprint
_EPOCH_RETRIES = 3       # a file replaced on the server this often during one fetch: ESTALE


class Fetcher:
    def __init__(self, table: InodeTable, gateway: RemoteGateway, link: LinkKeeper,
                 options: Options, space: SpaceKeeper):
        self.table, self.gateway, self.link, self.opts = table, gateway, link, options
        self.space = space
        self._queue: list[int] = []  # inos to complete in the background
        self._wake = trio.Event()

    async def fetch(self, node: Node, start: int, end: int, background: bool = False) -> None:
        """Make [start, end) of a file present, fetching whole chunks (what is missing
        of them), but on a file's first read only what that read needs."""
        end = min(end, node.size)
        if node.present.covers(start, end):
            return
        if not self.link.online and not background:
            raise errors.Unavailable(f"{self.table.path_of(node)}: not cached and the mode "
                                     f"is {self.link.mode} ({self.link.reason})")
        cs = self.opts.chunk_size
        wanted_end = end
        start, end = start // cs * cs, min(node.size, -(-end // cs) * cs)
        for pos in range(start, end, cs):
            upto = min(pos + cs, end)
            if node.present.covers(pos, upto):
                continue
            # The lock is taken per chunk, so that a reader's chunk never waits
            # behind a whole background fetch of the same file (trio's lock is fair:
            # a waiting reader goes before the background's next chunk).
            await self._fetch_chunk(node, pos, upto, wanted_end, background)
        if node.racy and node.base_sha is None and not node.dirty and node.complete:
            node.base_sha = self.hash_content(node)  # a young base: keep what it held

    async def _fetch_chunk(self, node: Node, pos: int, upto: int, wanted_end: int,
                           background: bool) -> None:
        async with self.table.lock(node):
            for _ in range(_EPOCH_RETRIES):
                if node.unlinked:
                    return
                end = min(upto, node.size)  # a new version may be shorter
                if not background and not node.present.present_bytes():
                    # A file's first read gets just what it asked for (the first byte
                    # sooner: 1 MiB is several round trips at 50 ms); the next read
                    # fetches the rest of the chunk.
                    end = min(end, max(wanted_end, pos + FIRST_FETCH))
                gaps = node.present.missing(pos, end)
                if not gaps:
                    return
                epoch = node.epoch
                for gap_start, gap_end in gaps:
                    if not await self._fetch_range(node, gap_start, gap_end, epoch, background):
                        break  # dropped for a newer version meanwhile: look again
                else:
                    return
            raise fs_error(errno.ESTALE, f"{self.table.path_of(node)} keeps changing on "
                                         f"the server")

    async def _fetch_range(self, node: Node, start: int, end: int, epoch: int,
                           background: bool) -> bool:
        """Fetch and store one range; False if the file's content was dropped for a
        newer server version while the bytes were on their way (they are discarded)."""
        path = self.table.path_of(node)
        data = await self.gateway.read(path, start, end - start, background=background)
        if node.epoch != epoch:
            return False
        if len(data) < end - start:
            node.checked_at = -1e9  # shorter than we knew: recheck at next open
            raise fs_error(errno.ESTALE, f"{path} changed on the server")
        self.space.check_write(grows=True)
        fd = node.fd if node.fd >= 0 else self.table.content.open(node.ino)
        try:
            os.pwrite(fd, data, start)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.space.met_full()
            raise
        finally:
            if fd != node.fd:
                os.close(fd)
        node.present.add(start, end)
        self.table.changed(node)
        return True

    def hash_content(self, node: Node) -> str | None:
        if node.size > RACY_HASH_MAX:
            return None
        sha = hashlib.sha256()
        fd = self.table.content.open(node.ino)
        try:
            for pos in range(0, node.size, 1 << 20):
                sha.update(os.pread(fd, min(1 << 20, node.size - pos), pos))
        finally:
            os.close(fd)
        return sha.hexdigest()

    # ------------------------------------------------ background completion
    def complete_later(self, node: Node) -> None:
        self._queue.append(node.ino)
        self._wake.set()

    async def run(self) -> None:
        """Fetch queued, partly cached files completely, so that they stay readable
        when the link goes (on a slow link too: it is background work)."""
        while True:
            if not self._queue or not self.gateway.allowed(background=True):
                with trio.move_on_after(1.0):  # the link may come back meanwhile
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            node = self.table.live(self._queue.pop(0))
            if node is None or node.complete or not node.present.spans:
                continue  # gone, done, or evicted since it was opened
            # The opener's first read comes right after the open: let it fetch first.
            await trio.sleep(PREFETCH_GRACE)
            try:
                await self.fetch(node, 0, node.size, background=True)
            except errors.Unavailable:
                self._queue.insert(0, node.ino)  # when the link is back
            except (errors.CscfsError, OSError) as exc:
                log.info("background fetch of %s stopped: %s", self.table.path_of(node), exc)
