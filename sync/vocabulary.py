"""The words the state database stores, in one place: conflict kinds, event kinds
and meta keys. The engine and the client both write them; `cscfs conflicts`,
`cscfs events` and `cscfs status` read them back.
"""

from __future__ import annotations

# Conflict kinds, named local/remote (sync/reconcile.py decides them).
UPDATE_UPDATE = "update/update"     # changed on both sides
DELETE_UPDATE = "delete/update"     # deleted here, changed there
UPDATE_DELETE = "update/delete"     # changed (or renamed) here, deleted there
CREATE_CREATE = "create/create"     # both created the same name
FILE_DIR = "file/dir"               # a file on one side, a folder on the other
REPLAY_FAILED = "replay-failed"     # + "/<op>": the server refused an offline change
CONFLICT_KINDS = (UPDATE_UPDATE, DELETE_UPDATE, UPDATE_DELETE, CREATE_CREATE, FILE_DIR)

# Event kinds (events.kind).
EVENT_MODE = "mode"      # a mode change, with its reason
EVENT_SYNC = "sync"      # a sync run: started, finished, failed, skipped and why
EVENT_QUOTA = "quota"    # the cache quota cannot be met
EVENT_FILL = "fill"      # available offline: the pinned set does not fit, ...
EVENT_DISK = "disk"      # the cache disk is full, or has room again
EVENT_UPLOAD = "upload"  # a file's upload fails for good (once), or succeeds again
EVENT_REDIRECT = "redirect"  # a redirected folder: files moved in, not mounted and why

# Meta keys (meta.key).
META_SERVER = "server"              # the server URL this cache belongs to
META_WORK_OFFLINE = "work_offline"  # "1" while the user chose work-offline
META_LAST_UPLOAD = "last_upload"    # "<unix time> <path>" of the last upload
META_LAST_SYNC = "last_sync_at"     # unix time of the last manual or background sync
META_NEXT_SYNC = "next_sync_at"     # unix time the next background sync is due
META_USAGE = "usage_state"          # JSON: data-plan counters (netprobe.usage)
