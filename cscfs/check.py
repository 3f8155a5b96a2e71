"""Invariants of a cache, fsck-like: the database and the content files agree.

Run by `cscfs check`, and at the end of every cache test as the oracle.
"""

from __future__ import annotations

from .cache import ContentStore
from .metadata import ROOT_INO, State


def check(state: State, content: ContentStore, open_unlinked: set[int] = frozenset()) -> list[str]:
    """Every fault found, as one line each; empty when the cache is sound."""
    faults: list[str] = []
    nodes = {n.ino: n for n in state.load()}
    root = nodes.get(ROOT_INO)
    if root is None or root.kind != "dir" or root.parent != 0:
        faults.append("the root item is missing or not a folder")
        return faults

    def name(n):
        return f"item {n.ino} ({n.name!r})"

    for n in nodes.values():
        if n.ino == ROOT_INO:
            continue
        parent = nodes.get(n.parent)
        if parent is None or parent.kind != "dir":
            faults.append(f"{name(n)}: parent {n.parent} is missing or not a folder")
        seen, p = set(), n
        while p is not None and p.ino != ROOT_INO and p.ino not in seen:
            seen.add(p.ino)
            p = nodes.get(p.parent)
        if p is None or p.ino != ROOT_INO:
            faults.append(f"{name(n)}: not reachable from the root")
        if n.kind == "symlink" and n.target is None:
            faults.append(f"{name(n)}: symlink without a target")
        if n.dirty and n.kind != "file":
            faults.append(f"{name(n)}: a {n.kind} marked dirty")
        spans = n.present.spans
        if any(s >= e for s, e in spans) or any(
                a[1] >= b[0] for a, b in zip(spans, spans[1:])):
            faults.append(f"{name(n)}: present ranges not sorted and disjoint: {spans}")
        if spans and spans[-1][1] > n.size:
            faults.append(f"{name(n)}: present ranges end at {spans[-1][1]} past size {n.size}")
        if n.kind != "file":
            continue
        on_disk = content.size(n.ino)
        if spans and (on_disk is None or on_disk < spans[-1][1]):
            faults.append(f"{name(n)}: content file holds {on_disk} bytes, ranges say "
                          f"{spans[-1][1]}")
        if n.dirty:
            if not n.complete:
                faults.append(f"{name(n)}: dirty but not fully present")
            if on_disk != n.size:
                faults.append(f"{name(n)}: dirty, size {n.size} but content file holds "
                              f"{on_disk} bytes")
    for ino in sorted(content.all_inos() - set(nodes) - set(open_unlinked)):
        faults.append(f"content file {ino} belongs to no item")
    return faults
