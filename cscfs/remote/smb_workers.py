"""SMB uploads of small files in processes of their own.

smbprotocol builds, signs and parses every message in Python: with parallel uploads in
one process, they and the receiving thread share one interpreter lock, and a burst of
uploads over a fast link is bound by one core (profiled: 70% of the daemon's busy time
in a 1,000-file burst was smbprotocol's). Each worker process has its own connection
and session to the server and runs up to `threads` uploads at once, so that round trips
still overlap on a slow link.

The parent sends (id, arguments) over a multiprocessing pipe and a reader thread hands
each answer to the call waiting for it. A worker that dies fails its calls with
Unavailable (the upload is tried again) and is started anew at the next call; it exits
by itself when the daemon goes (its pipe closes).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor

from .. import errors

log = logging.getLogger("cscfs.smb")

_SPAWN = multiprocessing.get_context("spawn")  # never fork a process with threads


class UploadWorkers:
    """`store_args`: what SMBStore(*store_args) takes to reach the same share
    (the password goes to the child over its pipe, never in argv or environ)."""

    def __init__(self, store_args: tuple, processes: int, threads: int):
        self.store_args, self.threads = store_args, threads
        self._workers: list[_Worker | None] = [None] * max(1, processes)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start every worker now (a spawned interpreter takes a moment to import)."""
        for i in range(len(self._workers)):
            self._worker(i)

    def upload(self, tmp: str, path: str, data: bytes, *args):
        """SMBStore.upload_as(tmp, path, data, *args) in a worker process."""
        return self._worker(next(self._next) % len(self._workers)).call(
            "upload_as", tmp, path, data, *args)

    def _worker(self, i: int) -> _Worker:
        with self._lock:
            if self._closed:
                raise errors.Unavailable("the upload workers are closed")
            w = self._workers[i]
            if w is None or not w.alive:
                w = self._workers[i] = _Worker(self.store_args, self.threads)
            return w

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, [None] * len(self._workers)
        for w in workers:
            if w is not None:
                w.close()


class _Worker:
    def __init__(self, store_args: tuple, threads: int):
        self._conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=_serve, args=(child, store_args, threads),
                                      name="cscfs-smb-upload", daemon=True)
        self.process.start()
        child.close()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._read, name="smb upload answers", daemon=True).start()

    def call(self, name: str, *args):
        future: Future = Future()
        with self._send_lock:
            if not self.alive:
                raise errors.Unavailable("the upload worker exited")
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                self._conn.send((call_id, name, args))
            except (OSError, ValueError) as exc:
                self._pending.pop(call_id, None)
                self.alive = False
                raise errors.Unavailable(f"the upload worker exited: {exc}") from None
        ok, value = future.result()
        if ok:
            return value
        raise value

    def _read(self) -> None:
        try:
            while True:
                call_id, ok, value = self._conn.recv()
                future = self._pending.pop(call_id, None)
                if future is not None:
                    future.set_result((ok, value))
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("reading the upload worker's answers failed")
        with self._send_lock:
            self.alive = False
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_result((False, errors.Unavailable("the upload worker exited")))
        self._conn.close()
        self.process.join(1)

    def close(self) -> None:
        with self._send_lock:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def _serve(conn, store_args: tuple, threads: int) -> None:
    """The worker process: an SMBStore of its own, `threads` calls at a time."""
    from .smb import SMBStore

    store = SMBStore(*store_args)
    send_lock = threading.Lock()

    def run(call_id: int, name: str, args: tuple) -> None:
        try:
            answer = (call_id, True, getattr(store, name)(*args))
        except errors.CscfsError as exc:
            answer = (call_id, False, exc)
        except BaseException as exc:  # a bug: its traceback goes to the daemon's log
            answer = (call_id, False, RuntimeError(
                "in the upload worker: " + "".join(traceback.format_exception(exc))))
        with send_lock:
            conn.send(answer)

    with ThreadPoolExecutor(threads) as pool:
        try:
            while (request := conn.recv()) is not None:
                pool.submit(run, *request)
        except (EOFError, OSError):
            pass  # the daemon is gone
    store.close()
