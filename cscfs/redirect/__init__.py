"""Folder Redirection (as Windows'): an XDG user folder (Documents, Pictures, ...)
moved to a server and mounted through cscfs at the same path, at every login.

folders (xdg-user-dirs) · registry (redirect.toml in the config dir) · mover (a
verified, resumable move into the server or the mount) · unit (the systemd user
unit) · primary (primary computers) · flows (redirect, login, logout, remove, list).
"""
