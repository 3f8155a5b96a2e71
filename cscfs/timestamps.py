"""The times cscfs gives file content it changes (create, write, truncate): the
kernel's own clock. Folders and ctimes keep the fine clock: nothing caches by them.

The kernel stamps files with its coarse clock (the time at its last tick, a few ms),
and a FUSE file's page cache lives by the mtime: when a reply says the mtime moved,
the kernel drops the file's pages (auto_inval_data, which libfuse turns on). A file
created and written within one tick thus keeps one mtime, as on a local disk, and
the kernel keeps the pages it just wrote: the next read needs no request to us, and
the stat after it none either (a read from us makes the kernel forget the atime).
A file's mtime never goes back (a server's fine-grained time may be ahead of the
coarse clock within a tick): a write in that tick leaves it where it was.
"""

from __future__ import annotations

import sys
import time

# <linux/time.h>; Python's time module does not name it.
_REALTIME_COARSE = 5 if sys.platform.startswith("linux") else None


def now_ns() -> int:
    return time.clock_gettime_ns(_REALTIME_COARSE) if _REALTIME_COARSE else time.time_ns()
