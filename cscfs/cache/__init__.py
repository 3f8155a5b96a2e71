"""The local cache: content files and present byte ranges."""

from .content import ContentStore
from .ranges import RangeSet

__all__ = ["ContentStore", "RangeSet"]
