"""May the hive roam now? The same rules as the rest of cscfs: the link's latency
through netprobe's policy (slow above `slow_link_ms`), its cost (NetworkManager's
Metered and ModemManager's roaming, unless `cost_aware = false`), and whether the
server answers at all."""

from __future__ import annotations

from netprobe import LinkPolicy, ProbeFailed, tcp_connect_ms
from netprobe.policy import SLOW, UNREACHABLE

from .. import errors

SAMPLES = 5
UNAVAILABLE, SLOW_LINK, COSTED = "unavailable", "slow", "costed"


def measure(store, options) -> float:
    """One round trip in ms: an SMB echo over the session, a TCP connect to the
    configured probe, or for a plain folder reachability only (0)."""
    if options.probe:
        host, _, port = options.probe.rpartition(":")
        return tcp_connect_ms(host, int(port), options.probe_timeout)
    if hasattr(store, "echo"):
        return store.echo(options.probe_timeout)
    return 0.0


def refusal(store, options, root: str = "", read_cost=None) -> tuple[str, str] | None:
    """(UNAVAILABLE | SLOW_LINK | COSTED, why) when the hive must not roam now."""
    try:
        store.stat(root)
    except errors.Unavailable as exc:
        return UNAVAILABLE, str(exc)
    except errors.NotFound:
        pass  # the profile folder is made by the upload
    policy = LinkPolicy(slow_ms=options.slow_link_ms)
    state = policy.current
    for _ in range(SAMPLES):
        try:
            state = policy.observe(measure(store, options))
        except (ProbeFailed, errors.CscfsError) as exc:
            state = policy.observe(None, str(exc))
            break
    if state.state == UNREACHABLE:
        return UNAVAILABLE, state.reason
    if state.state == SLOW:
        return SLOW_LINK, state.reason
    if options.cost_aware:
        if read_cost is None:
            from netprobe.cost import read_cost
        cost = read_cost()
        if cost.limited:
            return COSTED, cost.describe()
    return None
