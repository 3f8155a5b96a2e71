"""Mounts as the kernel sees them, and how to end one whose daemon is gone.

Everything here reads /proc and never stats a mount point: a FUSE mount whose daemon
died with a request unanswered makes any look at it hang, also ours. Whether the
daemon of a mount lives comes from the record it writes at mount (its PID and start
time, beside its control socket). A dead daemon's mount is ended by aborting its FUSE
connection (fusectl), which fails every request waiting on it (ENOTCONN,
ECONNABORTED), then unmounted.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass

FUSECTL = "/sys/fs/fuse/connections"
SIGKILL_BIT = 1 << 8  # signal 9 in /proc/PID/status masks


@dataclass(frozen=True)
class FuseMount:
    mountpoint: str
    fstype: str  # "fuse.cscfs" for ours
    connection: int  # FUSECTL/N: the kernel's number for the mount's device


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fuse_mounts() -> dict[str, FuseMount]:
    """Mount point -> mount, for every FUSE mount of this mount namespace (the top
    one where two are stacked)."""
    out = {}
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, fstype = left.split(), right.split()[0]
            if fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk")):
                major, minor = (int(x) for x in fields[2].split(":"))
                mp = _unescape(fields[4])
                out[mp] = FuseMount(mp, fstype, (major << 20) | minor)  # the kernel's dev_t
    return out


# -- the daemon's record ------------------------------------------------------------

@dataclass(frozen=True)
class DaemonRecord:
    pid: int
    started: str  # /proc/PID/stat's start time: tells a reused PID apart


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()  # [0] is field 3, the state


def this_process() -> DaemonRecord:
    pid = os.getpid()
    return DaemonRecord(pid, _stat_fields(pid)[19])


def write_record(path: str, record: DaemonRecord) -> None:
    tmp = f"{path}.{record.pid}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{record.pid} {record.started}\n")
    os.replace(tmp, path)


def read_record(path: str) -> DaemonRecord | None:
    try:
        with open(path) as f:
            pid, started = f.read().split()
        return DaemonRecord(int(pid), started)
    except (OSError, ValueError):
        return None


def remove_record(path: str, record: DaemonRecord | None = None) -> None:
    """Remove the record (only if it is still `record`'s, when given)."""
    if record is not None and read_record(path) != record:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


ALIVE, DYING, GONE = "alive", "dying", "gone"


def daemon_state(record: DaemonRecord) -> str:
    """GONE: exited, every thread of it (its files are closed). DYING: killed or its
    main thread ended, but a thread of it is still in the kernel: it will never
    answer, and it may hold /dev/fuse open. ALIVE otherwise (also when stopped)."""
    fields = _stat_fields(record.pid)
    if fields is None or fields[19] != record.started:
        return GONE
    try:
        tasks = os.listdir(f"/proc/{record.pid}/task")
        with open(f"/proc/{record.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return GONE
    if fields[0] in "ZX":
        return GONE if tasks == [str(record.pid)] else DYING
    pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    return DYING if pending & SIGKILL_BIT else ALIVE


def wait_gone(record: DaemonRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while daemon_state(record) != GONE:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def socket_answers(path: str) -> bool:
    """Someone listens on the control socket (a daemon without a record)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


# -- ending a mount -----------------------------------------------------------------

class AbortFailed(Exception):
    """the FUSE connection could not be aborted (the message says what to do)"""


def abort_connection(mount: FuseMount) -> None:
    """Fail every request waiting on the mount and every later one. The fusectl
    file system is mounted first if it is not (root only)."""
    path = os.path.join(FUSECTL, str(mount.connection), "abort")
    if not os.path.exists(path) and os.geteuid() == 0 and not _listdir(FUSECTL):
        try:
            subprocess.run(["mount", "-t", "fusectl", "none", FUSECTL], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            pass  # no mount(8): said below
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        raise AbortFailed(f"{path} is missing: as root, run `mount -t fusectl none "
                          f"{FUSECTL}`, then this command again") from None
    except PermissionError:
        raise AbortFailed(f"not allowed to write {path}: as root, run "
                          f"`echo 1 > {path}`") from None
    except OSError as exc:
        raise AbortFailed(f"{path}: {exc.strerror}") from None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def detach(mountpoint: str) -> None:
    """Unmount lazily: what is still open in it keeps failing, the name is free."""
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
