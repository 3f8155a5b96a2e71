"""The RemoteStore port: what the cache needs from a file server.

Paths are relative POSIX strings from the share root ("" is the root, "a/b.txt").
Every method is blocking and may be slow; the VFS calls them off the FUSE dispatch
thread with a deadline. Stores classify their own failures (errors.NotFound,
AlreadyExists, PermissionDenied, NotEmpty, Unavailable, Changed): "Unavailable"
means the server cannot be reached now and says nothing about the file.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from sync.conflicts import conflict_names
from sync.names import fit
from sync.ports import Fingerprint, RemoteStat  # the values the engine speaks too

from .. import errors

# Names we write on the server while an upload or a checked delete is in flight;
# never listed, and the watcher ignores their changes.
TEMP_PREFIX = ".~cscfs-"
TEMP_HINT = 40  # at most this much of the original name in a temporary one
HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    total_bytes: int
    free_bytes: int
    total_files: int
    free_files: int


class RemoteStore(Protocol):
    url: str  # what the user named, without secrets
    stores_modes: bool  # False: permission bits are not kept (SMB); chmod is a no-op
    name_max: int  # the longest name the server takes, in name_len's unit

    def check_name(self, name: str) -> None:
        """Raise errors.InvalidName, naming the rule, for a name the server refuses."""
        ...

    def name_len(self, name: str) -> int:
        """A name's length as the server counts it (UTF-8 bytes, UTF-16 units)."""
        ...

    def can_own(self, uid: int, gid: int) -> bool:
        """Whether an item on the server can be given this owner (asked before a
        chown, also offline: one the server cannot carry out is refused at once)."""
        ...

    def can_mknod(self, kind: str) -> bool:
        """Whether the server can hold a special file of this kind (SPECIAL_KINDS)."""
        ...

    def stat(self, path: str) -> RemoteStat: ...

    def scandir(self, path: str) -> list[RemoteStat]: ...

    def read(self, path: str, offset: int, length: int) -> bytes: ...

    def upload(
        self,
        path: str,
        chunks: Iterable[bytes],
        expected: Fingerprint | None,
        mode: int,
        mtime_ns: int,
        owner: tuple[int, int] | None = None,
        expected_sha: str | None = None,
    ) -> RemoteStat:
        """Atomically make `path` hold `chunks`: write a temporary name in the same
        folder, then rename it over `path`, but only if `path` still has the
        `expected` fingerprint (None: only if `path` does not exist) and, given
        `expected_sha` (a racy base), that content. Raises Changed otherwise. The
        server never shows a partial file at `path`. `owner` (uid, gid): the new
        version's owner (None: as the server makes it)."""
        ...

    def mkdir(self, path: str, mode: int) -> RemoteStat: ...

    def rmdir(self, path: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def rename(self, old: str, new: str, replace: bool) -> None: ...

    def symlink(self, target: str, path: str) -> RemoteStat: ...

    def mknod(self, path: str, kind: str, mode: int, rdev: int) -> RemoteStat: ...

    def chown(self, path: str, uid: int, gid: int) -> RemoteStat:
        """Change the owner of `path` itself (not a link's target); -1 keeps one."""
        ...

    def chmod(self, path: str, mode: int) -> RemoteStat: ...

    def set_mtime(self, path: str, mtime_ns: int) -> RemoteStat: ...

    def space(self) -> SpaceInfo: ...

    def close(self) -> None: ...

    # Optional: watch(on_change, stop: threading.Event, on_armed) -> None, blocking in
    # a thread: calls on_change(path) for each change made on the server ("" when it
    # may have missed some) and on_armed(True / False) while every change is reported
    # (the kernel may then cache names for cache_ttl). Without it: polled (attr_ttl).


def temp_name(store, path: str, tag: str) -> str:
    """A temporary name beside `path` for an upload ("tmp") or a checked delete
    ("del"): TEMP_PREFIX, a random token and the start of the original name (so a
    stray one, left by a crash, says whose it was), within the server's limit
    whatever the original's length."""
    parent, _, name = path.rpartition("/")
    head = f"{TEMP_PREFIX}{secrets.token_hex(6)}-"
    hint = fit("", name, "", TEMP_HINT, store.name_len)
    return join(parent, fit(head, hint, f".{tag}", store.name_max, store.name_len))


def check_expected(store, path: str, expected: Fingerprint | None,
                   expected_sha: str | None = None) -> None:
    """Raise Changed unless `path` has the `expected` version (None: is absent) and,
    with `expected_sha`, that version's content hashes to it."""
    try:
        current = store.stat(path)
    except errors.NotFound:
        current = None
    check_version(path, expected, current, expected_sha and (
        lambda: content_sha(store, path, current.size, b"") == expected_sha))


def check_version(path: str, expected: Fingerprint | None, current: RemoteStat | None,
                  same_content: Callable[[], bool] | None = None) -> None:
    """Raise Changed unless `current` (what the server holds at `path`) is the
    `expected` version. For a racy base (recorded within a clock tick of its own
    mtime) a write in the same tick may keep the fingerprint: the caller passes
    `same_content`, which compares the server's content hash with the base's."""
    if current is None:
        if expected is not None:
            raise errors.Changed(f"{path}: deleted on the server", current=None)
        return
    if expected is None or current.fingerprint != expected:
        raise errors.Changed(f"{path}: changed on the server", current=current)
    if same_content is not None and not same_content():
        raise errors.Changed(f"{path}: changed on the server within one clock tick",
                             current=current)


def content_sha(store, path: str, size: int, head: bytes) -> str:
    """SHA-256 of a server file of `size` bytes whose first bytes (`head`) are read."""
    h = hashlib.sha256(head[:size])
    for pos in range(len(head), size, HASH_CHUNK):
        h.update(store.read(path, pos, min(HASH_CHUNK, size - pos)))
    return h.hexdigest()


def remove_if(store, path: str, expected: Fingerprint,
              expected_sha: str | None = None) -> RemoteStat | None:
    """Delete `path` only if it still is the `expected` version; otherwise leave it
    and return what is there now. The file is first renamed to a temporary name (an
    atomic step), then checked, then removed, so a change made by path between our
    check and the removal lands on a new file at the name instead of being lost.
    With `expected_sha` (a racy base: a same-size write in the same clock tick keeps
    the fingerprint) the content decides too.
    Worst case left (# RACE): a writer that already had the old file open."""
    parent = path.rpartition("/")[0]
    tmp = temp_name(store, path, "del")
    try:
        store.rename(path, tmp, False)
    except errors.NotFound:
        return None
    st = store.stat(tmp)
    if st.fingerprint == expected and (
            expected_sha is None or content_sha(store, tmp, st.size, b"") == expected_sha):
        store.remove(tmp)
        return None
    try:
        store.rename(tmp, path, False)  # not ours to delete: put it back
        return st
    except errors.AlreadyExists:
        pass
    # The name was taken meanwhile too: keep theirs beside it, never lose it.
    for name in conflict_names(path.rpartition("/")[2], "server", time.time(),
                               max_len=store.name_max, measure=store.name_len):
        try:
            store.rename(tmp, join(parent, name), False)
            return st
        except errors.AlreadyExists:
            continue
    raise errors.RemoteError(f"{path}: no free conflict copy name; kept as {tmp}")


class SourceFailed(Exception):
    """Reading the data to upload failed on our side: not the server's fault, so a
    store re-raises the cause (`__cause__`) instead of classifying it."""


def guarded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise SourceFailed() from exc
        yield chunk


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
