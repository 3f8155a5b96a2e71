"""Link probes: measurements (measure.py) and a pure policy that turns samples into
a link state (policy.py). Depends on nothing of ours."""

from .measure import ProbeFailed, tcp_connect_ms
from .policy import LinkPolicy, LinkState

__all__ = ["LinkPolicy", "LinkState", "ProbeFailed", "tcp_connect_ms"]
