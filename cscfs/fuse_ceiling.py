"""The FUSE binding's own ceiling: a file system that answers every request from
memory at once (no cache file, no database, no server), mounted with cscfs's mount
options. What it reaches on a workload is the most any file system on this binding
can reach there; `python -m benchmarks.ceiling` measures it beside native.

    python -m cscfs.fuse_ceiling MOUNTPOINT FILES [--writeback]

FILES empty files in the root, `f00000`...; anything created is kept by name and
size only (writes are counted and dropped). Names are valid for 300 s, a file's
attributes for 0 s, so every stat of a known name is one GETATTR (cscfs's case after a write
without the writeback cache); --writeback turns the kernel's writeback cache on.
Runs until unmounted.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import time

import pyfuse3
import trio

from .fuse_ops import mount_options

_ROOT = pyfuse3.ROOT_INODE


class MemoryOperations(pyfuse3.Operations):
    def __init__(self, files: int, writeback: bool):
        super().__init__()
        self.enable_writeback_cache = writeback
        self.now = time.time_ns()
        self.names: dict[bytes, int] = {}
        self.sizes: dict[int, int] = {}
        for i in range(files):
            self._add(b"f%05d" % i)

    def _add(self, name: bytes) -> int:
        ino = self.names[name] = len(self.names) + _ROOT + 1
        self.sizes[ino] = 0
        return ino

    def _entry(self, ino: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        if ino == _ROOT:
            e.st_mode, e.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            e.st_mode, e.st_nlink, e.st_size = stat.S_IFREG | 0o644, 1, self.sizes.get(ino, 0)
        e.st_uid, e.st_gid, e.st_blksize = os.getuid(), os.getgid(), 4096
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self.now
        # The folder's attributes stay valid: default_permissions checks it on every walk.
        e.entry_timeout, e.attr_timeout = 300, 300 if ino == _ROOT else 0
        return e

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != _ROOT or name not in self.names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(self.names[name])

    async def getattr(self, inode, ctx=None):
        return self._entry(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        if fields.update_size:
            self.sizes[inode] = attr.st_size
        return self._entry(inode)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        names = list(self.names.items())
        for i in range(start_id, len(names)):
            name, ino = names[i]
            if not pyfuse3.readdir_reply(token, name, self._entry(ino), i + 1):
                break

    async def open(self, inode, flags, ctx):
        if flags & os.O_TRUNC:
            self.sizes[inode] = 0
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def create(self, parent_inode, name, mode, flags, ctx):
        ino = self.names.get(name) or self._add(name)
        self.sizes[ino] = 0
        return pyfuse3.FileInfo(fh=ino, keep_cache=True), self._entry(ino)

    async def read(self, fh, off, size):
        return b"\0" * max(0, min(size, self.sizes.get(fh, 0) - off))

    async def write(self, fh, off, buf):
        self.sizes[fh] = max(self.sizes.get(fh, 0), off + len(buf))
        return len(buf)

    async def unlink(self, parent_inode, name, ctx):
        self.sizes.pop(self.names.pop(name, 0), None)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def release(self, fh):
        pass

    async def releasedir(self, fh):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cscfs.fuse_ceiling",
                                     description="a FUSE file system answering from memory")
    parser.add_argument("mountpoint")
    parser.add_argument("files", type=int)
    parser.add_argument("--writeback", action="store_true")
    args = parser.parse_args()
    pyfuse3.init(MemoryOperations(args.files, args.writeback), args.mountpoint,
                 mount_options())
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
