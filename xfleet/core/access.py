"""Who may connect to a volume's NVMe-oF subsystem, as its zvol keeps it (docs/access.md).

The zvol's user property `xfleet:hosts` (core.identity.HOSTS_PROPERTY) is the durable copy of
its allowed hosts: what a target (re)start applies, and what a move carries. Its value is the
host NQNs, comma-separated and sorted; `none` (CLOSED) when no host may connect (ZFS keeps an
empty user property as "set to nothing", which the identity contract reads as "never
restricted"); absent, `-` or empty: the legacy export open to any host.
"""

from __future__ import annotations

from collections.abc import Iterable

CLOSED = "none"
MAX_VALUE = 8191  # ZFS refuses a user property value of ZAP_MAXVALUELEN (8192) bytes or more


def hosts_value(hosts: Iterable[str]) -> str:
    """The property's value for `hosts` (sorted, each once; CLOSED for none)."""
    return ",".join(sorted(set(hosts))) or CLOSED


def parse_hosts_value(value: str | None) -> tuple[str, ...] | None:
    """The property's value -> the allowed host NQNs, or None: any host (never restricted)."""
    text = (value or "").strip()
    if text in ("", "-"):
        return None
    if text == CLOSED:
        return ()
    return tuple(sorted({h for h in text.split(",") if h}))
