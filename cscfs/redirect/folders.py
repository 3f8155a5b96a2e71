"""The XDG user folders (xdg-user-dirs): names, paths, and keeping
XDG_<NAME>_DIR in user-dirs.dirs pointed at a redirected folder."""

from __future__ import annotations

import os
import subprocess

from ..errors import CscfsError, UserError

# XDG name -> the folder's usual name when user-dirs.dirs has no entry for it.
DEFAULT_NAMES = {
    "desktop": "Desktop", "documents": "Documents", "download": "Downloads",
    "music": "Music", "pictures": "Pictures", "publicshare": "Public",
    "templates": "Templates", "videos": "Videos",
}


def canonical(name: str) -> str:
    key = name.strip().lower()
    if key not in DEFAULT_NAMES:
        raise UserError(f"unknown folder {name!r}: give one of {', '.join(DEFAULT_NAMES)}")
    return key


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CscfsError(f"{argv[0]} is missing: install xdg-user-dirs") from None
    if proc.returncode != 0:
        raise CscfsError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def folder_path(folder: str) -> str:
    """Where the folder is: `xdg-user-dir NAME`; ~/Documents (...) when unset (the
    tool then names the home folder itself)."""
    home = os.path.expanduser("~")
    path = _run(["xdg-user-dir", folder.upper()])
    if not path or os.path.realpath(path) == os.path.realpath(home):
        path = os.path.join(home, DEFAULT_NAMES[folder])
    return os.path.abspath(path)


def keep_pointing(folder: str, path: str) -> None:
    """Record the path in user-dirs.dirs (xdg-user-dirs-update keeps an entry whose
    folder exists; the mount point folder always does)."""
    _run(["xdg-user-dirs-update", "--set", folder.upper(), path])
