"""The link policy as a table, and the TCP probe against real sockets on loopback."""

from __future__ import annotations

import socket

import pytest

from netprobe import LinkPolicy, ProbeFailed, tcp_connect_ms
from netprobe.policy import FAST, SLOW, UNREACHABLE


def feed(samples, **kw):
    p = LinkPolicy(**kw)
    return [p.observe(*(s if isinstance(s, tuple) else (s,))).state for s in samples]


@pytest.mark.parametrize("samples, states", [
    ([1, 2, 1], [FAST, FAST, FAST]),
    ([50, 50, 50], [FAST, FAST, SLOW]),               # a trend, not one spike
    ([1, 1, 1, 90, 1], [FAST] * 5),                    # one spike among fast samples
    ([50, 50, 50, 30, 30, 30], [FAST, FAST, SLOW, SLOW, SLOW, SLOW]),  # in the band: stays
    ([50, 50, 50, 10, 10, 10], [FAST, FAST, SLOW, SLOW, SLOW, FAST]),  # median below 0.7x
    ([36, 34, 36, 34, 36, 34, 36], [FAST, FAST, SLOW, SLOW, SLOW, SLOW, SLOW]),  # no flapping
    ([1, (None, "cut"), 1], [FAST, UNREACHABLE, FAST]),
    ([50, 50, 50, (None, "cut"), 50], [FAST, FAST, SLOW, UNREACHABLE, FAST]),
])
def test_policy_table(samples, states):
    assert feed(samples) == states


def test_at_the_threshold_the_state_never_flaps():
    p = LinkPolicy(slow_ms=35)
    seen = {p.observe(35 + (i % 3 - 1) * 0.5).state for i in range(200)}
    assert len(seen) == 1


def test_unreachable_carries_its_reason():
    s = LinkPolicy().observe(None, "no route to 10.0.0.1")
    assert s.state == UNREACHABLE and "no route" in s.reason and s.median_ms is None


def test_tcp_probe_on_loopback():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert 0 <= tcp_connect_ms("127.0.0.1", port, 1.0) < 1000
    with pytest.raises(ProbeFailed, match="refused"):
        tcp_connect_ms("127.0.0.1", port, 1.0)
