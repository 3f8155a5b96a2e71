"""Where an SMB password comes from: a cifs-style credentials file, the environment
variable CSCFS_SMB_PASSWORD, or the system keyring. Never the config file, argv,
logs or status output."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import UserError

ENV_PASSWORD = "CSCFS_SMB_PASSWORD"
KEYRING_SERVICE = "cscfs"


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str
    domain: str | None = None

    def __repr__(self) -> str:  # a traceback or log line must not show the password
        return f"Credentials(username={self.username!r}, domain={self.domain!r})"


def read_credentials_file(path: str) -> dict[str, str]:
    """The mount.cifs format: username=, password=, domain= (one per line)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"credentials file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise UserError(f"credentials file {path} can be read by group or others: "
                        f"chmod 600 {path}")
    aliases = {"username": "username", "user": "username", "password": "password",
               "pass": "password", "domain": "domain", "dom": "domain",
               "workgroup": "domain"}
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.rstrip("\r\n").partition("=")
            key = key.strip().lower()
            if sep and key in aliases:
                values[aliases[key]] = value
    return values


def resolve(username: str | None, domain: str | None, host: str,
            credentials_file: str | None = None) -> Credentials:
    if credentials_file:
        values = read_credentials_file(credentials_file)
        if "password" not in values:
            raise UserError(f"credentials file {credentials_file} has no password= line")
        return Credentials(username or values.get("username"), values["password"],
                           domain or values.get("domain"))
    if os.environ.get(ENV_PASSWORD) is not None:
        return Credentials(username, os.environ[ENV_PASSWORD], domain)
    password = _from_keyring(username, host)
    if password is None:
        who = f"{username}@{host}" if username else host
        raise UserError(f"no password for {who}: give --credentials FILE, set {ENV_PASSWORD}, "
                        f"or store it with `keyring set {KEYRING_SERVICE} {who}`")
    return Credentials(username, password, domain)


def _from_keyring(username: str | None, host: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, f"{username}@{host}" if username else host)
    except (KeyringError, RuntimeError):
        return None  # no keyring backend on this machine (a headless server)
