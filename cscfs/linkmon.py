"""The link monitor: probes the server and feeds the link keeper's policy.

- While reachable: a probe every `probe_online_interval` (1 s) when the store can
  echo over its live session (SMB2 ECHO: one small round trip, no new connection), so
  that a cut link is noticed within a few seconds even when no request needs the
  server; every 10 s otherwise (a TCP connect to `--probe HOST:PORT`, or a stat of a
  plain folder). The echo's RTT is also the slow-link sample.
- While unreachable: re-probe from `probe_interval` (1 s) growing 1.5x per failure up
  to 120 s (Windows re-probes every 2 minutes; we come back sooner).
- Whenever the kernel says the network changed (a link, an address or a route: a
  cable, Wi-Fi, a VPN, a dock), probe at once and start the backoff again, so that a
  laptop back on its network is online within a round trip of it, not of the backoff.
"""

from __future__ import annotations

import logging

import trio

from netprobe import ProbeFailed, tcp_connect_ms
from netprobe.netchange import drain, open_change_socket

from sync.vocabulary import META_USAGE

from . import errors
from .gateway import RemoteGateway
from .link import LinkKeeper
from .metadata import State

MAX_BACKOFF = 120.0
# A change arrives as a burst (link, then addresses, then routes): probe once it settles,
# and at most once a second however busy the machine's networking is.
CHANGE_SETTLE = 0.25
CHANGE_MIN_GAP = 1.0

log = logging.getLogger("cscfs.linkmon")


class LinkMonitor:
    def __init__(self, link: LinkKeeper, gateway: RemoteGateway, state: State,
                 probe_target: tuple[str, int] | None = None):
        self.link, self.gateway, self.state = link, gateway, state
        self.store = gateway.store
        self.opts = gateway.opts
        self.target = probe_target
        self.echoes = hasattr(self.store, "echo") and probe_target is None
        self.interval = self.opts.probe_online_interval if self.echoes else max(
            10.0, self.opts.probe_online_interval)
        self._network_changed = trio.Event()

    async def probe_once(self, reconnect: bool) -> None:
        timeout = self.opts.probe_timeout
        gateway, link = self.gateway, self.link
        started, busy = gateway.clock(), gateway.busy
        try:
            # Reconnecting may take a session setup on top of the round trip.
            with trio.fail_after(timeout * (3 if reconnect else 1)):
                rtt = await trio.to_thread.run_sync(self._measure, reconnect, timeout,
                                                    abandon_on_cancel=True)
        except (trio.TooSlowError, ProbeFailed, errors.CscfsError) as exc:
            if gateway.ok_at > started:
                return  # our transfers crowd the echo out, yet the link carries them
            reason = f"no answer within {timeout:g} s" if isinstance(
                exc, trio.TooSlowError) else str(exc)
            link.observed(None, reason)
        else:
            if (busy or gateway.busy) and link.reachable:
                # Queued behind our own reads and uploads: that measures our load, not
                # the distance to the server (a big copy must not make the link "slow").
                return
            link.observed(rtt)

    def _measure(self, reconnect: bool, timeout: float) -> float:
        if self.target is not None:
            self.store.stat("")  # the folder itself must be there too
            return tcp_connect_ms(*self.target, timeout)
        if self.echoes:
            if reconnect:
                self.store.stat("")  # dials and sets up a session if needed
            return self.store.echo(timeout)
        self.store.stat("")
        return 0.0  # a plain folder: reachability only; its latency is a disk's, not a link's

    async def run_cost(self) -> None:
        """Read the link's cost (NetworkManager, ModemManager, data used against the
        plan) now and then."""
        import dataclasses
        import datetime
        import json

        from netprobe.cost import read_cost
        from netprobe.usage import UsageMeter, read_counters

        o = self.opts
        meter = UsageMeter(int(o.data_plan_mb * 1_000_000), o.billing_day,
                           o.usage_warn_pct / 100)
        interfaces = [i.strip() for i in o.usage_interfaces.split(",") if i.strip()]
        while True:
            cost = await trio.to_thread.run_sync(read_cost, abandon_on_cancel=True)
            usage = json.loads(self.state.get_meta(META_USAGE, "{}"))
            usage = meter.update(usage, read_counters(interfaces), datetime.date.today())
            self.state.set_meta(META_USAGE, json.dumps(usage))
            self.link.cost_observed(dataclasses.replace(cost, usage=meter.level(usage)))
            await trio.sleep(o.cost_probe_interval)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_network)
            await self._probe_loop()

    async def _probe_loop(self) -> None:
        backoff = self.opts.probe_interval
        while True:
            if self.link.reachable:
                await self._sleep(self.interval)
                await self.probe_once(reconnect=False)
                backoff = self.opts.probe_interval
            else:
                if await self._sleep(backoff):
                    backoff = self.opts.probe_interval
                else:
                    backoff = min(backoff * 1.5, MAX_BACKOFF)
                await self.probe_once(reconnect=True)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, cut short by a change of the network; whether one came."""
        with trio.move_on_after(seconds):
            await self._network_changed.wait()
        changed = self._network_changed.is_set()
        if changed:
            self._network_changed = trio.Event()
        return changed

    async def _watch_network(self) -> None:
        sock = open_change_socket()
        if sock is None:
            log.info("no network change notices here: the server is checked on a timer only")
            return
        with sock:
            while True:
                await trio.lowlevel.wait_readable(sock)
                await trio.sleep(CHANGE_SETTLE)
                drain(sock)
                log.info("the network changed: checking the server now")
                self._network_changed.set()
                await trio.sleep(CHANGE_MIN_GAP - CHANGE_SETTLE)
