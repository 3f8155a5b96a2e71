"""The mode: from the link state, the user's switch and the config.

| mode           | when                                   | reads  | namespace changes     |
|----------------|----------------------------------------|--------|-----------------------|
| online         | reachable, RTT under the threshold     | cache, revalidated; fetch | on the server |
| slow-link      | median RTT over the threshold          | cache only | cache + journal   |
| offline        | unreachable                            | cache only | cache + journal   |
| work-offline   | `cscfs offline` (kept across restarts) | cache only | cache + journal   |
| always-offline | config `always_offline = true`         | cache only | cache + journal   |

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from netprobe.policy import SLOW, UNREACHABLE, LinkState

ONLINE = "online"
SLOW_LINK = "slow-link"
OFFLINE = "offline"
WORK_OFFLINE = "work-offline"
ALWAYS_OFFLINE = "always-offline"
MODES = (ONLINE, SLOW_LINK, OFFLINE, WORK_OFFLINE, ALWAYS_OFFLINE)


@dataclass(frozen=True)
class Decision:
    mode: str
    reason: str


def decide(link: LinkState, *, work_offline: bool, always_offline: bool,
           cost: str = "") -> Decision:
    """The user's and the config's word come before the link's; a costly link (a
    non-empty `cost` saying why) is treated as a slow one."""
    if always_offline:
        return Decision(ALWAYS_OFFLINE, "config: always_offline = true")
    if work_offline:
        return Decision(WORK_OFFLINE, "user: cscfs offline")
    if link.state == UNREACHABLE:
        return Decision(OFFLINE, f"unreachable: {link.reason}")
    if link.state == SLOW:
        return Decision(SLOW_LINK, link.reason)
    if cost:
        return Decision(SLOW_LINK, f"cost: {cost}")
    return Decision(ONLINE, link.reason)
