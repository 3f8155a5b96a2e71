"""Options in one table: the config file, the CLI and the docs all read OPTIONS."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field, fields

import platformdirs

from sync.scheduler import parse_hhmm

from .errors import UserError

APP = "cscfs"


def _opt(default, help_text):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Options:
    write_back_delay: float = _opt(
        2.0, "seconds after the last close of a changed file before it is uploaded")
    attr_ttl: float = _opt(
        1.0, "seconds a name's attributes and a folder's listing are trusted before the "
             "server is asked again")
    cache_ttl: float = _opt(
        300.0, "seconds the kernel may keep names and attributes while the server's change "
               "notification is armed (every change is then reported at once)")
    trust_server_notify: bool = _opt(
        False, "the SMB server reports every change, also those made on its own disk "
               "(Windows; Samba where kernel change notify works): use cache_ttl for SMB too")
    remote_timeout: float = _opt(
        5.0, "deadline in seconds for every call to the server; past it the server "
             "counts as unavailable")
    parallel_uploads: int = _opt(
        4, "changed files uploaded at the same time (each waits on the link's latency)")
    upload_processes: int = _opt(
        2, "processes that send small files to an SMB server (its protocol runs in "
           "Python: uploads in the daemon's own threads share one core); 0: none")
    chunk_size: int = _opt(
        1 << 20, "bytes fetched from the server at a time when a read needs data that "
                 "is not cached")
    probe_interval: float = _opt(
        1.0, "seconds before the first check whether an unavailable server is back "
             "(then 1.5x longer each time, up to 120; a change of the network checks "
             "at once)")
    probe_online_interval: float = _opt(
        1.0, "seconds between liveness probes while the server is reachable (an SMB "
             "echo; at least 10 s for other probes)")
    probe_timeout: float = _opt(
        2.5, "seconds a probe may take before the server counts as unreachable")
    slow_link_ms: float = _opt(
        35.0, "median round-trip time in ms above which the link is slow (slow-link mode)")
    always_offline: bool = _opt(
        False, "always work from the cache; sync only when asked or on schedule")
    sync_interval_min: float = _opt(
        120.0, "minutes between background syncs (1-1440), when not online")
    sync_variance_min: float = _opt(
        60.0, "up to this many random extra minutes per background sync")
    sync_blackout_start: str = _opt(
        "", "HH:MM local time when a daily window without background sync starts")
    sync_blackout_minutes: float = _opt(0.0, "length of that window in minutes")
    sync_max_gap_min: float = _opt(
        0.0, "run a background sync even inside the window after this many minutes "
             "without one (0: never)")
    sync_when_work_offline: bool = _opt(
        False, "background syncs also in work-offline mode")
    cost_aware: bool = _opt(
        True, "stop background sync on a metered link that is roaming (false: always sync)")
    cost_probe_interval: float = _opt(
        30.0, "seconds between readings of NetworkManager's and ModemManager's link cost")
    data_plan_mb: float = _opt(
        0.0, "the data plan's limit in MB per billing cycle (0: no limit)")
    billing_day: int = _opt(1, "day of the month (1-28) a billing cycle starts")
    usage_warn_pct: float = _opt(
        90.0, "percent of the data plan from which the link counts as approaching its limit")
    usage_interfaces: str = _opt(
        "", "comma-separated network interfaces to count (empty: all but loopback)")
    cache_quota: str = _opt(
        "25%", "most the cache may hold: bytes, or a percentage of the data dir's file "
               "system; only clean, unpinned content is evicted")
    quota_interval: float = _opt(5.0, "seconds between cache quota checks")
    offline_by_default: bool = _opt(
        True, "a new cache makes the whole mount available offline (pinned) until `cscfs "
              "unpin` says otherwise; false: only what `cscfs pin` names is filled, the "
              "rest is cached on demand")
    parallel_fetches: int = _opt(
        4, "pinned files fetched at the same time while filling what is available offline")
    rescan_interval: float = _opt(
        300.0, "seconds between rescans of every pinned folder for changes on the server "
               "(change notification reports most of them sooner)")
    probe: str = _opt(
        "", "HOST:PORT to probe for a folder server (an NFS or CIFS mount's server)")
    encrypt: bool = _opt(
        False, "SMB: encrypt all traffic even when the server does not require it")
    notify: bool = _opt(
        True, "desktop notifications (session bus): a new conflict, the server unreachable "
              "and back, a failed sync, pinned files over the cache quota")
    notify_offline_after: float = _opt(
        30.0, "seconds the server must stay unreachable before a notification says so")
    notify_window: float = _opt(
        300.0, "seconds: at most one offline / back-online pair of notifications in this "
               "long, however often the link drops")
    primary_computers: str = _opt(
        "", "machine ids (/etc/machine-id) of the primary computers, a list or comma-"
            "separated; a .cscfs/primary-computers file at the server's root wins")
    primary_computers_only: bool = _opt(
        False, "redirected folders are mounted on primary computers only; any other "
               "computer applies the folder's removal policy instead")
    allow_other: bool = _opt(
        False, "let other users into the mount, under the usual permission checks by "
               "the kernel on each item's mode and owner (a user other than root needs "
               "user_allow_other in /etc/fuse.conf)")


OPTION_HELP = {f.name: f.metadata["help"] for f in fields(Options)}


def config_path() -> str:
    return os.path.join(platformdirs.user_config_dir(APP), "config.toml")


def load_options(path: str | None = None, **overrides) -> Options:
    """Options from the config file (if any), then the CLI's overrides."""
    path = path or config_path()
    values: dict = {}
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"config file {path}: {exc}") from None
    known = {f.name: f.type for f in fields(Options)}
    ids = values.get("primary_computers")
    if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
        values["primary_computers"] = ",".join(ids)
    for key, value in values.items():
        if key not in known:
            raise UserError(f"config file {path}: unknown option {key!r}")
        if known[key] == "bool":
            if not isinstance(value, bool):
                raise UserError(f"config file {path}: {key} must be true or false")
            continue
        if known[key] == "str":
            if not isinstance(value, str):
                raise UserError(f"config file {path}: {key} must be a string")
            continue
        want = float if known[key] == "float" else int
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise UserError(f"config file {path}: {key} must be a number >= 0")
        values[key] = want(value)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not 1 <= values.get("billing_day", 1) <= 28:
        raise UserError(f"config file {path}: billing_day must be 1-28")
    if not 1 <= values.get("sync_interval_min", 120) <= 1440:
        raise UserError(f"config file {path}: sync_interval_min must be 1-1440")
    try:
        parse_hhmm(values.get("sync_blackout_start", ""))
    except ValueError as exc:
        raise UserError(f"config file {path}: sync_blackout_start: {exc}") from None
    return Options(**values)


def canonical_mountpoint(mountpoint: str) -> str:
    """The real path of a mount point, without looking into it when something is
    mounted there: a FUSE mount whose daemon died can hang any stat of it."""
    from .mounts import fuse_mounts

    path = os.path.abspath(mountpoint)
    path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return path if path in fuse_mounts() else os.path.realpath(path)


def mount_id(mountpoint: str) -> str:
    """A readable, unique id for a mount point: its path with a short hash."""
    real = canonical_mountpoint(mountpoint)
    slug = real.strip("/").replace("/", "-")[-40:] or "root"
    return f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:8]}"


def default_data_dir(mountpoint: str) -> str:
    return os.path.join(platformdirs.user_data_dir(APP), mount_id(mountpoint))


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = f"/tmp/{APP}-{os.getuid()}"
        os.makedirs(base, mode=0o700, exist_ok=True)
        return base
    path = os.path.join(base, APP)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def socket_path(mountpoint: str) -> str:
    return os.path.join(runtime_dir(), f"{mount_id(mountpoint)}.sock")


def daemon_record_path(mountpoint: str) -> str:
    """Where the daemon of a mount records its PID (see mounts.py)."""
    return os.path.join(runtime_dir(), f"{mount_id(mountpoint)}.pid")
