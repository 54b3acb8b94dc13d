"""Numbers and tables as zfs parses and prints them: sizes with units (`10G`), what zfs prints
without -p (`96K`, `1.50x`, dates), and its column-aligned tables."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([BKMGTPEZ]?)(?:B|iB)?$", re.IGNORECASE)

HEADERS = {"name": "NAME", "used": "USED", "available": "AVAIL", "referenced": "REFER",
           "mountpoint": "MOUNTPOINT", "compressratio": "RATIO",
           "refcompressratio": "REFRATIO", "compression": "COMPRESS",
           "usedbysnapshots": "USEDSNAP", "usedbydataset": "USEDDS",
           "usedbychildren": "USEDCHILD", "usedbyrefreservation": "USEDREFRESERV",
           "logicalused": "LUSED", "logicalreferenced": "LREFER",
           "refreservation": "REFRESERV", "volblocksize": "VOLBLOCK"}
SIZE_PROPS = frozenset({"used", "available", "referenced", "logicalused", "logicalreferenced",
                        "usedbysnapshots", "usedbydataset", "usedbychildren",
                        "usedbyrefreservation", "refreservation", "reservation", "quota",
                        "refquota", "volsize", "volblocksize", "written", "recordsize",
                        "size", "allocated", "free", "freeing", "leaked"})


def parse_size(text: str) -> int | None:
    """zfs_nicestrtonum: '10G', '1.5t', '4096', '16K' -> bytes; None when invalid."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    number, unit = m.groups()
    shift = "BKMGTPEZ".index(unit.upper()) * 10 if unit else 0
    if "." in number:
        return int(float(number) * (1 << shift))
    return int(number) << shift


def nicenum(n: int) -> str:
    """zfs_nicebytes: 0B, 512B, 96K, 1.50G, 12.3T (exact multiples without decimals)."""
    if n < 1024:
        return f"{n}B"
    index = 0
    v = n
    while v >= 1024 and index < 6:
        v //= 1024
        index += 1
    unit = " KMGTPE"[index]
    if n % (1 << (10 * index)) == 0:
        return f"{v}{unit}"
    value = n / (1 << (10 * index))
    for digits in (2, 1, 0):
        text = f"{value:.{digits}f}{unit}"
        if len(text) <= 5:
            return text
    return text


def human(prop: str, value: str) -> str:
    """What zfs prints without -p."""
    if value == "-" or not value:
        return value
    if prop in ("creation", "snapshots_changed"):
        return time.strftime("%a %b %e %k:%M %Y", time.localtime(int(value)))
    if prop in ("compressratio", "refcompressratio", "dedupratio"):
        return value + "x"
    if prop in ("refreservation", "reservation", "quota", "refquota") and value == "0":
        return "none"
    if prop in ("capacity", "fragmentation"):
        return value + "%"
    if prop in SIZE_PROPS and value.isdigit():
        return nicenum(int(value))
    return value


def table(header: list[str], rows: list[list[str]], right: set[int]) -> Iterator[str]:
    widths = [len(h) for h in header]
    for row in rows:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))

    def fmt(row: list[str]) -> str:
        cells = []
        for i, v in enumerate(row):
            last = i == len(row) - 1
            if i in right:
                cells.append(v.rjust(widths[i]))
            else:
                cells.append(v if last else v.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    yield fmt(header)
    for row in rows:
        yield fmt(row)
