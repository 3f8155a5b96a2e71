"""Primary computers: with `primary_computers_only`, a redirected folder is mounted
only on the machines named (by /etc/machine-id) in `.cscfs/primary-computers` at
the server's root (one id per line, # comments), or else in the config's
`primary_computers`. The server's copy wins: an administrator changes it once for
every machine."""

from __future__ import annotations

import os

from .. import errors

MACHINE_ID_ENV = "CSCFS_MACHINE_ID_FILE"  # tests point it at a file of their own
SERVER_DIR = ".cscfs"
SERVER_LIST = f"{SERVER_DIR}/primary-computers"


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


def refusal(options, store, folder: str, remembered: str | None = None) -> str | None:
    """Why this machine must not mount the folder, or None when it may. The server's
    list is read when the server answers and kept in `remembered` (a file in the data
    dir); offline that copy decides (a primary laptop that starts offline stays
    redirected), else the config's list."""
    if not options.primary_computers_only:
        return None
    ids, source = None, f"the server's {SERVER_LIST}"
    try:
        ids = server_list(store)
        _remember(remembered, ids)
    except errors.Unavailable:
        ids = _recall(remembered)
        source += " as last read"
    if ids is None:
        ids, source = configured(options), "primary_computers in the config"
    me = machine_id()
    if me in ids:
        return None
    return (f"this computer ({me}) is not a primary computer for {folder} "
            f"(primary_computers_only; see {source}): not mounted")


def remember(options, store, path: str) -> None:
    """Keep a copy of the server's list (at redirect: then a login without the
    server decides as the server would)."""
    if options.primary_computers_only:
        _remember(path, server_list(store))


def _remember(path: str | None, ids: set[str] | None) -> None:
    if path is None:
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if ids is None:  # the server has no list (any more): the config's decides
        if os.path.exists(path):
            os.unlink(path)
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(f"{i}\n" for i in sorted(ids)))
    os.replace(tmp, path)


def _recall(path: str | None) -> set[str] | None:
    try:
        with open(path or "") as f:
            return parse(f.read())
    except FileNotFoundError:
        return None
