"""The user's profile on the server, SERVER/<user>/:

    settings.dconf                  the hive (a copy of ~/.config/dconf/user)
    folders/<folder>/...            the roaming folders, file by file (<folder>: its
                                    path in the home folder, e.g. .config)
    datasets/<SID>.<scope>.tar.gz   data sets, one compressed file per scope
    conflicts/...                   losing copies, kept (never dropped)
    profile.json                    the logoff record (two phases)

A put writes `<name>.{uuid}.tmp` beside the name (as Windows' NTUSER.DAT.{GUID}.tmp,
itself written atomically by the store), then renames it over the previous copy:
a reader sees the old copy or the new one, never part of one."""

from __future__ import annotations

import getpass
import json
import time
import uuid

from sync.conflicts import conflict_names

from .. import errors
from ..remote.base import join

HIVE = "settings.dconf"
FOLDERS = "folders"
DATASETS = "datasets"
CONFLICTS = "conflicts"
RECORD = "profile.json"
UPLOADING, COMPLETE = "uploading", "complete"
STALE_TMP = 3600  # s after which a put's temporary copy is a leftover


def sig(st) -> str | None:
    """The server's copy as the bases keep it."""
    return None if st is None else f"{st.size}:{st.mtime_ns}"


class Profile:
    def __init__(self, store, user: str | None = None):
        self.store = store
        self.user = user or getpass.getuser()
        self.root = self.user

    def path(self, rel: str) -> str:
        return join(self.root, rel) if rel else self.root

    def stat(self, rel: str):
        try:
            return self.store.stat(self.path(rel))
        except errors.NotFound:
            return None

    def read(self, rel: str, st=None) -> bytes:
        st = st or self.store.stat(self.path(rel))
        return self.store.read(self.path(rel), 0, st.size) if st.size else b""

    def makedirs(self, rel: str) -> None:
        parts = [p for p in self.path(rel).split("/") if p]
        for i in range(1, len(parts) + 1):
            here = "/".join(parts[:i])
            try:
                self.store.mkdir(here, 0o700)
            except errors.AlreadyExists:
                pass

    def ensure(self) -> None:
        self.makedirs("")

    def put(self, rel: str, data: bytes, mtime_ns: int, direct: bool = False):
        """Atomically replace `rel` with `data` (its mtime kept, for newer-wins)."""
        parent = rel.rpartition("/")[0]
        if parent:
            self.makedirs(parent)
        target = self.path(rel)
        if direct:  # the store's upload is atomic by itself (a hidden temporary name)
            current = self.stat(rel)
            return self.store.upload(target, [data], current.fingerprint if current else None,
                                     0o600, mtime_ns)
        tmp = f"{target}.{{{uuid.uuid4()}}}.tmp"
        try:
            self.store.upload(tmp, [data], None, 0o600, mtime_ns)
            self.store.rename(tmp, target, True)
        except BaseException:
            try:
                self.store.remove(tmp)
            except errors.RemoteError:
                pass
            raise
        self._sweep(rel)
        return self.store.stat(target)

    def _sweep(self, rel: str) -> None:
        """Remove `<name>.{uuid}.tmp` left by a put cut short (a crash between the
        upload and the rename). RACE: only those over STALE_TMP old, so that another
        computer's put in flight (seconds, within the store's deadlines) is not one."""
        parent, _, name = rel.rpartition("/")
        now = time.time_ns()
        for st in self.store.scandir(self.path(parent)):
            if st.name.startswith(name + ".{") and st.name.endswith("}.tmp") \
                    and now - st.mtime_ns > STALE_TMP * 1e9:
                try:
                    self.store.remove(self.path(join(parent, st.name) if parent else st.name))
                except errors.NotFound:
                    pass

    def remove(self, rel: str) -> None:
        try:
            self.store.remove(self.path(rel))
        except errors.NotFound:
            pass

    def keep_conflict(self, rel: str, data: bytes, mtime_ns: int, host: str) -> str:
        """Keep a losing copy under conflicts/ (same path, a conflict name)."""
        parent, _, name = rel.rpartition("/")
        folder = join(CONFLICTS, parent) if parent else CONFLICTS
        self.makedirs(folder)
        for candidate in conflict_names(name, host, time.time(), max_len=self.store.name_max,
                                        measure=self.store.name_len):
            kept = join(folder, candidate)
            if self.stat(kept) is None:
                self.store.upload(self.path(kept), [data], None, 0o600, mtime_ns)
                return kept
        raise errors.RemoteError(f"{rel}: no free conflict name")

    def walk(self, rel: str) -> dict[str, object]:
        """Every file under `rel`: path inside it -> stat."""
        out: dict[str, object] = {}
        todo = [""]
        while todo:
            here = todo.pop()
            try:
                entries = self.store.scandir(self.path(join(rel, here) if here else rel))
            except errors.NotFound:
                continue
            for st in entries:
                name = join(here, st.name)
                if st.kind == "dir":
                    todo.append(name)
                elif st.kind == "file" and not st.name.endswith(".tmp"):
                    out[name] = st
        return out

    def record(self) -> dict | None:
        st = self.stat(RECORD)
        if st is None:
            return None
        try:
            return json.loads(self.read(RECORD, st))
        except ValueError:
            return {"state": UPLOADING, "host": "?", "started": st.mtime_ns / 1e9}

    def write_record(self, record: dict) -> None:
        data = json.dumps(record, indent=1).encode()
        self.put(RECORD, data, time.time_ns())
