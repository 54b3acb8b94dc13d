"""Policy files: a YAML file of one top-level key holding an ordered list of named entries, each
with an optional `match` on volumes (the compression policy's `rules:`, the snapshot policy's
`policies:`; docs/compression.md, docs/snapshots.md).

What every such file shares lives here, so that each kind of policy only says what one of its
entries is:

- `PolicyFile`, the loader's base: reads the file, composes the YAML with line numbers
  (xfleet.core.yamlsrc), and checks the shape (the single top-level key, a non-empty list,
  names used once, the catch-all last), every error a `PolicyError` naming file:line. A
  subclass sets the wording (`kind`, `key`, `noun`, ...) and parses one entry in `entry()`,
  with the helpers `body()` (a mapping of known keys) and `match()`.
- `MATCH_KEYS` and `match_sql`: the `match` keys, and a parsed `match` as an SQL condition over
  a mirror `datasets` row, so a policy over a million rows is one query.

The first entry whose `match` takes a volume is the volume's; an entry with no `match` takes
every volume, so it must come last.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import yaml

from xfleet.core.errors import UsageError, XfleetError
from xfleet.core.units import parse_size
from xfleet.core.yamlsrc import Val, convert, plain, shown, suggest

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory


class PolicyError(XfleetError):
    """A policy file is invalid; `where` is file:line."""

    exit_code = 2


MATCH_KEYS: dict[str, str] = {
    "labels": "a mapping of node label names to values (inventory labels), all must match",
    "node": "a node name or a list of them",
    "pool": "a pool name or a list of them",
    "name": "a glob on the volume name (e.g. 'tank/t00*/*') or a list of globs",
    "tenant": "a tenant name or a list of them",
    "properties": "a mapping of ZFS user properties (mirrored ones) to values",
    "volsize": "a size condition like '>=100G' (also used, referenced, logicalused, "
    "logicalreferenced)",
    "used": "a size condition like '>10G'",
    "referenced": "a size condition like '>10G'",
    "logicalused": "a size condition like '>10G'",
    "logicalreferenced": "a size condition like '>10G'",
}
SIZE_KEYS = ("volsize", "used", "referenced", "logicalused", "logicalreferenced")
_COND = re.compile(r"^\s*(>=|<=|!=|=|>|<)?\s*([0-9][0-9.]*\s*[A-Za-z]*)\s*\Z")


class Entry(Protocol):
    """What `PolicyFile` needs of a parsed entry (a compression rule, a snapshot policy)."""

    name: str
    line: int
    match: dict[str, Any]


E = TypeVar("E", bound=Entry)


class PolicyFile(Generic[E]):
    """The loader of one kind of policy file; `load()` and `parse()` give its entries in order.

    A subclass sets the class attributes below (they are the user-visible wording) and
    implements `entry()`."""

    error: ClassVar[type[PolicyError]] = PolicyError
    kind: ClassVar[str]          # "compression policy": "<kind> FILE does not exist"
    missing_hint: ClassVar[str]  # the hint when the file does not exist
    key: ClassVar[str]           # the single top-level key: "rules"
    shape: ClassVar[str]         # the error when the file is not a mapping with that key
    shape_hint: ClassVar[str]
    noun: ClassVar[str]          # what one entry is called: "rule"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)

    def err(self, line: int, msg: str, hint: str | None = None) -> PolicyError:
        """The error to raise for a problem at `line` of the file."""
        return self.error(msg, where=f"{self.file}:{line}", hint=hint)

    def entry(self, i: int, item: Val) -> E:
        """Entry `i` (from 0) of the list, as written at `item`."""
        raise NotImplementedError

    def load(self) -> list[E]:
        """The file's entries; raises `error` if it cannot be read or is invalid."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise self.error(f"{self.kind} {self.file} does not exist", where=self.file,
                             hint=self.missing_hint) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot read {self.file}: {exc}", where=self.file) from None
        return self.parse(text)

    def parse(self, text: str) -> list[E]:
        """The entries of `text`, the file's content."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            root = convert(node, self.file, yaml.constructor.SafeConstructor()) \
                if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise self.err(mark.line + 1 if mark else 1,
                           f"YAML syntax error: {exc.problem or 'malformed YAML'}",
                           hint="check indentation and quoting near this line") from None
        except yaml.YAMLError as exc:
            raise self.err(1, f"YAML error: {exc}") from None
        except XfleetError as exc:  # duplicate keys and the like, from the shared loader
            raise self.error(exc.message, where=exc.where, hint=exc.hint) from None
        if not isinstance(root, dict) or self.key not in root:
            raise self.err(1, self.shape, hint=self.shape_hint)
        for k, v in root.items():
            if k != self.key:
                raise self.err(v.at, f"unknown top-level key {k!r}", hint=suggest(k, [self.key]))
        items = root[self.key]
        if not isinstance(items.value, list) or not items.value:
            raise self.err(items.line, f"{self.key} must be a non-empty list, got "
                           f"{shown(items.value)}")
        out: list[E] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items.value):
            e = self.entry(i, item)
            if e.name in seen:
                raise self.err(item.line, f"{self.noun} name {e.name!r} is used twice (first "
                               f"at line {seen[e.name]})", hint=f"{self.noun} names must be unique")
            seen[e.name] = item.line
            out.append(e)
        for e, later in zip(out, out[1:], strict=False):
            if not e.match:
                raise self.err(later.line, f"{self.noun} {later.name!r} can never match: "
                               f"{self.noun} {e.name!r} (line {e.line}) has no 'match' and "
                               "takes every volume", hint=f"put the catch-all {self.noun} last")
        return out

    def body(self, i: int, item: Val, keys: Sequence[str], wants: str) -> dict[str, Val]:
        """Entry `i`'s mapping, every key one of `keys`; `wants` says what it must have."""
        if not isinstance(item.value, dict):
            raise self.err(item.line, f"{self.noun} {i + 1} must be a mapping with {wants}, "
                           f"got {shown(item.value)}")
        body: dict[str, Val] = item.value
        for k, v in body.items():
            if k not in keys:
                raise self.err(v.at, f"unknown key {k!r} in {self.noun} {i + 1}",
                               hint=suggest(k, tuple(keys)))
        return body

    def match(self, name: str, mv: Val | None) -> dict[str, Any]:
        """The `match` of the entry named `name` (`mv`, None if it has none), parsed for
        `match_sql`: {} takes every volume."""
        if mv is None:
            return {}
        if not isinstance(mv.value, dict):
            raise self.err(mv.line, f"{self.noun} {name!r}: match must be a mapping, got "
                           f"{shown(mv.value)}", hint=f"keys: {', '.join(MATCH_KEYS)}")
        return {k: self._match(name, k, v) for k, v in mv.value.items()}

    # The errors about one match key name the entry by its file's noun ("rule 'x'",
    # "policy 'x'"), as every other error of the file does.

    def _strings(self, rule: str, key: str, v: Val) -> list[str]:
        raw = v.value if isinstance(v.value, list) else [v]
        out = []
        for x in raw:
            xv = x.value
            if isinstance(xv, (dict, list)) or xv is None or isinstance(xv, bool):
                raise self.err(x.line, f"{self.noun} {rule!r}: {key} must be "
                               f"{MATCH_KEYS[key]}, got {shown(xv)}")
            out.append(str(xv))
        if not out:
            raise self.err(v.line, f"{self.noun} {rule!r}: {key} is an empty list")
        return out

    def _match(self, rule: str, key: str, v: Val) -> Any:
        if key not in MATCH_KEYS:
            raise self.err(v.at, f"{self.noun} {rule!r}: unknown match key {key!r}",
                           hint=suggest(key, tuple(MATCH_KEYS)))
        if key in ("labels", "properties"):
            return self._mapping(rule, key, v)
        if key in SIZE_KEYS:
            return self._sizes(rule, key, v)
        vals = self._strings(rule, key, v)
        if key == "name":
            for g in vals:
                if any(c in g for c in "\n\x00"):
                    raise self.err(v.line, f"{self.noun} {rule!r}: name glob {g!r} is not valid")
        return vals

    def _mapping(self, rule: str, key: str, v: Val) -> dict[str, str]:
        if not isinstance(v.value, dict) or not v.value:
            raise self.err(v.line, f"{self.noun} {rule!r}: {key} must be {MATCH_KEYS[key]}, got "
                           f"{shown(v.value)}")
        out: dict[str, str] = {}
        for k, x in v.value.items():
            if isinstance(x.value, (dict, list)) or x.value is None:
                raise self.err(x.line, f"{self.noun} {rule!r}: {key}.{k} must be a plain value, "
                               f"got {shown(x.value)}")
            if key == "properties" and ":" not in k:
                raise self.err(x.at, f"{self.noun} {rule!r}: {k!r} is not a user property",
                               hint="user properties look like 'module:name', e.g. "
                               "xfleet:tier (and must be mirrored: inventory "
                               "user_properties)")
            if key == "labels" and '"' in k:
                raise self.err(x.at, f"{self.noun} {rule!r}: label names may not contain '\"'")
            if key == "properties" and '"' in k:
                raise self.err(x.at, f"{self.noun} {rule!r}: property names may not contain '\"'")
            val = plain(x)
            out[k] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    def _sizes(self, rule: str, key: str, v: Val) -> list[tuple[str, int]]:
        items = v.value if isinstance(v.value, list) else [v]
        conds = []
        for x in items:
            text = str(x.value) if isinstance(x.value, (str, int)) else ""
            m = _COND.match(text)
            size = None
            if m:
                try:
                    size = parse_size(m.group(2).replace(" ", ""))
                except (UsageError, ValueError):
                    size = None
            if m is None or size is None:
                raise self.err(x.line, f"{self.noun} {rule!r}: {key} {shown(x.value)} is not a "
                               "size condition",
                               hint="write e.g. '>=100G', '<1T' or '512M' (means =)")
            conds.append((m.group(1) or "=", size))
        return conds


def _in(col: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{col} IN ({', '.join('?' for _ in values)})", list(values)


def match_sql(m: dict[str, Any], inventory: Inventory | None,
              tenant_property: str) -> tuple[str, list[Any]]:
    """A `match` (parsed by `PolicyFile.match`) as an SQL condition over a `datasets` row, and
    its parameters. Labels are the inventory's, or without one as the last sync recorded
    them."""
    clauses: list[str] = []
    params: list[Any] = []
    if "labels" in m:
        want: dict[str, str] = m["labels"]
        if inventory is None:
            for k, v in want.items():  # labels as the last sync recorded them
                clauses.append("node IN (SELECT name FROM nodes WHERE json_extract(labels, ?) = ?)")
                params.extend([f'$."{k}"', v])
        else:
            nodes = [h.name for h in inventory.hosts.values()
                     if all(h.labels.get(k) == v for k, v in want.items())]
            if not nodes:
                clauses.append("FALSE")
            else:
                c, p = _in("node", nodes)
                clauses.append(c)
                params.extend(p)
    for key, col in (("node", "node"), ("pool", "pool"), ("tenant", "tenant")):
        if key in m:
            c, p = _in(col, m[key])
            clauses.append(c)
            params.extend(p)
    if "name" in m:
        globs = m["name"]
        clauses.append("(" + " OR ".join("glob(?, name)" for _ in globs) + ")")
        params.extend(globs)
    for prop, val in m.get("properties", {}).items():
        if prop == tenant_property:
            clauses.append("tenant = ?")
            params.append(val)
        else:
            clauses.append("json_extract(user_properties, ?) = ?")
            params.extend([f'$."{prop}"', val])
    for key in SIZE_KEYS:
        for op, size in m.get(key, ()):
            clauses.append(f"{key} {op} ?")
            params.append(size)
    return ("(" + " AND ".join(clauses) + ")" if clauses else "TRUE"), params
