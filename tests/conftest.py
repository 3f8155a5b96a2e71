"""Fixtures: a server folder, the VFS driven without a mount, and a real FUSE mount
run by the `cscfs` command in its own process.

In CI (CI=true) a test that needs FUSE fails when FUSE is missing; elsewhere it
is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import trio

from cscfs.cache import ContentStore
from cscfs.client import Client
from cscfs.config import Options
from cscfs.metadata import State
from cscfs.remote import LocalDirStore

from .fsapi import MountFS, VfsFS

IN_CI = os.environ.get("CI") == "true"
FAST = Options(write_back_delay=0.2, attr_ttl=0.2, remote_timeout=5.0, probe_interval=0.5)


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 cannot load: {exc}"
    return None


def require_fuse() -> None:
    reason = fuse_missing()
    if reason:
        if IN_CI:
            pytest.fail(f"FUSE is required in CI: {reason}")
        pytest.skip(reason)


def seed_server(root: Path) -> None:
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text("hello from the server\n")
    (root / "docs" / "report.txt").write_text("quarterly report v1\n")


def require_samba() -> None:
    from .linklab.rig import SambaRig

    reason = SambaRig.missing()
    if reason:
        if IN_CI:
            pytest.fail(f"Samba is required in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def samba():
    """One real Samba server in a network namespace for the whole run. Not under
    pytest's tmp_path: that is 0700, and smbd reaches the share as the share user."""
    require_samba()
    from .linklab.rig import SambaRig

    base = Path(tempfile.mkdtemp(prefix="cscfs-samba-"))
    rig = SambaRig(base)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()
        shutil.rmtree(base, ignore_errors=True)


class SmbShare:
    """A fresh folder of the Samba share for one test: `url` for cscfs, `root` the
    same folder on the server's disk."""

    def __init__(self, rig, name: str, host: str | None = None):
        self.rig = rig
        rig.server_mkdir(name)
        self.root = rig.share_dir / name
        self.url = rig.url(host=host, path=name)
        self.credentials = rig.credentials_file(rig.base_dir / f"{name}.cred")


@pytest.fixture
def smb_share(samba, request):
    import uuid

    share = SmbShare(samba, f"t-{uuid.uuid4().hex[:10]}")
    seed_server(share.root)
    try:
        yield share
    finally:
        samba.restore()
        shutil.rmtree(share.root, ignore_errors=True)


@pytest.fixture
def server(tmp_path) -> Path:
    root = tmp_path / "server"
    root.mkdir()
    seed_server(root)
    return root


class VfsRunner:
    """The client on a trio loop in a thread of its own, with the same background
    tasks as the daemon runs, minus FUSE: tests call its coroutines with `call`.
    `store` replaces the folder store of `server` (e.g. a wrapper that stalls)."""

    def __init__(self, server: Path, data_dir: Path, options: Options = FAST, store=None):
        self.server, self.data_dir, self.options = server, data_dir, options
        self.store = store
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("VFS did not start")
        if self.error:
            raise self.error

    def _run(self):
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced to the test thread
            self.error = exc
            self._ready.set()

    async def _main(self):
        self.data_dir.mkdir(exist_ok=True)
        self.state = State(str(self.data_dir / "state.db"))
        self.content = ContentStore(str(self.data_dir / "content"))
        store = self.store or LocalDirStore(str(self.server))
        self.client = Client(store, self.state, self.content, self.options, str(self.data_dir))
        self.vfs = self.client.vfs
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        await self.client.monitor.probe_once(reconnect=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.client.run)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self.client.close()
        self.state.close()

    def call(self, fn, *args):
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def call_sync(self, fn, *args):
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def stop(self):
        if self._stop is not None and self.thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self.thread.join(10)


@pytest.fixture
def env_dirs(tmp_path, monkeypatch):
    """Isolated XDG dirs (short runtime dir: socket paths are limited to 108 bytes)."""
    runtime = tempfile.mkdtemp(prefix="cs-")
    config = tmp_path / "config"
    (config / "cscfs").mkdir(parents=True)
    (config / "cscfs" / "config.toml").write_text(
        f"attr_ttl = {FAST.attr_ttl}\nprobe_interval = {FAST.probe_interval}\n")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    yield
    shutil.rmtree(runtime, ignore_errors=True)


def cscfs(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed command as a user would, in its own process."""
    proc = subprocess.run([sys.executable, "-m", "cscfs", *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cscfs {' '.join(args)} -> {proc.returncode}\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


class Mounted:
    """A mount made by `cscfs mount`. `server` is the server folder on this machine's
    disk (for SMB: the share's folder), `source` what cscfs is given."""

    def __init__(self, server: Path, mountpoint: Path, data_dir: Path, write_back_delay: float,
                 source: str | None = None, extra: tuple[str, ...] = ()):
        self.server, self.mountpoint, self.data_dir = server, mountpoint, data_dir
        self.source = source or str(server)
        self.extra = extra
        self.write_back_delay = write_back_delay
        self.mount()

    def mount(self):
        try:
            self.mountpoint.mkdir()
        except OSError:
            pass  # there already, or a dead mount that `cscfs mount` clears itself
        cscfs("mount", self.source, str(self.mountpoint), "--data-dir", str(self.data_dir),
              "--write-back-delay", str(self.write_back_delay), *self.extra)

    def status(self) -> dict:
        import json

        return json.loads(cscfs("status", str(self.mountpoint), "--json").stdout)

    def is_mounted(self) -> bool:
        from cscfs.mounts import fuse_mounts

        return str(self.mountpoint) in fuse_mounts()

    def unmount(self, force: bool = False):
        if not self.is_mounted():
            return
        args = ["unmount", str(self.mountpoint)] + (["--force"] if force else [])
        proc = cscfs(*args, check=False)
        if self.is_mounted():  # the daemon is gone: clean up what we mounted
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        assert proc.returncode == 0 or not self.is_mounted(), proc.stderr


def on_demand_if_marked(request, tmp_path) -> None:
    """Tests marked `on_demand` test caching on demand: nothing is pinned."""
    if request.node.get_closest_marker("on_demand"):
        cfg = tmp_path / "config" / "cscfs" / "config.toml"
        cfg.write_text(cfg.read_text() + "offline_by_default = false\n")


@pytest.fixture
def mounted(tmp_path, server, env_dirs, request):
    require_fuse()
    on_demand_if_marked(request, tmp_path)
    m = Mounted(server, tmp_path / "mnt", tmp_path / "data", FAST.write_back_delay)
    try:
        yield m
    finally:
        m.unmount(force=True)


@pytest.fixture
def vfs_runner(tmp_path, server, request):
    options = FAST
    if request.node.get_closest_marker("on_demand"):
        options = dataclasses.replace(FAST, offline_by_default=False)
    runner = VfsRunner(server, tmp_path / "data", options)
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def smb_mounted(tmp_path, smb_share, env_dirs):
    require_fuse()
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", FAST.write_back_delay,
                source=smb_share.url, extra=("--credentials", str(smb_share.credentials)))
    try:
        yield m
    finally:
        m.unmount(force=True)


@pytest.fixture
def wire_mount(tmp_path, samba, smb_share, env_dirs, request):
    """A mount of the Samba share through the link that can be slowed and cut."""
    require_fuse()
    on_demand_if_marked(request, tmp_path)
    name = smb_share.url.rsplit("/", 1)[1]
    m = Mounted(smb_share.root, tmp_path / "mnt", tmp_path / "data", 0.2,
                source=samba.url(host=samba.wire_host, path=name),
                extra=("--credentials", str(smb_share.credentials)))
    m.rig = samba
    try:
        yield m
    finally:
        samba.restore()
        m.unmount(force=True)


@pytest.fixture(params=["vfs", "mount", "smb"])
def fs(request, tmp_path, server, env_dirs):
    """The same behaviour suite straight on the VFS, through a real mount of a
    folder, and through a real mount of a real Samba share."""
    if request.param == "smb":
        yield MountFS(request.getfixturevalue("smb_mounted"))
    elif request.param == "vfs":
        runner = VfsRunner(server, tmp_path / "data")
        try:
            yield VfsFS(runner)
        finally:
            runner.stop()
    else:
        require_fuse()
        m = Mounted(server, tmp_path / "mnt", tmp_path / "data", FAST.write_back_delay)
        try:
            yield MountFS(m)
        finally:
            m.unmount(force=True)


@contextlib.contextmanager
def private_bus():
    """A dbus-daemon of our own (session config); yields its address."""
    if shutil.which("dbus-daemon") is None:
        if IN_CI:
            pytest.fail("dbus-daemon is required in CI (apt-get install dbus)")
        pytest.skip("dbus-daemon is missing")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        yield daemon.stdout.readline().strip()
    finally:
        daemon.terminate()
        daemon.wait(5)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
