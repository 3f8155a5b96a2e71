"""From round-trip samples to a link state: fast, slow or unreachable.

The rule (with hysteresis, so that a link sitting at the threshold does not flap):
- One failed probe (deadline, refusal, no route) makes the link unreachable at once.
- After a success the link is reachable again; fast or slow is decided on the median
  of the last `window` (5) samples since the link came back.
- A fast link turns slow when that median exceeds `slow_ms` (35 ms by default, as
  Windows Offline Files) over at least `min_samples` (3) samples; a slow link turns
  fast only when the median falls below
  `slow_ms * recover_ratio` (0.7: 24.5 ms). A median between the two keeps the state.
Pure: no clock, no I/O; the caller decides when to probe.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

FAST, SLOW, UNREACHABLE = "fast", "slow", "unreachable"


@dataclass(frozen=True)
class LinkState:
    state: str
    median_ms: float | None
    reason: str


@dataclass
class LinkPolicy:
    slow_ms: float = 35.0
    window: int = 5
    recover_ratio: float = 0.7
    min_samples: int = 3
    samples: list[float] = field(default_factory=list)
    current: LinkState = field(default_factory=lambda: LinkState(FAST, None, "start"))

    def observe(self, rtt_ms: float | None, failure: str = "") -> LinkState:
        """Feed one probe: its RTT, or None with the failure's reason."""
        if rtt_ms is None:
            self.samples.clear()
            self.current = LinkState(UNREACHABLE, None, failure or "unreachable")
            return self.current
        self.samples.append(rtt_ms)
        del self.samples[:-self.window]
        median = statistics.median(self.samples)
        if self.current.state == SLOW:
            state = FAST if median < self.slow_ms * self.recover_ratio else SLOW
        else:  # fast, or back from unreachable: one spike among few samples is no trend
            enough = len(self.samples) >= min(self.min_samples, self.window)
            state = SLOW if median > self.slow_ms and enough else FAST
        if state == SLOW:
            reason = f"median RTT {median:.0f} ms > {self.slow_ms:g} ms"
        else:
            reason = f"median RTT {median:.0f} ms"
        self.current = LinkState(state, median, reason)
        return self.current
