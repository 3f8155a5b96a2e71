"""The project's error vocabulary: every error carries the errno it means at the
file-system boundary and, for the CLI, the exit code it ends with.

The FUSE adapter translates these (and plain OSError) in one place; anything else
is a bug, logged with its traceback and answered with EIO.
"""

from __future__ import annotations

import errno

from sync import ports


class CscfsError(Exception):
    """Base of all our errors."""

    errno: int = errno.EIO
    exit_code: int = 1

    def __init__(self, message: str = "", *, err: int | None = None,
                 exit_code: int | None = None):
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        if err is not None:
            self.errno = err
        if exit_code is not None:  # e.g. an error the daemon answered, with its code
            self.exit_code = exit_code


class UserError(CscfsError):
    """Bad input from the user: printed as one line, exit code 2."""

    exit_code = 2


# The remote failures are the sync engine's vocabulary too (sync/ports.py): each class
# here is also its port class, so the engine catches what a store raises.
class RemoteError(CscfsError, ports.RemoteError):
    """A remote store failed permanently (retrying will not help)."""


class NotFound(RemoteError, ports.NotFound):
    """no such file or directory on the server"""

    errno = errno.ENOENT


class AlreadyExists(RemoteError, ports.AlreadyExists):
    """the name already exists on the server"""

    errno = errno.EEXIST


class PermissionDenied(RemoteError):
    """the server refused access"""

    errno = errno.EACCES


class NotEmpty(RemoteError, ports.NotEmpty):
    """the server directory is not empty"""

    errno = errno.ENOTEMPTY


class InvalidName(RemoteError):
    """the server does not allow this name"""

    errno = errno.EINVAL


class Unavailable(RemoteError, ports.Unavailable):
    """the server is unreachable (temporary: it means offline, not failure)"""

    # "Host is down": the one errno users see when something needs the server
    # while it cannot be reached (documented in the README).
    errno = errno.EHOSTDOWN


class Changed(RemoteError, ports.Changed):
    """the server's copy no longer has the fingerprint we expected"""

    errno = errno.EAGAIN

    def __init__(self, message: str = "", current=None):
        super().__init__(message)
        self.current = current  # the server's RemoteStat now, or None when gone


def fs_error(err: int, detail: str = "") -> OSError:
    """An OSError for a plain POSIX refusal raised by the VFS core."""
    import os

    return OSError(err, os.strerror(err) + (f": {detail}" if detail else ""))
