"""What the control socket's requests do beyond status: manual sync, pinning and
conflict resolution, on a Client. User paths are resolved as a request would."""

from __future__ import annotations

from typing import AsyncIterator

from sync import ports
from sync.vocabulary import DELETE_UPDATE, UPDATE_DELETE

from . import errors
from .errors import UserError
from .metadata import ROOT_INO, Node
from .notify import failed_files

KEEP = ("local", "server", "both", "latest")


async def node_at(client, path: str) -> Node:
    """The node at a path from the mount's root, looked up as a request would."""
    vfs = client.vfs
    node = client.table.nodes[ROOT_INO]
    for part in [p for p in path.split("/") if p]:
        try:
            node = await vfs.lookup(node.ino, part)
        except (OSError, errors.CscfsError) as exc:
            raise UserError(f"{path}: {exc}") from None
    return node


async def sync(client, paths: list[str], label: str = "manual") -> AsyncIterator[dict]:
    """`cscfs sync`: the engine's manual sync; its failures in our vocabulary (a
    server that cannot be reached is a failed operation, exit 1)."""
    roots = [await node_at(client, p) for p in paths]
    what = f"{label} sync"
    try:
        async for progress in client.engine.manual_sync(roots, label):
            failed = progress.get("summary", {}).get("failed")
            if failed:
                client.notifier.sync_failed(what, failed_files(failed))
            yield progress
    except ports.Unavailable as exc:
        client.notifier.sync_failed(what, str(exc))
        raise errors.Unavailable(str(exc)) from None
    except (ports.RemoteError, ports.SyncFailed) as exc:
        client.notifier.sync_failed(what, str(exc))
        raise errors.CscfsError(str(exc)) from None


async def set_pinned(client, paths: list[str], pin: bool) -> int:
    """Pin (keep fully cached, never evict) or unpin; pinned files are completed in
    the background while the link allows. Returns how many files are queued."""
    queued = 0
    for path in paths:
        node = await node_at(client, path)
        node.pinned = 1 if pin else -1
        client.state.save(node)
        if not pin:
            continue
        queued += sum(1 for n in client.table.subtree(node)
                      if n.kind == "file" and not n.complete)
    if pin:
        client.pinned_changed()
    return queued


async def resolve(client, path: str, keep: str) -> dict:
    """Settle one conflict. The server's version is at the conflict's path and ours
    at its copy (update/update, create/create, file/dir); for delete conflicts the
    surviving version is at the path."""
    if keep not in KEEP:
        raise UserError(f"--keep takes one of {', '.join(KEEP)}")
    row = next((r for r in client.state.open_conflicts()
                if path in (r["path"], r["copy_path"])), None)
    if row is None:
        raise UserError(f"no open conflict at {path} (see cscfs conflicts)")
    kind, name_path, copy_path = row["kind"], row["path"], row["copy_path"]
    if keep == "latest":
        keep = await _latest(client, row)
    if copy_path:  # theirs at the name, ours at the copy
        if keep == "local":
            await _rename_path(client, copy_path, name_path)
        elif keep == "server":
            await _unlink_path(client, copy_path)
    elif kind == DELETE_UPDATE and keep == "local":
        await _unlink_path(client, name_path)   # our delete wins: gone on both sides
    elif kind == UPDATE_DELETE and keep == "server":
        await _unlink_path(client, name_path)   # their delete wins
    client.state.resolve_conflict(row["id"], keep)
    client.conflicts.reload()
    return {"path": name_path, "kind": kind, "kept": keep}


async def _latest(client, row) -> str:
    """The newer of the two versions by modification time."""
    try:
        theirs = (await node_at(client, row["path"])).mtime_ns
    except UserError:
        return "local"
    if row["copy_path"]:
        try:
            ours = (await node_at(client, row["copy_path"])).mtime_ns
        except UserError:
            return "server"
        return "local" if ours > theirs else "server"
    return "server" if row["kind"] == DELETE_UPDATE else "local"


async def _rename_path(client, old: str, new: str) -> None:
    old_parent = await node_at(client, old.rpartition("/")[0])
    new_parent = await node_at(client, new.rpartition("/")[0])
    await client.vfs.rename(old_parent.ino, old.rpartition("/")[2], new_parent.ino,
                            new.rpartition("/")[2])


async def _unlink_path(client, path: str) -> None:
    try:
        node = await node_at(client, path)
    except UserError:
        return  # gone already
    await client.vfs.unlink(node.parent, node.name)
