"""YAML with line numbers: every mapping value and list item keeps the line it came from, so
the inventory, compression policies and playbooks all report errors as file:line."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

import yaml

from xfleet.core.errors import InventoryError


@dataclass
class Val:
    """A value from the file, with the line of the value and the line of its key."""

    value: Any
    line: int
    key_line: int = 0

    @property
    def at(self) -> int:
        """The line to point at for a problem with this entry as a whole (its key)."""
        return self.key_line or self.line


MERGE_TAG = "tag:yaml.org,2002:merge"


def convert(node: yaml.Node, file: str, constructor: yaml.constructor.SafeConstructor) -> Any:
    """A composed YAML node to plain Python, with every mapping value and list item wrapped in
    Val(line). YAML merge keys (`<<: *defaults`) are applied; explicit keys win."""
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Val] = {}
        merged: dict[str, Val] = {}
        for k, v in node.value:
            if k.tag == MERGE_TAG:
                sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                for src in sources:
                    sub = convert(src, file, constructor)
                    if not isinstance(sub, dict):
                        raise InventoryError(
                            "'<<' must merge a mapping", where=f"{file}:{k.start_mark.line + 1}"
                        )
                    for sk, sv in sub.items():
                        merged.setdefault(sk, sv)
                continue
            key = convert(k, file, constructor)
            if not isinstance(key, str):
                raise InventoryError(
                    f"mapping key {key!r} is not a string",
                    where=f"{file}:{k.start_mark.line + 1}",
                    hint="quote it if it is meant as a name",
                )
            if key in out:
                raise InventoryError(
                    f"duplicate key {key!r} (first at line {out[key].at})",
                    where=f"{file}:{k.start_mark.line + 1}",
                    hint="each key may appear once per mapping",
                )
            out[key] = Val(
                convert(v, file, constructor), v.start_mark.line + 1, k.start_mark.line + 1
            )
        for mk, mv in merged.items():
            out.setdefault(mk, mv)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [Val(convert(v, file, constructor), v.start_mark.line + 1) for v in node.value]
    if isinstance(node, yaml.ScalarNode):
        value = constructor.construct_object(node, deep=True)
        if isinstance(value, float) and not math.isfinite(value):
            raise InventoryError(
                f"{node.value!r} is not a finite number",
                where=f"{file}:{node.start_mark.line + 1}",
                hint="write a number (quote it if it is meant as text)")
        if isinstance(value, int) and not isinstance(value, bool) and \
                not -(2**63) <= value < 2**63:
            raise InventoryError(
                f"{node.value[:40]!r} is too large a number (64-bit integers at most)",
                where=f"{file}:{node.start_mark.line + 1}",
                hint="write a smaller number (quote it if it is meant as text)")
        return value
    return None


def plain(v: Any) -> Any:
    if isinstance(v, Val):
        return plain(v.value)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def suggest(key: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def typename(v: Any) -> str:
    if v is None:
        return "nothing"
    return {list: "a list", dict: "a mapping", str: "a string", int: "a number",
            float: "a number", bool: "a boolean"}.get(type(v), type(v).__name__)


def shown(v: Any) -> str:
    """A value as the user wrote it, for error messages."""
    v = plain(v)
    if isinstance(v, (dict, list)) or v is None:
        return typename(v)
    return repr(v)
