"""Templates, variables and conditions.

Templates are `{{ name }}`, `{{ name.field }}`, `{{ name.0.field }}`: a string that is one
template keeps the value's type (a list stays a list), else values are interpolated. In SQL
(`bind`, `condition`) a template is a bound parameter, never SQL text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from xfleet.core.yamlsrc import Val
from xfleet.mirror.backend import ERRORS, Connection
from xfleet.playbook.model import PlaybookError, typename

TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
EXPRESSION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_:\-]+)*\Z")  # what {{ }} holds


def is_template(s: str) -> bool:
    return bool(TEMPLATE.search(s))


def refs(v: Any) -> Iterator[tuple[str, int]]:
    """(variable root, line) of every template in a Val tree."""
    if isinstance(v, Val):
        if isinstance(v.value, str):
            for m in TEMPLATE.finditer(v.value):
                yield m.group(1), v.line
        else:
            yield from refs(v.value)
    elif isinstance(v, dict):
        for x in v.values():
            yield from refs(x)
    elif isinstance(v, list):
        for x in v:
            yield from refs(x)


def lookup(variables: dict[str, Any], expr: str, where: str | None = None) -> Any:
    parts = expr.split(".")
    if parts[0] not in variables:
        raise PlaybookError(f"undefined variable {parts[0]!r}", where=where)
    v = variables[parts[0]]
    for part in parts[1:]:
        if isinstance(v, dict) and part in v:
            v = v[part]
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            raise PlaybookError(f"{{{{ {expr} }}}}: {part!r} is not in the value",
                                where=where, hint=f"the value is {typename(v)}"
                                + (f" with keys {', '.join(map(str, v))}"
                                   if isinstance(v, dict) else ""))
    return v


def render(v: Any, variables: dict[str, Any], where: str | None = None) -> Any:
    """A Val tree (or plain value) with templates replaced: a string that is exactly one
    template keeps the value's type."""
    if isinstance(v, Val):
        return render(v.value, variables, where=where.rsplit(":", 1)[0] + f":{v.line}"
                      if where else None)
    if isinstance(v, dict):
        return {k: render(x, variables, where) for k, x in v.items()}
    if isinstance(v, list):
        return [render(x, variables, where) for x in v]
    if isinstance(v, str):
        m = TEMPLATE.fullmatch(v.strip())
        if m:
            return lookup(variables, m.group(1), where)
        return TEMPLATE.sub(lambda m: _text(lookup(variables, m.group(1), where)), v)
    return v


def _text(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return ""
    return str(v)


def bind(sql: str, variables: dict[str, Any], where: str | None = None
         ) -> tuple[str, list[Any]]:
    """SQL text with each {{ }} replaced by a bound parameter (a list or mapping binds its
    length): values never become SQL text."""
    params: list[Any] = []

    def one(m: re.Match[str]) -> str:
        v = lookup(variables, m.group(1), where)
        params.append(len(v) if isinstance(v, (list, dict)) else v)
        return "?"

    return TEMPLATE.sub(one, sql), params


def condition(conn: Connection, expr: str, variables: dict[str, Any],
              where: str) -> bool:
    """An SQL expression (what both engines accept: docs/mirror.md) with {{ }} values bound as
    parameters, evaluated on the mirror: `{{ count }} > 0`, `{{ row.compression }} = 'off'`."""
    sql, params = bind(expr, variables, where)
    try:
        row = conn.execute(f"SELECT ({sql})", params).fetchone()
    except ERRORS as exc:
        raise PlaybookError(f"cannot evaluate {expr!r}: {exc}", where=where,
                            hint="an SQL expression; {{ }} values are bound parameters "
                            "(a list counts as its length)") from None
    return bool(row and row[0])
