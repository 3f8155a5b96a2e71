"""Data sets (as MetaProfiles-IT): named sets of dconf paths and folders, each of
scope `global` or `group` (this computer's machine_group). At logoff each scope is
exported into one compressed file on the server named by the user's SID; at logon
the files of this computer's scopes are merged back: dconf keys through dconf,
folders file by file (the newer wins).

An archive (tar + gzip): manifest.json ({"version", "scope", "sid", "host",
"created", "sets": {name: {"dconf": {key: value}, "files": {path: mtime_ns}}}}) and
files/<set>/<folder>/<path>, <folder> being the folder's path in the home folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass, field

from ..errors import UserError
from . import hive
from .folders import walk
from .settings import GLOBAL, GROUP, RoamConfig, check_dconf_path, folder_key, home_path

WBINFO_TIMEOUT = 5


def user_sid(uid: int | None = None) -> tuple[str, str]:
    """(SID, where it came from): the domain SID when the machine is joined through
    winbind or SSSD, else Samba's Unix-user SID S-1-22-1-<uid>."""
    uid = os.getuid() if uid is None else uid
    wbinfo = shutil.which("wbinfo")
    if wbinfo:
        try:
            proc = subprocess.run([wbinfo, "--uid-to-sid", str(uid)], capture_output=True,
                                  text=True, timeout=WBINFO_TIMEOUT)
            sid = proc.stdout.strip()
            if proc.returncode == 0 and sid.startswith("S-1-"):
                return sid, "winbind"
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import pysss_nss_idmap  # python3-libsss-nss-idmap, present where SSSD is
    except ImportError:
        pysss_nss_idmap = None
    if pysss_nss_idmap is not None:
        try:
            found = pysss_nss_idmap.getsidbyid(uid) or {}
            sid = (found.get(uid) or {}).get(pysss_nss_idmap.SID_KEY)
            if sid:
                return sid, "sssd"
        except Exception:  # SSSD not running or the uid not a domain user
            pass
    return f"S-1-22-1-{uid}", "unix"


def scopes(cfg: RoamConfig) -> list[str]:
    """This computer's scopes, as file name parts: global, group-<machine_group>."""
    out = [GLOBAL]
    if cfg.machine_group:
        out.append(f"{GROUP}-{cfg.machine_group}")
    return out


def scope_of(cfg: RoamConfig, name: str) -> str:
    ds = cfg.datasets[name]
    return GLOBAL if ds.scope == GLOBAL else f"{GROUP}-{cfg.machine_group}"


def archive_name(sid: str, scope: str) -> str:
    return f"{sid}.{scope}.tar.gz"


def group_paths(cfg: RoamConfig) -> tuple[list[str], set[str]]:
    """dconf paths and folders of group-scoped sets: the hive and the roaming
    folders leave them alone (they roam only with their group's data set)."""
    paths, folders = [], set()
    for ds in cfg.datasets.values():
        if ds.scope == GROUP:
            paths += ds.dconf
            folders |= {home_path(f) for f in ds.folders}
    return paths, folders


def check_new(dconf_paths: list[str], folders: list[str], keys: hive.Keys) -> None:
    """Bad input for `cscfs roam dataset add`: a path dconf does not know here, a
    folder that does not exist."""
    for p in dconf_paths:
        check_dconf_path(p)
        if not any(hive.under(k, [p]) for k in keys):
            hint = "" if p.endswith("/") else " (a folder of settings ends with '/')"
            raise UserError(f"{p}: no such setting in your dconf database{hint}")
    for f in folders:
        if not os.path.isdir(home_path(f)):
            raise UserError(f"{f}: no such folder")
        folder_key(f)


@dataclass
class ExportReport:
    archives: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    missing: list[str] = field(default_factory=list)         # paths gone since configured


def build(cfg: RoamConfig, scope: str, keys: hive.Keys, sid: str,
          report: ExportReport) -> bytes | None:
    """The archive of one scope's sets (None: no set of that scope)."""
    names = [n for n in sorted(cfg.datasets) if scope_of(cfg, n) == scope]
    if not names:
        return None
    manifest = {"version": 1, "scope": scope, "sid": sid, "host": socket.gethostname(),
                "created": time.time(), "sets": {}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name in names:
            ds = cfg.datasets[name]
            values = {k: v for k, v in keys.items() if hive.under(k, ds.dconf)}
            report.missing += [f"{name}: {p}" for p in ds.dconf
                               if not any(hive.under(k, [p]) for k in values)]
            files: dict[str, int] = {}
            for folder in ds.folders:
                root, key = home_path(folder), folder_key(folder)
                if not os.path.isdir(root):
                    report.missing.append(f"{name}: {folder}")
                    continue
                for rel, lf in walk(root, cfg.exclude).items():
                    arc = f"{key}/{rel}"
                    tar.add(lf.path, arcname=f"files/{name}/{arc}", recursive=False)
                    files[arc] = lf.mtime_ns
            manifest["sets"][name] = {"dconf": values, "files": files}
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class ImportReport:
    keys: int = 0
    files: int = 0
    losers: list[tuple[str, bytes, int]] = field(default_factory=list)  # (name, data, mtime)


def merge(data: bytes, live: hive.Keys) -> ImportReport:
    """Merge an archive into this computer: its keys through dconf (only those that
    differ), its files where the archive's copy is newer (a different local copy
    that loses is handed back in `losers`, for the profile's conflict folder)."""
    report = ImportReport()
    home = os.path.realpath(os.path.expanduser("~"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        changes: hive.Keys = {}
        for name, content in manifest["sets"].items():
            for k, v in content["dconf"].items():
                if live.get(k) != v:
                    changes[k] = v
            for arc, mtime_ns in content["files"].items():
                dest = os.path.realpath(os.path.join(home, arc))
                if not dest.startswith(home + "/"):
                    continue  # never outside the home folder, whatever the archive says
                member = tar.extractfile(f"files/{name}/{arc}")
                if member is None:
                    continue
                blob = member.read()
                try:
                    st = os.stat(dest)
                    if st.st_mtime_ns >= mtime_ns:
                        continue  # ours is as new or newer
                    with open(dest, "rb") as f:
                        ours = f.read()
                    if ours == blob:
                        continue
                    report.losers.append((f"{DATASET_LOSERS}/{arc}", ours, st.st_mtime_ns))
                except FileNotFoundError:
                    pass
                from .folders import write_file

                write_file(dest, blob, mtime_ns)
                report.files += 1
        if changes:
            hive.write_live(changes)
        report.keys = len(changes)
    return report


DATASET_LOSERS = "datasets"
