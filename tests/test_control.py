"""Errors and exit codes end to end through a real control socket: what the daemon's
handler raises comes back to control.request() and the `cscfs` command with the
right exit code (2 bad input, 1 a failure or a daemon fault); streaming still works."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading

import pytest
import trio

from cscfs import config, control, errors
from cscfs.cli import main
from cscfs.errors import CscfsError, UserError


async def _progress(n: int, fail: bool = False):
    for i in range(n):  # as syncer.manual_sync yields them
        yield {"total_files": n, "total_bytes": 10 * n, "done_files": i + 1,
               "done_bytes": 10 * (i + 1), "path": f"f{i}", "action": "push"}
    if fail:
        raise errors.Unavailable("server unreachable: link down")


async def handler(request: dict) -> dict:
    cmd = request.get("cmd")
    if cmd == "user":
        raise UserError("no open conflict at x.txt")
    if cmd == "failed":
        raise CscfsError("x.txt: no free conflict copy name")
    if cmd in ("unreachable", "status", "check"):
        raise errors.Unavailable("server unreachable: timed out")
    if cmd in ("bug", "events"):
        raise RuntimeError("boom")
    if cmd == "slow":
        await trio.sleep(30)
    if cmd == "stream":
        return {"_stream": _progress(3)}
    if cmd in ("stream-fails", "sync"):
        return {"_stream": _progress(2, fail=True)}
    return {"echo": request}


@contextlib.contextmanager
def serving(path: str, answer=handler):
    """control.serve on its own trio loop in a thread, bound at `path`."""
    ready, loop = threading.Event(), {}

    async def run():
        with trio.CancelScope() as scope:
            loop.update(scope=scope, token=trio.lowlevel.current_trio_token())
            sock = control.bind(path)
            ready.set()
            with sock:  # closed when stopped: a later client finds nobody listening
                await control.serve(sock, answer)

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    assert ready.wait(10), "the control socket did not come up"
    try:
        yield path
    finally:
        trio.from_thread.run_sync(loop["scope"].cancel, trio_token=loop["token"])
        thread.join(10)


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="cs-")  # AF_UNIX paths must stay under 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock(short_dir):
    with serving(os.path.join(short_dir, "c.sock")) as path:
        yield path


@pytest.mark.parametrize("cmd, kind, code, message", [
    ("user", UserError, 2, "no open conflict at x.txt"),
    ("failed", CscfsError, 1, "x.txt: no free conflict copy name"),
    ("unreachable", CscfsError, 1, "server unreachable: timed out"),
    ("bug", CscfsError, 1, "daemon fault: RuntimeError: boom"),
])
def test_an_error_answer_carries_its_exit_code(sock, cmd, kind, code, message):
    with pytest.raises(kind) as info:
        control.request(sock, {"cmd": cmd})
    assert info.value.exit_code == code
    assert str(info.value).startswith(message)
    if code == 1:
        assert not isinstance(info.value, UserError)  # a failure is not bad input


def test_the_raw_answer_names_error_and_exit_code(sock):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(b'{"cmd": "unreachable"}\n')
        line = s.makefile("rb").readline()
    assert json.loads(line) == {"error": "server unreachable: timed out", "exit_code": 1}


def test_a_daemon_fault_is_logged_with_its_traceback(sock, caplog):
    with caplog.at_level(logging.WARNING, logger="cscfs.control"):
        with pytest.raises(CscfsError):
            control.request(sock, {"cmd": "bug"})
        with pytest.raises(CscfsError):
            control.request(sock, {"cmd": "unreachable"})
    faults = [r for r in caplog.records if r.exc_info]
    assert len(faults) == 1 and faults[0].exc_info[0] is RuntimeError


def test_an_answer_and_a_stream_still_work(sock):
    assert control.request(sock, {"cmd": "hello", "n": 1}) == {"echo": {"cmd": "hello", "n": 1}}
    seen = []
    assert control.request(sock, {"cmd": "stream"}, on_progress=seen.append) == {"done": True}
    assert [p["done_files"] for p in seen] == [1, 2, 3]


def test_a_stream_that_fails_midway_ends_with_the_error(sock):
    seen = []
    with pytest.raises(CscfsError, match="server unreachable: link down") as info:
        control.request(sock, {"cmd": "stream-fails"}, on_progress=seen.append)
    assert info.value.exit_code == 1 and len(seen) == 2


def test_a_malformed_request_is_bad_input(sock):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(b"[1, 2]\n")
        line = s.makefile("rb").readline()
    assert b'"exit_code": 2' in line and b"malformed" in line


def test_no_daemon_is_bad_input(short_dir):
    missing = os.path.join(short_dir, "none.sock")
    with pytest.raises(control.DaemonMissing) as info:
        control.request(missing, {"cmd": "status"})
    assert info.value.exit_code == 2
    with socket.socket(socket.AF_UNIX) as stale:  # a socket file nobody listens on
        stale.bind(missing)
    with pytest.raises(control.DaemonMissing):
        control.request(missing, {"cmd": "status"})


def test_a_daemon_that_does_not_answer_in_time_is_a_failure(sock):
    with pytest.raises(CscfsError, match="did not answer in time") as info:
        control.request(sock, {"cmd": "slow"}, timeout=0.2)
    assert info.value.exit_code == 1 and not isinstance(info.value, UserError)


@pytest.mark.parametrize("sends", [b"", b'{"error": "cut of'])
def test_a_daemon_that_hangs_up_is_a_failure(short_dir, sends):
    path = os.path.join(short_dir, "raw.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def hang_up():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(sends)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(CscfsError, match="closed the connection without an answer") as info:
            control.request(path, {"cmd": "status"}, timeout=5)
        assert info.value.exit_code == 1 and not isinstance(info.value, UserError)
    finally:
        thread.join(5)
        server.close()


def test_errors_carry_an_exit_code_of_their_own():
    assert CscfsError("x").exit_code == 1 and UserError("x").exit_code == 2
    assert CscfsError("x", exit_code=3).exit_code == 3
    assert CscfsError.exit_code == 1  # the instance's code leaves the class alone
    assert errors.Unavailable().exit_code == 1
    assert issubclass(control.DaemonMissing, UserError)


# -- through the `cscfs` command ---------------------------------------------------

@pytest.fixture
def mount_dir(short_dir, tmp_path, monkeypatch):
    """A mount point whose daemon is our handler, where cli._ask looks for it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", short_dir)
    mp = tmp_path / "mnt"
    mp.mkdir()
    with serving(config.socket_path(str(mp))):
        yield str(mp)


@pytest.mark.parametrize("argv, code, message", [
    (["status"], 1, "server unreachable: timed out"),
    (["sync"], 1, "server unreachable: link down"),
    (["check"], 1, "server unreachable: timed out"),
    (["events"], 1, "daemon fault: RuntimeError: boom"),
])
def test_cli_exits_with_the_daemons_code(mount_dir, capsys, argv, code, message):
    assert main(argv + [mount_dir]) == code
    assert capsys.readouterr().err.startswith(f"cscfs: error: {message}")


def test_cli_bad_input_from_the_daemon_exits_2(short_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_RUNTIME_DIR", short_dir)
    mp = tmp_path / "mnt"
    mp.mkdir()

    async def refuse(request):
        raise UserError(f"unknown request {request['cmd']!r}")

    with serving(config.socket_path(str(mp)), refuse):
        assert main(["status", str(mp)]) == 2
    assert capsys.readouterr().err == "cscfs: error: unknown request 'status'\n"
    assert main(["status", str(mp)]) == 2  # no daemon there any more: bad input too
    assert "is not a cscfs mount" in capsys.readouterr().err


@pytest.mark.parametrize("open_conflicts, failed, code", [(0, 0, 0), (2, 0, 3), (0, 1, 1)])
def test_cli_sync_streams_to_its_summary(short_dir, tmp_path, monkeypatch, capsys,
                                         open_conflicts, failed, code):
    monkeypatch.setenv("XDG_RUNTIME_DIR", short_dir)
    mp = tmp_path / "mnt"
    mp.mkdir()

    async def sync(request):
        async def stream():
            async for p in _progress(2):
                yield p
            yield {"summary": {"replayed": 0, "uploaded": 2, "downloaded": 0, "bytes": 20,
                               "failed": failed, "new_conflicts": open_conflicts,
                               "open_conflicts": open_conflicts, "seconds": 0.1}}
        return {"_stream": stream()}

    with serving(config.socket_path(str(mp)), sync):
        assert main(["sync", str(mp)]) == code
    assert "2 uploaded" in capsys.readouterr().out
