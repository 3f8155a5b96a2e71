"""The sync engine as one object: write-back queue, uploader and journal replay
over the client's ports, and the manual sync (`cscfs sync`).

A manual sync works in every mode that can reach the server (also slow-link,
work-offline and always-offline): it replays the offline journal, lists the
folders asked for (the whole tree by default), folding each listing in as
reconcile() plans it, uploads what changed here and fetches what is pinned and
not fully cached. It yields its progress as it goes.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator

from .ports import (Clock, ConflictLog, Item, Journal, Link, LocalTree, Record, Remote,
                    RemoteError, SyncFailed, Unavailable)
from .replay import Replayer
from .upload import Uploader
from .vocabulary import EVENT_SYNC, META_LAST_SYNC
from .writeback import WriteBack

log = logging.getLogger("sync.engine")


class SyncEngine:
    def __init__(self, tree: LocalTree, remote: Remote, journal: Journal,
                 conflicts: ConflictLog, link: Link, record: Record, clock: Clock, *,
                 host: str, delay: float, parallel: int, requests):
        self.tree, self.remote, self.journal, self.conflicts = tree, remote, journal, conflicts
        self.link, self.record, self.clock = link, record, clock
        again = self._again
        self.uploader = Uploader(tree, remote, conflicts, clock, host, again)
        self.replayer = Replayer(journal, tree, remote, conflicts, link, clock, host, again)
        self.writeback = WriteBack(tree, self.uploader, self.replayer, journal, link, record,
                                   clock, delay=delay, parallel=parallel, requests=requests)

    def _again(self, item: Item) -> None:
        self.writeback.again(item)

    async def manual_sync(self, roots: list[Item], label: str = "manual"
                          ) -> AsyncIterator[dict]:
        if not self.link.reachable:
            await self.link.probe()
        if not self.link.reachable:
            raise Unavailable(f"cannot sync: the server is unreachable ({self.link.reason})")
        started = self.clock.time()
        with self.link.syncing():
            conflicts_before = self.conflicts.open_count()
            replayed = await self.replayer.replay() if self.journal.count else 0
            push, pull = await self._walk(roots or [self.tree.root()])
            total_files = len(push) + len(pull)
            total_bytes = sum(n.size for n in push) + sum(self._missing(n) for n in pull)
            done_files = done_bytes = failed = 0
            yield {"total_files": total_files, "total_bytes": total_bytes,
                   "done_files": 0, "done_bytes": 0}
            for item, action in [(n, "upload") for n in push] + [(n, "download") for n in pull]:
                path = self.tree.path_of(item)
                size = item.size if action == "upload" else self._missing(item)
                try:
                    if action == "upload":
                        await self.writeback.upload_now(item)
                    else:
                        await self.tree.fetch_all(item)
                except Unavailable as exc:
                    raise Unavailable(f"sync stopped: the server became unreachable ({exc})"
                                      ) from None
                except (RemoteError, SyncFailed, OSError) as exc:
                    failed += 1
                    log.error("sync: %s %s failed: %s", action, path, exc)
                done_files += 1
                done_bytes += size
                yield {"total_files": total_files, "total_bytes": total_bytes,
                       "done_files": done_files, "done_bytes": done_bytes, "path": path,
                       "action": action}
            open_conflicts = self.conflicts.open_count()
            self.record.add_event(EVENT_SYNC, f"{label} sync finished: {len(push)} uploaded, "
                                              f"{len(pull)} downloaded ({done_bytes} bytes), "
                                              f"{replayed} offline changes replayed, "
                                              f"{failed} failed")
            if label == "manual":
                self.record.set_meta(META_LAST_SYNC, repr(self.clock.time()))
            yield {"summary": {
                "replayed": replayed, "uploaded": len(push), "downloaded": len(pull),
                "bytes": done_bytes, "failed": failed,
                "new_conflicts": max(0, open_conflicts - conflicts_before),
                "costed": self.link.costed or None,
                "open_conflicts": open_conflicts,
                "seconds": round(self.clock.time() - started, 2)}}

    @staticmethod
    def _missing(item: Item) -> int:
        return item.size - item.cached_bytes

    async def _walk(self, roots: list[Item]) -> tuple[list[Item], list[Item]]:
        """Fresh listings of every folder under the roots; what to upload and fetch."""
        push, pull, stack = [], [], list(roots)
        while stack:
            item = stack.pop()
            if self.tree.item(item.ino) is not item:
                continue
            if item.kind == "dir":
                await self.tree.refresh(item)
                stack.extend(self.tree.children(item))
            elif item.kind == "file":
                if item.dirty and not item.writers:
                    push.append(item)
                elif not item.complete and self.tree.pinned(item):
                    pull.append(item)
        return push, pull
