"""Primary computers: with `primary_computers_only`, a redirected folder is mounted
only on the machines named (by /etc/machine-id) in `.cscfs/primary-computers` at
the server's root (one id per line, # comments), or else in the config's
`primary_computers`. The server's copy wins: an administrator changes it once for
every machine."""

from __future__ import annotations

import os

from .. import errors

MACHINE_ID_ENV = "CSCFS_MACHINE_ID_FILE"  # tests point it at a file of their own
SERVER_LIST = ".cscfs/primary-computers"


def machine_id() -> str:
    path = os.environ.get(MACHINE_ID_ENV) or "/etc/machine-id"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise errors.CscfsError(f"cannot read the machine id from {path}: {exc.strerror}") from None


def parse(text: str) -> set[str]:
    ids = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids


def server_list(store) -> set[str] | None:
    """The ids in the server's list, None if it has none. Unreachable: raised."""
    try:
        st = store.stat(SERVER_LIST)
        data = store.read(SERVER_LIST, 0, max(st.size, 1))
    except errors.NotFound:
        return None
    return parse(data.decode("utf-8", errors="replace"))


def configured(options) -> set[str]:
    return parse(options.primary_computers.replace(",", "\n"))


def refusal(options, store, folder: str) -> str | None:
    """Why this machine must not mount the folder, or None when it may. The server's
    list is read when the server answers; offline the config's decides."""
    if not options.primary_computers_only:
        return None
    ids = None
    try:
        ids = server_list(store)
    except errors.Unavailable:
        pass
    source = f"the server's {SERVER_LIST}"
    if ids is None:
        ids, source = configured(options), "primary_computers in the config"
    me = machine_id()
    if me in ids:
        return None
    return (f"this computer ({me}) is not a primary computer for {folder} "
            f"(primary_computers_only; see {source}): not mounted")
