"""The composition root: validate a mount request, wire store, cache, VFS and FUSE
together, serve the control socket, and stop cleanly."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import trio

from sync.vocabulary import EVENT_REDIRECT, META_SERVER

from . import commands, control, errors, mounts
from .cache import ContentStore
from .check import check
from .config import (Options, canonical_mountpoint, daemon_record_path, default_data_dir,
                     socket_path)
from .credentials import ENV_PASSWORD
from .errors import UserError
from .metadata import State
from .remote import RemoteStore, open_store

log = logging.getLogger("cscfs.daemon")
# "0": invalidate names as kernels before Linux 6.16 need it (to test that way here)
ENV_FUSE_EPOCH = "CSCFS_FUSE_EPOCH"


@dataclass
class MountPlan:
    server: str
    mountpoint: str
    data_dir: str
    store: RemoteStore
    server_reachable: bool
    credentials: object = None  # credentials.Credentials for smb://, handed to the daemon on stdin


def parse_probe(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--probe {value!r}: give HOST:PORT")
    return host.strip("[]"), int(port)


def clear_stale_mount(mountpoint: str, even_if_alive: bool = False) -> str | None:
    """End the cscfs mount at `mountpoint` if its daemon is gone (kill -9, crash) or,
    with `even_if_alive`, whatever its daemon does: abort its FUSE connection, so that
    every application waiting on it gets an error instead of hanging, and unmount it.
    Decided from /proc alone: a stat of such a mount can hang. Returns the daemon's
    state (mounts.GONE, DYING or ALIVE) if the mount was ended, else None."""
    mountpoint = canonical_mountpoint(mountpoint)
    mount = mounts.fuse_mounts().get(mountpoint)
    if mount is None or mount.fstype != "fuse.cscfs":
        return None
    record_path = daemon_record_path(mountpoint)
    record = mounts.read_record(record_path)
    if record is not None:
        state = mounts.daemon_state(record)
    else:  # it died before writing one, or a cscfs from before records
        state = mounts.ALIVE if mounts.socket_answers(socket_path(mountpoint)) else mounts.GONE
    if state == mounts.ALIVE and not even_if_alive:
        return None
    try:
        mounts.abort_connection(mount)
    except mounts.AbortFailed as exc:
        # A daemon gone whole closed /dev/fuse: the kernel ended the connection then.
        # One that is not may hold it open, and what waits on it would wait for ever.
        if state != mounts.GONE:
            raise errors.CscfsError(f"cannot abort the FUSE connection of {mountpoint}: "
                                    f"{exc}") from None
    mounts.detach(mountpoint)
    log.info("ended the mount at %s (its daemon: %s)", mountpoint, state)
    if record is not None and state == mounts.DYING:
        # Aborted, its last thread returns and closes its files (the data dir's lock
        # among them) at once. A live daemon exits by itself, unless it is stopped.
        mounts.wait_gone(record, 10)
    if record is not None and mounts.daemon_state(record) == mounts.GONE:
        mounts.remove_record(record_path, record)
    return state


FUSE_CONF = "/etc/fuse.conf"


def check_allow_other() -> None:
    """fusermount3 lets a user other than root mount for others only where
    /etc/fuse.conf says user_allow_other: say so before mounting."""
    if os.geteuid() == 0:
        return
    try:
        with open(FUSE_CONF) as f:
            allowed = any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        allowed = False
    if not allowed:
        raise UserError(f"--allow-other: {FUSE_CONF} must contain the line "
                        f"'user_allow_other' for a user other than root to let others in")


def _lock_data_dir(data_dir: str) -> int:
    fd = os.open(os.path.join(data_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"data dir {data_dir} is in use by another cscfs mount") from None
    return fd


def plan_mount(server: str, mountpoint: str, data_dir: str | None,
               options: Options | None = None, credentials=None,
               server_state: str | None = None) -> MountPlan:
    """Check everything the user gave us before anything changes; one clear error."""
    options = options or Options()
    mountpoint = os.path.abspath(os.path.expanduser(mountpoint))
    store = open_store(server, credentials, timeout=options.remote_timeout,
                       encrypt=options.encrypt, upload_processes=options.upload_processes,
                       upload_threads=options.parallel_uploads)
    clear_stale_mount(mountpoint)
    if canonical_mountpoint(mountpoint) in mounts.fuse_mounts():  # before a stat: it may hang
        raise UserError(f"mount point {mountpoint} is already mounted")
    if not os.path.exists(mountpoint):
        raise UserError(f"mount point {mountpoint} does not exist")
    if not os.path.isdir(mountpoint):
        raise UserError(f"mount point {mountpoint} is not a folder")
    if os.path.ismount(mountpoint):
        raise UserError(f"mount point {mountpoint} is already mounted")
    if os.listdir(mountpoint):
        raise UserError(f"mount point {mountpoint} is not empty")
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir(mountpoint)))
    known = known_server(data_dir)
    if known is not None and known != store.url:
        raise UserError(f"data dir {data_dir} holds the cache of {known}, "
                        f"not {store.url}: give another --data-dir")
    parse_probe(options.probe)
    if options.allow_other:
        check_allow_other()
    reachable = server_state != "unreachable"
    try:
        if server_state is not None:  # the daemon's parent checked it a moment ago
            raise _Checked()
        st = store.stat("")
        if st.kind != "dir":
            raise UserError(f"server {store.url} is not a folder")
    except errors.NotFound as exc:
        raise UserError(f"server {store.url} does not exist ({exc})") from None
    except errors.Unavailable as exc:
        if known is None:  # nothing cached to start from
            raise UserError(f"server {store.url} does not exist or is unreachable "
                            f"({exc})") from None
        reachable = False
    except errors.RemoteError as exc:
        raise UserError(f"server {store.url}: {exc}") from None
    except _Checked:
        pass
    _prepare_data_dir(data_dir)
    fd = _lock_data_dir(data_dir)  # only to fail early; the daemon takes it for real
    os.close(fd)
    return MountPlan(server, mountpoint, data_dir, store, reachable, credentials)


class _Checked(Exception):
    pass


def known_server(data_dir: str) -> str | None:
    """The server whose cache the data dir holds (None: no cache yet)."""
    db = os.path.join(data_dir, "state.db")
    if not os.path.exists(db):
        return None
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'server'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise UserError(f"data dir {data_dir}: cannot read state.db ({exc})") from None
    return row[0] if row else None


def _prepare_data_dir(data_dir: str) -> None:
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        probe = os.path.join(data_dir, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot use data dir {data_dir}: {exc.strerror}") from None
    os.chmod(data_dir, 0o700)


def start_background(plan: MountPlan, options: Options) -> int:
    """Start the daemon in its own session; return once the mount is ready."""
    read_fd, write_fd = os.pipe()
    log_path = os.path.join(plan.data_dir, "daemon.log")
    argv = [sys.executable, "-m", "cscfs", "mount", plan.server, plan.mountpoint,
            "--foreground", "--data-dir", plan.data_dir, "--ready-fd", str(write_fd),
            "--write-back-delay", repr(options.write_back_delay),
            "--server-state", "reachable" if plan.server_reachable else "unreachable"]
    if options.probe:
        argv += ["--probe", options.probe]
    if options.allow_other:
        argv.append("--allow-other")
    # The password goes to the daemon on its stdin: never in argv or its environment.
    env = {k: v for k, v in os.environ.items() if k != ENV_PASSWORD}
    if plan.credentials is not None:
        argv.append("--secret-stdin")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                                pass_fds=(write_fd,), start_new_session=True, env=env)
    os.close(write_fd)
    if plan.credentials is not None:
        c = plan.credentials
        proc.stdin.write(json.dumps({"username": c.username, "password": c.password,
                                     "domain": c.domain}).encode() + b"\n")
    proc.stdin.close()
    with os.fdopen(read_fd, "rb") as ready:
        answer = ready.read().decode(errors="replace").strip()
    if answer == "ok":
        return proc.pid
    proc.wait(timeout=30)
    if answer.startswith("error: "):
        raise UserError(answer[len("error: "):])
    raise UserError(f"the cscfs daemon stopped while starting; see {log_path}")


def setup_logging(data_dir: str, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.FileHandler(os.path.join(data_dir, "daemon.log"))
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if foreground and sys.stderr.isatty():
        stream = logging.StreamHandler()
        stream.setFormatter(fmt)
        root.addHandler(stream)


STATUS_INTERVAL = 2.0  # s between checks of the status line given to systemd


class Daemon:
    def __init__(self, plan: MountPlan, options: Options, after_ready=None):
        """`after_ready`: a blocking function run in a thread once the mount answers
        (it may use the mount); it returns event lines to record (a redirected
        folder moves what landed in it while unmounted)."""
        from .client import Client
        from .fuse_ops import FuseInvalidator, FuseOperations
        from .sd_notify import Notifier

        self.plan = plan
        self.after_ready = after_ready
        self.notifier = Notifier()
        self.lock_fd = _lock_data_dir(plan.data_dir)
        self.state = State(os.path.join(plan.data_dir, "state.db"))
        self.state.set_meta(META_SERVER, plan.store.url)
        self.content = ContentStore(os.path.join(plan.data_dir, "content"))
        self.client = Client(plan.store, self.state, self.content, options, plan.data_dir,
                             FuseInvalidator(epoch=os.environ.get(ENV_FUSE_EPOCH) != "0"),
                             parse_probe(options.probe))
        self.client.notifier.mountpoint = plan.mountpoint  # a resolve command to copy
        self.ops = FuseOperations(self.client.vfs)
        self.socket_path = socket_path(plan.mountpoint)
        self.record_path = daemon_record_path(plan.mountpoint)
        self.record = mounts.this_process()
        self.options = options
        self.started = time.time()

    async def handle(self, request: dict) -> dict:
        cmd = request.get("cmd")
        client = self.client
        if cmd == "status":
            out = client.status()
            out.update(mountpoint=self.plan.mountpoint, data_dir=self.plan.data_dir,
                       pid=os.getpid(), started=self.started)
            return out
        if cmd == "check":
            client.save_all()
            return {"faults": check(self.state, self.content, client.table.open_unlinked())}
        if cmd == "sync":
            return {"_stream": commands.sync(client, request.get("paths", []))}
        if cmd == "conflicts":
            return {"conflicts": self.state.open_conflicts()}
        if cmd == "resolve":
            return await commands.resolve(client, request["path"], request["keep"])
        if cmd in ("pin", "unpin"):
            return {"queued": await commands.set_pinned(client, request["paths"], cmd == "pin")}
        if cmd in ("offline", "online"):
            client.link.set_work_offline(cmd == "offline")
            return {"mode": client.link.mode, "reason": client.link.reason}
        if cmd == "events":
            return {"events": self.state.events(int(request.get("limit", 200)))}
        if cmd == "unmount":
            from . import fuse_ops

            before = client.pending_uploads
            remaining = before
            if not request.get("force"):
                remaining = await client.flush_uploads(float(request.get("within", math.inf)))
            self.notifier.stopping()
            return {"pending_before": before, "uploaded": before - remaining,
                    "pending": remaining, "_after": fuse_ops.terminate}
        raise UserError(f"unknown request {cmd!r}")

    async def main(self, ready_fd: int | None) -> None:
        from . import fuse_ops

        if not self.plan.server_reachable:  # found so while planning: start offline
            self.client.link.observed(None, "unreachable when mounted")
        fuse_ops.mount(self.ops, self.plan.mountpoint, self.options.allow_other)
        # From here a mount exists that could outlive us: say whose it is.
        mounts.write_record(self.record_path, self.record)
        await self.client.list_root()  # before ready; the kernel's requests wait meanwhile
        sock = control.bind(self.socket_path)
        log.info("mounted %s at %s (data dir %s, %s)", self.plan.store.url,
                 self.plan.mountpoint, self.plan.data_dir,
                 f"{self.client.link.mode}: {self.client.link.reason}")
        if ready_fd is not None:
            os.write(ready_fd, b"ok\n")
            os.close(ready_fd)
        start_workers = getattr(self.plan.store, "start_workers", None)
        if start_workers is not None:
            start_workers()  # ready for the first upload; they import while we serve
        async with trio.open_nursery() as nursery:
            await nursery.start(self.client.run)
            nursery.start_soon(control.serve, sock, self.handle)
            nursery.start_soon(self._signals)
            nursery.start_soon(self._announce)
            await fuse_ops.serve()
            nursery.cancel_scope.cancel()

    async def _announce(self) -> None:
        """READY=1 to systemd once the mount answers (a stat of its root through the
        kernel, served by this process; not a listing: that would hold the root's
        lock against the watcher's invalidations), then the status line."""
        from .sd_notify import status_line

        await trio.to_thread.run_sync(os.stat, self.plan.mountpoint)
        self.notifier.ready(status_line(self.client.status()))
        if self.after_ready is not None:
            for line in await trio.to_thread.run_sync(self.after_ready):
                self.state.add_event(EVENT_REDIRECT, line)
                log.info("%s", line)
        while self.notifier.enabled:
            self.notifier.status(status_line(self.client.status()))
            await trio.sleep(STATUS_INTERVAL)

    async def _signals(self) -> None:
        import signal

        from . import fuse_ops

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                log.info("signal %d: unmounting; %d changed files upload at the next mount",
                         sig, self.client.pending_uploads)
                self.notifier.stopping()
                fuse_ops.terminate()
                return

    def close(self) -> None:
        from . import fuse_ops

        try:
            fuse_ops.close(unmount=True)
        except Exception as exc:  # not mounted: nothing to undo
            log.debug("nothing to unmount: %s", exc)
        self.client.close()
        self.state.close()
        self.plan.store.close()  # its connections, and its upload processes
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        mounts.remove_record(self.record_path, self.record)
        log.info("unmounted %s", self.plan.mountpoint)


def run_foreground(plan: MountPlan, options: Options, ready_fd: int | None,
                   after_ready=None) -> int:
    setup_logging(plan.data_dir, foreground=True)
    try:
        daemon = Daemon(plan, options, after_ready)
    except UserError as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"error: {exc}\n".encode())
        raise
    profile_path = os.environ.pop("CSCFS_PROFILE", "")
    profiler = None
    if profile_path:  # a developer's switch: `pip install pyinstrument`, see benchmarks/
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    try:
        trio.run(daemon.main, ready_fd)
    except Exception as exc:
        log.exception("daemon failed")
        if ready_fd is not None:
            try:
                os.write(ready_fd, f"error: {exc}\n".encode())
            except OSError:
                pass
        raise errors.CscfsError(f"mount failed: {exc}") from None
    finally:
        daemon.close()
        daemon.notifier.close()
        if profiler is not None:
            profiler.stop()
            with open(profile_path, "w") as f:
                f.write(profiler.output_text(unicode=False, show_all=False))
    return 0
