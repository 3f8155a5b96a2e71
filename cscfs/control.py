"""The control socket: one JSON request per connection, answered with JSON lines.

A streaming request gets {"progress": ...} lines and then {"done": true}; any other
gets the handler's dict. A failure is answered {"error": message, "exit_code": code}:
a CscfsError's own exit code (UserError 2, others 1); any other exception is a daemon
fault (1), logged with its traceback. request() raises that answer as a CscfsError
with the same code, so the CLI exits with it.

The socket lives in the user's runtime dir with mode 0600, so only the user who
mounted can ask the daemon anything.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Awaitable, Callable

import trio

from .errors import CscfsError, UserError

log = logging.getLogger("cscfs.control")
_MAX_REQUEST = 1 << 16

Handler = Callable[[dict], Awaitable[dict]]


def bind(path: str) -> trio.socket.SocketType:
    if os.path.exists(path):
        os.unlink(path)  # a leftover of a daemon that died: the data-dir lock is held by us
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock._sock.bind(path)  # before the trio loop runs: a plain bind
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


async def serve(sock: trio.socket.SocketType, handler: Handler) -> None:
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(_one, stream, handler)


def stream_line(item: dict) -> bytes:
    return json.dumps({"progress": item}).encode() + b"\n"


async def _one(conn: trio.SocketStream, handler: Handler) -> None:
    """One request; whatever goes wrong here never takes the daemon down."""
    try:
        async with conn:
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < _MAX_REQUEST:
                data = await conn.receive_some(4096)
                if not data:
                    return
                buf += data
            after = None
            try:
                try:
                    req = json.loads(buf)
                except ValueError:
                    req = None
                if not isinstance(req, dict):
                    raise UserError("malformed control request (not a JSON object)")
                answer = await handler(req)
                after = answer.pop("_after", None)  # runs once the answer is out (unmount)
                progress = answer.pop("_stream", None)
                if progress is not None:  # progress lines first, then the answer
                    async for item in progress:
                        await conn.send_all(stream_line(item))
                    answer = {"done": True}
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise  # the client went away mid-stream: not a fault of ours
            except UserError as exc:
                answer = {"error": str(exc), "exit_code": exc.exit_code}
            except CscfsError as exc:  # an expected failure (server unreachable, ...)
                log.warning("control request %s failed: %s", req.get("cmd"), exc)
                answer = {"error": str(exc), "exit_code": exc.exit_code}
            except Exception as exc:  # a bug: say so, not "bad input"
                log.exception("control request failed")
                answer = {"error": f"daemon fault: {type(exc).__name__}: {exc} "
                                   f"(its log has the details)", "exit_code": 1}
            await conn.send_all(json.dumps(answer).encode() + b"\n")
            if after:
                after()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away


def request(path: str, payload: dict, timeout: float | None = 30.0, on_progress=None) -> dict:
    """Ask the daemon; progress lines, if the request streams them, go to on_progress.

    No daemon at `path` raises DaemonMissing (bad input: the wrong mount point). An
    error answer raises with the daemon's exit code: UserError for 2, else CscfsError.
    A daemon that stops answering is a failure (exit 1)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        reader = sock.makefile("rb")
        while True:
            line = reader.readline()
            if not line.endswith(b"\n"):  # nothing, or cut off: the daemon went away
                raise CscfsError("the cscfs daemon closed the connection without an answer")
            answer = json.loads(line)
            if "progress" in answer and on_progress is not None:
                on_progress(answer["progress"])
                continue
            if "progress" not in answer:
                break
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonMissing() from None
    except socket.timeout:
        raise CscfsError("the cscfs daemon did not answer in time") from None
    except OSError as exc:  # reset, broken pipe: it died while we asked
        raise CscfsError(f"lost the connection to the cscfs daemon ({exc})") from None
    finally:
        sock.close()
    if "error" in answer:
        code = answer.get("exit_code", 1)  # a daemon from before exit codes: a failure
        if code == UserError.exit_code:
            raise UserError(answer["error"])  # callers catching bad input still see it
        raise CscfsError(answer["error"], exit_code=code)
    return answer


class DaemonMissing(UserError):
    """no cscfs daemon answers for this mount point"""
