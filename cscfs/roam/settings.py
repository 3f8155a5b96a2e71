"""The roaming configuration, roam.toml in the config dir: one table of options
(RoamConfig: name, default, help) for the loader and the README's table. Never a
password: an SMB password stays in its credentials file."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields

import platformdirs
import tomli_w

from sync.scheduler import parse_hhmm

from ..config import APP
from ..errors import UserError

GLOBAL, GROUP = "global", "group"
# Caches, trash, sockets, lock and temporary files never roam (matched, case-
# insensitively, against each name and against the path inside the folder).
DEFAULT_EXCLUDE = ["*cache*", "Trash", ".Trash*", "*.lock", "lock", "*.lck", "*.sock",
                   "*.socket", "*.pid", "*.tmp", "*.swp", "*~", "systemd", "pulse/cookie"]
DCONF_PATH = re.compile(r"^/([A-Za-z0-9_.-]+/)*([A-Za-z0-9_.-]+)?$")


def _opt(default, help_text):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class DataSet:
    scope: str = GLOBAL                                   # global or group
    dconf: list[str] = field(default_factory=list)        # dconf dirs (/a/b/) or keys (/a/b/c)
    folders: list[str] = field(default_factory=list)      # folders, as ~/... paths


@dataclass
class RoamConfig:
    server: str = _opt("", "the profile server; the profile is SERVER/<user>/")
    credentials: str = _opt("", "SMB: path of a cifs-style credentials file")
    hive_upload: str = _opt("interval", "background upload of the hive: 'interval' or 'time'")
    hive_upload_interval_h: float = _opt(12.0, "hours between background uploads (1-720)")
    hive_upload_time: str = _opt("03:00", "HH:MM local time of the daily background upload")
    hive_upload_delay_min: float = _opt(
        60.0, "up to this many random minutes added to each background upload (0-60)")
    folders: list[str] = _opt(["~/.config"], "roaming folders (under your home)")
    exclude: list[str] = _opt(DEFAULT_EXCLUDE, "names or paths in roaming folders that "
                                               "never roam (glob patterns)")
    size_limit_mb: float = _opt(30.0, "the profile (hive + roaming folders) is not "
                                      "uploaded over this size (0: no limit)")
    machine_group: str = _opt("", "this computer's group, for data sets of scope 'group'")
    datasets: dict[str, DataSet] = field(default_factory=dict)


def config_path() -> str:
    return os.path.join(platformdirs.user_config_dir(APP), "roam.toml")


def home_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def folder_key(path: str) -> str:
    """A roaming folder's name on the server: its path inside the home folder."""
    full, home = home_path(path), os.path.realpath(os.path.expanduser("~"))
    rel = os.path.relpath(os.path.realpath(full), home)
    if rel == "." or rel.startswith(".."):
        raise UserError(f"{path}: a roaming folder must be inside your home folder ({home})")
    return rel


def check_dconf_path(path: str) -> str:
    if not DCONF_PATH.match(path) or path == "":
        raise UserError(f"{path!r} is not a dconf path (/org/gnome/desktop/ for a folder "
                        f"of settings, /org/gnome/desktop/interface/clock-format for one)")
    return path


def validate(cfg: RoamConfig, where: str) -> RoamConfig:
    def bad(msg: str):
        raise UserError(f"{where}: {msg}")

    if cfg.hive_upload not in ("interval", "time"):
        bad("hive_upload must be 'interval' or 'time'")
    if not 1 <= cfg.hive_upload_interval_h <= 720:
        bad("hive_upload_interval_h must be 1-720")
    try:
        if not parse_hhmm(cfg.hive_upload_time):
            bad("hive_upload_time must be HH:MM")
    except ValueError as exc:
        bad(f"hive_upload_time: {exc}")
    if not 0 <= cfg.hive_upload_delay_min <= 60:
        bad("hive_upload_delay_min must be 0-60")
    if cfg.size_limit_mb < 0:
        bad("size_limit_mb must be >= 0")
    for folder in cfg.folders:
        folder_key(folder)
    if not all(isinstance(x, str) for x in cfg.folders + cfg.exclude):
        bad("folders and exclude are lists of strings")
    for name, ds in cfg.datasets.items():
        if not (isinstance(ds.dconf, list) and isinstance(ds.folders, list)
                and all(isinstance(x, str) for x in ds.dconf + ds.folders)):
            bad(f"data set {name}: dconf and folders are lists of strings")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            bad(f"data set name {name!r}: letters, digits, '.', '_' and '-' only")
        if ds.scope not in (GLOBAL, GROUP):
            bad(f"data set {name}: scope must be 'global' or 'group'")
        if ds.scope == GROUP and not cfg.machine_group:
            bad(f"data set {name} is of scope 'group' but machine_group is not set")
        for p in ds.dconf:
            check_dconf_path(p)
        for f in ds.folders:
            folder_key(f)
    if cfg.machine_group and not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.machine_group):
        bad("machine_group: letters, digits, '.', '_' and '-' only")
    return cfg


def load(path: str | None = None) -> RoamConfig:
    path = path or config_path()
    if not os.path.exists(path):
        raise UserError("roaming is not set up (cscfs roam setup SERVER)")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: {exc}") from None
    known = {f.name: f for f in fields(RoamConfig)}
    for key, value in data.items():
        if key not in known:
            raise UserError(f"{path}: unknown option {key!r}")
    sets = {}
    for name, row in (data.pop("datasets", None) or {}).items():
        if not isinstance(row, dict) or set(row) - {"scope", "dconf", "folders"}:
            raise UserError(f"{path}: [datasets.{name}] takes scope, dconf, folders")
        sets[name] = DataSet(**row)
    try:
        cfg = RoamConfig(**data, datasets=sets)
    except TypeError as exc:
        raise UserError(f"{path}: {exc}") from None
    for f in fields(RoamConfig):
        value, default = getattr(cfg, f.name), RoamConfig().__getattribute__(f.name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
        elif type(value) is not type(default):
            raise UserError(f"{path}: {f.name} must be a {type(default).__name__}")
    return validate(cfg, path)


def save(cfg: RoamConfig, path: str | None = None) -> None:
    """Written whole to a temporary file and renamed over: never half a file."""
    path = path or config_path()
    validate(cfg, path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    data = asdict(cfg)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        tomli_w.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
