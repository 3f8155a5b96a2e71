"""reconcile() as a table, in both directions: swapping local and remote mirrors the
plan, and no plan ever discards a version someone wrote."""

from __future__ import annotations

import itertools

import pytest

from sync.reconcile import (ABSENT, CONFLICT, CREATE_CREATE, CREATED, DELETE_LOCAL,
                            DELETE_REMOTE, DELETE_UPDATE, DELETED, FILE_DIR, FORGET, MERGE,
                            MODIFIED, NOTHING, PULL, PUSH, UNCHANGED, UPDATE_DELETE,
                            UPDATE_UPDATE, Plan, Side, mirror, reconcile)

F, D = "file", "dir"
same = Side(UNCHANGED, F)
edited = Side(MODIFIED, F)
gone = Side(DELETED)
new_file = Side(CREATED, F)
new_dir = Side(CREATED, D)
absent = Side(ABSENT)

TABLE = {
    # name: (base kind, local, remote, plan)
    "nothing changed": (F, same, same, Plan(NOTHING)),
    "edited here": (F, edited, same, Plan(PUSH)),
    "edited there": (F, same, edited, Plan(PULL)),
    "edited on both": (F, edited, edited, Plan(CONFLICT, UPDATE_UPDATE)),
    "deleted here": (F, gone, same, Plan(DELETE_REMOTE)),
    "deleted there": (F, same, gone, Plan(DELETE_LOCAL)),
    "deleted on both": (F, gone, gone, Plan(FORGET)),
    "deleted here, edited there": (F, gone, edited, Plan(CONFLICT, DELETE_UPDATE, "remote")),
    "edited here, deleted there": (F, edited, gone, Plan(CONFLICT, UPDATE_DELETE, "local")),
    "created here": (None, new_file, absent, Plan(PUSH)),
    "created there": (None, absent, new_file, Plan(PULL)),
    "created on both": (None, new_file, new_file, Plan(CONFLICT, CREATE_CREATE)),
    "folders created on both": (None, new_dir, new_dir, Plan(MERGE)),
    "file here, folder there": (None, new_file, new_dir, Plan(CONFLICT, FILE_DIR, "remote")),
    "folder here, file there": (None, new_dir, new_file, Plan(CONFLICT, FILE_DIR, "local")),
    "file became a folder here, edited there": (
        F, Side(MODIFIED, D), edited, Plan(CONFLICT, FILE_DIR, "local")),
    "folder contents changed on both": (D, Side(MODIFIED, D), Side(MODIFIED, D), Plan(MERGE)),
    "deleted here, re-created there": (F, gone, new_file, Plan(CONFLICT, DELETE_UPDATE, "remote")),
}


@pytest.mark.parametrize("name", TABLE)
def test_table(name):
    base, local, remote, plan = TABLE[name]
    assert reconcile(base, local, remote) == plan


SIDES = [same, edited, gone, new_file, new_dir, absent, Side(MODIFIED, D)]


@pytest.mark.parametrize("local, remote", list(itertools.product(SIDES, SIDES)))
def test_swapping_the_sides_mirrors_the_plan(local, remote):
    for base in (None, F, D):
        assert reconcile(base, remote, local) == mirror(reconcile(base, local, remote))


@pytest.mark.parametrize("local, remote", list(itertools.product(SIDES, SIDES)))
def test_no_plan_discards_a_written_version(local, remote):
    plan = reconcile(F, local, remote)
    wrote_here = local.change in (MODIFIED, CREATED)
    wrote_there = remote.change in (MODIFIED, CREATED)
    if wrote_here and wrote_there:
        assert plan.action in (CONFLICT, MERGE)
    if wrote_there:
        assert plan.action not in (PUSH, DELETE_REMOTE)  # theirs never overwritten
    if wrote_here:
        assert plan.action not in (PULL, DELETE_LOCAL)   # ours never overwritten
