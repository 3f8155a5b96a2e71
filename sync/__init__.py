"""Sync engine (reconcile, replay, conflicts, scheduler).

Depends only on its own ports, never on `cscfs`. Its modules arrive with the sync
engine issue; until then cscfs.vfs uploads changed files itself.
"""
