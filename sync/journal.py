"""Offline-journal compaction: Coda's log optimisations over cscfs's journal.

While not online, every namespace change (mkdir, rmdir, unlink, rename, symlink,
mknod, setattr of a folder, link or special file) is journaled and replayed in
order on return. Much of a long offline session cancels out: a folder made and
removed again, a folder renamed twice, a mode changed three times. Coda (Kistler &
Satyanarayanan, 1992) optimises its replay log for the same reason: fewer server
calls, and fewer chances of a conflict for something the server never needs to see.

`compact(entries)` takes the journal as `State.journal()` returns it (dicts in
replay order) and returns a shorter one that leaves the server with the same
result as replaying the whole journal, assuming the server did not change
meanwhile:

1. create then delete cancels: a folder, link or special file made and removed
   again never reaches the server, nor does anything done to it in between;
   unless another kept change used a path only it made exist, or it replaced
   something there.
2. repeated setattrs of one item at one path coalesce into the last one.
3. a setattr of an item deleted later, not renamed in between, is dropped.
4. adjacent renames of one item (A->B, B->C) merge into one (A->C), unless the
   first replaced something at B.

Every rule is conservative: when in doubt an entry stays. `base` and `target` are
opaque (compared with `is None` only). Pure: no I/O, no clock, no database; the
input is never changed (changed entries are copies).

The caller deletes the rows of `dropped_seqs(before, after)` and rewrites those of
`changed_entries(before, after)`: merged setattrs keep the last one's seq, merged
renames the first one's.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import defaultdict

_CREATES = frozenset({"mkdir", "symlink", "mknod"})
_DELETES = frozenset({"rmdir", "unlink"})
_SETATTR_FIELDS = ("mode", "mtime_ns", "uid", "gid")


def compact(entries: list[dict]) -> list[dict]:
    """The journal with Coda-style optimisations applied, in the original order."""
    entries = list(entries)
    owner, lives = _lives(entries)
    held, replaces = _follow(entries, owner, lives)
    cancelled = _cancelled(entries, owner, lives, held, replaces)
    kept = [e for i, e in enumerate(entries) if owner[i] not in cancelled]
    kept = _drop_setattrs_before_delete(kept)
    kept = _coalesce_setattrs(kept)
    return _merge_renames(kept, replaces)


def dropped_seqs(before: list[dict], after: list[dict]) -> set[int]:
    """Seqs of `before` no longer in `after`: the journal rows to delete."""
    return {e["seq"] for e in before} - {e["seq"] for e in after}


def changed_entries(before: list[dict], after: list[dict]) -> list[dict]:
    """Entries of `after` that differ from the entry of the same seq in `before`:
    the journal rows to rewrite."""
    old = {e["seq"]: e for e in before}
    return [e for e in after if old.get(e["seq"]) != e]


# -- helpers -------------------------------------------------------------------------

def _under(path: str, top: str) -> bool:
    """`path` is `top` or inside it."""
    return path == top or path.startswith(top + "/")


def _paths(e: dict) -> tuple[str, ...]:
    return (e["path"],) if e["new_path"] is None else (e["path"], e["new_path"])


def _ancestors(path: str) -> list[str]:
    """'a/b/c' -> ['a/b', 'a'] (the share root left out)."""
    out = []
    while "/" in path:
        path = path.rpartition("/")[0]
        out.append(path)
    return out


def _any_between(ks: list[int], i: int, j: int) -> bool:
    """Whether the sorted indices `ks` hold one strictly between i and j."""
    x = bisect_right(ks, i)
    return x < len(ks) and ks[x] < j


class _Index:
    """Which entries of a list name a path, so that 'did anything between these two
    entries change something there' costs a few bisections, not a scan."""

    def __init__(self, entries: list[dict]):
        self.at = defaultdict(list)      # path -> entries naming it
        self.inside = defaultdict(list)  # path -> entries naming a path inside it
        self.moves = defaultdict(list)   # path -> renames moving the item at it
        for k, e in enumerate(entries):
            for p in set(_paths(e)):
                self.at[p].append(k)
            for a in {a for p in _paths(e) for a in _ancestors(p)}:
                self.inside[a].append(k)
            if e["op"] == "rename":
                self.moves[e["path"]].append(k)

    def touched(self, i: int, j: int, path: str) -> bool:
        """Whether an entry between i and j changed something inside `path`, or moved
        the item there (renamed it or a folder above it). A setattr of that item (a
        mode letting things in) may matter to such an entry: it may then neither
        move across it nor vanish."""
        return _any_between(self.inside.get(path, []), i, j) or any(
            _any_between(self.moves.get(a, []), i, j) for a in [path, *_ancestors(path)])

    def at_or_inside(self, i: int, j: int, path: str) -> list[int]:
        """The entries between i and j naming `path` or a path inside it."""
        out = []
        for ks in (self.at.get(path, []), self.inside.get(path, [])):
            out += ks[bisect_right(ks, i):bisect_left(ks, j)]
        return out


class _Live:
    """Where the items the journal made are, at one point of it; sorted, to find a
    folder's contents."""

    def __init__(self):
        self.life: dict[str, int] = {}
        self.keys: list[str] = []

    def add(self, path: str, life: int) -> None:
        if path not in self.life:
            insort(self.keys, path)
        self.life[path] = life

    def pop(self, path: str) -> int | None:
        if path in self.life:
            del self.keys[bisect_left(self.keys, path)]
        return self.life.pop(path, None)

    def subtree(self, top: str) -> list[str]:
        """The paths at or under `top` ('/' + 1 is '0': 'top/...' sort before 'top0')."""
        inside = self.keys[bisect_left(self.keys, top + "/"):bisect_left(self.keys, top + "0")]
        return [top, *inside] if top in self.life else inside


def _lives(entries: list[dict]) -> tuple[list[int | None], dict[int, int | None]]:
    """An item's life: from its create (mkdir, symlink, mknod) to its delete, if both
    are in the journal. Returns, per entry, the life it belongs to (the create's index, or
    None), and each life's delete index (None: not deleted in the journal, e.g. it
    was replaced by a rename). Keyed by index, not ino, should an ino come back."""
    owner: list[int | None] = [None] * len(entries)
    lives: dict[int, int | None] = {}
    open_: dict[int, int] = {}  # ino -> its life still open
    for i, e in enumerate(entries):
        ino, op = e["ino"], e["op"]
        if op in _CREATES:
            lives[i] = None  # a new life (one still open ends undeleted)
            open_[ino] = owner[i] = i
        elif ino in open_:
            owner[i] = open_[ino]
            if op in _DELETES:
                lives[open_.pop(ino)] = i
    return owner, lives


def _follow(entries, owner, lives) -> tuple[dict[int, set[str]], set[int]]:
    """Follow where each item the journal creates is, across renames of it and of
    the folders above it. Returns every path each life held (its own entries'
    paths too), and the seqs of renames onto such an item: those replace it on
    the server although their `target` is None (it has no server version yet)."""
    live = _Live()
    held: dict[int, set[str]] = {life: set() for life in lives}
    replaces: set[int] = set()
    for i, e in enumerate(entries):
        life = owner[i]
        if life is not None:
            held[life].update(_paths(e))
        op = e["op"]
        if op in _CREATES:
            live.add(e["path"], i)
        elif op in _DELETES:
            live.pop(e["path"])  # an empty folder, or not a folder
        elif op == "rename":
            old, new = e["path"], e["new_path"]
            occupant = live.life.get(new)
            if occupant is not None and occupant != life:
                replaces.add(e["seq"])
            for p in live.subtree(new):
                if not _under(p, old):
                    live.pop(p)  # replaced (an empty folder, or not a folder)
            for p in live.subtree(old):
                lf = live.pop(p)
                p = new + p[len(old):]
                live.add(p, lf)
                held[lf].add(p)
    return held, replaces


def _cancelled(entries, owner, lives, held, replaces) -> set[int]:
    """Rule 1: the lives whose every entry can go."""
    index = _Index(entries)
    by_life = defaultdict(list)
    for i, life in enumerate(owner):
        if life is not None:
            by_life[life].append(entries[i])
    candidates = set()
    depends: dict[int, set[int | None]] = {}
    for life, end in lives.items():
        if end is None:
            continue  # never deleted here: it must reach the server
        if any(e["op"] == "rename" and (e["target"] is not None or e["seq"] in replaces)
               for e in by_life[life]):
            # It replaced a server version (or a folder or link made here): dropping
            # its history would keep the replaced item alive.
            continue
        candidates.add(life)
        # Other changes made meanwhile at or under a path it held: they may need it
        # there. Recorded by the life they belong to (None: an item not made here).
        depends[life] = {owner[k] for h in held[life]
                         for k in index.at_or_inside(life, end, h)} - {life}
    # Only lives whose dependants all go too: a folder made and removed with
    # another made and removed inside it both go. Shrink to a fixed point.
    cancelled = candidates
    while True:
        keep = {life for life in cancelled if not depends[life] <= cancelled}
        if not keep:
            return cancelled
        cancelled = cancelled - keep


def _drop_setattrs_before_delete(entries: list[dict]) -> list[dict]:
    """Rule 3: a setattr of an item deleted later, not renamed in between."""
    index = _Index(entries)
    nxt: dict[int, int] = {}  # per ino: the index of its next non-setattr entry
    after: list[int | None] = [None] * len(entries)
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        after[i] = nxt.get(e["ino"])
        if e["op"] != "setattr":
            nxt[e["ino"]] = i
    out = []
    for i, e in enumerate(entries):
        j = after[i]
        if (e["op"] == "setattr" and j is not None and entries[j]["op"] in _DELETES
                and not index.touched(i, j, e["path"])):
            continue  # the delete removes whatever it set
        out.append(e)
    return out


def _coalesce_setattrs(entries: list[dict]) -> list[dict]:
    """Rule 2: setattrs of one item at one path, nothing else of it in between, make
    one setattr at the later's place; the later wins field by field."""
    index = _Index(entries)
    out: list[dict | None] = []
    pending: dict[int, tuple[int, int]] = {}  # ino -> its last setattr: index, place in out
    for i, e in enumerate(entries):
        ino = e["ino"]
        if e["op"] != "setattr":
            pending.pop(ino, None)
            out.append(e)
            continue
        if ino in pending:
            pi, p = pending[ino]
            prev = out[p]
            if prev["path"] == e["path"] and not index.touched(pi, i, e["path"]):
                e = dict(e, **{f: e.get(f) if e.get(f) is not None else prev.get(f)
                               for f in _SETATTR_FIELDS if f in e or f in prev})
                out[p] = None
        pending[ino] = (i, len(out))
        out.append(e)
    return [e for e in out if e is not None]


def _merge_renames(entries: list[dict], replaces: set[int]) -> list[dict]:
    """Rule 4: renames of one item next to each other, A->B then B->C, make one A->C.
    Not when the first replaced something at B (its target, or a folder or link
    made here): that must still go. Nor when C is A or holds A: C (a folder left
    empty by the first) is replaced by the second, which A->C cannot do."""
    out: list[dict] = []
    replaced = []  # per entry of out: whether it replaced a folder or link made here
    for e in entries:
        prev = out[-1] if out else None
        if (prev is not None and e["op"] == prev["op"] == "rename"
                and e["ino"] == prev["ino"] and prev["new_path"] == e["path"]
                and prev["target"] is None and not replaced[-1]
                and not _under(prev["path"], e["new_path"])):
            out[-1] = dict(prev, new_path=e["new_path"], target=e["target"])
            replaced[-1] = e["seq"] in replaces  # a merged rename replaces what its last did
            continue
        out.append(e)
        replaced.append(e["seq"] in replaces)
    return out
