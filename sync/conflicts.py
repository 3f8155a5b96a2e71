"""Conflict copies: recognisable names, never a copy of a copy, within the server's
length limit. Pure."""

from __future__ import annotations

import re
import time
from typing import Iterator

from .names import Measure, fit

_CONFLICT_SUFFIX = re.compile(r" \(conflict [^()]* \d{4}-\d\d-\d\d \d{6}(?: \d+)?\)$")
MAX_TRIES = 99


def conflict_name(name: str, host: str, when: float, n: int = 1, *,
                  max_len: int | None = None, measure: Measure = len) -> str:
    """`report.odt` -> `report (conflict HOST 2026-11-21 153012).odt`. A conflict
    copy in conflict again gets a new copy of the original name, never a copy of
    the copy; `n` > 1 tells apart copies made within the same second. A name that
    would be longer than `max_len` (in the server's unit, `measure`) loses the end
    of its stem; the extension and the conflict part stay."""
    copied = _CONFLICT_SUFFIX.search(name)
    if copied:  # a copy whose "extension" was cut like a stem (below)
        stem, ext = name[:copied.start()], ""
    else:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        stem = _CONFLICT_SUFFIX.sub("", stem)
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    if n > 1:
        stamp += f" {n}"
    mark = f" (conflict {host} {stamp})"
    ext = "." + ext if ext else ""
    if max_len is None:
        return stem + mark + ext
    if ext and measure(stem[:1] + mark + ext) > max_len:
        # Not one character of the stem fits beside the "extension": it is most of
        # the name (a dot near its start), so it is cut like a stem.
        return fit("", stem + ext, mark, max_len, measure)
    return fit("", stem, mark + ext, max_len, measure)


def conflict_names(name: str, host: str, when: float, *, max_len: int | None = None,
                   measure: Measure = len) -> Iterator[str]:
    """Candidate names for a conflict copy, in the order to try them: the caller
    takes the first that is free here and on the server (the server says so by
    refusing a taken one)."""
    for n in range(1, MAX_TRIES + 1):
        yield conflict_name(name, host, when, n, max_len=max_len, measure=measure)
