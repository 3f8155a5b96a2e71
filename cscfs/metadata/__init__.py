"""The state database: items, conflicts, meta (schema in schema.py)."""

from .state import ROOT_INO, Node, State

__all__ = ["ROOT_INO", "Node", "State"]
