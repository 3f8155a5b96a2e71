"""An SMB share as the server, through smbprotocol (SMB 3.1.1, signing, optional
encryption). No kernel CIFS mount: a dead link becomes "unavailable", never a hang.

Every call passes the credentials again, so that smbclient opens a new connection by
itself when the old one died. Each new connection's socket gets TCP_USER_TIMEOUT and
keepalive, so a request in flight on a blackholed link fails instead of waiting for
TCP's 15 minutes; the VFS puts its own deadline around every call as well.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

import smbclient
from smbclient._io import SMBDirectoryIO, SMBFileTransaction, SMBRawIO, set_info
from smbprotocol import exceptions as smbexc
from smbprotocol.header import NtStatus
from smbprotocol.file_info import FileAttributes, FileInformationClass
from smbprotocol.open import FilePipePrinterAccessMask, QueryDirectoryFlags
from smbprotocol.structure import DateTimeField

from sync.names import utf8_bytes, utf16_units

from .. import errors
from .base import (TEMP_PREFIX, Fingerprint, RemoteStat, SourceFailed, SpaceInfo,
                   check_expected, check_version, content_sha, guarded, temp_name)

log = logging.getLogger("cscfs.smb")
# smbprotocol logs whole messages at DEBUG and a dead connection's worker thread at
# WARNING; neither helps a user and the first may hold secrets.
logging.getLogger("smbprotocol").setLevel(logging.ERROR)
logging.getLogger("smbclient").setLevel(logging.ERROR)
logging.getLogger("spnego").setLevel(logging.ERROR)

_EPOCH_FT = DateTimeField.EPOCH_FILETIME
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
             *(f"LPT{i}" for i in range(10))}
_FORBIDDEN_CHARS = re.compile(r'[\\:*?"<>|\x00-\x1f]')
_WILDCARDS = re.compile(r'[*?"<>]')  # a name with these cannot be a search pattern
_COMPOUND_WRITE_MAX = 1 << 20
NAME_MAX = 255  # UTF-16 units: SMB's and NTFS's limit
_CREDITS_SHORT = "credits are available"  # smbprotocol's refusal when credits run short
_CREDITS_WAIT = 10.0  # s at most, waiting for credits to come back
# smbprotocol asks for 64 credits at logon and then only for what each request uses,
# so 64 messages (a 1 MiB read or write costs 16) may be in flight. Parallel uploads
# and the fill need more: one echo at connect asks for this many (Samba grants up to
# its "smb2 max credits", 8192 by default).
_CREDITS_WANTED = 512
# smbprotocol takes a compound's credits one message at a time: when the window runs
# out after the first, those already taken are never sent, never answered, and never
# come back. A compound goes out only when its whole charge fits, with this margin for
# the single requests other threads may send meanwhile.
_CREDITS_MARGIN = 16
_COMPOUND_SEND = threading.Lock()  # one compound's check and send at a time
# s between a change notification's answer and the next request: what changes meanwhile
# comes in one answer (a change by another client shows this much later at most).
NOTIFY_GATHER = 0.1


@dataclass(frozen=True)
class SmbTarget:
    host: str
    port: int
    share: str
    path: str  # inside the share, "/"-separated, no leading slash
    username: str | None
    domain: str | None

    @property
    def url(self) -> str:
        user = f"{self.domain};{self.username}@" if self.domain else (
            f"{self.username}@" if self.username else "")
        port = f":{self.port}" if self.port != 445 else ""
        return f"smb://{user}{self.host}{port}/{self.share}" + (f"/{self.path}" if self.path else "")


def parse_url(url: str) -> SmbTarget:
    """smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH]"""
    parts = urlsplit(url)
    if parts.scheme != "smb" or not parts.hostname:
        raise errors.UserError(f"not an SMB address: {url!r} (smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH])")
    if parts.password is not None:
        raise errors.UserError("a password does not belong in the address: use --credentials "
                               "FILE, the keyring or CSCFS_SMB_PASSWORD")
    try:
        port = parts.port or 445
    except ValueError:
        raise errors.UserError(f"bad port in {url!r}") from None
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise errors.UserError(f"no share named in {url!r}")
    user = unquote(parts.username) if parts.username else None
    domain = None
    if user and ";" in user:
        domain, user = user.split(";", 1)
    return SmbTarget(parts.hostname, port, segments[0], "/".join(segments[1:]), user, domain)


def check_name(name: str) -> None:
    """Names SMB servers refuse, refused here at create time with the rule named."""
    rule, err = None, errno.EINVAL
    if _FORBIDDEN_CHARS.search(name):
        rule = 'contains a character SMB forbids (\\ : * ? " < > | or a control character)'
    elif name.endswith((".", " ")):
        rule = "ends with a dot or a space"
    elif name.split(".", 1)[0].upper().rstrip(" ") in _RESERVED:
        rule = "is a reserved device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9)"
    elif utf16_units(name) > NAME_MAX:
        rule, err = f"is longer than {NAME_MAX} UTF-16 units", errno.ENAMETOOLONG
    if rule:
        raise errors.InvalidName(f"{name!r} {rule}", err=err)


# [MS-FSCC] 2.4.18 FileIdFullDirectoryInformation, up to the name: next offset,
# index, creation/access/write/change FILETIMEs, end of file, allocation, attributes,
# name length, EA size, reserved, file id. smbprotocol parses the times into
# datetimes, which cut the 100 ns FILETIME to 1 us, so we read the records ourselves.
_DIR_RECORD = struct.Struct("<IIQQQQQQIIIIQ")


def _dir_records(buffer: bytes):
    """(name, attributes, size, mtime_ns, file_id) for each record of a reply."""
    offset = 0
    while True:
        (next_offset, _index, _ctime, _atime, mtime, _chtime, size, _alloc, attrs,
         name_len, _ea, _reserved, file_id) = _DIR_RECORD.unpack_from(buffer, offset)
        start = offset + _DIR_RECORD.size
        name = buffer[start:start + name_len].decode("utf-16-le")
        yield name, attrs, size, (mtime - _EPOCH_FT) * 100, file_id
        if not next_offset:
            return
        offset += next_offset


def _list_open_dir(open_) -> list:
    """All records of an open directory handle, in as many replies as it takes."""
    tree = open_.tree_connect
    receive = _records_of(open_)
    records, flags = [], QueryDirectoryFlags.SMB2_RESTART_SCANS
    while True:
        request = open_.connection.send(_query(open_, "*", flags), tree.session.session_id,
                                        tree.tree_connect_id)
        batch = receive(request)
        if not batch:
            return records
        records.extend(batch)
        flags = 0


def _query(open_, pattern: str, flags: int = 0):
    """A directory query in a compound, its reply parsed by _records_of."""
    return open_.query_directory(pattern, FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION,
                                 flags=flags, send=False)[0]


def _records_of(open_) -> Callable:
    def receive(request) -> list:
        from smbprotocol.open import SMB2QueryDirectoryResponse
        try:
            response = open_.connection.receive(request)
        except (smbexc.NoMoreFiles, smbexc.NoSuchFile):
            return []
        reply = SMB2QueryDirectoryResponse()
        reply.unpack(response["data"].get_value())
        return list(_dir_records(reply["buffer"].get_value()))
    return receive


# [MS-FSCC] 2.4.29 FileNetworkOpenInformation: creation/access/write/change FILETIMEs,
# allocation size, end of file, attributes, reserved; 2.4.20 FileInternalInformation.
_NETWORK_OPEN = struct.Struct("<QQQQQQII")
_STAT_CLASSES = (FileInformationClass.FILE_NETWORK_OPEN_INFORMATION,
                 FileInformationClass.FILE_INTERNAL_INFORMATION)


# 2.4.2 FileAllInformation, up to the file id: FileBasicInformation (creation/access/
# write/change FILETIMEs, attributes, reserved), FileStandardInformation (allocation,
# end of file, links, delete pending, directory, reserved), FileInternalInformation.
_ALL_INFO = struct.Struct("<QQQQIIQQIBBHQ")
_ALL_INFO_LENGTH = 100  # and the name's length (UTF-16) after it
# The temporary file of an upload: written, then renamed while still open.
_WRITE_RENAME = (FilePipePrinterAccessMask.FILE_WRITE_DATA
                 | FilePipePrinterAccessMask.FILE_WRITE_ATTRIBUTES
                 | FilePipePrinterAccessMask.FILE_WRITE_EA
                 | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES
                 | FilePipePrinterAccessMask.DELETE)


def _query_raw(open_, info_class: int, length: int = 64):
    """A query of one file information class; its reply is kept raw (_raw_info)."""
    from smbprotocol.file_info import InfoType
    from smbprotocol.open import SMB2QueryInfoRequest
    request = SMB2QueryInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_FILE
    request["file_info_class"] = info_class
    request["file_id"] = open_.file_id
    request["output_buffer_length"] = length
    return request


def _raw_info(open_) -> Callable:
    def receive(request) -> bytes:
        from smbprotocol.open import SMB2QueryInfoResponse
        reply = SMB2QueryInfoResponse()
        reply.unpack(open_.connection.receive(request)["data"].get_value())
        return reply["buffer"].get_value()
    return receive


def _read_or_eof(receive_read: Callable) -> Callable:
    def receive(request) -> bytes:
        try:
            return receive_read(request)
        except smbexc.EndOfFile:
            return b""
    return receive


def _check_written(count: int, want: int) -> None:
    if count != want:
        raise errors.RemoteError(f"the server wrote {count} of {want} bytes", err=errno.EIO)


def _written(receive_write: Callable, want: int) -> Callable:
    def receive(request) -> int:
        count = receive_write(request)
        _check_written(count, want)
        return count
    return receive


class _Compound:
    """One handle's compound (open, requests on the handle, close) and the parsers of
    its replies: smbclient's SMBFileTransaction, but sent apart from awaiting its
    replies, so that several compounds go out in one round trip (_round_trip).
    smbclient's helpers (raw.open, raw.close, set_info) add to it with +=."""

    def __init__(self, raw, close: bool = True):
        self.raw, self.close = raw, close  # close=False: the handle stays open after
        self.actions: list = []

    def __add__(self, action):
        self.actions.append(action)
        return self


def _round_trip(*compounds: _Compound) -> list:
    """Send every compound, then read every reply: one round trip for all. Returns,
    per compound, the results of its requests (open and close left out) or the
    exception of its first failure (a create that succeeded leaves its handle
    open in `raw` when the compound does not close it)."""
    sent = []
    try:
        for c in compounds:
            c.raw.open(transaction=c)
            c.actions.insert(0, c.actions.pop())  # the create goes first
            if c.close:
                c.raw.close(transaction=c)
            fd = c.raw.fd
            requests = [request for request, _ in c.actions]
            with _COMPOUND_SEND:
                _await_credits(fd.connection, requests)
                sent.append(fd.connection.send_compound(
                    requests, fd.tree_connect.session.session_id,
                    fd.tree_connect.tree_connect_id, related=True))
    finally:
        # Every reply of what went out is read, also when a later send failed: an
        # unread reply stays in the connection's table.
        out = []
        for c, requests in zip(compounds, sent):
            results, failure = [], None
            for (_, receive), request in zip(c.actions, requests):
                try:
                    results.append(receive(request))
                except smbexc.SMBResponseException as exc:
                    failure = failure or smbexc.SMBOSError(exc.status, c.raw.name)
                except Exception as exc:
                    failure = failure or exc
            out.append(failure or results[1:len(results) - c.close])
    return out


def _await_credits(conn, requests: list) -> None:
    """Wait (at most _CREDITS_WAIT) until the connection's credit window holds the
    whole charge of `requests` and the margin; past that the send goes ahead and
    smbprotocol's refusal reaches _call."""
    charge = sum(max(1, conn._calculate_credit_charge(r)) for r in requests) + _CREDITS_MARGIN
    deadline = time.monotonic() + _CREDITS_WAIT
    while time.monotonic() < deadline:
        with conn.sequence_lock:
            free = conn.sequence_window["high"] - conn.sequence_window["low"]
        if free >= charge:
            return
        time.sleep(0.002)


def _one(outcome):
    """One compound's results from _round_trip; its failure raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _basic_times(mtime_ns: int):
    """FileBasicInformation setting the access and write times; 0 leaves the rest."""
    from smbprotocol.file_info import FileBasicInformation
    info = FileBasicInformation()
    ft = mtime_ns // 100 + _EPOCH_FT
    info["creation_time"] = 0
    info["last_access_time"] = ft
    info["last_write_time"] = ft
    info["change_time"] = 0
    info["file_attributes"] = 0
    return info


class SMBStore:
    # SMB (without unix extensions) keeps no POSIX permission bits, owners or special
    # files: its items are the mounting user's (RemoteStat.uid None), as on a cifs mount.
    stores_modes = False
    # CHANGE_NOTIFY reports what SMB clients change; Samba reports changes made on its own
    # disk only where its kernel change notify works (not in our test rig). So names stay
    # trusted for attr_ttl unless the config says trust_server_notify.
    notify_complete = False
    name_max = NAME_MAX

    def __init__(self, target: SmbTarget, password: str | None, encrypt: bool | None = None,
                 timeout: float = 5.0, *, upload_processes: int = 0, upload_threads: int = 4):
        self.target = target
        self.url = target.url
        self._password = password
        self._encrypt = encrypt
        self.timeout = timeout
        self._cache: dict = {}
        self._tuned: set[int] = set()
        # Temporary names of our uploads, renamed onto their real names: the server's
        # report of such a rename is our own upload and needs no look (watch()).
        self._own_renames: dict[str, float] = {}
        self._own_renames_lock = threading.Lock()
        self._lock = threading.Lock()
        # Small files' uploads in processes of their own (smb_workers.py), or here.
        self._workers = None
        if upload_processes > 0:
            from .smb_workers import UploadWorkers

            self._workers = UploadWorkers((target, password, encrypt, timeout),
                                          upload_processes, upload_threads)
        root = f"\\\\{target.host}\\{target.share}"
        self._root = root + ("\\" + target.path.replace("/", "\\") if target.path else "")

    def __repr__(self) -> str:  # never the password
        return f"SMBStore({self.url})"

    # -- connection -----------------------------------------------------------
    def _kw(self) -> dict:
        return dict(port=self.target.port, username=self._user(), password=self._password,
                    connection_cache=self._cache, connection_timeout=self.timeout,
                    encrypt=self._encrypt)

    def _user(self) -> str | None:
        t = self.target
        return f"{t.domain}\\{t.username}" if t.domain and t.username else t.username

    def _session(self):
        with self._lock:
            session = smbclient.register_session(self.target.host, **self._kw())
            conn = session.connection
            if id(conn) not in self._tuned and conn.transport.connected:
                self._tune(conn.transport._sock)
                granted = conn.echo(sid=session.session_id, timeout=max(1, int(self.timeout)),
                                    credit_request=_CREDITS_WANTED)
                log.debug("%s: %d more SMB credits granted", self.url, granted)
                self._tuned.add(id(conn))
            return session

    def echo(self, timeout: float) -> float:
        """Round-trip time in ms of an SMB2 ECHO over the live session: a liveness
        and latency probe that opens no connection."""
        try:
            session = self._session()
            started = time.perf_counter()
            session.connection.echo(sid=session.session_id, timeout=timeout)
            return (time.perf_counter() - started) * 1000
        except errors.CscfsError:
            raise
        except Exception as exc:
            raise self._classify(exc, "") from exc

    def _tune(self, sock: socket.socket) -> None:
        # Several threads share the connection: with Nagle on, a request sent while
        # another's is unacknowledged waits for the server's delayed ACK (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ms = max(1000, int(self.timeout * 1000))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(self.timeout / 2)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)

    def _p(self, path: str) -> str:
        return self._root + ("\\" + path.replace("/", "\\") if path else "")

    def _call(self, path: str, fn: Callable, *args, **kwargs):
        waited = 0.0
        while True:
            try:
                self._session()
                return fn(*args, **kwargs, **self._kw())
            except (errors.CscfsError, SourceFailed):
                raise
            except Exception as exc:
                # Parallel requests (uploads, the fill) can ask for more credits than
                # the server granted so far; smbprotocol refuses at once instead of
                # waiting. The requests in flight give theirs back as they answer:
                # wait for that (the caller's deadline still bounds it).
                if _CREDITS_SHORT in str(exc) and waited < _CREDITS_WAIT:
                    time.sleep(0.005)
                    waited += 0.005
                    continue
                raise self._classify(exc, path) from exc

    def _classify(self, exc: Exception, path: str) -> errors.CscfsError:
        where = path or "/"
        if isinstance(exc, (smbexc.LogonFailure, smbexc.WrongPassword, smbexc.PasswordExpired,
                            smbexc.SMBAuthenticationError)):
            return errors.PermissionDenied(f"{self.url}: logon failure (bad user name or password)")
        if isinstance(exc, smbexc.BadNetworkName):
            return errors.NotFound(f"{self.url}: no share named {self.target.share!r}")
        if isinstance(exc, smbexc.AccessDenied):
            return errors.PermissionDenied(f"{where}: access denied")
        if isinstance(exc, smbexc.ObjectNameInvalid) or getattr(
                exc, "ntstatus", None) == NtStatus.STATUS_OBJECT_NAME_INVALID:
            # Samba also says so for a name longer than its disk's 255 bytes.
            return errors.InvalidName(f"{where}: the server refuses this name")
        if isinstance(exc, OSError) and isinstance(exc, smbexc.SMBException):
            err = exc.errno or errno.EIO
            cls = {errno.ENOENT: errors.NotFound, errno.EEXIST: errors.AlreadyExists,
                   errno.EACCES: errors.PermissionDenied, errno.EPERM: errors.PermissionDenied,
                   errno.ENOTEMPTY: errors.NotEmpty, errno.ENOTDIR: errors.NotFound}.get(err)
            if cls:
                return cls(f"{where}: {exc.strerror}")
            return errors.RemoteError(f"{where}: {exc.strerror}", err=err)
        if isinstance(exc, (smbexc.SMBConnectionClosed, ConnectionError, TimeoutError,
                            socket.timeout, ValueError, OSError, smbexc.SMBException)):
            # ValueError: smbprotocol's "Failed to connect to ..."; OSError: the socket.
            text = str(exc) or type(exc).__name__
            if isinstance(exc, ValueError) and "Failed to connect" not in text:
                return errors.RemoteError(f"{where}: {text}")
            if _CREDITS_SHORT in text:
                # Credits that never came back (a compound cut short, a request the
                # server never answered): this connection cannot carry requests any
                # more, the next call dials anew with a full window.
                self._reset_connections()
            self._forget_connection()
            return errors.Unavailable(f"{self.target.host}: {text}")
        return errors.RemoteError(f"{where}: {type(exc).__name__}: {exc}")

    def _reset_connections(self) -> None:
        with self._lock:
            try:
                smbclient.reset_connection_cache(fail_on_error=False,
                                                 connection_cache=self._cache)
            except Exception as exc:
                log.debug("closing the SMB connections of %s: %s", self.url, exc)
            self._cache.clear()
            self._tuned.clear()

    def _forget_connection(self) -> None:
        # A dead connection stays in the cache; the next call must dial anew.
        with self._lock:
            for key, conn in list(self._cache.items()):
                if not conn.transport.connected:
                    del self._cache[key]
                    self._tuned.discard(id(conn))

    # -- stat and listing ---------------------------------------------------------
    def _from_info(self, name: str, attrs: int, size: int, mtime_ns: int, file_id: int,
                   path: str) -> RemoteStat:
        if attrs & FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT:
            try:
                target = smbclient.readlink(self._p(path), **self._kw())
                return RemoteStat(name, "symlink", 0, mtime_ns, 0o777, file_id,
                                  target.replace("\\", "/"))
            except Exception as exc:  # a junction or other reparse point: show what it stands for
                log.debug("%s: reparse point without a link target (%s)", path, exc)
        if attrs & FileAttributes.FILE_ATTRIBUTE_DIRECTORY:
            return RemoteStat(name, "dir", 0, mtime_ns, 0o755, file_id)
        mode = 0o444 if attrs & FileAttributes.FILE_ATTRIBUTE_READONLY else 0o644
        return RemoteStat(name, "file", size, mtime_ns, mode, file_id)

    def stat(self, path: str) -> RemoteStat:
        name = path.rsplit("/", 1)[-1]
        if not path or _WILDCARDS.search(name):
            st = self._call(path, smbclient.stat, self._p(path), follow_symlinks=False)
            return self._from_info(name, st.st_file_attributes, st.st_size, st.st_mtime_ns,
                                   st.st_ino, path)

        def lookup(**kw):
            (records,) = _one(_round_trip(self._lookup(path, **kw))[0])
            return records

        st = self._stat_of(path, self._call(path, lookup))
        if st is None:
            raise errors.NotFound(f"{path}: not found")
        return st

    def _lookup(self, path: str, **kw) -> _Compound:
        """The parent's listing of this one name: one compound of three messages,
        parsed like a listing (smbclient.stat sends seven, and parsing them costs
        ~6 ms of CPU). Its result: the records found (_stat_of)."""
        parent, _, name = path.rpartition("/")
        compound = _Compound(SMBDirectoryIO(self._p(parent), share_access="rwd", **kw))
        fd = compound.raw.fd
        flags = QueryDirectoryFlags.SMB2_RESTART_SCANS | QueryDirectoryFlags.SMB2_RETURN_SINGLE_ENTRY
        compound += (_query(fd, name, flags), _records_of(fd))
        return compound

    def _stat_of(self, path: str, records: list) -> RemoteStat | None:
        if not records:
            return None
        _name, attrs, size, mtime_ns, file_id = records[0]
        return self._from_info(path.rpartition("/")[2], attrs, size, mtime_ns, file_id, path)

    def scandir(self, path: str) -> list[RemoteStat]:
        def records(**kw) -> list:
            # Open, query twice and close in one round trip: enough for a folder of up
            # to ~1,000 entries. A bigger one is listed again the long way.
            raw = SMBDirectoryIO(self._p(path), share_access="rwd", **kw)
            with SMBFileTransaction(raw) as transaction:
                restart = QueryDirectoryFlags.SMB2_RESTART_SCANS
                transaction += (_query(raw.fd, "*", restart), _records_of(raw.fd))
                transaction += (_query(raw.fd, "*"), _records_of(raw.fd))
            first, more = transaction.results
            if not more:
                return first
            with SMBDirectoryIO(self._p(path), share_access="rwd", **kw) as d:
                return _list_open_dir(d.fd)

        def listing(**kw):
            return [self._from_info(name, attrs, size, mtime_ns, file_id,
                                    f"{path}/{name}" if path else name)
                    for name, attrs, size, mtime_ns, file_id in records(**kw)
                    if name not in (".", "..") and not name.startswith(TEMP_PREFIX)]

        return self._call(path, listing)

    # -- data -----------------------------------------------------------------------
    def read(self, path: str, offset: int, length: int) -> bytes:
        # Open, read and close in one compound: one round trip per chunk. A handle kept
        # open between reads was tried and undone: Samba then reports a stale
        # modification time for changes made on its disk, and after a cut link the dead
        # connection's handle blocks replacing the file until the server notices.
        def do(**kw):
            raw = SMBRawIO(self._p(path), mode="r", share_access="rwd", **kw)
            parts, done = [], 0
            while done < length:
                want = min(length - done, raw.fd.connection.max_read_size)
                request, receive = raw.fd.read(offset + done, want, send=False)
                with SMBFileTransaction(raw) as transaction:
                    transaction += (request, _read_or_eof(receive))
                buf = transaction.results[0]
                if not buf:
                    break
                parts.append(buf)
                done += len(buf)
            return b"".join(parts)

        return self._call(path, do)

    def upload(self, path: str, chunks: Iterable[bytes], expected: Fingerprint | None,
               mode: int, mtime_ns: int, owner: tuple[int, int] | None = None,
               expected_sha: str | None = None) -> RemoteStat:
        # `owner` is not kept: SMB has one owner, the mounting user (can_own says so).
        tmp = temp_name(self, path, "tmp")
        # The head is read once, here: _call may run write_tmp again (credits).
        it = iter(guarded(chunks))
        head, size, whole = [], 0, True
        try:
            for chunk in it:
                head.append(chunk)
                size += len(chunk)
                if size >= _COMPOUND_WRITE_MAX:
                    whole = False
                    break
        except SourceFailed as exc:
            raise exc.__cause__ from None
        if whole and self._workers is not None:
            self._note_own_rename(tmp)  # the watcher here must know it for ours
            return self._workers.upload(tmp, path, b"".join(head), expected, mode, mtime_ns,
                                        expected_sha)
        return self._upload(tmp, path, head, size, it, expected, mode, mtime_ns, expected_sha)

    def upload_as(self, tmp: str, path: str, data: bytes, expected: Fingerprint | None,
                  mode: int, mtime_ns: int, expected_sha: str | None) -> RemoteStat:
        """A small file's upload by way of the temporary name `tmp` (an upload
        worker's part of `upload`)."""
        return self._upload(tmp, path, [data], len(data), iter(()), expected, mode,
                            mtime_ns, expected_sha)

    def _upload(self, tmp: str, path: str, head: list[bytes], size: int, it: Iterator[bytes],
                expected: Fingerprint | None, mode: int, mtime_ns: int,
                expected_sha: str | None) -> RemoteStat:
        streamed = False
        handle = None  # the temporary file's handle, while open

        def write_tmp(**kw):
            # A small file (it fits in one message) goes in one round trip with the
            # check of the base: the look at the name (and for a racy base the read
            # of its content), and the create, write and set time of the temporary
            # name, all sent before any answer is awaited; its handle stays open
            # for the rename. A bigger one is checked, then opened and written a
            # message at a time, and closed. The time set on the handle sticks: the
            # close does not overwrite it. Returns the open handle of a small file.
            nonlocal streamed, handle
            raw = SMBRawIO(self._p(tmp), mode="xb", desired_access=_WRITE_RENAME, **kw)
            limit = min(_COMPOUND_WRITE_MAX, raw.fd.connection.max_write_size)
            if size >= limit:
                if streamed:  # what went out of the stream cannot be read again
                    raise errors.RemoteError(f"{path}: the upload was interrupted",
                                             err=errno.EIO)
                check_expected(self, path, expected, expected_sha)
                streamed = True
                self._write_big(raw, itertools.chain(head, it), mtime_ns)
                return None
            write = _Compound(raw, close=False)
            offset = 0
            for chunk in head:
                request, receive = raw.fd.write(bytes(chunk), offset, send=False)
                write += (request, _written(receive, len(chunk)))
                offset += len(chunk)
            set_info(write, _basic_times(mtime_ns))
            racy = expected_sha is not None and expected is not None
            checks = [self._lookup(path, **kw)]
            if racy and expected.size:
                checks.append(self._read_compound(path, 0, min(expected.size, limit), **kw))
            found, *content, written = _round_trip(*checks, write)
            if not raw.closed:
                handle = raw
            if isinstance(found, smbexc.SMBOSError) and found.errno == errno.ENOENT:
                found = [[]]  # the folder went: the base is gone with it
            current = self._stat_of(path, _one(found)[0])

            def same_content() -> bool:
                first = _one(content[0])[0] if content else b""
                return content_sha(self, path, current.size, first) == expected_sha

            check_version(path, expected, current, same_content if racy else None)
            _one(written)
            return raw

        try:
            raw = self._call(path, write_tmp)  # a failure names the file, not our temporary
            # RACE: a change by another client between the last check and the rename is
            # replaced by ours; SMB2 has no rename conditional on the target's version.
            # A small file was checked in the round trip that wrote it: checking again
            # would not narrow it.
            self._note_own_rename(tmp)
            if raw is None:
                check_expected(self, path, expected)
                st = self._rename(tmp, path, True, stat=True)
            else:
                st = self._call(path, self._rename_open, raw, path)
                handle = None
        except BaseException as exc:
            if handle is not None and not handle.closed:
                try:
                    handle.close()
                except Exception as cleanup:  # the connection is gone, and the handle with it
                    log.debug("cannot close %s now: %s", tmp, cleanup)
            try:
                smbclient.remove(self._p(tmp), **self._kw())
            except Exception as cleanup:  # unreachable now: a stray temporary name, never listed
                log.debug("cannot remove %s now: %s", tmp, cleanup)
            if isinstance(exc, SourceFailed):
                raise exc.__cause__ from None
            raise
        return st

    def _rename_open(self, raw, new: str, **kw) -> RemoteStat:
        """Rename a file we hold open over `new`, read its attributes and close it:
        one compound of three messages."""
        with SMBFileTransaction(raw) as transaction:
            set_info(transaction, self._rename_info(new, True))
            # The answer names the file by its new path (UTF-16, up to 2 units a
            # character), which may be longer than the temporary one.
            name_room = 4 * (len(self.target.path) + len(new) + 2)
            transaction += (_query_raw(raw.fd, FileInformationClass.FILE_ALL_INFORMATION,
                                       _ALL_INFO_LENGTH + max(4 * len(raw.name), name_room)),
                            _raw_info(raw.fd))
            raw.close(transaction=transaction)
        _, info, _ = transaction.results
        (_c, _a, mtime, _ch, attrs, _r, _alloc, size, _links, _del, _dir, _r2,
         file_id) = _ALL_INFO.unpack_from(info)
        return self._from_info(new.rsplit("/", 1)[-1], attrs, size, (mtime - _EPOCH_FT) * 100,
                               file_id, new)

    def _rename_info(self, new: str, replace: bool):
        from smbprotocol.file_info import FileRenameInformation
        info = FileRenameInformation()
        info["replace_if_exists"] = replace
        info["file_name"] = "\\".join(
            p for p in (self.target.path.replace("/", "\\"), new.replace("/", "\\")) if p)
        return info

    @staticmethod
    def _write_big(raw, chunks: Iterable[bytes], mtime_ns: int) -> None:
        """Write a temporary file a message at a time; set its time and close it."""
        raw.open()
        offset = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    part = view[:raw.fd.connection.max_write_size]
                    _check_written(raw.fd.write(part.tobytes(), offset), len(part))
                    offset += len(part)
                    view = view[len(part):]
        except BaseException:
            try:
                raw.close()
            except Exception as exc:  # the connection is gone, and the handle with it
                log.debug("close after a failed write of %s: %s", raw.name, exc)
            raise
        with SMBFileTransaction(raw) as transaction:
            set_info(transaction, _basic_times(mtime_ns))
            raw.close(transaction=transaction)

    def _read_compound(self, path: str, offset: int, length: int, **kw) -> _Compound:
        """Open, read and close: its result is the bytes read (b"" past the end)."""
        compound = _Compound(SMBRawIO(self._p(path), mode="r", share_access="rwd", **kw))
        request, receive = compound.raw.fd.read(offset, length, send=False)
        compound += (request, _read_or_eof(receive))
        return compound

    def _note_own_rename(self, tmp: str) -> None:
        now = time.monotonic()
        with self._own_renames_lock:
            if len(self._own_renames) > 1000:  # renames that failed, or reports missed
                for name, at in list(self._own_renames.items()):
                    if now - at > 60:
                        del self._own_renames[name]
            self._own_renames[tmp] = now

    def _own_rename_reported(self, old_name: str) -> bool:
        with self._own_renames_lock:
            return self._own_renames.pop(old_name, None) is not None

    # -- namespace ----------------------------------------------------------------------
    def mkdir(self, path: str, mode: int) -> RemoteStat:
        self._call(path, smbclient.mkdir, self._p(path))
        return self.stat(path)

    def rmdir(self, path: str) -> None:
        self._call(path, smbclient.rmdir, self._p(path))

    def remove(self, path: str) -> None:
        self._call(path, smbclient.remove, self._p(path))

    def rename(self, old: str, new: str, replace: bool) -> None:
        self._rename(old, new, replace, stat=False)

    def _rename(self, old: str, new: str, replace: bool, stat: bool) -> RemoteStat | None:
        """One compound request (open, rename, [query], close): smbclient's rename opens
        the target first and the source apart, four round trips in all. With `stat`,
        the renamed file's attributes come back in the same round trip."""
        from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

        def do(**kw):
            access = FilePipePrinterAccessMask.DELETE | (
                FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES if stat else 0)
            raw = SMBRawIO(self._p(old), mode="r", share_access="rwd", desired_access=access,
                           create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **kw)
            with SMBFileTransaction(raw) as transaction:
                set_info(transaction, self._rename_info(new, replace))
                if stat:
                    for info_class in _STAT_CLASSES:
                        transaction += (_query_raw(raw.fd, info_class), _raw_info(raw.fd))
            if not stat:
                return None
            _, net_open, internal = transaction.results
            (_c, _a, mtime, _ch, _alloc, size, attrs, _r) = _NETWORK_OPEN.unpack_from(net_open)
            (file_id,) = struct.unpack_from("<Q", internal)
            return self._from_info(new.rsplit("/", 1)[-1], attrs, size,
                                   (mtime - _EPOCH_FT) * 100, file_id, new)

        return self._call(old, do)

    def symlink(self, target: str, path: str) -> RemoteStat:
        raise errors.RemoteError(f"{path}: the SMB server does not store symbolic links",
                                 err=errno.EPERM)

    def mknod(self, path: str, kind: str, mode: int, rdev: int) -> RemoteStat:
        raise errors.RemoteError(f"{path}: the SMB server does not store special files",
                                 err=errno.EPERM)

    def can_mknod(self, kind: str) -> bool:
        return False

    def can_own(self, uid: int, gid: int) -> bool:
        return uid in (-1, os.getuid()) and gid in (-1, os.getgid())  # the mounting user's

    def chown(self, path: str, uid: int, gid: int) -> RemoteStat:
        if not self.can_own(uid, gid):
            raise errors.RemoteError(f"{path}: the SMB server keeps no owners",
                                     err=errno.EPERM)
        return self.stat(path)

    def chmod(self, path: str, mode: int) -> RemoteStat:
        return self.stat(path)  # no POSIX modes on SMB; like a cifs mount, a no-op

    def set_mtime(self, path: str, mtime_ns: int) -> RemoteStat:
        self._call(path, smbclient.utime, self._p(path), ns=(mtime_ns, mtime_ns))
        return self.stat(path)

    def space(self) -> SpaceInfo:
        v = self._call("", smbclient.stat_volume, self._p(""))
        return SpaceInfo(v.total_size, v.caller_available_size, 0, 0)

    def check_name(self, name: str) -> None:
        check_name(name)

    @staticmethod
    def name_len(name: str) -> int:
        """The length of a name we make (a conflict copy, a temporary name): it must
        fit both SMB's 255 UTF-16 units and, as Samba keeps names on a Linux disk,
        255 bytes of UTF-8 there (Samba refuses longer ones as invalid)."""
        return max(utf16_units(name), utf8_bytes(name))

    # -- change notification -----------------------------------------------------------
    def watch(self, on_change: Callable[[str], None], stop: threading.Event,
              on_armed: Callable[[bool], None]) -> None:
        """Call on_change(path) for every change reported under the root, until stop
        is set. Runs in a thread of its own; re-arms after each event and re-opens
        after a lost connection."""
        from smbprotocol.change_notify import (ChangeNotifyFlags, CompletionFilter, FileAction,
                                               FileSystemWatcher)

        filt = (CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME
                | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
                | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE
                | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE
                | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES)
        while not stop.is_set():
            try:
                self._session()
                with SMBDirectoryIO(self._p(""), mode="r", share_access="rwd", **self._kw()) as d:
                    # Samba answers each change on its own, so the two halves of a
                    # rename (old name, new name), and the change reported after it
                    # for the close of our upload's handle, come in answers of their
                    # own: an own rename is remembered from one to the next. (A
                    # change by another client in that instant is seen at the next
                    # check: SMB names are trusted for attr_ttl only.)
                    own_rename = armed = False
                    own_name = None  # the name our last own rename arrived at
                    while not stop.is_set():
                        w = FileSystemWatcher(d.fd)
                        w.start(filt, flags=ChangeNotifyFlags.SMB2_WATCH_TREE)
                        if not armed:  # said once: each re-arm is a hop to the event loop
                            on_armed(True)
                            armed = True
                        while not w.response_event.wait(0.2):
                            if stop.is_set():
                                w.cancel()
                                on_armed(False)
                                return
                        for r in w.result or []:
                            name = r["file_name"].get_value().replace("\\", "/")
                            action = r["action"].get_value()
                            if action == FileAction.FILE_ACTION_RENAMED_NEW_NAME and own_rename:
                                own_rename, own_name = False, name
                                continue  # our upload's temporary file onto its name
                            if action == FileAction.FILE_ACTION_MODIFIED and name == own_name:
                                own_name = None
                                continue  # its close, reported after the rename
                            own_name = None
                            own_rename = (action == FileAction.FILE_ACTION_RENAMED_OLD_NAME
                                          and self._own_rename_reported(name))
                            on_change(name)
                        if not w.result:  # overflow: the server lost track, rescan all
                            on_change("")
                        # Samba keeps the changes made while no request waits and sends
                        # them all in the next answer: re-arming a moment later takes a
                        # burst (a sync's uploads: five changes each) in one answer, not
                        # one round trip and two messages of our CPU per change.
                        stop.wait(NOTIFY_GATHER)
            except smbexc.SMBException as exc:
                if isinstance(exc, (smbexc.NotSupported, smbexc.InvalidDeviceRequest)):
                    log.info("%s has no change notification: polling only", self.url)
                    return
                log.info("change notification interrupted (%s); re-arming", type(exc).__name__)
            except Exception as exc:
                log.info("change notification interrupted (%s); re-arming", type(exc).__name__)
            on_armed(False)
            on_change("")  # we may have missed something while disarmed
            stop.wait(2.0)

    def start_workers(self) -> None:
        """Start the upload processes now rather than at the first upload."""
        if self._workers is not None:
            self._workers.start()

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
        try:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        except Exception as exc:
            log.debug("closing the SMB connections of %s: %s", self.url, exc)
