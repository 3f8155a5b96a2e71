"""A hypothesis state machine: random changes through the client (online or offline)
and straight on the server, random mode switches and syncs; at the end, back online
and synced:
- every version a side wrote survives, as the winner or as a conflict copy, unless
  a side that saw it replaced or deleted it;
- the client's tree and the server's tree are the same, names and contents;
- `cscfs check`'s invariants hold.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cscfs.check import check

from .conftest import FAST, VfsRunner, seed_server
from .fsapi import VfsFS

NAMES = ["a.txt", "b.txt", "docs/c.txt"]
_counter = itertools.count()


def _tree(read, listdir, isdir, root="") -> dict[str, bytes]:
    out = {}
    for name in listdir(root):
        path = f"{root}/{name}" if root else name
        if isdir(path):
            out.update(_tree(read, listdir, isdir, path))
        else:
            out[path] = read(path)
    return out


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")

    def text(self) -> str:
        return "client log:\n" + "\n".join(self.lines[-60:])


class SyncMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="cscfs-machine-"))
        self.server = self.tmp / "server"
        self.server.mkdir()
        seed_server(self.server)
        # Uploads only when synced (or at the end): fewer races with the rules below.
        self.runner = VfsRunner(self.server, self.tmp / "data",
                                dataclasses.replace(FAST, write_back_delay=3600))
        self.fs = VfsFS(self.runner)
        self.must_survive: set[bytes] = {b"hello from the server\n", b"quarterly report v1\n"}
        # What the client did in this example, for the failure message (hypothesis
        # shows the log of its last replay only, which may not fail).
        self.log = _Recorder()
        for name in ("cscfs", "sync"):
            logging.getLogger(name).addHandler(self.log)
            logging.getLogger(name).setLevel(logging.DEBUG)
        self.offline = False

    def _version(self, side: str) -> bytes:
        # All versions of one length: writes of the same size within one tick of
        # the file system's clock keep the fingerprint; the racy-base check must
        # tell them apart by content.
        return f"version {next(_counter):06d} written by the {side}\n".encode()

    def _client_sees(self, name: str) -> bytes | None:
        """The version the client knows at `name`: its content, or for a name it
        knows but has not cached (offline), the server's content if that is the
        version (fingerprint) the client knows."""
        try:
            return self.fs.read(name)
        except OSError:
            pass
        return self._server_version_known(name)

    def _server_version_known(self, name: str) -> bytes | None:
        """The server's content of the version the client's item at `name` is based
        on (its fingerprint), wherever it is on the server (an offline rename moves
        it there only at replay): a write or delete here replaces that version."""
        try:
            node = self.fs.client.table.nodes[self.fs._resolve(name)]
        except (OSError, KeyError):
            return None  # not there
        if node.base is None:
            return None
        for disk in self.server.rglob("*"):
            try:
                st = disk.lstat()
                if (st.st_size, st.st_mtime_ns, st.st_ino) == (
                        node.base.size, node.base.mtime_ns, node.base.file_id):
                    return disk.read_bytes()
            except OSError:
                pass
        return None

    # -- the client, through the VFS ------------------------------------------
    @rule(name=st.sampled_from(NAMES))
    def client_writes(self, name):
        seen = self._client_sees(name)
        data = self._version("client")
        try:
            self.fs.write(name, data)
        except OSError:
            return  # e.g. its folder was deleted on the server: nothing written
        self.log.lines.append(f"model: client wrote {data!r} at {name}, having seen {seen!r}")
        self.must_survive.discard(seen)
        # The open revalidates: a server change that arrived since `seen` was read
        # is what the write replaces (as any editor's save does), knowingly.
        self.must_survive.discard(self._server_version_known(name))
        self.must_survive.add(data)

    @rule(name=st.sampled_from(NAMES))
    def client_deletes(self, name):
        seen = self._client_sees(name)
        if seen is None:
            return
        try:
            self.fs.unlink(name)
        except OSError:
            return
        self.log.lines.append(f"model: client deleted {name}, having seen {seen!r}")
        self.must_survive.discard(seen)

    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def client_renames(self, old, new):
        if old == new or self._client_sees(old) is None:
            return
        replaced = self._client_sees(new)
        try:
            self.fs.rename(old, new)
        except OSError:
            return
        self.log.lines.append(f"model: client renamed {old} to {new}, over {replaced!r}")
        self.must_survive.discard(replaced)

    # -- the server, on its disk ----------------------------------------------
    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def server_renames(self, old, new):
        src, dst = self.server / old, self.server / new
        if old == new or not src.is_file() or dst.is_dir():
            return
        dst.parent.mkdir(exist_ok=True)
        try:
            replaced = dst.read_bytes() if dst.is_file() else None
            os.rename(src, dst)
        except FileNotFoundError:
            return
        self._client_told(old, new)
        self.log.lines.append(f"model: server renamed {old} to {new}, over {replaced!r}")
        self.must_survive.discard(replaced)

    # The client syncs in the background meanwhile (replay after a switch online,
    # uploads): a server-side change that finds its file gone simply did not happen.
    @rule(name=st.sampled_from(NAMES))
    def server_writes(self, name):
        try:
            self._server_writes(name)
        except FileNotFoundError:
            pass

    def _server_writes(self, name):
        path = self.server / name
        path.parent.mkdir(exist_ok=True)
        seen = path.read_bytes() if path.is_file() else None
        data = self._version("server")
        path.write_bytes(data)
        self._client_told(name)
        self.log.lines.append(f"model: server wrote {data!r} at {name}, over {seen!r}")
        self.must_survive.discard(seen)
        self.must_survive.add(data)

    @rule(name=st.sampled_from(NAMES))
    def server_deletes(self, name):
        path = self.server / name
        try:
            seen = path.read_bytes()
            path.unlink()
        except (FileNotFoundError, IsADirectoryError):
            return
        self._client_told(name)
        self.log.lines.append(f"model: server deleted {name}")
        self.must_survive.discard(seen)

    def _client_told(self, *paths):
        """The change notification of a server change, delivered before the next rule
        (as the watcher would, a little later): what a client rule then "sees" at a
        name is what its operation acts on, not an older version a merge is about to
        replace under it. Races with a change the client has not heard of yet stay
        covered by the offline rules (the journal, the upload's base check)."""
        for path in paths:
            self.runner.call_sync(self.fs.client.watcher.on_remote_change, path)

    # -- modes and syncs ---------------------------------------------------------
    @rule()
    def switch_mode(self):
        self.offline = not self.offline
        self.runner.call_sync(self.fs.client.link.set_work_offline, self.offline)
        if not self.offline:
            # Back online, every change uploads at once and conflicts are settled by
            # renaming: wait for that, since what a rule "saw" at a name must still
            # be there when the rule acts (the model cannot see inside the loop).
            try:
                self.fs.settle()
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.log.text()}") from None

    @precondition(lambda self: True)
    @rule()
    def sync(self):
        self._sync()

    def _sync(self):
        self.log.lines.append("model: sync")
        from cscfs import commands

        async def run():
            async for _ in commands.sync(self.fs.client, []):
                pass

        self.runner.call(run)

    @invariant()
    def cache_is_consistent(self):
        client = self.fs.client
        assert self.runner.call_sync(lambda: (client.save_all(), check(
            client.state, client.content, client.table.open_unlinked()))[1]) == []

    def teardown(self):
        try:
            if self.offline:
                self.runner.call_sync(self.fs.client.link.set_work_offline, False)
            self._sync()
            self.fs.settle()
            self._sync()
            server = _tree(lambda p: (self.server / p).read_bytes(),
                           lambda p: sorted(os.listdir(self.server / p)),
                           lambda p: (self.server / p).is_dir())
            client = _tree(self.fs.read, self.fs.listdir,
                           lambda p: self.fs.stat(p).st_mode & 0o170000 == 0o040000)
            assert client == server, (client, server)
            lost = self.must_survive - set(server.values())
            assert not lost, f"lost versions: {lost}\nserver: {server}\n{self.log.text()}"
        finally:
            for name in ("cscfs", "sync"):
                logging.getLogger(name).removeHandler(self.log)
            self.runner.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)


SyncMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSyncMachine = SyncMachine.TestCase
