"""The kernel's word that the network changed: a link went up or down, an address or a
route came or went (a cable plugged in, Wi-Fi joined, a VPN up, a dock). Windows
re-checks an offline server on such events (NLA); so do we, instead of waiting for the
next timed probe.

Only the fact of a change matters, never its content: the messages are drained
unread (what changed is for the probe to find out), so nothing here parses netlink.
"""

from __future__ import annotations

import socket

# rtnetlink multicast groups (linux/rtnetlink.h): links, addresses and routes.
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV4_ROUTE = 0x40
_RTMGRP_IPV6_IFADDR = 0x100
_RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (_RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE | _RTMGRP_IPV6_IFADDR
          | _RTMGRP_IPV6_ROUTE)


def open_change_socket() -> socket.socket | None:
    """A non-blocking socket that becomes readable when the network changes; None
    where the platform has no rtnetlink (then only the timed probes run)."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError:
        return None
    try:
        sock.bind((0, GROUPS))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


def drain(sock: socket.socket) -> int:
    """Read away every pending message; how many there were. An overrun (ENOBUFS: more
    changes than the buffer held) counts as a change too."""
    count = 0
    while True:
        try:
            if not sock.recv(65536):
                return count
        except BlockingIOError:
            return count
        except OSError:  # ENOBUFS: messages were dropped, the network did change
            pass
        count += 1
