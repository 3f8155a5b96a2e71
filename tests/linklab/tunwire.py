#!/usr/bin/env python3
"""User-space "netem": a point-to-point IP link between the host and a network namespace made
of two TUN devices, with this process shuttling packets between them after a configurable delay.
Needed because the test kernel has no sch_netem. Unlike a TCP proxy, every IP packet is delayed
(so TCP connect sees the RTT too) and "drop" is a true blackhole (the client kernel retransmits,
TCP_USER_TIMEOUT / keepalive fire, the stream resumes after restore).

    tunwire.py --ns NS --ctl CTL.json [--host-if cst-t0 --ns-if cst-t1
               --host-ip 10.201.0.1 --ns-ip 10.201.0.2 --fence 10.201.0.0/24]

Control file (JSON; re-read every 20 ms when replaced or touched, at once on SIGHUP):
    {"mode": "up", "rtt_ms": 50, "loss_pct": 0, "rate_kbit": 0}
  mode: "up" forwards | "drop" silently discards every packet (link cut / server unreachable)
The devices vanish when this process exits; it exits on SIGTERM/SIGINT and when its parent goes
away, so a killed test run does not leave it behind. A low-priority 'unreachable' fence route
keeps traffic for the namespace from ever leaking to the default gateway.
"""

import argparse
import asyncio
import fcntl
import json
import os
import random
import signal
import struct
import subprocess

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def tun_open(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def sh(*cmd):
    subprocess.run(cmd, check=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--host-if", default="cst-t0")
    ap.add_argument("--ns-if", default="cst-t1")
    ap.add_argument("--host-ip", default="10.201.0.1")
    ap.add_argument("--ns-ip", default="10.201.0.2")
    ap.add_argument("--fence", default="10.201.0.0/24")
    ap.add_argument("--mtu", type=int, default=65000)
    a = ap.parse_args()
    parent = os.getppid()

    fa, fb = tun_open(a.host_if), tun_open(a.ns_if)
    # The fence may already be there (the rig adds it before any link): then this fails quietly.
    subprocess.run(["ip", "route", "add", "unreachable", a.fence, "metric", "4000"],
                   stderr=subprocess.DEVNULL)
    sh("ip", "link", "set", a.ns_if, "netns", a.ns)
    sh("ip", "link", "set", a.host_if, "mtu", str(a.mtu), "up")
    sh("ip", "addr", "add", a.host_ip, "peer", a.ns_ip, "dev", a.host_if)
    sh("ip", "-n", a.ns, "link", "set", a.ns_if, "mtu", str(a.mtu), "up")
    sh("ip", "-n", a.ns, "link", "set", "lo", "up")
    sh("ip", "-n", a.ns, "addr", "add", a.ns_ip, "peer", a.host_ip, "dev", a.ns_if)

    cfg = {"mode": "up", "rtt_ms": 0.0, "loss_pct": 0.0, "rate_kbit": 0.0}
    last = [None]

    def reload(force=False):
        try:
            st = os.stat(a.ctl)
        except FileNotFoundError:
            return
        # The inode too: mtime is coarse (a jiffy), two quick atomic rewrites can share it.
        key = (st.st_ino, st.st_mtime_ns)
        if key == last[0] and not force:
            return
        last[0] = key
        try:
            with open(a.ctl) as f:
                cfg.update(json.load(f))
        except ValueError:
            return
        print(f"tunwire: {cfg}", flush=True)

    reload(True)

    loop = asyncio.get_running_loop()
    next_free = {fa: 0.0, fb: 0.0}
    stats = {"fwd": 0, "drop": 0}

    def pump(src, dst):
        while True:
            try:
                pkt = os.read(src, 65536)
            except OSError:  # BlockingIOError: queue drained; others: device gone
                return
            if cfg["mode"] != "up" or (cfg["loss_pct"] and random.random() * 100 < cfg["loss_pct"]):
                stats["drop"] += 1
                continue
            now = loop.time()
            due = now + cfg["rtt_ms"] / 2000.0
            if cfg["rate_kbit"]:
                due = max(due, next_free[src])
                next_free[src] = due + len(pkt) * 8 / (cfg["rate_kbit"] * 1000)
            stats["fwd"] += 1
            if due <= now:
                send(dst, pkt)
            else:
                loop.call_at(due, send, dst, pkt)

    def send(dst, pkt):
        try:
            os.write(dst, pkt)
        except OSError:  # device queue full / down: like a lost packet
            stats["drop"] += 1

    loop.add_reader(fa, pump, fa, fb)
    loop.add_reader(fb, pump, fb, fa)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(True))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"tunwire: {a.host_if} {a.host_ip} <-> {a.ns}:{a.ns_if} {a.ns_ip} ready", flush=True)
    while not stop.is_set() and os.getppid() == parent:
        reload()
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except asyncio.TimeoutError:
            pass
    print(f"tunwire: exiting, {stats}", flush=True)
    os.close(fa)
    os.close(fb)  # devices (and their routes) disappear; the fence route stays


if __name__ == "__main__":
    asyncio.run(main())
