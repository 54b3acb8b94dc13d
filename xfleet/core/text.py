"""Text from the fleet, made safe to show on a terminal.

Values a tenant or user chose (user properties above all: ZFS lets them hold any character)
reach the operator's terminal through tables, the TUI and messages. Written raw, an escape
sequence in one would retitle, clear or recolour that terminal, a newline would break a table's
rows, and a bidirectional override would make a value read as another. `printable` shows every
such character as an escape instead; JSON and CSV output keep values exact.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the invisible bidirectional and zero-width format characters
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with each control or invisible formatting character shown as an escape (`\\n`,
    `\\x1b`, `\\u202e`); everything else, non-ASCII letters included, as it is."""
    return _UNSAFE.sub(_escape, text)
