"""Roaming, start to end: setup, the background upload, logon, logoff, status.

Logon: the hive and the roaming folders come down where the server's copy wins
(decide.py), the losing copy kept in the profile's conflict folder; then the data
sets of this computer's scopes are merged. Logoff, in two phases: the profile
record says "uploading", the hive, folders and data sets go up, then the record
says "complete" with what was uploaded; a logon that finds "uploading" says the
last logoff was interrupted. The background upload is the hive only, client to
server only, never on a slow or costed link."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import credentials, errors
from ..config import Options, load_options
from ..errors import CscfsError, UserError
from ..redirect import primary
from ..remote import open_store
from ..textfmt import size_text
from . import datasets, hive, link, settings
from .decide import (DELETE_LOCAL, DELETE_SERVER, DOWNLOAD, LOGOFF, LOGON, UPLOAD, Copy,
                     decide)
from .folders import excluded, walk, write_file
from .profile import COMPLETE, DATASETS, FOLDERS, HIVE, UPLOADING, Profile, sig
from .state import RoamState

log = logging.getLogger("cscfs.roam")
Echo = Callable[[str], None]

# Events, by the names Windows gives them where it has one.
UPLOAD_STARTED = "background upload started"
UPLOAD_DONE = "background upload finished successfully"
NOT_ROAMED_SLOW = "hive not roamed due to a slow link"
NOT_ROAMED_COSTED = "hive not roamed due to a costed link"
NOT_ROAMED_UNAVAILABLE = "hive not roamed due to the storage server being unavailable"
UPLOAD_FAILED = "background upload failed"
LOGON_DONE = "logon finished"
LOGON_UNAVAILABLE = "logon: storage server unavailable, local settings used"
LOGON_FAILED = "logon failed"
LOGOFF_DONE = "logoff finished"
LOGOFF_UNAVAILABLE = "logoff: storage server unavailable, profile not uploaded"
LOGOFF_FAILED = "logoff failed"
LOGOFF_INTERRUPTED = "previous logoff was interrupted"
OVER_LIMIT = "profile not uploaded: over the size limit"
CONFLICT = "conflict: losing copy kept"
NOT_PRIMARY = "not roamed: not a primary computer"
DATASET_MISSING = "data set path missing"
NOT_ROAMED = {link.UNAVAILABLE: NOT_ROAMED_UNAVAILABLE, link.SLOW_LINK: NOT_ROAMED_SLOW,
              link.COSTED: NOT_ROAMED_COSTED}


@dataclass
class Outcome:
    ok: bool
    lines: list[str] = field(default_factory=list)


class Roamer:
    """One computer's roaming: the config, the profile on the server, roam.db."""

    def __init__(self, cfg: settings.RoamConfig | None = None, options: Options | None = None,
                 state: RoamState | None = None, store=None, clock=time.time,
                 read_cost=None):
        self.cfg = cfg or settings.load()
        self.options = options or load_options()
        self.clock = clock
        self.state = state or RoamState(clock=clock)
        self._store = store
        self.read_cost = read_cost
        self.host = socket.gethostname()

    # -- plumbing ----------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            self._store = open_server(self.cfg.server, self.cfg.credentials or None,
                                      self.options)
        return self._store

    @property
    def profile(self) -> Profile:
        return Profile(self.store)

    def release(self) -> None:
        """Let go of the server between the agent's runs (hours apart)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        self.release()
        self.state.close()

    def event(self, name: str, detail: str = "") -> str:
        self.state.event(name, detail)
        log.info("%s%s", name, f": {detail}" if detail else "")
        return f"{name}: {detail}" if detail else name

    def _finish(self, fact: str, ok: bool, outcome: str, lines: list[str]) -> Outcome:
        self.state.set_fact(fact, {"at": self.clock(), "outcome": outcome,
                                   "detail": "; ".join(lines)})
        return Outcome(ok, lines)

    def _not_primary(self) -> str | None:
        why = primary.refusal(self.options, self.store, "the roaming profile")
        return why.replace(": not mounted", "") if why else None

    def _keep(self):
        paths, _ = datasets.group_paths(self.cfg)
        return lambda key: hive.under(key, paths)

    # -- the background upload ------------------------------------------------
    def upload(self, anyway: bool = False) -> Outcome:
        """One background upload of the hive, now."""
        lines = [self.event(UPLOAD_STARTED)]
        try:
            why = self._not_primary()
            if why:
                lines.append(self.event(NOT_PRIMARY, why))
                return self._finish("last_upload", False, "not primary", lines)
            refused = link.refusal(self.store, self.options, self.profile.root, self.read_cost)
            if refused and (not anyway or refused[0] == link.UNAVAILABLE):
                lines.append(self.event(NOT_ROAMED[refused[0]], refused[1]))
                return self._finish("last_upload", False, NOT_ROAMED[refused[0]], lines)
            self.profile.ensure()
            done = self._hive_up()
        except errors.Unavailable as exc:
            lines.append(self.event(NOT_ROAMED_UNAVAILABLE, str(exc)))
            return self._finish("last_upload", False, NOT_ROAMED_UNAVAILABLE, lines)
        except (CscfsError, OSError) as exc:
            lines.append(self.event(UPLOAD_FAILED, f"{type(exc).__name__}: {exc}"))
            return self._finish("last_upload", False, UPLOAD_FAILED, lines)
        lines.append(self.event(UPLOAD_DONE, done))
        return self._finish("last_upload", True, UPLOAD_DONE, lines)

    def _local_hive(self) -> tuple[bytes | None, hive.Keys, Copy]:
        data = hive.snapshot()
        keys = hive.read_file(data)
        mtime = os.stat(hive.live_path()).st_mtime_ns if data is not None else 0
        return data, keys, Copy(hive.digest(keys) if data is not None else None, mtime)

    def _hive_up(self) -> str:
        data, keys, local = self._local_hive()
        st = self.profile.stat(HIVE)
        server = Copy(sig(st), st.mtime_ns if st else 0)
        d = decide(self.state.base("hive"), local, server, LOGOFF)
        if d.action == UPLOAD:
            if d.keep_loser:
                theirs = self.profile.read(HIVE, st)
                if hive.digest(hive.read_file(theirs)) != local.sig:
                    kept = self.profile.keep_conflict(HIVE, theirs, st.mtime_ns, self.host)
                    self.event(CONFLICT, f"the hive: this computer's copy is newer; the "
                                         f"server's kept as {kept}")
            new = self.profile.put(HIVE, data, local.mtime_ns)
            self.state.set_base("hive", local.sig, sig(new))
            return f"hive uploaded ({size_text(len(data))}, {len(keys)} settings)"
        base = self.state.base("hive")
        if base and st is not None and server.sig != base.server_sig \
                and local.sig == base.local_sig:
            return "the server's hive is newer (from another computer): it comes down at logon"
        return "hive unchanged since the last upload"

    # -- logon ---------------------------------------------------------------
    def logon(self) -> Outcome:
        lines: list[str] = []
        try:
            why = self._not_primary()
            if why:
                lines.append(self.event(NOT_PRIMARY, why))
                return self._finish("last_logon", True, "not primary", lines)
            record = self.profile.record()
            if record and record.get("state") == UPLOADING:
                when = time.strftime("%Y-%m-%d %H:%M:%S",
                                     time.localtime(record.get("started", 0)))
                lines.append(self.event(LOGOFF_INTERRUPTED,
                                        f"the logoff from {record.get('host', '?')} started "
                                        f"at {when} did not finish: the profile on the server "
                                        f"may be incomplete (files are taken one by one, "
                                        f"newer wins)"))
            lines.append(self._hive_down())
            lines += self._folders(LOGON)
            lines += self.import_datasets()
        except errors.Unavailable as exc:
            lines.append(self.event(LOGON_UNAVAILABLE, f"{exc}; nothing changed here"))
            return self._finish("last_logon", False, "server unavailable", lines)
        except (CscfsError, OSError) as exc:
            lines.append(self.event(LOGON_FAILED, f"{type(exc).__name__}: {exc}"))
            return self._finish("last_logon", False, "failed", lines)
        self.event(LOGON_DONE, "; ".join(lines))
        return self._finish("last_logon", True, "ok", lines)

    def _hive_down(self) -> str:
        data, keys, local = self._local_hive()
        st = self.profile.stat(HIVE)
        server = Copy(sig(st), st.mtime_ns if st else 0)
        d = decide(self.state.base("hive"), local, server, LOGON)
        if d.action != DOWNLOAD:
            if d.action == DELETE_LOCAL:  # the server lost its copy: ours goes up at logoff
                self.state.set_base("hive", local.sig, None)
            return "hive: this computer's copy is kept" if st else "hive: none on the server yet"
        theirs = self.profile.read(HIVE, st)
        winner = hive.read_file(theirs)
        if d.keep_loser and hive.digest(winner) != local.sig:
            kept = self.profile.keep_conflict(HIVE, data, local.mtime_ns, self.host)
            self.event(CONFLICT, f"the hive: the server's copy is newer; this computer's "
                                 f"kept as {kept}")
        changed, reset = hive.apply(winner, keys, self._keep())
        self.state.set_base("hive", hive.digest(hive.read_live()), sig(st))
        return f"hive: the server's copy applied ({changed} settings written, {reset} reset)"

    # -- roaming folders ---------------------------------------------------------
    def _folders(self, phase: str, only_size: bool = False) -> list[str]:
        _, skip = datasets.group_paths(self.cfg)
        lines = []
        for folder in self.cfg.folders:
            key = settings.folder_key(folder)
            root = settings.home_path(folder)
            local = walk(root, self.cfg.exclude, skip)
            remote = {rel: st for rel, st in self.profile.walk(f"{FOLDERS}/{key}").items()
                      if not excluded(rel, self.cfg.exclude)}
            prefix = f"file:{key}/"
            known = {i[len(prefix):] for i in self.state.items(prefix)}
            moved = 0
            for rel in sorted(set(local) | set(remote) | known):
                moved += self._file(phase, key, root, rel, local.get(rel), remote.get(rel))
            verb = "down" if phase == LOGON else "up"
            lines.append(f"{folder}: {moved} files {verb} ({len(local)} here)")
        return lines

    def _file(self, phase, key, root, rel, lf, rs) -> int:
        item = f"file:{key}/{rel}"
        server_rel = f"{FOLDERS}/{key}/{rel}"
        local = Copy(lf.sig if lf else None, lf.mtime_ns if lf else 0)
        server = Copy(sig(rs), rs.mtime_ns if rs else 0)
        d = decide(self.state.base(item), local, server, phase)
        full = os.path.join(root, rel)
        if d.action == DOWNLOAD:
            data = self.profile.read(server_rel, rs)
            if d.keep_loser:
                with open(full, "rb") as f:
                    ours = f.read()
                if ours != data:
                    kept = self.profile.keep_conflict(server_rel, ours, lf.mtime_ns, self.host)
                    self.event(CONFLICT, f"{key}/{rel}: the server's copy is newer; this "
                                         f"computer's kept as {kept}")
            write_file(full, data, rs.mtime_ns)
            st = os.stat(full)
            self.state.set_base(item, f"{st.st_size}:{st.st_mtime_ns}", sig(rs))
            return 1
        if d.action == UPLOAD:
            with open(full, "rb") as f:
                data = f.read()
            if d.keep_loser:
                theirs = self.profile.read(server_rel, rs)
                if theirs != data:
                    kept = self.profile.keep_conflict(server_rel, theirs, rs.mtime_ns,
                                                      self.host)
                    self.event(CONFLICT, f"{key}/{rel}: this computer's copy is newer; the "
                                         f"server's kept as {kept}")
            new = self.profile.put(server_rel, data, lf.mtime_ns, direct=True)
            self.state.set_base(item, lf.sig, sig(new))
            return 1
        if d.action == DELETE_LOCAL:
            os.unlink(full)
            self.state.set_base(item, None, None)
            return 1
        if d.action == DELETE_SERVER:
            self.profile.remove(server_rel)
            self.state.set_base(item, None, None)
            return 1
        if lf is None and rs is None:
            self.state.set_base(item, None, None)
        return 0

    def profile_size(self) -> tuple[int, list[tuple[int, str]]]:
        """Bytes of the hive and the roaming folders, and the largest files."""
        _, skip = datasets.group_paths(self.cfg)
        data = hive.snapshot()
        sizes = [(len(data), "the hive")] if data else []
        for folder in self.cfg.folders:
            for rel, lf in walk(settings.home_path(folder), self.cfg.exclude, skip).items():
                sizes.append((lf.size, os.path.join(folder, rel)))
        sizes.sort(reverse=True)
        return sum(s for s, _ in sizes), sizes[:3]

    # -- logoff --------------------------------------------------------------
    def logoff(self) -> Outcome:
        lines: list[str] = []
        started = self.clock()
        try:
            why = self._not_primary()
            if why:
                lines.append(self.event(NOT_PRIMARY, why))
                return self._finish("last_logoff", True, "not primary", lines)
            total, largest = self.profile_size()
            limit = int(self.cfg.size_limit_mb * 1_000_000)
            over = bool(limit) and total > limit
            self.profile.ensure()
            self.profile.write_record({"state": UPLOADING, "host": self.host,
                                       "machine": _machine(), "started": started})
            uploaded: list[str] = []
            if over:
                big = ", ".join(f"{p} {size_text(s)}" for s, p in largest)
                lines.append(self.event(OVER_LIMIT, f"{size_text(total)} is over the limit of "
                                                    f"{size_text(limit)} (size_limit_mb): the "
                                                    f"hive and folders stay here; largest: {big}"))
            else:
                lines.append(self._hive_up())
                lines += self._folders(LOGOFF)
                uploaded += [HIVE, FOLDERS]
            lines += self.export_datasets(uploaded)
            self.profile.write_record({"state": COMPLETE, "host": self.host,
                                       "machine": _machine(), "started": started,
                                       "finished": self.clock(), "uploaded": uploaded})
        except errors.Unavailable as exc:
            lines.append(self.event(LOGOFF_UNAVAILABLE, f"{exc}; the settings stay here and go "
                                                        f"up at the next logoff"))
            return self._finish("last_logoff", False, "server unavailable", lines)
        except (CscfsError, OSError) as exc:
            lines.append(self.event(LOGOFF_FAILED, f"{type(exc).__name__}: {exc}"))
            return self._finish("last_logoff", False, "failed", lines)
        self.event(LOGOFF_DONE, "; ".join(lines))
        return self._finish("last_logoff", not over, "over the size limit" if over else "ok",
                            lines)

    # -- data sets -------------------------------------------------------------
    def export_datasets(self, uploaded: list[str]) -> list[str]:
        if not self.cfg.datasets:
            return []
        sid = datasets.user_sid()[0]
        keys = hive.read_live()
        report = datasets.ExportReport()
        lines, sizes = [], {}
        for scope in datasets.scopes(self.cfg):
            data = datasets.build(self.cfg, scope, keys, sid, report)
            if data is None:
                continue
            name = datasets.archive_name(sid, scope)
            new = self.profile.put(f"{DATASETS}/{name}", data, time.time_ns())
            self.state.set_base(f"dataset:{name}", None, sig(new))
            uploaded.append(f"{DATASETS}/{name}")
            sizes[name] = len(data)
            lines.append(f"data sets: {name} ({size_text(len(data))})")
        for missing in report.missing:
            lines.append(self.event(DATASET_MISSING, f"{missing} is gone: exported without it"))
        self.state.set_fact("datasets", sizes)
        return lines

    def import_datasets(self) -> list[str]:
        sid = datasets.user_sid()[0]
        lines = []
        for scope in datasets.scopes(self.cfg):
            name = datasets.archive_name(sid, scope)
            rel = f"{DATASETS}/{name}"
            st = self.profile.stat(rel)
            base = self.state.base(f"dataset:{name}")
            if st is None or (base is not None and base.server_sig == sig(st)):
                continue  # none, or the one we exported or merged last
            report = datasets.merge(self.profile.read(rel, st), hive.read_live())
            for lost, data, mtime in report.losers:
                kept = self.profile.keep_conflict(lost, data, mtime, self.host)
                self.event(CONFLICT, f"data set file {lost}: the server's copy is newer; "
                                     f"this computer's kept as {kept}")
            self.state.set_base(f"dataset:{name}", None, sig(st))
            lines.append(f"data sets: {name} merged ({report.keys} settings, "
                         f"{report.files} files)")
        return lines

    # -- status ----------------------------------------------------------------
    def status(self) -> dict:
        s = self.state
        sid, source = datasets.user_sid()
        return {
            "server": self.cfg.server,
            "profile": f"{self.cfg.server.rstrip('/')}/{Profile(None).user}/",
            "schedule": (f"every {self.cfg.hive_upload_interval_h:g} h"
                         if self.cfg.hive_upload == "interval"
                         else f"daily at {self.cfg.hive_upload_time}") +
                        f" + up to {self.cfg.hive_upload_delay_min:g} min",
            "last_upload": s.fact("last_upload"),
            "next_upload": s.fact("next_upload"),
            "last_logon": s.fact("last_logon"),
            "last_logoff": s.fact("last_logoff"),
            "machine_group": self.cfg.machine_group,
            "sid": sid, "sid_source": source,
            "datasets": {name: {"scope": ds.scope, "dconf": ds.dconf, "folders": ds.folders}
                         for name, ds in sorted(self.cfg.datasets.items())},
            "dataset_files": s.fact("datasets", {}),
        }


def _machine() -> str:
    try:
        return primary.machine_id()
    except CscfsError:
        return ""


def open_server(server: str, credentials_file: str | None, options: Options):
    creds = None
    if server.startswith("smb://"):
        from ..remote.smb import parse_url

        target = parse_url(server)
        creds = credentials.resolve(target.username, target.domain, target.host,
                                    credentials_file)
    elif credentials_file:
        raise UserError("--credentials is for smb:// servers")
    return open_store(server, creds, timeout=options.remote_timeout, encrypt=options.encrypt)


# ------------------------------------------------------------------ setup
def setup(server: str, credentials_file: str | None, machine_group: str | None,
          echo: Echo) -> int:
    """Check the server, write roam.toml (keeping data sets and options set before),
    write the user unit and enable it where a user manager runs."""
    from . import unit

    if credentials_file:
        credentials_file = os.path.abspath(os.path.expanduser(credentials_file))
    options = load_options()
    try:
        cfg = settings.load()
    except UserError:
        if os.path.exists(settings.config_path()):
            raise
        cfg = settings.RoamConfig()
    cfg.server, cfg.credentials = server, credentials_file or ""
    if machine_group is not None:
        cfg.machine_group = machine_group
    settings.validate(cfg, settings.config_path())
    store = open_server(server, credentials_file, options)
    try:
        try:
            st = store.stat("")
        except errors.Unavailable as exc:
            raise CscfsError(f"server {store.url} is unreachable ({exc}): nothing set up") \
                from None
        except errors.NotFound:
            raise UserError(f"server {store.url} does not exist: nothing set up") from None
        if st.kind != "dir":
            raise UserError(f"server {store.url} is not a folder: nothing set up")
        profile = Profile(store)
        profile.ensure()
    finally:
        store.close()
    settings.save(cfg)
    path = unit.write()
    how = unit.enable(echo)
    echo(f"roaming settings to {server.rstrip('/')}/{profile.user}/ (hive, "
         f"{', '.join(cfg.folders)}); {how}")
    echo(f"unit: {path}")
    return 0


def add_dataset(name: str, scope: str, dconf_paths: list[str], folders: list[str],
                echo: Echo) -> int:
    cfg = settings.load()
    if not dconf_paths and not folders:
        raise UserError("a data set needs --dconf PATH or --folder DIR (or both)")
    datasets.check_new(dconf_paths, folders, hive.read_live())
    cfg.datasets[name] = settings.DataSet(scope, list(dconf_paths),
                                          [_tilde(f) for f in folders])
    settings.save(cfg)
    where = "all computers" if scope == settings.GLOBAL else \
        f"computers of group {cfg.machine_group}"
    echo(f"data set {name}: {len(dconf_paths)} dconf paths, {len(folders)} folders, "
         f"roamed to {where}")
    return 0


def _tilde(path: str) -> str:
    full, home = settings.home_path(path), os.path.expanduser("~")
    return "~/" + os.path.relpath(full, home) if full.startswith(home + "/") else full
