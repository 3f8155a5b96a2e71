"""The control socket: one JSON request and one JSON answer per connection.

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

from .errors import UserError

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


async def _one(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < _MAX_REQUEST:
            data = await stream.receive_some(4096)
            if not data:
                return
            buf += data
        try:
            request = json.loads(buf)
            answer = await handler(request)
        except Exception as exc:  # answer the client; the daemon goes on
            log.exception("control request failed")
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        after = answer.pop("_after", None)  # runs once the answer is out (unmount)
        await stream.send_all(json.dumps(answer).encode() + b"\n")
        if after:
            after()


def request(path: str, payload: dict, timeout: float | None = 30.0) -> dict:
    """Ask the daemon; a missing or dead daemon is the user's error to read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonMissing() from None
    except socket.timeout:
        raise UserError("the cscfs daemon did not answer in time") from None
    finally:
        sock.close()
    if not buf:
        raise UserError("the cscfs daemon closed the connection without an answer")
    answer = json.loads(buf)
    if "error" in answer:
        raise UserError(f"daemon: {answer['error']}")
    return answer


class DaemonMissing(UserError):
    """no cscfs daemon answers for this mount point"""
