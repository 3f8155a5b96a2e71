"""Latency and cost probes: measure, and a pure policy that turns samples into a
link state. Depends on nothing of ours; arrives with the link-modes issue."""
