"""The redirected folders, kept in the config dir (redirect.toml). Never a
password: an SMB password stays in its credentials file (only its path is kept),
the environment or the keyring."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields

import platformdirs
import tomli_w

from ..config import APP
from ..errors import UserError

MOVING = "moving"          # the folder's contents are on their way to the server
REDIRECTED = "redirected"  # mounted at login from now on
POLICIES = ("leave", "move-back")


@dataclass
class Redirection:
    folder: str            # XDG name: documents, pictures, ...
    path: str              # the folder, and the mount point
    server: str
    data_dir: str
    credentials: str = ""  # path of a credentials file, or "" (environment, keyring)
    removal: str = "leave"  # what a machine that is not primary does with it
    state: str = MOVING
    unit: str = ""         # the systemd user unit, "" without a user manager


def registry_path() -> str:
    return os.path.join(platformdirs.user_config_dir(APP), "redirect.toml")


def load() -> dict[str, Redirection]:
    path = registry_path()
    if not os.path.exists(path):
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: {exc}") from None
    known = {f.name for f in fields(Redirection)}
    out = {}
    for folder, row in data.items():
        if not isinstance(row, dict) or set(row) - known or "server" not in row:
            raise UserError(f"{path}: [{folder}] is not a redirection this cscfs knows")
        out[folder] = Redirection(folder=folder, **{k: v for k, v in row.items()
                                                    if k != "folder"})
    return out


def save(entries: dict[str, Redirection]) -> None:
    """Written whole to a temporary file and renamed over: never half a file."""
    path = registry_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    data = {name: {k: v for k, v in asdict(r).items() if k != "folder"}
            for name, r in sorted(entries.items())}
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        tomli_w.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def put(entry: Redirection) -> None:
    entries = load()
    entries[entry.folder] = entry
    save(entries)


def drop(folder: str) -> None:
    entries = load()
    entries.pop(folder, None)
    save(entries)
