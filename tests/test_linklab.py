"""The link lab itself: a real smbd in a namespace, a delayable TUN link and a veth link.

In CI (CI=true) these fail when the rig cannot run here; elsewhere they are skipped with
the reason."""

from __future__ import annotations

import socket
import time

import pytest



@pytest.fixture
def rig(samba):
    """The session's rig (conftest.py): one smbd per run, the namespace names are fixed."""
    return samba


@pytest.fixture
def link(rig):
    """The rig, with both links put back in order after the test, whatever it did."""
    try:
        yield rig
    finally:
        rig.restore()
        rig.veth_up()


def connect_ms(host: str, port: int = 445, timeout: float = 2.0) -> float:
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout):
        return (time.perf_counter() - t0) * 1000


def test_both_hosts_serve_the_share(rig):
    import smbclient

    rig.server_mkdir("sub/dir")
    rig.server_write("sub/hello.txt", b"hello from the server disk\n")
    assert (rig.share_dir / "sub" / "hello.txt").stat().st_uid == rig.uid
    for host in (rig.fast_host, rig.wire_host):
        cache: dict = {}
        try:
            smbclient.register_session(host, username=rig.user, password=rig.password,
                                       port=rig.port, connection_cache=cache)
            root = rf"\\{host}\{rig.share}"
            assert "sub" in smbclient.listdir(root, connection_cache=cache)
            assert sorted(smbclient.listdir(rf"{root}\sub", connection_cache=cache)) == [
                "dir", "hello.txt"]
            with smbclient.open_file(rf"{root}\sub\hello.txt", "rb",
                                     connection_cache=cache) as f:
                assert f.read() == b"hello from the server disk\n"
        finally:
            smbclient.reset_connection_cache(connection_cache=cache)


def test_rtt_delays_tcp_connect(link):
    link.set_rtt(50)
    slow = [connect_ms(link.wire_host) for _ in range(3)]
    assert all(40 <= ms < 500 for ms in slow), slow
    link.restore()
    # the best of three: one connect can lose its time slice on a busy machine
    fast = min(connect_ms(link.wire_host) for _ in range(3))
    assert fast < 20


def test_cut_is_a_blackhole_until_restore(link):
    connect_ms(link.wire_host)
    link.cut()
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError):
        connect_ms(link.wire_host, timeout=1.0)
    assert time.perf_counter() - t0 >= 0.9  # silence, not a quick refusal
    link.restore()
    assert connect_ms(link.wire_host) < 100


def test_veth_down_fails_fast_through_the_fence(link):
    connect_ms(link.fast_host)
    link.veth_down()
    t0 = time.perf_counter()
    with pytest.raises(OSError):
        connect_ms(link.fast_host, timeout=2.0)
    assert time.perf_counter() - t0 < 0.5
    link.veth_up()
    assert connect_ms(link.fast_host) < 100
