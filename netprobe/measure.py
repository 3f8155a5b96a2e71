"""Measurements: each returns a round-trip time in milliseconds or raises ProbeFailed
with a short reason (deadline, refused, no route)."""

from __future__ import annotations

import errno
import socket
import time


class ProbeFailed(Exception):
    """The server did not answer: the reason says how."""


def tcp_connect_ms(host: str, port: int, timeout: float, clock=time.perf_counter) -> float:
    """Time of a TCP handshake (one round trip) to host:port."""
    started = clock()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return (clock() - started) * 1000
    except socket.timeout:
        raise ProbeFailed(f"no answer from {host}:{port} within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise ProbeFailed(f"{host}:{port} refused the connection") from None
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            raise ProbeFailed(f"no route to {host}") from None
        raise ProbeFailed(f"{host}:{port}: {exc.strerror or exc}") from None
