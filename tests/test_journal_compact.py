"""Offline-journal compaction (sync.journal): a table of named cases per rule, the
cases where it must keep entries, and a property: replaying the compacted journal
on a model server leaves the same tree as replaying the whole journal."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.journal import changed_entries, compact, dropped_seqs

FP1, FP2 = ("fp", 1), ("fp", 2)  # opaque server fingerprints


def E(seq, op, ino, path, new_path=None, *, kind="dir", base=None, target=None,
      mode=None, mtime_ns=None, link_target=None, **owner) -> dict:
    return {"seq": seq, "op": op, "ino": ino, "kind": kind, "path": path,
            "new_path": new_path, "base": base, "target": target, "mode": mode,
            "mtime_ns": mtime_ns, "link_target": link_target, "at": 1000.0 + seq, **owner}


# (journal, the seqs kept, {seq: fields changed in the kept entry})
CASES = {
    # -- 1. create then delete cancels ----------------------------------------------
    "mkdir-rmdir-cancels": (
        [E(1, "mkdir", 10, "n", mode=0o755), E(2, "rmdir", 10, "n")], [], {}),
    "symlink-unlink-cancels": (
        [E(1, "symlink", 10, "s", kind="symlink", link_target="x"),
         E(2, "unlink", 10, "s", kind="symlink")], [], {}),
    "cancel-takes-renames-and-setattrs-between": (
        [E(1, "mkdir", 10, "n"), E(2, "setattr", 10, "n", mode=0o700),
         E(3, "rename", 10, "n", "m"), E(4, "mkdir", 20, "x"), E(5, "rmdir", 10, "m")],
        [4], {}),
    "nested-made-and-removed-both-cancel": (
        [E(1, "mkdir", 10, "n"), E(2, "mkdir", 11, "n/m"), E(3, "rmdir", 11, "n/m"),
         E(4, "rmdir", 10, "n")], [], {}),
    "cancel-under-a-moved-server-folder": (
        [E(1, "mkdir", 10, "a/n"), E(2, "rename", 5, "a", "b", base=FP1),
         E(3, "rmdir", 10, "b/n")], [2], {}),
    "kept-dependency-keeps-it": (  # a server file moved through the new folder
        [E(1, "mkdir", 10, "n"), E(2, "rename", 5, "f", "n/f", kind="file", base=FP1),
         E(3, "mkdir", 20, "x"), E(4, "rename", 5, "n/f", "x/f", kind="file", base=FP1),
         E(5, "rmdir", 10, "n")], [1, 2, 3, 4, 5], {}),
    "dependency-at-its-renamed-path-keeps-it": (
        [E(1, "mkdir", 10, "n"), E(2, "rename", 10, "n", "m"),
         E(3, "symlink", 20, "m/s", kind="symlink", link_target="t"),
         E(4, "rename", 20, "m/s", "s", kind="symlink"), E(5, "rmdir", 10, "m")],
        [1, 2, 3, 4, 5], {}),
    "dependency-below-a-moved-parent-keeps-it": (  # it was at b/n for a while
        [E(1, "mkdir", 10, "a/n"), E(2, "rename", 5, "a", "b", base=FP1),
         E(3, "mkdir", 11, "b/n/m"), E(4, "rename", 11, "b/n/m", "m"),
         E(5, "rename", 5, "b", "a", base=FP1), E(6, "rmdir", 10, "a/n")],
        [1, 2, 3, 4, 5, 6], {}),
    "inner-kept-keeps-outer": (  # fixed point: the inner one is not deleted
        [E(1, "mkdir", 10, "n"), E(2, "mkdir", 11, "n/m"), E(3, "rename", 11, "n/m", "m"),
         E(4, "rmdir", 10, "n")], [1, 2, 3, 4], {}),
    "rename-with-target-keeps-its-history": (
        [E(1, "symlink", 10, "s", kind="symlink", link_target="x"),
         E(2, "rename", 10, "s", "f", kind="symlink", target=FP2),
         E(3, "unlink", 10, "f", kind="symlink")], [1, 2, 3], {}),
    "rename-onto-a-folder-made-here-keeps-its-history": (
        [E(1, "mkdir", 11, "m"), E(2, "mkdir", 10, "n"), E(3, "rename", 10, "n", "m"),
         E(4, "rmdir", 10, "m")], [1, 2, 3, 4], {}),
    "server-item-delete-stays": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "rename", 5, "d", "e", base=FP1),
         E(3, "rmdir", 5, "e")], [1, 2, 3], {}),
    # -- 2. repeated setattrs coalesce ----------------------------------------------
    "mknod-unlink-cancels": (
        [E(1, "mknod", 10, "p", kind="fifo", mode=0o644, uid=7, gid=7, rdev=0),
         E(2, "setattr", 10, "p", kind="fifo", uid=8, gid=8), E(3, "unlink", 10, "p")],
        [], {}),
    "setattrs-coalesce-owners": (
        [E(1, "setattr", 5, "d", uid=7, gid=8), E(2, "setattr", 5, "d", mode=0o700,
                                                 uid=None, gid=9)],
        [2], {2: {"uid": 7, "gid": 9}}),
    "setattrs-coalesce-field-by-field": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "setattr", 5, "d", mtime_ns=7)],
        [2], {2: {"mode": 0o700, "mtime_ns": 7}}),
    "later-setattr-wins": (
        [E(1, "setattr", 5, "d", mode=0o700, mtime_ns=7),
         E(2, "setattr", 5, "d", mode=0o750), E(3, "setattr", 5, "d", mtime_ns=9)],
        [3], {3: {"mode": 0o750, "mtime_ns": 9}}),
    "setattrs-coalesce-across-unrelated-changes": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "mkdir", 20, "x"),
         E(3, "setattr", 6, "e", mode=0o711), E(4, "setattr", 5, "d", mtime_ns=7)],
        [2, 3, 4], {4: {"mode": 0o700, "mtime_ns": 7}}),
    "setattrs-with-a-rename-between-not-coalesced": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "rename", 5, "d", "e", base=FP1),
         E(3, "mkdir", 20, "x"), E(4, "rename", 5, "e", "d", base=FP1),
         E(5, "setattr", 5, "d", mtime_ns=7)], [1, 2, 3, 4, 5], {}),
    "setattrs-at-other-paths-not-coalesced": (  # its parent moved between
        [E(1, "setattr", 5, "a/d", mode=0o700), E(2, "rename", 4, "a", "b", base=FP1),
         E(3, "setattr", 5, "b/d", mtime_ns=7)], [1, 2, 3], {}),
    "setattrs-with-changes-inside-between-not-coalesced": (  # the mode may let it in
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "mkdir", 20, "d/x"),
         E(3, "setattr", 5, "d", mtime_ns=7)], [1, 2, 3], {}),
    # -- 3. setattr before a delete -----------------------------------------------------
    "setattr-before-rmdir-dropped": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "setattr", 5, "d", mtime_ns=7),
         E(3, "rmdir", 5, "d")], [3], {}),
    "setattr-before-unlink-of-a-link-dropped": (
        [E(1, "setattr", 5, "s", kind="symlink", mode=0o700), E(2, "mkdir", 20, "x"),
         E(3, "unlink", 5, "s", kind="symlink")], [2, 3], {}),
    "setattr-with-a-rename-before-the-delete-kept": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "rename", 5, "d", "e", base=FP1),
         E(3, "rmdir", 5, "e")], [1, 2, 3], {}),
    "setattr-with-changes-inside-before-the-delete-kept": (
        [E(1, "setattr", 5, "d", mode=0o700), E(2, "mkdir", 20, "d/x"),
         E(3, "rename", 20, "d/x", "x"), E(4, "rmdir", 5, "d")], [1, 2, 3, 4], {}),
    # -- 4. adjacent renames merge ------------------------------------------------------
    "adjacent-renames-merge": (
        [E(1, "rename", 5, "a", "b", kind="file", base=FP1),
         E(2, "rename", 5, "b", "c", kind="file", base=FP1, target=FP2)],
        [1], {1: {"path": "a", "new_path": "c", "base": FP1, "target": FP2}}),
    "three-adjacent-renames-merge": (
        [E(1, "rename", 5, "a", "b", base=FP1), E(2, "rename", 5, "b", "c", base=FP1),
         E(3, "rename", 5, "c", "x/d", base=FP1)], [1], {1: {"new_path": "x/d"}}),
    "renames-adjacent-once-a-cancelled-folder-goes": (
        [E(1, "rename", 5, "a", "b", base=FP1), E(2, "mkdir", 20, "x"),
         E(3, "rmdir", 20, "x"), E(4, "rename", 5, "b", "c", base=FP1)],
        [1], {1: {"new_path": "c"}}),
    "first-rename-with-target-not-merged": (
        [E(1, "rename", 5, "a", "b", kind="file", base=FP1, target=FP2),
         E(2, "rename", 5, "b", "c", kind="file", base=FP1)], [1, 2], {}),
    "non-adjacent-renames-not-merged": (
        [E(1, "rename", 5, "a", "b", base=FP1), E(2, "mkdir", 20, "x"),
         E(3, "rename", 5, "b", "c", base=FP1)], [1, 2, 3], {}),
    "renames-of-two-items-not-merged": (
        [E(1, "rename", 5, "a", "b", base=FP1), E(2, "rename", 6, "b", "c", base=FP2)],
        [1, 2], {}),
    "rename-onto-a-folder-made-here-not-merged": (  # it replaces that folder
        [E(1, "mkdir", 20, "b"), E(2, "rename", 5, "a", "b", base=FP1),
         E(3, "rename", 5, "b", "c", base=FP1)], [1, 2, 3], {}),
    "merge-stops-at-a-replacing-rename": (
        [E(1, "mkdir", 20, "c"), E(2, "rename", 5, "a", "b", base=FP1),
         E(3, "rename", 5, "b", "c", base=FP1), E(4, "rename", 5, "c", "d", base=FP1)],
        [1, 2, 4], {2: {"new_path": "c"}}),
    "renames-back-to-the-start-not-merged": (
        [E(1, "rename", 5, "a", "b", base=FP1), E(2, "rename", 5, "b", "a", base=FP1)],
        [1, 2], {}),
    "renames-onto-the-folder-it-left-not-merged": (  # a/c only empty after the first
        [E(1, "rename", 5, "a/c/b", "b", base=FP1),
         E(2, "rename", 5, "b", "a/c", base=FP1, target=FP2)], [1, 2], {}),
}


@pytest.mark.parametrize("journal, kept, changed", CASES.values(), ids=CASES.keys())
def test_compact(journal, kept, changed):
    before = copy.deepcopy(journal)
    out = compact(journal)
    assert journal == before  # never mutated
    assert [e["seq"] for e in out] == kept
    by_seq = {e["seq"]: e for e in journal}
    for e in out:
        assert e == {**by_seq[e["seq"]], **changed.get(e["seq"], {})}
    assert dropped_seqs(journal, out) == set(by_seq) - set(kept)
    assert {e["seq"] for e in changed_entries(journal, out)} == set(changed)


def test_empty_journal():
    assert compact([]) == []
    assert dropped_seqs([], []) == set()


# -- property: same server tree with and without compaction ------------------------------
#
# A local tree starts equal to a small server tree; random offline changes are made to it
# and journaled the way cscfs.vfs does (base: the item's server version, None for a folder
# or link made offline; target: the replaced item's server version). Both journals are
# replayed on a model server strictly: anything the real replay would turn into a
# conflict or skip counts as an error. The full journal must replay without one (the
# generator makes consistent journals), the compacted one too, to the same tree.

NAMES = ("a", "b", "c")
INITIAL = {"a": "dir", "a/b": "file", "a/c": "dir", "b": "dir", "c": "symlink"}


def _parent(path):
    return path.rpartition("/")[0]


def _join(parent, name):
    return f"{parent}/{name}" if parent else name


def _inside(path, top):
    return path == top or path.startswith(top + "/")


def _journal_of(ops) -> list[dict]:
    """The journal of `ops` made offline on a copy of INITIAL, as cscfs.vfs writes it."""
    local = {p: {"ino": 100 + i, "kind": k, "base": ("srv", p)}
             for i, (p, k) in enumerate(INITIAL.items())}
    journal: list[dict] = []
    next_ino = 1

    def add(op, node, path, **fields):
        journal.append(E(len(journal) + 1, op, node["ino"], path, kind=node["kind"],
                         **fields))

    def dirs():
        return [""] + sorted(p for p, n in local.items() if n["kind"] == "dir")

    def empty(path):
        return not any(_parent(p) == path for p in local)

    def pick(a, ok):
        """An item that fits, the ones made offline first, the newest first."""
        cands = sorted((p for p, n in local.items() if ok(p, n)),
                       key=lambda p: (local[p]["ino"] >= 100, -local[p]["ino"]))
        return cands[a % len(cands)] if cands else None

    for op, a, b, name, mode, mtime in ops:
        if op in ("mkdir", "symlink"):
            ds = dirs()
            path = _join(ds[a % len(ds)], name)
            if path in local:
                continue
            node = local[path] = {"ino": next_ino, "base": None,
                                  "kind": "dir" if op == "mkdir" else "symlink"}
            next_ino += 1
            if op == "mkdir":
                add(op, node, path, mode=mode)
            else:
                add(op, node, path, link_target=name)
        elif op == "rmdir":
            path = pick(a, lambda p, n: n["kind"] == "dir" and empty(p))
            if path is not None:
                add(op, local.pop(path), path)
        elif op == "unlink":
            path = pick(a, lambda p, n: n["kind"] != "dir")
            if path is not None:
                node = local.pop(path)
                add(op, node, path, base=node["base"] if node["kind"] == "file" else None)
        elif op == "setattr":
            path = pick(a, lambda p, n: n["kind"] != "file")
            if path is not None:
                add(op, local[path], path, mode=mode,
                    mtime_ns=1 if mode is None and mtime is None else mtime)
        elif op in ("rename", "replace"):
            old = pick(a, lambda p, n: True)
            if old is None:
                continue
            node = local[old]
            if op == "replace":  # onto an item of its kind (a folder: an empty one)
                is_dir = node["kind"] == "dir"
                new = pick(b, lambda p, n, is_dir=is_dir, old=old:
                           (n["kind"] == "dir") == is_dir and not _inside(p, old))
                if new is None:
                    continue
            else:
                ds = [d for d in dirs() if not _inside(d, old)]
                new = _join(ds[b % len(ds)], name)
            target = None
            if new == old:
                continue
            if new in local:
                dest = local[new]
                if (node["kind"] == "dir") != (dest["kind"] == "dir"):
                    continue
                if dest["kind"] == "dir" and not empty(new):
                    continue
                if dest["base"] is None and dest["kind"] != "dir":
                    continue  # the replay makes a conflict copy: not modelled
                target = dest["base"]
                del local[new]
            for p in sorted(p for p in local if _inside(p, old)):
                local[new + p[len(old):]] = local.pop(p)
            add("rename", node, old, new_path=new, base=node["base"], target=target)
    return journal


def _replay(journal) -> tuple[dict, list]:
    """The server tree after replaying `journal` on INITIAL, and the entries that did
    not apply as they were."""
    tree = {p: {"kind": k, "id": ("srv", p), "mode": None, "mtime": None, "link": None}
            for p, k in INITIAL.items()}
    errors = []

    def dir_at(path):
        return path == "" or tree.get(path, {}).get("kind") == "dir"

    def empty(path):
        return not any(_parent(p) == path for p in tree)

    for e in journal:
        op, path, item = e["op"], e["path"], tree.get(e["path"])
        if op in ("mkdir", "symlink"):
            if item is not None or not dir_at(_parent(path)):
                errors.append(e)
                continue
            tree[path] = {"kind": "dir" if op == "mkdir" else "symlink",
                          "id": ("new", e["ino"]), "mode": e["mode"] or 0o755,
                          "mtime": None, "link": e["link_target"]}
        elif op in ("rmdir", "unlink"):
            if (item is None or (item["kind"] == "dir") != (op == "rmdir")
                    or op == "rmdir" and not empty(path)
                    or e["base"] is not None and item["id"] != e["base"]):
                errors.append(e)
                continue
            del tree[path]
        elif op == "setattr":
            if item is None:
                errors.append(e)
                continue
            if e["mode"] is not None:
                item["mode"] = e["mode"]
            if e["mtime_ns"] is not None and item["kind"] != "symlink":
                item["mtime"] = e["mtime_ns"]
        elif op == "rename":
            new = e["new_path"]
            dest = tree.get(new)
            if item is None or not dir_at(_parent(new)) or _inside(new, path):
                errors.append(e)
                continue
            if dest is not None:
                replace = (e["target"] is not None and dest["id"] == e["target"]
                           or dest["kind"] == item["kind"] == "dir")
                if not replace or dest["kind"] == "dir" and not empty(new):
                    errors.append(e)
                    continue
                del tree[new]
            for p in sorted(p for p in tree if _inside(p, path)):
                tree[new + p[len(path):]] = tree.pop(p)
    return tree, errors


OP_NAMES = ["mkdir", "mkdir", "symlink", "rmdir", "rmdir", "unlink", "rename", "rename",
            "rename", "replace", "setattr", "setattr"]
OPS = st.tuples(
    st.sampled_from(OP_NAMES),
    st.integers(0, 50), st.integers(0, 50), st.sampled_from(NAMES),
    st.sampled_from([None, 0o700, 0o755]), st.sampled_from([None, 1, 2]))


@settings(max_examples=1000, deadline=None)
@given(st.lists(OPS, min_size=8, max_size=40))
def test_compacted_journal_leaves_the_same_server_tree(ops):
    journal = _journal_of(ops)
    full, errors = _replay(journal)
    assert errors == []  # the model itself is consistent
    before = copy.deepcopy(journal)
    out = compact(journal)
    assert journal == before
    seqs = [e["seq"] for e in out]
    assert seqs == sorted(seqs) and set(seqs) <= {e["seq"] for e in journal}
    assert _replay(out) == (full, [])
    assert _replay(compact(out)) == (full, [])
