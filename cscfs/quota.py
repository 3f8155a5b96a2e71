"""The cache quota: least-recently-used eviction of clean, unpinned content.

Dirty content is the only copy of someone's work and pinned content was asked to
stay: neither is ever evicted. An evicted file becomes a ghost (listed, fetched
again when opened online). When the quota cannot be met because the rest is dirty
or pinned, one warning event says so (again only after usage fell under the limit).
"""

from __future__ import annotations

import logging
import os

import trio

from .errors import UserError
from .syncer import pinned

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
    def __init__(self, vfs, data_dir: str):
        self.vfs = vfs
        self.limit = quota_bytes(vfs.opts.cache_quota, data_dir)
        self.warned = False

    def used(self) -> int:
        return sum(n.present.present_bytes() for n in self.vfs.nodes.values()
                   if n.kind == "file" and not n.unlinked)

    def enforce(self) -> int:
        """Evict until under the limit; returns the bytes freed."""
        vfs, used = self.vfs, self.used()
        if used <= self.limit:
            self.warned = False
            return 0
        freed = 0
        candidates = sorted(
            (n for n in vfs.nodes.values()
             if n.kind == "file" and not n.unlinked and not n.dirty and not n.opens
             and n.present.spans and not pinned(vfs, n)),
            key=lambda n: n.last_access)
        for node in candidates:
            if used - freed <= self.limit:
                break
            freed += node.present.present_bytes()
            node.present.clear()
            vfs.content.remove(node.ino)
            vfs.state.save(node)
        if used - freed > self.limit and not self.warned:
            self.warned = True
            vfs.state.add_event("quota", f"cache quota of {self.limit} bytes cannot be met: "
                                         f"{used - freed} bytes are dirty or pinned")
            log.warning("cache quota cannot be met: the rest is dirty or pinned")
        if freed:
            log.info("evicted %d bytes of clean, unpinned content", freed)
        return freed

    async def run(self) -> None:
        while True:
            self.enforce()
            await trio.sleep(self.vfs.opts.quota_interval)
