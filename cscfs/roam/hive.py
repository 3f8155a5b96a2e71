"""The hive: the user's dconf database (~/.config/dconf/user, GVDB).

dconf-service writes that file with g_file_set_contents (a temporary file renamed
over it), so a copy is a consistent snapshot. A roamed copy is never swapped in
under dconf-service (running applications hold the file mapped and learn of
changes from dconf's own signals): it is read with `dconf dump` pointed at a
private copy (reading needs no service), and the differences are written into the
live database through the running dconf-service (`dconf load`, `dconf reset`), so
every running client sees the change.

Keys are full paths (/org/gnome/desktop/interface/clock-format) mapped to the
value's GVariant text exactly as dconf prints it. Values never go into a log or
an error message."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Iterable

from ..errors import CscfsError

Keys = dict[str, str]
DCONF_TIMEOUT = 30


class DconfError(CscfsError):
    """dconf could not read or write (the message never holds a value)."""


def live_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "dconf", "user")


def dconf_missing() -> str | None:
    if shutil.which("dconf") is None:
        return "dconf is missing (apt-get install dconf-cli dconf-service)"
    return None


def snapshot(path: str | None = None) -> bytes | None:
    """The live database's bytes (None: no setting was ever written)."""
    try:
        with open(path or live_path(), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _run(args: list[str], env: dict, stdin: str | None = None,
         secrets: Iterable[str] = ()) -> str:
    if dconf_missing():
        raise DconfError(dconf_missing())
    try:
        proc = subprocess.run(["dconf", *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=DCONF_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DconfError(f"dconf {args[0]} did not finish within {DCONF_TIMEOUT} s") from None
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[:1]
        why = why[0] if why else f"exit {proc.returncode}"
        for s in secrets:  # dconf may quote what it could not parse
            if s:
                why = why.replace(s, "<value>")
        raise DconfError(f"dconf {args[0]}: {why}")
    return proc.stdout


def parse_dump(text: str, base: str = "/") -> Keys:
    """`dconf dump BASE` output (a GKeyFile; values are one-line GVariant text)."""
    keys: Keys = {}
    prefix = base
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            prefix = base if section == "/" else f"{base}{section.strip('/')}/"
            continue
        name, sep, value = line.partition("=")
        if sep:
            keys[prefix + name] = value
    return keys


def read_file(data: bytes | None) -> Keys:
    """The settings in a database file's bytes, read by dconf itself from a private
    copy (a profile naming only that user database; no bus, no service)."""
    if not data:
        return {}
    with tempfile.TemporaryDirectory(prefix="cscfs-hive-") as tmp:
        os.makedirs(os.path.join(tmp, "dconf"))
        os.makedirs(os.path.join(tmp, "run"), mode=0o700)
        with open(os.path.join(tmp, "dconf", "user"), "wb") as f:
            f.write(data)
        profile = os.path.join(tmp, "profile")
        with open(profile, "w") as f:
            f.write("user-db:user\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "XDG_CONFIG_HOME": tmp, "XDG_RUNTIME_DIR": os.path.join(tmp, "run"),
               "DCONF_PROFILE": profile, "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
        return parse_dump(_run(["dump", "/"], env))


def read_live() -> Keys:
    return read_file(snapshot())


def digest(keys: Keys) -> str:
    """What the settings are, whatever the file's layout: equal settings, equal digest."""
    return hashlib.sha256(json.dumps(sorted(keys.items())).encode()).hexdigest()


def under(key: str, paths: Iterable[str]) -> bool:
    """`key` is one of `paths` or inside one of its folders (paths ending in '/')."""
    return any(key == p or (p.endswith("/") and key.startswith(p)) for p in paths)


def keyfile(keys: Keys) -> str:
    """Keys as `dconf load /` takes them: one section per folder."""
    by_dir: dict[str, list[tuple[str, str]]] = {}
    for key, value in sorted(keys.items()):
        folder, _, name = key.rpartition("/")
        by_dir.setdefault(folder.strip("/") or "/", []).append((name, value))
    return "".join(f"[{d}]\n" + "".join(f"{n}={v}\n" for n, v in rows) + "\n"
                   for d, rows in by_dir.items())


def write_live(changes: Keys, resets: Iterable[str] = ()) -> None:
    """Write through the running dconf-service (the session bus), so running
    clients are told: one `dconf load` for the new values, a reset per key gone."""
    env = dict(os.environ)
    if changes:
        _run(["load", "/"], env, keyfile(changes), secrets=changes.values())
    for key in resets:
        _run(["reset", key], env)


def apply(winner: Keys, local: Keys, keep: Callable[[str], bool] = lambda k: False
          ) -> tuple[int, int]:
    """Make the live database hold `winner` (but keys for which keep() is true stay
    as they are): (keys written, keys reset)."""
    changes = {k: v for k, v in winner.items() if local.get(k) != v and not keep(k)}
    resets = [k for k in local if k not in winner and not keep(k)]
    write_live(changes, resets)
    return len(changes), len(resets)
