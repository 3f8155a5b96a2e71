"""Three-way reconcile of one name: what happened on each side since the last sync
(the base), and what to do about it. Pure: no I/O, no clock, no database.

Each side is described against the base as a `Change`:
  UNCHANGED  still the base version
  MODIFIED   content or kind differs from the base (kind says what it is now)
  DELETED    gone, while the base had it
  CREATED    there, while the base had nothing
  ABSENT     not there, and the base had nothing either

`reconcile(base_kind, local, remote)` returns a `Plan`: an action, and for a
conflict its kind and which version keeps the name. Safe by design: no plan
discards a version either side wrote; a conflict keeps both, the other one as a
recognisably named copy. Swapping local and remote mirrors the plan (`mirror`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Conflict kinds, named local/remote (defined with the other stored words)
from .vocabulary import (CREATE_CREATE, DELETE_UPDATE, FILE_DIR,  # noqa: F401
                         UPDATE_DELETE, UPDATE_UPDATE)

UNCHANGED, MODIFIED, DELETED, CREATED, ABSENT = (
    "unchanged", "modified", "deleted", "created", "absent")

# Actions
NOTHING = "nothing"          # both sides agree
PUSH = "push"                # local -> remote (upload, mkdir, or replace)
PULL = "pull"                # remote -> local (refetch, or take their kind)
DELETE_REMOTE = "delete-remote"
DELETE_LOCAL = "delete-local"
FORGET = "forget"            # gone on both sides: drop the base
MERGE = "merge"              # folders on both sides: reconcile their children
CONFLICT = "conflict"


_MIRROR = {PUSH: PULL, PULL: PUSH, DELETE_REMOTE: DELETE_LOCAL, DELETE_LOCAL: DELETE_REMOTE,
           DELETE_UPDATE: UPDATE_DELETE, UPDATE_DELETE: DELETE_UPDATE, "local": "remote",
           "remote": "local"}


@dataclass(frozen=True)
class Side:
    change: str
    kind: str | None = None  # 'file', 'dir', 'symlink' when present


@dataclass(frozen=True)
class Plan:
    action: str
    conflict: str | None = None
    keeps_name: str | None = None  # conflicts: the side whose version keeps the name
                                   # (the one that changed, against a delete; the folder,
                                   # against a file); None for a tie, which apply settles
                                   # (cscfs: the server's version keeps the name)


def mirror(plan: Plan) -> Plan:
    """The plan with local and remote swapped."""
    return Plan(_MIRROR.get(plan.action, plan.action),
                _MIRROR.get(plan.conflict, plan.conflict) if plan.conflict else None,
                _MIRROR.get(plan.keeps_name) if plan.keeps_name else None)


def reconcile(base_kind: str | None, local: Side, remote: Side) -> Plan:
    lc, rc = local.change, remote.change
    if lc in (UNCHANGED, ABSENT) and rc in (UNCHANGED, ABSENT):
        return Plan(NOTHING)
    if lc == DELETED and rc == DELETED:
        return Plan(FORGET)
    if lc == UNCHANGED:
        return Plan({MODIFIED: PULL, DELETED: DELETE_LOCAL, CREATED: PULL}[rc])
    if rc == UNCHANGED:
        return Plan({MODIFIED: PUSH, DELETED: DELETE_REMOTE, CREATED: PUSH}[lc])
    if lc == ABSENT:
        return Plan(PULL if rc == CREATED else NOTHING)
    if rc == ABSENT:
        return Plan(PUSH if lc == CREATED else NOTHING)
    # Both sides did something.
    if lc == DELETED:   # and the remote changed or re-created it: theirs stays
        return Plan(CONFLICT, DELETE_UPDATE, "remote")
    if rc == DELETED:   # and we changed it: ours is put back
        return Plan(CONFLICT, UPDATE_DELETE, "local")
    if local.kind == "dir" and remote.kind == "dir":
        return Plan(MERGE)
    if local.kind != remote.kind and "dir" in (local.kind, remote.kind):
        # A folder keeps the name (it may hold more); the file becomes the copy.
        return Plan(CONFLICT, FILE_DIR, "local" if local.kind == "dir" else "remote")
    kind = CREATE_CREATE if lc == CREATED and rc == CREATED else UPDATE_UPDATE
    return Plan(CONFLICT, kind)  # a tie: apply's policy says which keeps the name


def local_side(kind: str | None, on_server: bool, changed: bool) -> Side:
    """What happened to a name here since the last sync. `kind` None: not here
    (a local deletion is known from the journal, not from the tree); `on_server`:
    it has a base; `changed`: its content, or something under a folder, changed."""
    if kind is None:
        return Side(ABSENT)
    if not on_server:
        return Side(CREATED, kind)
    return Side(MODIFIED if changed else UNCHANGED, kind)


def remote_side(base, base_kind: str | None, st) -> Side:
    """What happened to a name on the server since the last sync: `base` the
    fingerprint then (None: never seen there), `st` the server's RemoteStat now
    (None: nothing there)."""
    if st is None:
        return Side(DELETED if base is not None else ABSENT)
    if base is None:
        return Side(CREATED, st.kind)
    if st.kind != base_kind:
        return Side(MODIFIED, st.kind)
    # A folder's own times change with its entries: its children say what changed.
    same = st.kind == "dir" or st.fingerprint == base
    return Side(UNCHANGED if same else MODIFIED, st.kind)
