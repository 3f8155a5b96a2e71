"""Moving a folder's files into a target (the server, or a mounted cscfs): each file
is copied, verified by hash on the target, and only then removed here. A small
journal in the data dir remembers where each file went, so a move cut short
(kill -9, a power cut) resumes without losing or duplicating a file. A name taken
on the target by other content is a conflict: both are kept, ours under a
conflict name (sync/conflicts.py)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import time
from dataclasses import dataclass, field

from sync.conflicts import conflict_names

from .. import errors
from ..remote.base import join

CHUNK = 1 << 20


class MoveFailed(errors.CscfsError):
    """A copy did not arrive intact; the file stays here."""


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StoreTarget:
    """The server itself: an upload lands atomically (a temporary name renamed over),
    so a name that holds other content was never a partial copy of ours."""

    atomic = True

    def __init__(self, store):
        self.store = store

    def kind(self, rel: str) -> str | None:
        try:
            return self.store.stat(rel).kind
        except errors.NotFound:
            return None

    def digest(self, rel: str) -> str | None:
        try:
            st = self.store.stat(rel)
        except errors.NotFound:
            return None
        if st.kind != "file":
            return st.kind
        h, offset = hashlib.sha256(), 0
        while True:
            data = self.store.read(rel, offset, CHUNK)
            if not data:
                return h.hexdigest()
            h.update(data)
            offset += len(data)

    def mkdir(self, rel: str) -> None:
        self.store.mkdir(rel, 0o755)

    def put(self, local: str, rel: str, replace: bool) -> None:
        st = os.stat(local)
        expected = self.store.stat(rel).fingerprint if replace else None

        def chunks():
            with open(local, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        self.store.upload(rel, chunks(), expected, stat.S_IMODE(st.st_mode), st.st_mtime_ns)


class DirTarget:
    """A folder on this machine (the mounted cscfs: what is written there reaches the
    server by write-back). A write cut short leaves a partial file at its name."""

    atomic = False

    def __init__(self, root: str):
        self.root = root

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def kind(self, rel: str) -> str | None:
        try:
            mode = os.lstat(self._abs(rel)).st_mode
        except FileNotFoundError:
            return None
        return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"

    def digest(self, rel: str) -> str | None:
        kind = self.kind(rel)
        return file_digest(self._abs(rel)) if kind == "file" else kind

    def mkdir(self, rel: str) -> None:
        try:
            os.mkdir(self._abs(rel))
        except FileExistsError:
            raise errors.AlreadyExists(rel) from None

    def put(self, local: str, rel: str, replace: bool) -> None:
        st = os.stat(local)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
        try:
            fd = os.open(self._abs(rel), flags, stat.S_IMODE(st.st_mode))
        except FileExistsError:
            raise errors.AlreadyExists(rel) from None
        with os.fdopen(fd, "wb") as out, open(local, "rb") as f:
            while chunk := f.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.utime(self._abs(rel), ns=(st.st_atime_ns, st.st_mtime_ns))


class Journal:
    """JSON lines, each fsynced before the step it announces."""

    def __init__(self, path: str):
        self.path = path
        self.dirs: dict[str, str] = {}
        self.files: dict[str, dict] = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # the last line, cut short by a crash
                    if "dir" in rec:
                        self.dirs[rec["dir"]] = rec["dst"]
                    elif "file" in rec:
                        self.files[rec["file"]] = rec
                    elif "done" in rec:
                        self.files.pop(rec["done"], None)

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    def add(self, rec: dict) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@dataclass
class MoveReport:
    files: int = 0
    bytes: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (name, our copy)


def unmovable(root: str) -> list[str]:
    """What a move cannot carry: symbolic links and special files."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) or stat.S_ISLNK(mode):
                bad.append(os.path.relpath(full, root))
    return bad


class Mover:
    def __init__(self, source: str, target, journal_path: str, host: str | None = None,
                 on_file=None):
        self.source, self.target = source, target
        self.journal = Journal(journal_path)
        self.host = host or socket.gethostname()
        self.report = MoveReport()
        self.on_file = on_file or (lambda rel: None)

    def run(self) -> MoveReport:
        dirs = {"": ""}
        for dirpath, dirnames, filenames in os.walk(self.source):
            here = os.path.relpath(dirpath, self.source)
            here = "" if here == "." else here
            for name in sorted(dirnames):
                src = join(here, name)
                dirs[src] = self._dir(src, join(dirs[here], name))
            for name in sorted(filenames):
                self._file(join(here, name), join(dirs[here], name))
        for dirpath, _dirnames, _filenames in os.walk(self.source, topdown=False):
            if dirpath != self.source:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # something new landed in it meanwhile: the next move takes it
        self.journal.finish()
        return self.report

    def _free_name(self, want: str) -> str:
        parent, _, name = want.rpartition("/")
        for candidate in conflict_names(name, self.host, time.time()):
            if self.target.kind(join(parent, candidate)) is None:
                return join(parent, candidate)
        raise MoveFailed(f"{want}: no free conflict name on the target")

    def _dir(self, src: str, want: str) -> str:
        dst = self.journal.dirs.get(src, want)
        kind = self.target.kind(dst)
        if kind == "dir":
            return dst
        if kind is not None:  # a file has the folder's name there: keep both
            ours = self._free_name(dst)
            self.report.conflicts.append((dst, ours))
            dst = ours
        self.journal.add({"dir": src, "dst": dst})
        try:
            self.target.mkdir(dst)
        except errors.AlreadyExists:
            pass
        return dst

    def _file(self, src: str, want: str) -> None:
        local = os.path.join(self.source, src)
        while True:
            before = os.stat(local)
            h = file_digest(local)
            dst, replace = self._destination(src, want, h)
            if dst is not None:
                self.target.put(local, dst, replace)
                if self.target.digest(dst) != h:
                    raise MoveFailed(f"{src}: the copy at {dst} does not match; kept here")
            after = os.stat(local)
            if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
                break  # else written to while we copied: copy again over our copy
        rec = self.journal.files.get(src)
        if rec and rec["conflict"]:
            self.report.conflicts.append((want, rec["dst"]))
        self.journal.add({"done": src})
        os.unlink(local)
        self.report.files += 1
        self.report.bytes += before.st_size
        self.on_file(src)

    def _destination(self, src: str, want: str, h: str) -> tuple[str | None, bool]:
        """Where to copy (None: an identical copy is there already) and whether the
        name there is ours to replace."""
        rec = self.journal.files.get(src)
        if rec is not None:
            there = self.target.digest(rec["dst"])
            if there == h:
                return None, False
            # The name was free when chosen: what is there now is our copy (of an older
            # content, or cut short where copies are not atomic), or nothing.
            ours = there is None or (there not in ("dir", "other")
                                     and (there == rec["sha256"] or not self.target.atomic))
            if ours:
                if rec["sha256"] != h:
                    rec = dict(rec, sha256=h)
                    self.journal.add(rec)
                    self.journal.files[src] = rec
                return rec["dst"], there is not None
        there = self.target.digest(want)
        if there == h:
            self.journal.files.pop(src, None)
            return None, False
        conflict = there is not None
        dst = self._free_name(want) if conflict else want
        rec = {"file": src, "dst": dst, "sha256": h, "conflict": conflict}
        self.journal.add(rec)
        self.journal.files[src] = rec
        return dst, False
