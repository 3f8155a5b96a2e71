"""The cache quota: least-recently-used eviction of clean, unpinned content.

Dirty content is the only copy of someone's work and pinned content was asked to
stay: neither is ever evicted. An evicted file becomes a ghost (listed, fetched
again when opened online). When the quota cannot be met because the rest is dirty
or pinned, one warning event says so (again only after usage fell under the limit).
"""

from __future__ import annotations

import logging
import os
import time

import trio

from sync.vocabulary import EVENT_QUOTA

from .config import Options
from .errors import UserError
from .inodes import InodeTable

log = logging.getLogger("cscfs.quota")


def quota_bytes(spec: str, data_dir: str) -> int:
    """'25%' of the data dir's file system, or a number of bytes."""
    spec = spec.strip()
    try:
        if spec.endswith("%"):
            sv = os.statvfs(data_dir)
            return int(sv.f_blocks * sv.f_frsize * float(spec[:-1]) / 100)
        return int(float(spec))
    except ValueError:
        raise UserError(f"cache_quota {spec!r}: give bytes or a percentage like 25%") from None


class Quota:
    def __init__(self, table: InodeTable, options: Options, data_dir: str):
        self.table, self.opts = table, options
        self.limit = quota_bytes(options.cache_quota, data_dir)
        self.warned = False
        self._reserved, self._reserved_at = 0, -1e9  # room() bookkeeping

    def used(self) -> int:
        return sum(n.cached_bytes for n in self.table.nodes.values()
                   if n.kind == "file" and not n.unlinked)

    def room(self, size: int) -> bool:
        """Whether `size` more bytes fit under the limit; if so they are counted as
        taken (the filler asks before each file). The count is taken afresh at most
        once a second: summing every item per file would cost O(n^2)."""
        now = time.monotonic()
        if now - self._reserved_at > 1.0:
            self._reserved, self._reserved_at = self.used(), now
        if self._reserved + size > self.limit:
            return False
        self._reserved += size
        return True

    def enforce(self) -> int:
        """Evict until under the limit; returns the bytes freed."""
        table, used = self.table, self.used()
        if used <= self.limit:
            self.warned = False
            return 0
        freed = 0
        candidates = sorted(
            (n for n in table.nodes.values()
             if n.kind == "file" and not n.unlinked and not n.dirty and not n.opens
             and n.present.spans and not table.pinned(n)),
            key=lambda n: n.last_access)
        for node in candidates:
            if used - freed <= self.limit:
                break
            freed += node.present.present_bytes()
            node.present.clear()
            node.epoch += 1  # a background fetch under way must not store its bytes
            table.content.remove(node.ino)
            table.state.save(node)
        if used - freed > self.limit and not self.warned:
            self.warned = True
            table.state.add_event(EVENT_QUOTA, f"cache quota of {self.limit} bytes cannot be "
                                               f"met: {used - freed} bytes are dirty or pinned")
            log.warning("cache quota cannot be met: the rest is dirty or pinned")
        if freed:
            log.info("evicted %d bytes of clean, unpinned content", freed)
        return freed

    async def run(self) -> None:
        while True:
            self.enforce()
            await trio.sleep(self.opts.quota_interval)
