"""Other users in a mount: --allow-other lets them in under the kernel's usual
permission checks on each item's mode and owner (default_permissions); without it
only the mounting user gets in. Real mounts, real commands run as `nobody`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cscfs import daemon
from cscfs.cli import main

from .conftest import FAST, IN_CI, Mounted, require_fuse, wait_for

NOBODY = 65534

# Runs as nobody: each step [op, path, *args] -> 0 (or what it read) or the errno's name.
_PROBE = """
import errno, json, os, sys
def step(op, path, *args):
    try:
        if op == "read":
            with open(path, "rb") as f:
                return f.read().decode()
        if op == "write":
            with open(path, "x") as f:
                f.write(args[0])
            return 0
        if op == "listdir":
            return sorted(os.listdir(path))
        if op == "owner":
            st = os.lstat(path)
            return [st.st_uid, st.st_gid]
        getattr(os, op)(path, *args)
        return 0
    except OSError as exc:
        return errno.errorcode[exc.errno]
print(json.dumps([step(*s) for s in json.loads(sys.argv[1])]))
"""


def as_nobody(*steps) -> list:
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", sys.executable, "-c", _PROBE, json.dumps(steps)],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def require_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("running commands as another user needs root in CI")
        pytest.skip("running commands as another user needs root")


@pytest.fixture(params=[True, False], ids=["allow-other", "private"])
def shared(request, tmp_path, server, env_dirs):
    """A mount at a path every user can reach (pytest's tmp_path is 0700)."""
    require_fuse()
    require_root()
    (server / "secret.txt").write_text("root only\n")
    (server / "secret.txt").chmod(0o600)
    (server / "drop").mkdir(mode=0o777)
    (server / "drop").chmod(0o777)
    top = Path(tempfile.mkdtemp(prefix="cscfs-shared-"))
    top.chmod(0o755)
    m = Mounted(server, top / "mnt", tmp_path / "data", FAST.write_back_delay,
                extra=("--allow-other",) if request.param else ())
    m.allow_other = request.param
    try:
        yield m
    finally:
        m.unmount(force=True)
        shutil.rmtree(top, ignore_errors=True)


def test_another_user_gets_in_only_with_allow_other_and_then_as_the_modes_say(shared):
    mnt = str(shared.mountpoint)
    if not shared.allow_other:  # FUSE keeps everyone but the mounting user out
        assert as_nobody(["listdir", mnt], ["read", f"{mnt}/hello.txt"]) == ["EACCES"] * 2
        assert "hello.txt" in os.listdir(mnt)
        return
    got = as_nobody(
        ["listdir", mnt],
        ["read", f"{mnt}/hello.txt"],             # 0644 of root: readable
        ["read", f"{mnt}/secret.txt"],            # 0600 of root: not
        ["write", f"{mnt}/docs/mine.txt", "x"],   # a 0755 folder of root: no new names
        ["unlink", f"{mnt}/hello.txt"],           # ... nor removed ones
        ["chmod", f"{mnt}/hello.txt", 0o666],     # not the owner
        ["chown", f"{mnt}/hello.txt", NOBODY, NOBODY],
        ["write", f"{mnt}/drop/mine.txt", "from nobody\n"],  # 0777: anyone's
        ["owner", f"{mnt}/drop/mine.txt"],
        ["chmod", f"{mnt}/drop/mine.txt", 0o600],  # the owner may
    )
    assert got == [["docs", "drop", "hello.txt", "secret.txt"], "hello from the server\n",
                   "EACCES", "EACCES", "EACCES", "EPERM", "EPERM", 0, [NOBODY, NOBODY], 0]
    wait_for(lambda: shared.status()["pending_uploads"] == 0, what="the upload")
    mine = os.stat(shared.server / "drop" / "mine.txt")
    assert (mine.st_uid, mine.st_gid, mine.st_mode & 0o777) == (NOBODY, NOBODY, 0o600)
    assert (shared.server / "drop" / "mine.txt").read_text() == "from nobody\n"
    assert (shared.server / "secret.txt").read_text() == "root only\n"


def test_allow_other_for_a_user_without_user_allow_other_is_refused_clearly(
        tmp_path, server, env_dirs, monkeypatch, capsys):
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    monkeypatch.setattr(daemon, "FUSE_CONF", str(conf))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # fusermount3 decides by this
    (tmp_path / "mp").mkdir()
    code = main(["mount", str(server), str(tmp_path / "mp"), "--allow-other",
                 "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "user_allow_other" in err and str(conf) in err
    conf.write_text("user_allow_other  # let users share their mounts\n")
    daemon.check_allow_other()  # passes now
