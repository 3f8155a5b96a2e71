"""Which byte ranges of a content file hold server data (half-open [start, end))."""

from __future__ import annotations

import bisect


class RangeSet:
    __slots__ = ("spans",)

    def __init__(self, spans: list[tuple[int, int]] | None = None):
        self.spans: list[tuple[int, int]] = []
        for start, end in spans or ():
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        spans = self.spans
        i = bisect.bisect_left(spans, (start, start))
        if i > 0 and spans[i - 1][1] >= start:  # touches the span before
            i -= 1
            start = spans[i][0]
        j = i
        while j < len(spans) and spans[j][0] <= end:
            end = max(end, spans[j][1])
            j += 1
        spans[i:j] = [(start, end)]

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        i = bisect.bisect_right(self.spans, (start, float("inf"))) - 1
        return i >= 0 and self.spans[i][0] <= start and self.spans[i][1] >= end

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        out, pos = [], start
        for s, e in self.spans:
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
        if pos < end:
            out.append((pos, end))
        return out

    def truncate(self, size: int) -> None:
        self.spans = [(s, min(e, size)) for s, e in self.spans if s < size]

    def clear(self) -> None:
        self.spans = []

    def present_bytes(self) -> int:
        return sum(e - s for s, e in self.spans)

    def to_list(self) -> list[list[int]]:
        return [[s, e] for s, e in self.spans]

    def __eq__(self, other) -> bool:
        return isinstance(other, RangeSet) and self.spans == other.spans

    def __repr__(self) -> str:
        return f"RangeSet({self.spans})"
