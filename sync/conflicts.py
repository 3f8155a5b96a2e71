"""Conflict copies: recognisable names, never a copy of a copy. Pure."""

from __future__ import annotations

import re
import time
from typing import Iterator

_CONFLICT_SUFFIX = re.compile(r" \(conflict [^()]* \d{4}-\d\d-\d\d \d{6}(?: \d+)?\)$")
MAX_TRIES = 99


def conflict_name(name: str, host: str, when: float, n: int = 1) -> str:
    """`report.odt` -> `report (conflict HOST 2026-11-21 153012).odt`. A conflict
    copy in conflict again gets a new copy of the original name, never a copy of
    the copy; `n` > 1 tells apart copies made within the same second."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    stem = _CONFLICT_SUFFIX.sub("", stem)
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    if n > 1:
        stamp += f" {n}"
    return f"{stem} (conflict {host} {stamp}){'.' + ext if ext else ''}"


def conflict_names(name: str, host: str, when: float) -> Iterator[str]:
    """Candidate names for a conflict copy, in the order to try them: the caller
    takes the first that is free here and on the server (the server says so by
    refusing a taken one)."""
    for n in range(1, MAX_TRIES + 1):
        yield conflict_name(name, host, when, n)
