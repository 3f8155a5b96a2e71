"""A plain directory as the server: a local folder, or an NFS / CIFS mount."""

from __future__ import annotations

import errno
import logging
import os
import stat as statmod
import threading
from typing import Callable, Iterable

from sync.names import utf8_bytes

from .. import errors
from .base import (TEMP_PREFIX, Fingerprint, RemoteStat, SourceFailed, SpaceInfo,
                   check_expected, guarded, temp_name)

log = logging.getLogger("cscfs.remote.local")

# File systems whose changes inotify sees whoever makes them. On a network file system
# (NFS, CIFS, FUSE) it sees only this machine's changes, so those are polled instead.
_LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay",
             "vfat", "exfat", "ntfs3", "jfs", "reiserfs", "bcachefs", "ramfs"}

NAME_MAX = 255
SYNC_EVERY = 32 << 20  # bytes an upload writes between two fdatasync

# errnos that say "the server (or the mount in front of it) is not reachable now".
_UNAVAILABLE = {
    errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ENOTCONN, errno.ESTALE, errno.EIO, errno.ENODEV, errno.ENXIO,
}


_KINDS = {statmod.S_IFDIR: "dir", statmod.S_IFLNK: "symlink", statmod.S_IFIFO: "fifo",
          statmod.S_IFSOCK: "socket", statmod.S_IFCHR: "chardev", statmod.S_IFBLK: "blockdev"}
_TYPE_BITS = {kind: bits for bits, kind in _KINDS.items()}


def _kind(mode: int) -> str:
    return _KINDS.get(statmod.S_IFMT(mode), "file")


class LocalDirStore:
    """RemoteStore over a directory tree. A missing root means the share is gone
    (an unmounted NFS export, a removed disk): Unavailable, not NotFound."""

    stores_modes = True
    notify_complete = True  # inotify sees every change (watch() runs only on local fs)
    name_max = NAME_MAX  # bytes, on every Linux file system we serve from

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.url = self.root

    def check_name(self, name: str) -> None:
        # The kernel already refuses "/" and NUL; FUSE lets names up to 1024 bytes by.
        if utf8_bytes(name) > self.name_max:
            raise errors.InvalidName(f"{name!r} is longer than {self.name_max} bytes",
                                     err=errno.ENAMETOOLONG)

    @staticmethod
    def name_len(name: str) -> int:
        return utf8_bytes(name)

    def can_own(self, uid: int, gid: int) -> bool:
        # Root gives items away; anyone else may only pick one of their own groups.
        if os.geteuid() == 0:
            return True
        return uid in (-1, os.geteuid()) and gid in (-1, os.getegid(), *os.getgroups())

    def can_mknod(self, kind: str) -> bool:
        return kind in ("fifo", "socket") or os.geteuid() == 0  # devices need CAP_MKNOD

    # -- helpers -----------------------------------------------------------
    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def _classify(self, exc: OSError, path: str) -> errors.CscfsError:
        err = exc.errno or errno.EIO
        if err in _UNAVAILABLE or not os.path.isdir(self.root):
            return errors.Unavailable(f"{self.url}: {os.strerror(err)}")
        cls = {
            errno.ENOENT: errors.NotFound,
            errno.ENOTDIR: errors.NotFound,
            errno.EEXIST: errors.AlreadyExists,
            errno.EACCES: errors.PermissionDenied,
            errno.EPERM: errors.PermissionDenied,
            errno.ENOTEMPTY: errors.NotEmpty,
        }.get(err)
        if cls is errors.PermissionDenied:  # EPERM stays EPERM (a chown, a mknod)
            return cls(f"{path or '/'}: {os.strerror(err)}", err=err)
        if cls is not None:
            return cls(f"{path or '/'}: {os.strerror(err)}")
        return errors.RemoteError(f"{path or '/'}: {os.strerror(err)}", err=err)

    def _stat_result(self, name: str, st: os.stat_result, full: str) -> RemoteStat:
        kind = _kind(st.st_mode)
        target = os.readlink(full) if kind == "symlink" else None
        return RemoteStat(
            name=name, kind=kind, size=st.st_size if kind == "file" else 0,
            mtime_ns=st.st_mtime_ns, mode=statmod.S_IMODE(st.st_mode),
            file_id=st.st_ino, target=target, uid=st.st_uid, gid=st.st_gid,
            rdev=st.st_rdev if kind in ("chardev", "blockdev") else 0,
        )

    def _call(self, path: str, fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            raise self._classify(exc, path) from exc

    # -- RemoteStore ---------------------------------------------------------
    def stat(self, path: str) -> RemoteStat:
        full = self._abs(path)
        st = self._call(path, os.lstat, full)
        return self._call(path, self._stat_result, os.path.basename(path), st, full)

    def scandir(self, path: str) -> list[RemoteStat]:
        def listing():
            out = []
            with os.scandir(self._abs(path)) as it:
                for entry in it:
                    if entry.name.startswith(TEMP_PREFIX):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we listed
                    out.append(self._stat_result(entry.name, st, entry.path))
            return out

        return self._call(path, listing)

    def read(self, path: str, offset: int, length: int) -> bytes:
        def do():
            fd = os.open(self._abs(path), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                parts, done = [], 0
                while done < length:
                    buf = os.pread(fd, length - done, offset + done)
                    if not buf:
                        break
                    parts.append(buf)
                    done += len(buf)
                return b"".join(parts)
            finally:
                os.close(fd)

        return self._call(path, do)

    def upload(self, path: str, chunks: Iterable[bytes], expected: Fingerprint | None,
               mode: int, mtime_ns: int, owner: tuple[int, int] | None = None,
               expected_sha: str | None = None) -> RemoteStat:
        check_expected(self, path, expected, expected_sha)
        tmp = temp_name(self, path, "tmp")

        def write_tmp():
            fd = os.open(self._abs(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                unsynced = 0
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    unsynced += len(chunk)
                    if unsynced >= SYNC_EVERY:
                        # Keeps the final fsync short: the call's deadline counts from
                        # the last chunk taken, and a big file's fsync is one wait.
                        os.fdatasync(fd)
                        unsynced = 0
                # The owner the file had, where we may give it (else the new version
                # is the daemon's, as any file it writes); before the mode, as a chown
                # clears set-id bits.
                if owner is not None and self.can_own(*owner):
                    st = os.fstat(fd)
                    if (st.st_uid, st.st_gid) != owner:
                        os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)

        chunks = guarded(chunks)
        try:
            self._call(path, write_tmp)  # a failure names the file, not our temporary
            # RACE: another client may change `path` between the check above and
            # this rename; worst case their version is replaced by ours. SMB closes
            # this window with an exclusive open; a plain directory cannot.
            check_expected(self, path, expected)
            self._call(path, os.replace, self._abs(tmp), self._abs(path))
        except BaseException as exc:
            try:
                os.unlink(self._abs(tmp))
            except OSError:
                pass
            if isinstance(exc, SourceFailed):
                raise exc.__cause__ from None
            raise
        return self.stat(path)

    def mkdir(self, path: str, mode: int) -> RemoteStat:
        self._call(path, os.mkdir, self._abs(path), mode)
        return self._with_mode(path, mode)

    def _with_mode(self, path: str, mode: int) -> RemoteStat:
        """The daemon's umask applies to what it makes: the mode asked for (already
        masked by the caller's umask in the kernel) is set again."""
        st = self.stat(path)
        if st.mode != mode & 0o7777:
            return self.chmod(path, mode & 0o7777)
        return st

    def rmdir(self, path: str) -> None:
        self._call(path, os.rmdir, self._abs(path))

    def remove(self, path: str) -> None:
        self._call(path, os.unlink, self._abs(path))

    def rename(self, old: str, new: str, replace: bool) -> None:
        if replace:
            self._call(old, os.replace, self._abs(old), self._abs(new))
            return
        # link+unlink would not work for directories; renameat2 NOREPLACE does.
        self._call(old, _rename_noreplace, self._abs(old), self._abs(new))

    def symlink(self, target: str, path: str) -> RemoteStat:
        self._call(path, os.symlink, target, self._abs(path))
        return self.stat(path)

    def mknod(self, path: str, kind: str, mode: int, rdev: int) -> RemoteStat:
        # A socket made by mknod(2) is the file bind(2) leaves: unbound here as there.
        self._call(path, os.mknod, self._abs(path), _TYPE_BITS[kind] | (mode & 0o7777), rdev)
        return self._with_mode(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> RemoteStat:
        self._call(path, os.lchown, self._abs(path), uid, gid)
        return self.stat(path)

    def chmod(self, path: str, mode: int) -> RemoteStat:
        self._call(path, os.chmod, self._abs(path), mode)
        return self.stat(path)

    def set_mtime(self, path: str, mtime_ns: int) -> RemoteStat:
        def do():
            st = os.lstat(self._abs(path))
            os.utime(self._abs(path), ns=(st.st_atime_ns, mtime_ns), follow_symlinks=False)

        self._call(path, do)
        return self.stat(path)

    def space(self) -> SpaceInfo:
        sv = self._call("", os.statvfs, self.root)
        return SpaceInfo(sv.f_blocks * sv.f_frsize, sv.f_bavail * sv.f_frsize,
                         sv.f_files, sv.f_favail)

    # -- change notification -----------------------------------------------------------
    def fs_type(self) -> str:
        import psutil

        root = os.path.realpath(self.root)
        best = ("", "")
        for part in psutil.disk_partitions(all=True):
            mp = part.mountpoint
            if (root == mp or root.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best[0]):
                best = (mp, part.fstype)
        return best[1]

    def watch(self, on_change: Callable[[str], None], stop: threading.Event,
              on_armed: Callable[[bool], None]) -> None:
        """inotify (watchdog) over the tree, where it sees every change: on a local
        file system. Returns at once elsewhere (polling by attr_ttl)."""
        fs = self.fs_type()
        if fs not in _LOCAL_FS:
            log.info("%s is on %s: no change notification, polling only", self.root, fs or "?")
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        root = self.root

        def rel(p: str) -> str | None:
            p = os.fsdecode(p)
            return os.path.relpath(p, root).replace(os.sep, "/") if p.startswith(root) else None

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("opened", "closed", "closed_no_write") or (
                        event.is_directory and event.event_type == "modified"):
                    return  # reads, and a folder's own times: its children report
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    r = rel(p) if p else None
                    if r is not None:
                        on_change("" if r == "." else r)

        observer = Observer()
        try:
            observer.schedule(Handler(), root, recursive=True)
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches
            log.warning("change notification on %s failed (%s): polling only", root, exc)
            return
        on_armed(True)
        try:
            while not stop.wait(0.5):
                if not observer.is_alive() or not os.path.isdir(root):
                    break
        finally:
            on_armed(False)
            observer.stop()
            observer.join(5)

    def close(self) -> None:
        pass


def _rename_noreplace(old: str, new: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_noreplace = -100, 1
    if libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), rename_noreplace) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), new)
