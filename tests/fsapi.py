"""One path-based file API over two back ends, so one behaviour suite runs straight
on the VFS and through a real mount."""

from __future__ import annotations

import errno
import functools
import os
import stat
import time

from cscfs.errors import CscfsError
from cscfs.metadata import ROOT_INO
from cscfs.remote.local import _rename_noreplace
from cscfs.vfs import RENAME_NOREPLACE


class MountFS:
    kind = "mount"

    def __init__(self, mounted):
        self.m = mounted
        self.smb = mounted.source.startswith("smb://")
        self.root = str(mounted.mountpoint)
        self.server = mounted.server

    def p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def write(self, path, data: bytes):
        with open(self.p(path), "wb") as f:
            f.write(data)

    def append(self, path, data: bytes):
        with open(self.p(path), "ab") as f:
            f.write(data)

    def read(self, path) -> bytes:
        with open(self.p(path), "rb") as f:
            return f.read()

    def read_at(self, path, offset, size) -> bytes:
        with open(self.p(path), "rb") as f:
            return os.pread(f.fileno(), size, offset)

    def listdir(self, path="") -> list[str]:
        return sorted(os.listdir(self.p(path)))

    def stat(self, path) -> os.stat_result:
        return os.lstat(self.p(path))

    def exists(self, path) -> bool:
        return os.path.lexists(self.p(path))

    def mkdir(self, path, mode=0o755):
        os.mkdir(self.p(path), mode)

    def rmdir(self, path):
        os.rmdir(self.p(path))

    def unlink(self, path):
        os.unlink(self.p(path))

    def rename(self, old, new, noreplace=False):
        if noreplace:
            _rename_noreplace(self.p(old), self.p(new))
        else:
            os.rename(self.p(old), self.p(new))

    def symlink(self, target, path):
        os.symlink(target, self.p(path))

    def readlink(self, path) -> str:
        return os.readlink(self.p(path))

    def chmod(self, path, mode):
        os.chmod(self.p(path), mode)

    def truncate(self, path, size):
        os.truncate(self.p(path), size)

    def chown(self, path, uid, gid):
        os.lchown(self.p(path), uid, gid)

    def mkfifo(self, path, mode=0o644):
        os.mkfifo(self.p(path), mode)

    def mknod(self, path, mode, rdev=0):
        os.mknod(self.p(path), mode, rdev)

    def utime(self, path, mtime_ns):
        os.utime(self.p(path), ns=(mtime_ns, mtime_ns))

    def link(self, old, new):
        os.link(self.p(old), self.p(new))

    def getxattr(self, path, name) -> bytes:
        return os.getxattr(self.p(path), name)

    def setxattr(self, path, name, value: bytes):
        os.setxattr(self.p(path), name, value)

    def listxattr(self, path) -> list[str]:
        return os.listxattr(self.p(path))

    def statfs(self):
        sv = os.statvfs(self.root)
        return sv.f_bsize, sv.f_blocks, sv.f_namemax

    def settle(self, timeout=15.0):
        """Wait until every change has reached the server."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.m.status()["pending_uploads"] == 0:
                return
            time.sleep(0.1)
        raise AssertionError("uploads still pending")

    def status(self) -> dict:
        return self.m.status()


class VfsFS:
    kind = "vfs"
    smb = False

    def __init__(self, runner):
        self.r = runner
        self.vfs = runner.vfs
        self.client = runner.client
        self.server = runner.server

    def _c(self, fn, *args):
        try:
            return self.r.call(fn, *args)
        except CscfsError as exc:  # as the FUSE adapter answers it
            raise OSError(exc.errno, str(exc)) from exc

    def _resolve(self, path) -> int:
        ino = ROOT_INO
        for part in [p for p in path.split("/") if p]:
            ino = self._c(self.vfs.lookup, ino, part).ino
        return ino

    def _parent(self, path) -> tuple[int, str]:
        head, _, name = path.rpartition("/")
        return self._resolve(head), name

    def write(self, path, data: bytes, flags=os.O_WRONLY | os.O_TRUNC):
        parent, name = self._parent(path)
        try:
            ino = self._c(self.vfs.lookup, parent, name).ino
            fh = self._c(self.vfs.open, ino, flags)
        except FileNotFoundError:
            fh, _ = self._c(self.vfs.create, parent, name, 0o644, os.O_WRONLY | os.O_CREAT)
        try:
            offset = self.vfs.handles[fh].node.size if flags & os.O_APPEND else 0
            self._c(self.vfs.write, fh, offset, data)
        finally:
            self._c(self.vfs.release, fh)

    def append(self, path, data: bytes):
        self.write(path, data, os.O_WRONLY | os.O_APPEND)

    def read(self, path) -> bytes:
        fh = self._c(self.vfs.open, self._resolve(path), os.O_RDONLY)
        try:
            out, off = [], 0
            while True:
                buf = self._c(self.vfs.read, fh, off, 1 << 17)
                if not buf:
                    return b"".join(out)
                out.append(buf)
                off += len(buf)
        finally:
            self._c(self.vfs.release, fh)

    def read_at(self, path, offset, size) -> bytes:
        fh = self._c(self.vfs.open, self._resolve(path), os.O_RDONLY)
        try:
            return self._c(self.vfs.read, fh, offset, size)
        finally:
            self._c(self.vfs.release, fh)

    def listdir(self, path="") -> list[str]:
        return sorted(name for name, _ in self._c(self.vfs.readdir, self._resolve(path)))

    def stat(self, path) -> os.stat_result:
        a = self._c(self.vfs.getattr, self._resolve(path))
        return os.stat_result((a.mode, a.ino, 0, a.nlink, a.uid, a.gid, a.size,
                               a.atime_ns // 10**9, a.mtime_ns // 10**9, a.ctime_ns // 10**9,
                               a.atime_ns / 1e9, a.mtime_ns / 1e9, a.ctime_ns / 1e9,
                               a.atime_ns, a.mtime_ns, a.ctime_ns, 4096, a.blocks, a.rdev))

    def exists(self, path) -> bool:
        try:
            self._resolve(path)
            return True
        except FileNotFoundError:
            return False

    def mkdir(self, path, mode=0o755):
        self._c(self.vfs.mkdir, *self._parent(path), mode)

    def rmdir(self, path):
        self._c(self.vfs.rmdir, *self._parent(path))

    def unlink(self, path):
        self._c(self.vfs.unlink, *self._parent(path))

    def rename(self, old, new, noreplace=False):
        self._c(self.vfs.rename, *self._parent(old), *self._parent(new),
                RENAME_NOREPLACE if noreplace else 0)

    def symlink(self, target, path):
        self._c(self.vfs.symlink, *self._parent(path), target)

    def readlink(self, path) -> str:
        return self._c(self.vfs.readlink, self._resolve(path))

    def _setattr(self, path, **change):
        self._c(functools.partial(self.vfs.setattr, self._resolve(path), **change))

    def chmod(self, path, mode):
        self._setattr(path, mode=mode)

    def truncate(self, path, size):
        self._setattr(path, size=size)

    def chown(self, path, uid, gid):
        self._setattr(path, uid=uid, gid=gid)

    def mkfifo(self, path, mode=0o644):
        self.mknod(path, stat.S_IFIFO | mode)

    def mknod(self, path, mode, rdev=0):
        self._c(self.vfs.mknod, *self._parent(path), mode, rdev)

    def utime(self, path, mtime_ns):
        self._setattr(path, mtime_ns=mtime_ns)

    def link(self, old, new):
        self._c(self.vfs.link, self._resolve(old), *self._parent(new))

    def getxattr(self, path, name) -> bytes:
        return self._c(self.vfs.getxattr, self._resolve(path), name)

    def setxattr(self, path, name, value: bytes):
        self._c(self.vfs.setxattr, self._resolve(path), name, value)

    def listxattr(self, path) -> list[str]:
        return self._c(self.vfs.listxattr, self._resolve(path))

    def statfs(self):
        s = self._c(self.vfs.statfs)
        return s.block_size, s.blocks, s.name_max

    def settle(self, timeout=15.0):
        pending = self._c(self.client.flush_uploads, timeout)
        if pending:
            raise AssertionError(f"{pending} uploads still pending: {self.r.call_sync(self._why_pending)}")

    def _why_pending(self) -> dict:
        c = self.client
        wb = c.writeback
        return {"mode": c.link.mode, "journal": c.journal.count, "failures": wb.failing(),
                "dirty": [(c.table.path_of(n), n.writers, wb.due.get(n.ino),
                           n.ino in wb.uploading) for n in c.table.dirty_files()]}

    def status(self) -> dict:
        return self.r.call_sync(self.client.status)


def errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    raise AssertionError(f"{fn.__name__}{args} did not fail")


__all__ = ["MountFS", "VfsFS", "errno_of", "errno"]
