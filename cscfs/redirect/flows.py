"""Folder Redirection: what `cscfs redirect` does, start to end.

redirect: check everything (nothing changes on bad input) -> move the folder's
files to the server (verified, resumable) -> mount cscfs at the same path, pinned
whole -> the user unit mounts it at every login. login / logout: the unit's
ExecStart and ExecStop. remove: flush, then move back or leave on the server."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import time
from typing import Callable

from sync.vocabulary import CREATE_CREATE, EVENT_REDIRECT

from .. import control, credentials, daemon, errors, mounts
from ..config import Options, default_data_dir, load_options, socket_path
from ..errors import CscfsError, UserError
from ..remote import open_store
from ..textfmt import count_text, size_text
from . import folders, primary, registry, unit
from .mover import DirTarget, Mover, StoreTarget, file_digest, unmovable
from .registry import REDIRECTED, Redirection

Echo = Callable[[str], None]


def journal_path(data_dir: str) -> str:
    return os.path.join(data_dir, "move-journal.jsonl")


def primary_copy(data_dir: str) -> str:
    """The server's list of primary computers as last read (used offline)."""
    return os.path.join(data_dir, "primary-computers")


def _beside(path: str, what: str) -> str:
    """A hidden folder next to `path` (same file system: renames stay atomic)."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.cscfs-{what}")


def _credentials(server: str, credentials_file: str | None):
    if not server.startswith("smb://"):
        if credentials_file:
            raise UserError("--credentials is for smb:// servers")
        return None
    from ..remote.smb import parse_url

    target = parse_url(server)
    return credentials.resolve(target.username, target.domain, target.host, credentials_file)


def _open(server: str, creds, options: Options):
    return open_store(server, creds, timeout=options.remote_timeout, encrypt=options.encrypt)


def _reachable_folder(store) -> None:
    try:
        st = store.stat("")
    except errors.Unavailable as exc:
        raise CscfsError(f"server {store.url} is unreachable ({exc}): nothing moved") from None
    except errors.NotFound:
        raise UserError(f"server {store.url} does not exist: nothing moved") from None
    except errors.RemoteError as exc:
        raise CscfsError(f"server {store.url}: {exc}: nothing moved") from None
    if st.kind != "dir":
        raise UserError(f"server {store.url} is not a folder: nothing moved")


def _record(data_dir: str, events: list[str], conflicts=()) -> None:
    """Events and conflicts in the cache's state database (the daemon is not running)."""
    from ..metadata import State

    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    state = State(os.path.join(data_dir, "state.db"))
    try:
        for name, ours in conflicts:
            state.add_conflict(name, CREATE_CREATE, None, None, None, ours)
        for line in events:
            state.add_event(EVENT_REDIRECT, line)
    finally:
        state.close()


# ------------------------------------------------------------------ redirect
def redirect(folder_name: str, server: str, credentials_file: str | None, no_move: bool,
             removal: str, echo: Echo) -> int:
    folder = folders.canonical(folder_name)
    entry = registry.load().get(folder)
    if entry is not None and entry.state == REDIRECTED:
        raise UserError(f"{folder} is already redirected to {entry.server} "
                        f"(cscfs redirect --remove {folder} --leave|--move-back first)")
    if entry is not None and entry.server != server:
        raise UserError(f"{folder}: a move to {entry.server} is unfinished: run "
                        f"`cscfs redirect {folder} {entry.server}` to finish it")
    path = entry.path if entry else folders.folder_path(folder)
    if path in mounts.fuse_mounts():
        raise UserError(f"{path} is already a mount point")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"{path} is not a folder")
    options = load_options()
    if credentials_file:
        credentials_file = os.path.abspath(os.path.expanduser(credentials_file))
    creds = _credentials(server, credentials_file)
    store = _open(server, creds, options)
    data_dir = default_data_dir(path)
    try:
        _reachable_folder(store)
        known = daemon.known_server(data_dir)
        if known is not None and known != store.url:
            raise UserError(f"{data_dir} holds the cache of {known}, not {store.url}")
        why = primary.refusal(options, store, folder)
        if why:
            raise CscfsError(why)
        if os.path.isdir(path) and not no_move:
            bad = unmovable(path)
            if bad:
                raise UserError(f"{path} holds {len(bad)} symbolic links or special files "
                                f"({bad[0]}, ...) that a server folder cannot keep: "
                                f"move them away first")
        # Checked: from here on things change.
        primary.remember(options, store, primary_copy(data_dir))
        entry = entry or Redirection(folder, path, server, data_dir,
                                     credentials_file or "", removal)
        registry.put(entry)
        os.makedirs(path, exist_ok=True)
        if no_move and os.listdir(path):
            aside = _free_path(path + ".before-redirect")
            os.rename(path, aside)
            os.mkdir(path)
            echo(f"left the contents of {path} in {aside}")
        elif os.listdir(path) or os.path.exists(journal_path(data_dir)):
            _move_to_server(path, store, data_dir, echo)
    finally:
        store.close()
    folders.keep_pointing(folder, path)
    unit.write(folder, path, server)
    if unit.manager_runs():
        unit.systemctl("daemon-reload")
        proc = unit.systemctl("enable", "--now", unit.unit_name(folder))
        if proc.returncode != 0:
            raise CscfsError(f"systemctl --user enable --now {unit.unit_name(folder)}: "
                             f"{proc.stderr.strip()}")
        entry.unit = unit.unit_name(folder)
        how = f"mounted at every login by {entry.unit}"
    else:
        _mount_now(entry, creds, options)
        how = (f"no systemd user manager runs here, so it is mounted now only; to mount "
               f"it at login: systemctl --user enable --now {unit.unit_name(folder)}")
    _pin_root(path)
    entry.state = REDIRECTED
    registry.put(entry)
    echo(f"redirected {path} to {server} (available offline); {how}")
    return 0


def _free_path(path: str) -> str:
    n, candidate = 1, path
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def _move_to_server(path: str, store, data_dir: str, echo: Echo) -> None:
    mover = Mover(path, StoreTarget(store), journal_path(data_dir))
    if mover.journal.exists:
        echo(f"resuming the unfinished move of {path}")
    report = mover.run()
    lines = [f"moved {report.files} files ({size_text(report.bytes)}) from {path} to "
             f"{store.url}, each verified by hash on the server"]
    for name, ours in report.conflicts:
        lines.append(f"conflict: {name} exists on the server too; ours is kept as {ours}")
    _record(data_dir, lines, report.conflicts)
    for line in lines:
        echo(line)


def _mount_now(entry: Redirection, creds, options: Options) -> None:
    plan = daemon.plan_mount(entry.server, entry.path, entry.data_dir, options, creds)
    daemon.start_background(plan, options)


def _pin_root(path: str) -> None:
    """The whole folder available offline, whatever offline_by_default says."""
    control.request(socket_path(path), {"cmd": "pin", "paths": [""]}, 60)


# ------------------------------------------------------------------ login / logout
def login(folder_name: str) -> int:
    """ExecStart: mount in the foreground; READY=1 once the mount answers."""
    from ..sd_notify import Notifier

    folder = folders.canonical(folder_name)
    entry = _entry(folder)
    options = load_options()
    creds = _credentials(entry.server, entry.credentials or None)
    store = _open(entry.server, creds, options)
    try:
        why = primary.refusal(options, store, folder, primary_copy(entry.data_dir))
    finally:
        store.close()
    if why:
        line = f"{why}; applying its removal policy ({entry.removal})"
        print(f"cscfs: {line}", file=sys.stderr)
        notifier = Notifier()
        notifier.status(line)  # `systemctl --user status` says why while it runs
        if os.path.exists(os.path.join(entry.data_dir, "state.db")):
            _record(entry.data_dir, [why])
        try:
            remove(folder, entry.removal, force=False, echo=lambda s: print(s, file=sys.stderr),
                   from_unit=True)
        except CscfsError as exc:
            print(f"cscfs: {exc}", file=sys.stderr)
        notifier.ready(why)  # done, not failed: no restart loop
        return 0
    os.makedirs(path := entry.path, exist_ok=True)
    daemon.clear_stale_mount(path)
    staged = _stage_strays(entry)
    plan = daemon.plan_mount(entry.server, path, entry.data_dir, options, creds)
    return daemon.run_foreground(plan, options, None,
                                 after_ready=lambda: _move_strays(entry, staged))


def _stage_strays(entry: Redirection) -> str | None:
    """Files that landed in the folder while it was not mounted go aside (a rename),
    so that the mount neither hides them nor is refused; once it answers they move
    into it (_move_strays)."""
    path = entry.path
    names = os.listdir(path) if path not in mounts.fuse_mounts() else []
    base = _beside(path, "incoming")
    if not names:
        return base if os.path.isdir(base) else None
    batch = os.path.join(base, time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(batch, exist_ok=True)
    for name in names:
        os.rename(os.path.join(path, name), os.path.join(batch, name))
    return base


def _move_strays(entry: Redirection, base: str | None) -> list[str]:
    lines = []
    if base is None:
        return lines
    for batch in sorted(os.listdir(base)):
        src = os.path.join(base, batch)
        report = Mover(src, DirTarget(entry.path),
                       os.path.join(entry.data_dir, f"incoming-{batch}.jsonl")).run()
        os.rmdir(src)
        lines.append(f"moved {report.files} files that were put in {entry.path} while it "
                     f"was not mounted into the mount ({size_text(report.bytes)})")
        lines += [f"conflict: {n} was in the mount too; theirs kept as {o}"
                  for n, o in report.conflicts]
    os.rmdir(base)
    return lines


def logout(folder_name: str) -> int:
    """ExecStop: upload what is pending (within the unit's stop time), unmount, and
    return only once the daemon has exited and let go of its data dir."""
    folder = folders.canonical(folder_name)
    entry = registry.load().get(folder)
    if entry is None:  # a login on a computer that is not primary removed it
        print(f"{folder} is not redirected (any more): nothing to unmount")
        return 0
    answer = _unmount(entry, force=False, within=unit.FLUSH_WITHIN)
    if answer.get("pending"):
        print(f"unmounted {entry.path}; {answer['pending']} changes not uploaded yet (kept "
              f"in the cache, uploaded at the next mount)")
    else:
        print(f"unmounted {entry.path}; uploaded {answer.get('uploaded', 0)} pending files")
    return 0


def _unmount(entry: Redirection, force: bool, within: float | None = None) -> dict:
    path = entry.path
    answer: dict = {}
    request = {"cmd": "unmount", "force": force}
    if within is not None:
        request["within"] = within
    try:
        answer = control.request(socket_path(path), request, None)
    except control.DaemonMissing:
        daemon.clear_stale_mount(path)
    _wait_released(entry.data_dir, unit.STOP_TIMEOUT)
    return answer


def _wait_released(data_dir: str, timeout: float) -> None:
    lock = os.path.join(data_dir, "lock")
    if not os.path.exists(lock):
        return
    deadline = time.monotonic() + timeout
    fd = os.open(lock, os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CscfsError(f"the daemon of {data_dir} did not exit") from None
                time.sleep(0.05)
    finally:
        os.close(fd)


def _entry(folder: str) -> Redirection:
    entry = registry.load().get(folder)
    if entry is None:
        raise UserError(f"{folder} is not redirected (see cscfs redirect --list)")
    return entry


# ------------------------------------------------------------------ remove
def remove(folder_name: str, how: str, force: bool, echo: Echo, from_unit: bool = False) -> int:
    """--move-back: copy everything back (fetching what is not cached), verified,
    then unmount and put it in place; --leave: unmount and leave it on the server.
    Pending changes are uploaded first; if they cannot be, nothing changes unless
    --force (they stay in the cache for a later mount)."""
    folder = folders.canonical(folder_name)
    entry = _entry(folder)
    path = entry.path
    we_mount = path not in mounts.fuse_mounts()
    if we_mount:
        options = load_options()
        creds = _credentials(entry.server, entry.credentials or None)
        _mount_now(entry, creds, options)
    pending = _flush(path)
    if pending and not force:
        if we_mount:  # as it was: not mounted (the changes stay in the cache)
            _unmount(entry, force=True)
        wait = "waits" if pending == 1 else "wait"
        raise CscfsError(f"the server is unreachable and {count_text(pending, 'change')} in "
                         f"{path} {wait} for upload: nothing removed (try again online, or "
                         f"--force to keep them in the cache for a later mount)")
    restore = _beside(path, "restore")
    if how == "move-back":
        n, size = _copy_back(path, restore)
        echo(f"copied {n} files ({size_text(size)}) back from the server, verified")
    if entry.unit and not from_unit and unit.manager_runs():
        unit.systemctl("stop", unit.unit_name(folder))
    _unmount(entry, force=True)
    os.makedirs(path, exist_ok=True)
    if how == "move-back":
        for name in os.listdir(restore):
            os.rename(os.path.join(restore, name), os.path.join(path, name))
        os.rmdir(restore)
    if from_unit:
        unit.systemctl("disable", unit.unit_name(folder))
    else:
        unit.remove(folder)
    if os.path.exists(unit.unit_path(folder)):
        os.unlink(unit.unit_path(folder))
    registry.drop(folder)
    folders.keep_pointing(folder, path)
    kept = ""
    if pending:
        kept = (f"; {count_text(pending, 'change')} not uploaded kept in the cache at "
                f"{entry.data_dir} "
                f"(they upload once {path} is mounted from {entry.server} again: "
                f"cscfs redirect {folder} {entry.server})")
    else:
        shutil.rmtree(entry.data_dir, ignore_errors=True)
    where = ("back in " + path) if how == "move-back" else f"on {entry.server}; {path} is empty"
    echo(f"{folder} is no longer redirected: its files are {where}{kept}")
    return 0


def _flush(path: str) -> int:
    """Upload pending changes; how many remain (the server unreachable)."""
    status = control.request(socket_path(path), {"cmd": "status"}, 30)
    if status["pending_uploads"] + status["pending_changes"] == 0:
        return 0
    try:
        control.request(socket_path(path), {"cmd": "sync", "paths": []}, None)
    except CscfsError:
        pass  # unreachable: counted below
    status = control.request(socket_path(path), {"cmd": "status"}, 30)
    return status["pending_uploads"] + status["pending_changes"]


def _copy_back(path: str, restore: str) -> tuple[int, int]:
    """Copy the mount's tree (reads fetch what is not cached) to `restore`; each copy
    checked against the mount by hash. Run again, it resumes (a verified copy stays)."""
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath == path and primary.SERVER_DIR in dirnames:
            dirnames.remove(primary.SERVER_DIR)  # the administrator's, stays on the server
        rel = os.path.relpath(dirpath, path)
        dest = os.path.normpath(os.path.join(restore, rel))
        os.makedirs(dest, exist_ok=True)
        for name in filenames:
            src, dst = os.path.join(dirpath, name), os.path.join(dest, name)
            want = file_digest(src)
            if not (os.path.exists(dst) and file_digest(dst) == want):
                shutil.copy2(src, dst)
                if _digest_fsync(dst) != want:
                    raise CscfsError(f"{src}: the copy back does not match: nothing removed")
            count += 1
            size += os.path.getsize(dst)
    return count, size


def _digest_fsync(path: str) -> str:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------ list
def listing() -> list[dict]:
    rows = []
    for folder, entry in sorted(registry.load().items()):
        row = {"folder": folder, "path": entry.path, "server": entry.server,
               "state": entry.state, "unit": unit.state(folder), "removal": entry.removal,
               "mounted": entry.path in mounts.fuse_mounts(), "mode": None,
               "pending_uploads": None, "pending_changes": None}
        if row["mounted"]:
            try:
                s = control.request(socket_path(entry.path), {"cmd": "status"}, 10)
                row.update(mode=s["mode"], pending_uploads=s["pending_uploads"],
                           pending_changes=s["pending_changes"])
            except CscfsError:
                row["mode"] = "not answering"
        rows.append(row)
    return rows
