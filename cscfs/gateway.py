"""The remote gateway: every call to the server goes through here, in a worker
thread under the deadline, and only when the mode allows it. A call that cannot
reach the server makes the link unreachable (offline) and raises Unavailable.

It is also the sync engine's Remote port (sync/ports.py): the same calls, async.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterable, Iterator

import trio

from sync.ports import Fingerprint, RemoteStat

from . import errors, modes
from .config import Options
from .link import LinkKeeper
from .remote.base import RemoteStore, remove_if


class RemoteGateway:
    def __init__(self, store: RemoteStore, link: LinkKeeper, options: Options,
                 clock: Callable[[], float]):
        self.store, self.link, self.opts, self.clock = store, link, options, clock
        self.busy = 0          # calls under way (the link probe's context)
        self.ok_at = -1e9      # when the last one succeeded, or a transfer took a step
        self.sync_active = 0   # manual syncs running: they reach the server in any mode
        self.filling = 0       # a fill pass allowed outside the online mode (background only)

    @property
    def stores_modes(self) -> bool:
        return self.store.stores_modes

    @property
    def name_max(self) -> int:
        return self.store.name_max

    def name_len(self, name: str) -> int:
        return self.store.name_len(name)

    def allowed(self, background: bool = False) -> bool:
        """Only the online mode calls the server from a request; a manual sync may in
        any mode that reaches it; background work (fetch completion, replay) also
        on a slow link, and a fill pass where the filler was allowed one."""
        link = self.link
        return link.online or link.reachable and (
            self.sync_active > 0 or background and (
                link.mode == modes.SLOW_LINK or self.filling > 0))

    def may_reach(self) -> bool:
        return self.link.online or self.sync_active > 0 and self.link.reachable

    @contextlib.contextmanager
    def syncing(self) -> Iterator[None]:
        self.sync_active += 1
        try:
            yield
        finally:
            self.sync_active -= 1

    @contextlib.contextmanager
    def fill_window(self) -> Iterator[None]:
        """Background fill may reach the server (not the application's requests:
        those follow the mode)."""
        self.filling += 1
        try:
            yield
        finally:
            self.filling -= 1

    async def call(self, fn, *args, background: bool = False,
                   progress: Progress | None = None):
        """`fn(*args)` (a store method, looked up at call time) in a worker thread.
        With `progress`, the deadline counts from the transfer's last step, not from
        the start: a big upload over a slow link takes as long as it takes."""
        if not self.allowed(background):
            raise errors.Unavailable(f"{self.link.mode}: {self.link.reason}")
        self.busy += 1
        timeout = self.opts.remote_timeout
        try:
            with trio.fail_after(timeout) as scope:
                if progress is not None:
                    def stepped() -> None:
                        scope.deadline = trio.current_time() + timeout
                        self.ok_at = self.clock()  # the link carries it (the probe's view)

                    progress.on_step = stepped
                result = await trio.to_thread.run_sync(
                    functools.partial(fn, *args), abandon_on_cancel=True)
            self.ok_at = self.clock()
            return result
        except trio.TooSlowError:
            exc = errors.Unavailable(f"no answer within {self.opts.remote_timeout:g} s")
        except errors.Unavailable as e:
            exc = e
        finally:
            self.busy -= 1
        self.link.observed(None, str(exc))
        raise exc

    # ------------------------------------------------- the Remote port
    async def stat(self, path: str) -> RemoteStat:
        return await self.call(self.store.stat, path)

    async def stat_or_none(self, path: str) -> RemoteStat | None:
        try:
            return await self.call(self.store.stat, path)
        except errors.NotFound:
            return None

    async def scandir(self, path: str, background: bool = False) -> list[RemoteStat]:
        return await self.call(self.store.scandir, path, background=background)

    async def read(self, path: str, offset: int, length: int, background: bool = True) -> bytes:
        return await self.call(self.store.read, path, offset, length, background=background)

    async def upload(self, path: str, chunks, expected: Fingerprint | None, mode: int,
                     mtime_ns: int, owner: tuple[int, int] | None = None,
                     expected_sha: str | None = None) -> RemoteStat:
        progress = Progress()
        return await self.call(self.store.upload, path, progress.through(chunks), expected,
                               mode, mtime_ns, owner, expected_sha, progress=progress)

    async def mkdir(self, path: str, mode: int) -> RemoteStat:
        return await self.call(self.store.mkdir, path, mode)

    async def rmdir(self, path: str) -> None:
        await self.call(self.store.rmdir, path)

    async def remove(self, path: str) -> None:
        await self.call(self.store.remove, path)

    async def remove_if(self, path: str, expected: Fingerprint,
                        expected_sha: str | None = None) -> RemoteStat | None:
        return await self.call(remove_if, self.store, path, expected, expected_sha)

    async def rename(self, old: str, new: str, replace: bool) -> None:
        await self.call(self.store.rename, old, new, replace)

    async def symlink(self, target: str, path: str) -> RemoteStat:
        return await self.call(self.store.symlink, target, path)

    async def mknod(self, path: str, kind: str, mode: int, rdev: int) -> RemoteStat:
        return await self.call(self.store.mknod, path, kind, mode, rdev)

    async def chown(self, path: str, uid: int, gid: int) -> RemoteStat:
        return await self.call(self.store.chown, path, uid, gid)

    async def chmod(self, path: str, mode: int) -> RemoteStat:
        return await self.call(self.store.chmod, path, mode)

    async def set_mtime(self, path: str, mtime_ns: int) -> RemoteStat:
        return await self.call(self.store.set_mtime, path, mtime_ns)


class Progress:
    """The steps of one long transfer: the store's worker thread takes each chunk
    through `through` (a chunk asked for is the one before it sent), and each step
    runs `on_step` on the event loop (the call moves its deadline)."""

    def __init__(self):
        self._token = trio.lowlevel.current_trio_token()
        self.on_step: Callable[[], None] | None = None

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._step()
            yield chunk
        self._step()

    def _step(self) -> None:
        try:
            self._token.run_sync_soon(self._stepped)
        except trio.RunFinishedError:
            pass  # shutting down: nobody waits

    def _stepped(self) -> None:
        if self.on_step is not None:
            self.on_step()
