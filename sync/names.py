"""Names within a server's length limit. Pure.

A server limits a name's length in its own unit: bytes of UTF-8 on a Linux folder,
UTF-16 code units on SMB. The store knows its unit and limit (`name_max`,
`name_len`); the names we make ourselves (conflict copies, temporary names) are
shortened here to fit. A Python string holds whole code points, so cutting it
never splits a UTF-8 sequence or a surrogate pair.
"""

from __future__ import annotations

import unicodedata
from typing import Callable

Measure = Callable[[str], int]


def utf8_bytes(name: str) -> int:
    """Length as a Linux file system counts it; an undecodable byte of a name read
    from the disk (os.fsdecode's surrogate escape) counts as the one byte it is."""
    try:
        return len(name.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(name.encode("utf-8", "surrogatepass"))


def utf16_units(name: str) -> int:
    """Length as SMB and NTFS count it: a character outside the BMP is two units."""
    return len(name.encode("utf-16-le", "surrogatepass")) // 2


def fit(head: str, middle: str, tail: str, max_len: int, measure: Measure) -> str:
    """head + the longest start of `middle` + tail that is at most `max_len` long.
    A combining mark is not left without its base character. When even head +
    tail is too long, that is returned (the server will refuse it)."""
    if measure(head + middle + tail) <= max_len:
        return head + middle + tail
    lo, hi = 0, len(middle)  # measure is monotone in the length kept: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(head + middle[:mid] + tail) <= max_len:
            lo = mid
        else:
            hi = mid - 1
    while 0 < lo < len(middle) and unicodedata.combining(middle[lo]):
        lo -= 1  # the cut fell inside a character as the user sees it
    return head + middle[:lo] + tail
