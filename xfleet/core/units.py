"""Human sizes as ZFS prints them (binary units: 1K = 1024) and parsing of them."""

from __future__ import annotations

import re
from fractions import Fraction

from xfleet.core.errors import UsageError

_UNITS = "KMGTPE"
_SIZE = re.compile(r"\A[ \t]*([0-9]{1,30}(?:\.[0-9]{1,30})?)[ \t]*([KMGTPE]?)(?:i?B)?[ \t]*\Z",
                   re.IGNORECASE)
MAX_SIZE = 2**63 - 1  # the largest size ZFS (and the mirror's 64-bit integers) can hold


def parse_size(text: str) -> int:
    """'10G', '1.5T', '512', '4KiB' -> bytes (binary units, as zfs uses), exactly (no float
    rounding); at most MAX_SIZE (8E)."""
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(
            f"{str(text)[:60]!r} is not a size",
            hint="use a number of bytes or a number with K, M, G, T, P (binary: 1K = 1024)",
        )
    number, unit = m.groups()
    mult = 1024 ** (_UNITS.index(unit.upper()) + 1) if unit else 1
    value = int(Fraction(number) * mult)
    if value > MAX_SIZE:
        raise UsageError(f"{str(text)[:60]!r} is larger than ZFS can hold (8E)",
                         hint="sizes go up to 8E (2^63 - 1 bytes)")
    return value


def format_size(n: int | float | None) -> str:
    """Bytes -> '1.50G' like `zfs list` (three significant digits)."""
    if n is None:
        return "-"
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)}B"
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if abs(value) >= 100:
                return f"{value:.0f}{unit}"
            if abs(value) >= 10:
                return f"{value:.1f}{unit}"
            return f"{value:.2f}{unit}"
    raise AssertionError("unreachable")


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
