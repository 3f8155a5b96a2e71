"""Manual sync (`cscfs sync`), conflict resolution (`cscfs resolve`) and pinning.

A manual sync works in every mode that can reach the server (also slow-link,
work-offline and always-offline): it replays the offline journal, walks the
folders asked for (the whole mount by default), folds each fresh server listing
in as reconcile() plans it, uploads what changed here and fetches what is pinned
and not fully cached. Progress is reported as it goes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import AsyncIterator

from . import errors
from .errors import UserError
from .metadata import ROOT_INO, Node
from .replay import replay

log = logging.getLogger("cscfs.sync")

KEEP = ("local", "server", "both", "latest")


def pinned(vfs, node: Node) -> bool:
    """Pinned as set on the node (1), unpinned (-1), or as its folder (0); the root
    is pinned unless the user unpinned it: redirected folders are available offline."""
    while True:
        if node.pinned:
            return node.pinned > 0
        if node.ino == ROOT_INO:
            return False
        node = vfs.nodes[node.parent]


async def node_at(vfs, path: str) -> Node:
    """The node at a path from the mount's root, looked up as a request would."""
    node = vfs.nodes[ROOT_INO]
    for part in [p for p in path.split("/") if p]:
        try:
            node = await vfs.lookup(node.ino, part)
        except (OSError, errors.CscfsError) as exc:
            raise UserError(f"{path}: {exc}") from None
    return node


@contextlib.contextmanager
def syncing(vfs):
    vfs.sync_active += 1
    try:
        yield
    finally:
        vfs.sync_active -= 1


async def manual_sync(vfs, monitor, paths: list[str], label: str = "manual"
                      ) -> AsyncIterator[dict]:
    if not vfs.reachable:
        await monitor.probe_once(reconnect=True)
    if not vfs.reachable:
        raise UserError(f"cannot sync: the server is unreachable ({vfs.link_state.reason})")
    started = time.time()
    with syncing(vfs):
        conflicts_before = len(vfs.state.open_conflicts())
        replayed = await replay(vfs) if vfs.journal_len else 0
        roots = [await node_at(vfs, p) for p in paths] or [vfs.nodes[ROOT_INO]]
        push, pull = await _walk(vfs, roots)
        total_files = len(push) + len(pull)
        total_bytes = sum(n.size for n in push) + sum(n.size - n.present.present_bytes()
                                                      for n in pull)
        done_files = done_bytes = failed = 0
        yield {"total_files": total_files, "total_bytes": total_bytes,
               "done_files": 0, "done_bytes": 0}
        for node, action in [(n, "upload") for n in push] + [(n, "download") for n in pull]:
            path = vfs.path_of(node)
            size = node.size if action == "upload" else node.size - node.present.present_bytes()
            try:
                if action == "upload":
                    vfs._due.pop(node.ino, None)
                    await vfs._upload(node)
                else:
                    await vfs._fetch(node, 0, node.size, background=True)
            except errors.Unavailable as exc:
                raise UserError(f"sync stopped: the server became unreachable ({exc})") from None
            except (errors.CscfsError, OSError) as exc:
                failed += 1
                log.error("sync: %s %s failed: %s", action, path, exc)
            done_files += 1
            done_bytes += size
            yield {"total_files": total_files, "total_bytes": total_bytes,
                   "done_files": done_files, "done_bytes": done_bytes, "path": path,
                   "action": action}
        open_conflicts = len(vfs.state.open_conflicts())
        vfs.state.add_event("sync", f"{label} sync finished: {len(push)} uploaded, "
                                    f"{len(pull)} downloaded ({done_bytes} bytes), "
                                    f"{replayed} offline changes replayed, {failed} failed")
        if label == "manual":
            vfs.state.set_meta("last_sync_at", repr(time.time()))
        yield {"summary": {
            "replayed": replayed, "uploaded": len(push), "downloaded": len(pull),
            "bytes": done_bytes, "failed": failed,
            "new_conflicts": max(0, open_conflicts - conflicts_before),
            "costed": vfs.cost.describe() if vfs.cost_limited else None,
            "open_conflicts": open_conflicts, "seconds": round(time.time() - started, 2)}}


async def _walk(vfs, roots: list[Node]) -> tuple[list[Node], list[Node]]:
    """Fresh listings of every folder under the roots; what to upload and fetch."""
    push, pull, stack = [], [], list(roots)
    while stack:
        node = stack.pop()
        if node.unlinked or node.ino not in vfs.nodes:
            continue
        if node.kind == "dir":
            node.checked_at = -1e9
            await vfs._refresh(node)
            stack.extend(vfs.nodes[i] for i in node.children.values())
        elif node.kind == "file":
            if node.dirty and not node.writers:
                push.append(node)
            elif not node.complete and pinned(vfs, node):
                pull.append(node)
    return push, pull


async def set_pinned(vfs, paths: list[str], pin: bool) -> int:
    """Pin (keep fully cached, never evict) or unpin; pinned files are completed in
    the background while the link allows. Returns how many files are queued."""
    queued = 0
    for path in paths:
        node = await node_at(vfs, path)
        node.pinned = 1 if pin else -1
        vfs.state.save(node)
        if not pin:
            continue
        stack = [node]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(vfs.nodes[i] for i in n.children.values())
            elif n.kind == "file" and not n.complete:
                vfs._prefetch_queue.append(n.ino)
                queued += 1
    vfs._wake.set()
    return queued


async def resolve(vfs, path: str, keep: str) -> dict:
    """Settle one conflict. The server's version is at the conflict's path and ours
    at its copy (update/update, create/create, file/dir); for delete conflicts the
    surviving version is at the path."""
    if keep not in KEEP:
        raise UserError(f"--keep takes one of {', '.join(KEEP)}")
    row = next((r for r in vfs.state.open_conflicts()
                if path in (r["path"], r["copy_path"])), None)
    if row is None:
        raise UserError(f"no open conflict at {path} (see cscfs conflicts)")
    kind, name_path, copy_path = row["kind"], row["path"], row["copy_path"]
    if keep == "latest":
        keep = await _latest(vfs, row)
    if copy_path:  # theirs at the name, ours at the copy
        if keep == "local":
            await _rename_path(vfs, copy_path, name_path)
        elif keep == "server":
            await _unlink_path(vfs, copy_path)
    elif kind == "delete/update" and keep == "local":
        await _unlink_path(vfs, name_path)   # our delete wins: gone on both sides
    elif kind == "update/delete" and keep == "server":
        await _unlink_path(vfs, name_path)   # their delete wins
    vfs.state.db.execute("UPDATE conflicts SET resolved_at = ?, resolution = ? WHERE id = ?",
                         (time.time(), keep, row["id"]))
    vfs._conflict_paths = vfs._load_conflict_paths()
    return {"path": name_path, "kind": kind, "kept": keep}


async def _latest(vfs, row) -> str:
    """The newer of the two versions by modification time."""
    try:
        theirs = (await node_at(vfs, row["path"])).mtime_ns
    except UserError:
        return "local"
    if row["copy_path"]:
        try:
            ours = (await node_at(vfs, row["copy_path"])).mtime_ns
        except UserError:
            return "server"
        return "local" if ours > theirs else "server"
    return "server" if row["kind"] == "delete/update" else "local"


async def _rename_path(vfs, old: str, new: str) -> None:
    old_parent = await node_at(vfs, old.rpartition("/")[0])
    new_parent = await node_at(vfs, new.rpartition("/")[0])
    await vfs.rename(old_parent.ino, old.rpartition("/")[2], new_parent.ino, new.rpartition("/")[2])


async def _unlink_path(vfs, path: str) -> None:
    try:
        node = await node_at(vfs, path)
    except UserError:
        return  # gone already
    await vfs.unlink(node.parent, node.name)
