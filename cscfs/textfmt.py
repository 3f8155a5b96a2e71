"""How sizes read in messages: binary units, one decimal."""

from __future__ import annotations


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def count_text(n: int, noun: str) -> str:
    """'1 change', '2 changes'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
