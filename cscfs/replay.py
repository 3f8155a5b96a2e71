"""Replay of the offline journal when the server is back: each namespace change in the
order it was made, each re-checked against the server first. A change that no longer
fits (the server moved on) becomes a recorded conflict; nothing either side wrote is
discarded. Content changes are not journaled: dirty files upload after the replay.

(The sync-engine issue replaces this with sync/ replay and its log optimisations.)
"""

from __future__ import annotations

import logging
import time

from . import errors
from .remote.base import RemoteStat, join, remove_if

log = logging.getLogger("cscfs.replay")


async def replay(vfs) -> int:
    """Apply the journal in order; returns how many entries were applied. Stops, keeping
    the rest, when the server becomes unavailable."""
    async with vfs.replay_lock:  # the write-back loop and a manual sync may both ask
        return await _replay(vfs)


async def _replay(vfs) -> int:
    done = 0
    for entry in vfs.state.journal():
        if not (vfs.online or vfs.sync_active and vfs.reachable):
            break
        try:
            await _APPLY[entry["op"]](vfs, entry)
        except errors.Unavailable:
            break
        except errors.CscfsError as exc:
            # Permanent (permission, a name the server refuses...): keep the local
            # state as it is, say so, and go on with the rest.
            log.error("replay of %s %s failed: %s", entry["op"], entry["path"], exc)
            vfs.state.add_conflict(entry["path"], f"replay-failed/{entry['op']}", None,
                                   None, entry["base"], None)
        vfs.state.journal_done(entry["seq"])
        vfs.journal_len = vfs.state.journal_count()
        done += 1
    if done:
        log.info("replayed %d offline changes", done)
    return done


async def _stat(vfs, path: str) -> RemoteStat | None:
    try:
        return await vfs._remote(vfs.store.stat, path)
    except errors.NotFound:
        return None


def _adopt(vfs, ino: int, st: RemoteStat) -> None:
    node = vfs.nodes.get(ino)
    if node is not None and not node.unlinked and node.base is None:
        node.set_base(st.fingerprint)
        node.checked_at = vfs.clock()
        vfs.state.save(node)


def _local_rename(vfs, ino: int, new_name: str) -> None:
    node = vfs.nodes.get(ino)
    if node is None or node.unlinked:
        return
    parent = vfs.nodes[node.parent]
    old = node.name
    if new_name in parent.children:
        return
    with vfs._changing(parent):
        vfs._move(node, parent, new_name)
    vfs.invalidate.entry(parent.ino, old)
    vfs.invalidate.entry(parent.ino, new_name)


def _conflict_path(vfs, path: str) -> str:
    from sync.conflicts import conflict_name

    parent, _, name = path.rpartition("/")
    return join(parent, conflict_name(name, vfs.host, time.time()))


async def _mkdir(vfs, e) -> None:
    try:
        st = await vfs._remote(vfs.store.mkdir, e["path"], e["mode"] or 0o755)
    except errors.AlreadyExists:
        st = await _stat(vfs, e["path"])
        if st is None or st.kind != "dir":
            # A file took the name on the server: our folder goes under a conflict name.
            copy = _conflict_path(vfs, e["path"])
            st = await vfs._remote(vfs.store.mkdir, copy, e["mode"] or 0o755)
            _local_rename(vfs, e["ino"], copy.rpartition("/")[2])
            vfs._record_conflict(e["path"], "create/create", None, None, None, copy)
    _adopt(vfs, e["ino"], st)


async def _symlink(vfs, e) -> None:
    try:
        st = await vfs._remote(vfs.store.symlink, e["link_target"], e["path"])
    except errors.AlreadyExists:
        vfs._record_conflict(e["path"], "create/create", None, await _stat(vfs, e["path"]),
                             None, None)
        return
    _adopt(vfs, e["ino"], st)


async def _unlink(vfs, e) -> None:
    st = await _stat(vfs, e["path"])
    if st is None:
        return  # gone there too
    if e["base"] is not None:
        if st.fingerprint == e["base"]:
            st = await vfs._remote(remove_if, vfs.store, e["path"], e["base"])
            if st is None:
                return
        # Deleted here, changed there: theirs stays (the next listing shows it).
        vfs._record_conflict(e["path"], "delete/update", None, st, e["base"], None)
        return
    try:
        await vfs._remote(vfs.store.remove, e["path"])
    except errors.NotFound:
        pass


async def _rmdir(vfs, e) -> None:
    try:
        await vfs._remote(vfs.store.rmdir, e["path"])
    except errors.NotFound:
        pass
    except errors.NotEmpty:
        # Someone put files there meanwhile: the folder stays with them.
        vfs._record_conflict(e["path"], "delete/update", None, None, None, None)


async def _rename(vfs, e) -> None:
    old, new, base = e["path"], e["new_path"], e["base"]
    st_old = await _stat(vfs, old)
    if st_old is None:
        st_new = await _stat(vfs, new)
        if st_new is not None and base is not None and (
                st_new.fingerprint == base or st_new.kind == "dir" == e["kind"]
                and st_new.file_id == base.file_id):
            return  # done before the link dropped; only its answer was lost
        # Deleted (or moved) there, renamed here: put ours at the new name.
        vfs._record_conflict(old, "rename/delete", None, None, base, new)
        node = vfs.nodes.get(e["ino"])
        if node is None or node.unlinked:
            return
        if node.kind == "dir":
            await _mkdir(vfs, {**e, "path": new, "mode": node.mode})
        elif node.kind == "file" and node.complete:
            node.set_base(None)
            vfs._mark_dirty(node)
            vfs._schedule(node, 0)
        return
    st_new = await _stat(vfs, new)
    replace = False
    if st_new is not None:
        if e["target"] is not None and st_new.fingerprint == e["target"]:
            replace = True  # the version we replaced here
        elif st_new.kind == "dir" and st_old.kind == "dir":
            replace = True  # an empty folder may be replaced; the server refuses otherwise
        else:
            # The new name holds something we never saw: ours goes beside it.
            copy = _conflict_path(vfs, new)
            await vfs._remote(vfs.store.rename, old, copy, False)
            _local_rename(vfs, e["ino"], copy.rpartition("/")[2])
            vfs._record_conflict(new, "create/create", None, st_new, e["target"], copy)
            return
    await vfs._remote(vfs.store.rename, old, new, replace)


async def _setattr(vfs, e) -> None:
    try:
        if e["mode"] is not None and vfs.store.stores_modes:
            await vfs._remote(vfs.store.chmod, e["path"], e["mode"])
        if e["mtime_ns"] is not None and e["kind"] != "symlink":
            await vfs._remote(vfs.store.set_mtime, e["path"], e["mtime_ns"])
    except errors.NotFound:
        pass


_APPLY = {"mkdir": _mkdir, "symlink": _symlink, "unlink": _unlink, "rmdir": _rmdir,
          "rename": _rename, "setattr": _setattr}
