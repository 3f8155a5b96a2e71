"""Roaming settings (as Windows' roaming user profile and MetaProfiles-IT's data sets):
the user's dconf database (the "hive") and roaming folders kept on a profile server
(any cscfs store: smb://host/share or a folder), at logon, logoff and in the
background while logged on.

settings (roam.toml) · hive (dconf: snapshot, read, apply through dconf-service) ·
folders (the roaming folders' walk, exclusions, size) · decide (pure: which copy
wins) · schedule (pure: when the background upload runs) · profile (the server side:
atomic puts, conflicts, the logoff record) · datasets (export / import, the SID) ·
state (roam.db: events, bases, facts) · flows (setup, upload, logon, logoff, status)
· agent (the user unit's loop) · cli (the `cscfs roam` commands).
"""
