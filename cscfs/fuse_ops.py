"""The FUSE adapter (pyfuse3): each method calls the VFS and translates errors; and
FuseInvalidator, how the kernel learns of names changed on the server.

The behaviour is in vfs.py, tested with and without a mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import struct

import pyfuse3

from . import errors
from .vfs import VFS, Attr

log = logging.getLogger("cscfs.fuse")


def _translated(method):
    """The one place where our errors become errnos for the kernel."""

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self, *args):
        self.vfs.requests += 1  # background uploads give way to a busy mount
        self.vfs.request_counts[name] += 1  # what the kernel asks for (cscfs status)
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except errors.Unavailable as exc:
            log.info("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except errors.CscfsError as exc:
            log.warning("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                log.error("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", method.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


# Notifications written to /dev/fuse ourselves (include/uapi/linux/fuse.h).
_NOTIFY_INVAL_INODE = 2
_NOTIFY_INC_EPOCH = 8  # Linux 6.16 (protocol 7.44)
_mounted = False
_session_fd: int | None = None  # our /dev/fuse, while mounted


def _notify(code: int, payload: bytes = b"") -> None:
    """One notification: a struct fuse_out_header whose error field is the code."""
    os.write(_session_fd, struct.pack("<IiQ", 16 + len(payload), code, 0) + payload)


class FuseInvalidator:
    """Tells the kernel that a name changed behind its back.

    A FUSE_NOTIFY_INVAL_ENTRY waits in the kernel for the parent folder's lock, which
    an application's rename or create there holds while it waits for our answer. If
    the daemon is killed meanwhile, the thread writing it never returns, so /dev/fuse
    stays open, the kernel never ends the connection and both hang for ever. Where
    the kernel has it, a new epoch (every cached name is looked up again at its next
    use) plus the parent's attributes take no such lock: written at once from the
    event loop, they cannot hang. Older kernels get pyfuse3's invalidation thread;
    a mount left hung by it is aborted by `cscfs mount` and `cscfs unmount`."""

    def __init__(self, epoch: bool = True):
        self.epoch = epoch  # until the kernel refuses it

    def entry(self, parent_ino: int, name: str) -> None:
        if not _mounted:
            return  # the kernel holds nothing of ours
        if self.epoch and _session_fd is not None:
            try:
                _notify(_NOTIFY_INC_EPOCH)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    log.debug("epoch notification failed: %s", exc)  # unmounting
                    return
                self.epoch = False
                log.info("this kernel has no FUSE epoch notification; names are "
                         "invalidated one by one")
            else:
                try:  # the folder's size and times, as an entry invalidation does
                    _notify(_NOTIFY_INVAL_INODE, struct.pack("<Qqq", parent_ino, -1, 0))
                except OSError:
                    pass  # ENOENT: the kernel does not hold that folder
                return
        pyfuse3.invalidate_entry_async(parent_ino, os.fsencode(name), ignore_enoent=True)


class FuseOperations(pyfuse3.Operations):
    # No writeback cache: with it the kernel keeps size and mtime of a cached regular
    # file as its own (fuse_get_cache_mask), so a file grown or shrunk on the server
    # would keep its old size for applications. Costs about 0.33x -> 0.24x native on
    # sequential writes (measured with a pass-through file system on this machine).
    # Turning it on needs a new kernel node id per server version of a file (the
    # kernel keys its inodes by node id; the generation only matters to NFS export),
    # i.e. node ids apart from our inode numbers.
    enable_writeback_cache = False

    def __init__(self, vfs: VFS):
        super().__init__()
        self.vfs = vfs
        self._dirs: dict[int, list] = {}
        self._next_dh = 1

    def _entry(self, a: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.st_mode, e.st_nlink = a.ino, a.mode, a.nlink
        e.st_uid, e.st_gid, e.st_size, e.st_blocks = a.uid, a.gid, a.size, a.blocks
        e.st_blksize = 4096
        e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns = a.atime_ns, a.mtime_ns, a.ctime_ns
        e.st_rdev = a.rdev
        e.entry_timeout = e.attr_timeout = self.vfs.ttl
        return e

    def _node_entry(self, node) -> pyfuse3.EntryAttributes:
        return self._entry(self.vfs.attr(node))

    @_translated
    async def lookup(self, parent_inode, name, ctx=None):
        return self._node_entry(await self.vfs.lookup(parent_inode, os.fsdecode(name)))

    @_translated
    async def getattr(self, inode, ctx=None):
        return self._entry(await self.vfs.getattr(inode))

    @_translated
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = await self.vfs.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None)
        return self._node_entry(node)

    @_translated
    async def readlink(self, inode, ctx):
        return os.fsencode(await self.vfs.readlink(inode))

    @_translated
    async def opendir(self, inode, ctx):
        entries = await self.vfs.readdir(inode)
        dh = self._next_dh
        self._next_dh += 1
        self._dirs[dh] = entries
        return dh

    @_translated
    async def readdir(self, fh, start_id, token):
        entries = self._dirs[fh]
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            if node.unlinked:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._node_entry(node), i + 1):
                break

    @_translated
    async def releasedir(self, fh):
        self._dirs.pop(fh, None)
        await self.vfs.releasedir()

    @_translated
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._node_entry(await self.vfs.mkdir(parent_inode, os.fsdecode(name), mode,
                                                     (ctx.uid, ctx.gid)))

    @_translated
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._node_entry(await self.vfs.mknod(parent_inode, os.fsdecode(name), mode,
                                                     rdev, (ctx.uid, ctx.gid)))

    @_translated
    async def rmdir(self, parent_inode, name, ctx):
        await self.vfs.rmdir(parent_inode, os.fsdecode(name))

    @_translated
    async def unlink(self, parent_inode, name, ctx):
        await self.vfs.unlink(parent_inode, os.fsdecode(name))

    @_translated
    async def symlink(self, parent_inode, name, target, ctx):
        node = await self.vfs.symlink(parent_inode, os.fsdecode(name), os.fsdecode(target),
                                      (ctx.uid, ctx.gid))
        return self._node_entry(node)

    @_translated
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.vfs.rename(parent_inode_old, os.fsdecode(name_old), parent_inode_new,
                              os.fsdecode(name_new), flags)

    @_translated
    async def link(self, inode, new_parent_inode, new_name, ctx):
        await self.vfs.link(inode, new_parent_inode, os.fsdecode(new_name))

    @_translated
    async def open(self, inode, flags, ctx):
        fh = await self.vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.vfs.handles[fh].keep_cache)

    @_translated
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, node = await self.vfs.create(parent_inode, os.fsdecode(name), mode, flags,
                                         (ctx.uid, ctx.gid))
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self._node_entry(node)

    @_translated
    async def read(self, fh, off, size):
        return await self.vfs.read(fh, off, size)

    @_translated
    async def write(self, fh, off, buf):
        return await self.vfs.write(fh, off, buf)

    async def flush(self, fh):
        # Nothing to do at close (metadata is saved in batches, uploads follow the last
        # release): ENOSYS makes the kernel stop sending FLUSH, one request less per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_translated
    async def fsync(self, fh, datasync):
        await self.vfs.fsync(fh, datasync)

    @_translated
    async def release(self, fh):
        await self.vfs.release(fh)

    @_translated
    async def statfs(self, ctx):
        space = await self.vfs.statfs()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = space.block_size
        s.f_blocks, s.f_bfree, s.f_bavail = space.blocks, space.blocks_free, space.blocks_free
        s.f_files, s.f_ffree, s.f_favail = space.files, space.files_free, space.files_free
        s.f_namemax = space.name_max
        return s

    @_translated
    async def getxattr(self, inode, name, ctx):
        return await self.vfs.getxattr(inode, os.fsdecode(name))

    @_translated
    async def listxattr(self, inode, ctx):
        return [os.fsencode(n) for n in await self.vfs.listxattr(inode)]

    @_translated
    async def setxattr(self, inode, name, value, ctx):
        await self.vfs.setxattr(inode, os.fsdecode(name), value)

    @_translated
    async def removexattr(self, inode, name, ctx):
        await self.vfs.removexattr(inode, os.fsdecode(name))

    async def forget(self, inode_list):
        pass  # inode numbers are ours and stable; nodes live as long as their rows


def mount_options(allow_other: bool = False) -> set[str]:
    # default_permissions: the kernel checks modes and owners as the VFS reports them,
    # so allow_other lets other users in under the usual rules.
    options = set(pyfuse3.default_options) | {"fsname=cscfs", "subtype=cscfs", "noatime",
                                              "default_permissions"}
    return options | {"allow_other"} if allow_other else options


def mount(ops: FuseOperations, mountpoint: str, allow_other: bool = False) -> None:
    global _mounted, _session_fd
    pyfuse3.init(ops, mountpoint, mount_options(allow_other))
    _mounted, _session_fd = True, _dev_fuse_fd()


def _dev_fuse_fd() -> int | None:
    """The descriptor pyfuse3 opened on /dev/fuse (it does not say which)."""
    rdev = os.stat("/dev/fuse").st_rdev
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
            return int(name)
    return None


async def serve() -> None:
    await pyfuse3.main()


def terminate() -> None:
    pyfuse3.terminate()


def close(unmount: bool = True) -> None:
    global _mounted, _session_fd
    _mounted, _session_fd = False, None
    pyfuse3.close(unmount=unmount)
