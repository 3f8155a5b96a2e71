"""The roaming folders on this computer: regular files only (no sockets, fifos or
links), minus the exclusions, minus the hive (it roams by itself), cscfs's own
config (per computer) and folders of group-scoped data sets (they roam only with
their data set)."""

from __future__ import annotations

import fnmatch
import os
import stat as statmod
from dataclasses import dataclass

import platformdirs

from ..config import APP
from . import hive


@dataclass(frozen=True)
class LocalFile:
    path: str        # absolute
    size: int
    mtime_ns: int

    @property
    def sig(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


def excluded(rel: str, patterns: list[str]) -> bool:
    rel_l = rel.lower()
    names = rel_l.split("/")
    for pattern in patterns:
        p = pattern.lower()
        if fnmatch.fnmatchcase(rel_l, p) or any(fnmatch.fnmatchcase(n, p) for n in names):
            return True
    return False


def never_roamed() -> set[str]:
    return {os.path.realpath(hive.live_path()),
            os.path.realpath(platformdirs.user_config_dir(APP))}


def walk(root: str, patterns: list[str], skip: set[str] = frozenset()) -> dict[str, LocalFile]:
    """Path inside `root` -> the file, for every file that roams."""
    out: dict[str, LocalFile] = {}
    stop = never_roamed() | {os.path.realpath(s) for s in skip}
    if not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        here = os.path.relpath(dirpath, root)
        here = "" if here == "." else here
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            rel = f"{here}/{d}" if here else d
            if os.path.realpath(full) in stop or excluded(rel, patterns) or os.path.islink(full):
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = f"{here}/{name}" if here else name
            if os.path.realpath(full) in stop or excluded(rel, patterns):
                continue
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if statmod.S_ISREG(st.st_mode):
                out[rel] = LocalFile(full, st.st_size, st.st_mtime_ns)
    return out


def write_file(path: str, data: bytes, mtime_ns: int) -> None:
    """Atomically (a temporary name, then a rename), with the server's mtime."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.cscfs-roam.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, path)
