"""The link/mode keeper: the link's state (netprobe's policy over probe samples and
failed calls), the link's cost, the user's switch and the config make the mode;
every change of mode is an event with its reason.

Touched only on the event-loop thread.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from netprobe import LinkPolicy, LinkState
from netprobe.cost import Cost
from netprobe.policy import UNREACHABLE

from sync.vocabulary import EVENT_MODE, META_WORK_OFFLINE

from . import modes
from .config import Options
from .metadata import State

log = logging.getLogger("cscfs.link")


class LinkKeeper:
    def __init__(self, state: State, options: Options):
        self.state, self.opts = state, options
        self.policy = LinkPolicy(slow_ms=options.slow_link_ms)
        self.link_state: LinkState = self.policy.current
        self.work_offline = state.get_meta(META_WORK_OFFLINE) == "1"
        self.cost = Cost(None, None)  # the last cost probe's answer
        self.mode, self.reason, self.since = "", "", time.time()
        self.on_online: list[Callable[[], None]] = []  # called on entering online
        self.on_mode_change: list[Callable[[str], None]] = []  # called with every new mode
        self._update()

    @property
    def online(self) -> bool:
        return self.mode == modes.ONLINE

    @property
    def reachable(self) -> bool:
        return self.link_state.state != UNREACHABLE

    @property
    def cost_limited(self) -> bool:
        return self.opts.cost_aware and self.cost.limited

    @property
    def costed(self) -> str:
        """Why background work must spare the link ('' when it need not)."""
        return self.cost.describe() if self.cost_limited else ""

    def observed(self, rtt_ms: float | None, failure: str = "") -> None:
        """A probe's result (or a failed call to the server) changes the link state."""
        self.link_state = self.policy.observe(rtt_ms, failure)
        self._update()

    def cost_observed(self, cost: Cost) -> None:
        if cost != self.cost:
            log.info("link cost: %s", cost.describe())
        self.cost = cost
        self._update()

    def set_work_offline(self, on: bool) -> None:
        """The user's switch, kept in the state database across restarts."""
        self.work_offline = on
        self.state.set_meta(META_WORK_OFFLINE, "1" if on else "0")
        self._update()

    def _update(self) -> None:
        d = modes.decide(self.link_state, work_offline=self.work_offline,
                         always_offline=self.opts.always_offline, cost=self.costed)
        if d.mode == self.mode:
            self.reason = d.reason
            return
        previous, self.mode, self.reason = self.mode, d.mode, d.reason
        self.since = time.time()
        self.state.add_event(EVENT_MODE, d.reason, mode=d.mode, rtt_ms=self.link_state.median_ms)
        log.warning("mode %s -> %s (%s)", previous or "start", d.mode, d.reason)
        for callback in self.on_mode_change:
            callback(d.mode)
        if self.online:
            for callback in self.on_online:
                callback()
