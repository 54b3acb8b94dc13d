"""ZFS command builders and pure parsers for their `-Hp` output.

Builders return argument lists (never shell strings); the transport quotes them in one place.
Parsers are pure functions from lines of text to typed records, tested on output captured from
real OpenZFS (tests/fixtures/real/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet.core.errors import XfleetError
from xfleet.core.names import pool_of, validate_dataset, validate_pool

# Dataset columns fetched by a full sync, in this order, before any user properties.
# Each is a ZFS property name, kept as-is in the mirror's `datasets` table.
DATASET_COLUMNS: tuple[str, ...] = (
    "name",
    "type",
    "guid",
    "createtxg",
    "origin",
    "creation",
    "volsize",
    "volblocksize",
    "used",
    "referenced",
    "logicalused",
    "logicalreferenced",
    "usedbysnapshots",
    "usedbyrefreservation",
    "refreservation",
    "written",
    "compression",
    "compressratio",
    "refcompressratio",
)

# Columns whose `-p` value is an integer (bytes, counts, seconds).
INT_COLUMNS = frozenset(
    {
        "createtxg",
        "creation",
        "volsize",
        "volblocksize",
        "used",
        "referenced",
        "logicalused",
        "logicalreferenced",
        "usedbysnapshots",
        "usedbyrefreservation",
        "refreservation",
        "written",
    }
)
RATIO_COLUMNS = frozenset({"compressratio", "refcompressratio"})
# guid is a 64-bit unsigned integer: it does not fit SQLite's signed INTEGER, so it stays text.
TEXT_COLUMNS = frozenset({"name", "type", "guid", "origin", "compression"})

# The columns that keep `zfs list` on its fast path (no property/space gathering per dataset).
FAST_COLUMNS: tuple[str, ...] = ("name", "guid", "createtxg", "origin")

POOL_COLUMNS: tuple[str, ...] = (
    "name",
    "guid",
    "size",
    "allocated",
    "free",
    "health",
    "ashift",
    "fragmentation",
    "capacity",
    "dedupratio",
)
POOL_INT_COLUMNS = frozenset({"size", "allocated", "free", "ashift", "fragmentation", "capacity"})

_USER_PROP = re.compile(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]+\Z")


class ParseError(XfleetError, ValueError):
    """Output that does not have the shape we asked ZFS for."""


def validate_user_property(prop: str) -> str:
    if not _USER_PROP.match(prop) or len(prop) > 256:
        raise ParseError(
            f"invalid user property name {prop!r}: expected 'module:name' in lower case, "
            "e.g. 'xfleet:tenant'"
        )
    return prop


# ---------------------------------------------------------------------------------------------
# builders


def zfs_list(
    roots: Sequence[str] = (),
    *,
    columns: Sequence[str] = DATASET_COLUMNS,
    user_properties: Sequence[str] = (),
    types: str = "all",
    names: Sequence[str] = (),
) -> list[str]:
    """`zfs list -Hp -t all -o COLUMNS [-r ROOT...]`: every dataset (under the roots), one per
    line; or, with `names`, exactly those datasets, snapshots and bookmarks (no -r)."""
    for prop in user_properties:
        validate_user_property(prop)
    if roots and names:
        raise ValueError("zfs_list: roots (-r) or names, not both")
    argv = ["zfs", "list", "-H", "-p", "-t", types, "-o", ",".join([*columns, *user_properties])]
    if roots:
        argv.append("-r")
        argv.extend(validate_dataset(r, allow_snapshot=False) for r in roots)
    argv.extend(validate_dataset(n, allow_bookmark=True) for n in names)
    return argv


def zfs_get(names: Sequence[str], properties: Sequence[str] = ("all",)) -> list[str]:
    """`zfs get -Hp -o name,property,value,source PROPS NAME...`."""
    return [
        "zfs",
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value,source",
        ",".join(properties),
        *(validate_dataset(n) for n in names),
    ]


def zpool_list(pools: Sequence[str] = (), columns: Sequence[str] = POOL_COLUMNS) -> list[str]:
    return ["zpool", "list", "-H", "-p", "-o", ",".join(columns), *map(validate_pool, pools)]


def zpool_status(pools: Sequence[str] = ()) -> list[str]:
    return ["zpool", "status", "-p", *map(validate_pool, pools)]


# ---------------------------------------------------------------------------------------------
# parsers


def _value(col: str, raw: str) -> str | int | float | None:
    if raw == "-" or raw == "":
        return None
    if col in INT_COLUMNS or col in POOL_INT_COLUMNS:
        try:
            return int(raw)
        except ValueError as exc:
            raise ParseError(f"{col}: expected an integer, got {raw!r}") from exc
    if col in RATIO_COLUMNS or col == "dedupratio":
        return float(raw.rstrip("x"))
    return raw


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """One line of `zfs list -Hp -t all -o DATASET_COLUMNS,USERPROPS`."""

    name: str
    type: str
    guid: str | None
    createtxg: int | None
    origin: str | None
    creation: int | None
    volsize: int | None
    volblocksize: int | None
    used: int | None
    referenced: int | None
    logicalused: int | None
    logicalreferenced: int | None
    usedbysnapshots: int | None
    usedbyrefreservation: int | None
    refreservation: int | None
    written: int | None
    compression: str | None
    compressratio: float | None
    refcompressratio: float | None
    user_properties: dict[str, str] = field(default_factory=dict)

    @property
    def pool(self) -> str:
        return pool_of(self.name)


def parse_dataset_line(
    line: str,
    columns: Sequence[str] = DATASET_COLUMNS,
    user_properties: Sequence[str] = (),
) -> tuple[str | int | float | None, ...]:
    """One `zfs list -Hp` line to a tuple of typed values in `columns` + `user_properties` order.

    This is the hot path of a full sync: it returns a plain tuple, ready for `executemany`.
    """
    parts = line.rstrip("\n").split("\t")
    if len(parts) != len(columns) + len(user_properties):
        raise ParseError(
            f"expected {len(columns) + len(user_properties)} tab-separated fields, "
            f"got {len(parts)}: {line[:200]!r}"
        )
    out: list[str | int | float | None] = []
    for col, raw in zip(columns, parts, strict=False):
        out.append(_value(col, raw))
    for raw in parts[len(columns) :]:
        out.append(None if raw == "-" else raw)
    return tuple(out)


def parse_datasets(
    lines: Iterable[str], user_properties: Sequence[str] = ()
) -> Iterator[DatasetRecord]:
    """Typed records from `zfs list -Hp -t all -o DATASET_COLUMNS[,USERPROPS]` output."""
    n = len(DATASET_COLUMNS)
    for line in lines:
        if not line.strip():
            continue
        values = parse_dataset_line(line, DATASET_COLUMNS, user_properties)
        props = {
            p: v for p, v in zip(user_properties, values[n:], strict=True) if v is not None
        }
        yield DatasetRecord(*values[:n], props)  # type: ignore[arg-type,call-arg]


@dataclass(frozen=True, slots=True)
class PropertyRecord:
    """One line of `zfs get -Hp -o name,property,value,source`."""

    name: str
    property: str
    value: str | None
    source: str | None


def parse_get(lines: Iterable[str]) -> Iterator[PropertyRecord]:
    for line in lines:
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            raise ParseError(f"expected 4 tab-separated fields, got {len(parts)}: {line[:200]!r}")
        name, prop, value, source = parts
        yield PropertyRecord(
            name, prop, None if value == "-" else value, None if source == "-" else source
        )


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """One line of `zpool list -Hp -o POOL_COLUMNS`."""

    name: str
    guid: str | None
    size: int | None
    allocated: int | None
    free: int | None
    health: str | None
    ashift: int | None
    fragmentation: int | None
    capacity: int | None
    dedupratio: float | None


def parse_pools(lines: Iterable[str]) -> Iterator[PoolRecord]:
    for line in lines:
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != len(POOL_COLUMNS):
            raise ParseError(
                f"expected {len(POOL_COLUMNS)} tab-separated fields, got {len(parts)}: "
                f"{line[:200]!r}"
            )
        values = [_value(c, raw.rstrip("%")) for c, raw in zip(POOL_COLUMNS, parts, strict=True)]
        yield PoolRecord(*values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class VdevStatus:
    name: str
    state: str
    read: int | None
    write: int | None
    cksum: int | None
    depth: int


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """`zpool status -p` for one pool."""

    name: str
    state: str
    status: str | None
    action: str | None
    scan: str | None
    errors: str | None
    vdevs: tuple[VdevStatus, ...]

    @property
    def scan_in_progress(self) -> bool:
        return bool(self.scan and "in progress" in self.scan)


def parse_status(text: str) -> list[PoolStatus]:
    """Parse `zpool status -p` output (one or more pools)."""
    pools: list[PoolStatus] = []
    cur: dict[str, str] = {}
    vdevs: list[VdevStatus] = []
    key: str | None = None
    in_config = False
    base_indent: int | None = None

    def flush() -> None:
        if "pool" in cur:
            pools.append(
                PoolStatus(
                    name=cur["pool"],
                    state=cur.get("state", "UNKNOWN"),
                    status=cur.get("status"),
                    action=cur.get("action"),
                    scan=cur.get("scan"),
                    errors=cur.get("errors"),
                    vdevs=tuple(vdevs),
                )
            )

    for raw in text.splitlines():
        m = re.match(r"^\s*([a-z]+):\s?(.*)$", raw)
        if m and not raw.startswith("\t") and m.group(1) in {
            "pool", "id", "state", "status", "action", "see", "scan", "config", "errors",
            "remove", "checkpoint", "expand",
        }:
            k, v = m.group(1), m.group(2).strip()
            if k == "pool":
                flush()
                cur, vdevs, base_indent = {}, [], None
            in_config = k == "config"
            key = k
            if k != "config":
                cur[k] = v
            continue
        if in_config:
            if not raw.strip():
                continue
            stripped = raw.lstrip("\t")
            indent = len(stripped) - len(stripped.lstrip(" "))
            fields = stripped.split()
            if fields[:2] == ["NAME", "STATE"]:
                continue
            if base_indent is None:
                base_indent = indent
            nums: list[int | None] = []
            for f in fields[2:5]:
                nums.append(int(f) if f.isdigit() else None)
            while len(nums) < 3:
                nums.append(None)
            vdevs.append(
                VdevStatus(
                    name=fields[0],
                    state=fields[1] if len(fields) > 1 else "",
                    read=nums[0],
                    write=nums[1],
                    cksum=nums[2],
                    depth=(indent - base_indent) // 2,
                )
            )
            continue
        if key and raw.startswith("\t") and raw.strip() and key in cur:
            cur[key] = (cur[key] + " " + raw.strip()).strip()
    flush()
    return pools


# ---------------------------------------------------------------------------------------------
# user properties: `zfs get -j`, the one format in which any value survives
#
# ZFS lets a user property's value hold any character, tab and newline included, and prints
# it raw in `-H` output, where one hostile value would shift columns or forge whole lines.
# Full syncs therefore list native columns with `zfs list -H` (names and native values cannot
# hold a tab or a newline) and user properties with `zfs get -j` (JSON, every value quoted).

# Sources a full sync asks for: values set on the dataset itself; the rest is inherited,
# resolved by UserProperties.effective the way ZFS resolves it.
SET_SOURCES: tuple[str, ...] = ("local", "received")
# Sources a fetch of named datasets asks for: with "inherited", ZFS resolves the values.
EFFECTIVE_SOURCES: tuple[str, ...] = ("local", "received", "inherited")
USER_PROPERTY_TYPES = "filesystem,volume,snapshot"  # bookmarks have no user properties
# ZFS's JSON printer escapes by the locale's character set: in the C locale it stops at the
# first byte above 127. UTF-8 is asked for explicitly, whatever the node's default.
JSON_LOCALE: tuple[str, ...] = ("env", "LC_ALL=C.UTF-8")


def zfs_get_user_properties(
    properties: Sequence[str],
    names: Sequence[str] = (),
    *,
    recursive: bool = False,
    sources: Sequence[str] = SET_SOURCES,
) -> list[str]:
    """`zfs get -j -p -s SOURCES -t filesystem,volume,snapshot [-r] PROPS [NAME...]` (in the
    UTF-8 locale). Note: `zfs get -j` prints nothing at all when one NAME does not exist."""
    if not properties:
        raise ValueError("zfs_get_user_properties: no properties")
    for prop in properties:
        validate_user_property(prop)
    argv = [*JSON_LOCALE, "zfs", "get", "-j", "-p", "-s", ",".join(sources),
            "-t", USER_PROPERTY_TYPES]
    if recursive:
        argv.append("-r")
    argv.append(",".join(properties))
    argv.extend(validate_dataset(n) for n in names)
    return argv


def zfs_get_raw_value(prop: str, name: str) -> list[str]:
    """`zfs get -H -p -o source,value PROP NAME`: one property of one dataset, so the whole
    output is `SOURCE<tab>VALUE<newline>` whatever bytes VALUE holds (parse_raw_value)."""
    return ["zfs", "get", "-H", "-p", "-o", "source,value", validate_user_property(prop),
            validate_dataset(name)]


def parse_raw_value(stdout: str) -> tuple[str, str] | None:
    """(source, value) from zfs_get_raw_value's output; None when the property is not set
    (source '-')."""
    text = stdout[:-1] if stdout.endswith("\n") else stdout
    source, tab, value = text.partition("\t")
    if not tab:
        raise ParseError(f"unexpected zfs get -H -o source,value output: {stdout[:120]!r}")
    if source == "-":
        return None
    return source, value


@dataclass(frozen=True, slots=True)
class UserPropertyValue:
    """One property of one dataset in `zfs get -j` output."""

    name: str
    property: str
    value: str
    source: str  # local, received, inherited (lower case, as -H prints its first word)


class OutputCut(ParseError):
    """`zfs get -j` output that ends part-way through a dataset: ZFS's JSON printer stops,
    and still exits 0, at a value that is not valid UTF-8 (OpenZFS 2.3). The datasets before
    `name` were complete; `name` and every dataset after it are missing."""

    def __init__(self, name: str):
        super().__init__(f"zfs get -j output stops part-way through {name}: a value that is "
                         "not valid UTF-8")
        self.name = name


_JSON = json.JSONDecoder()
_WS = " \t\r\n"


class _JsonStream:
    """A JSON document arriving as lines, read value by value."""

    def __init__(self, pieces: Iterable[str]):
        self._pieces = iter(pieces)
        self._buf = ""
        self._pos = 0
        self.ended = False

    def _more(self) -> bool:
        if self.ended:
            return False
        for piece in self._pieces:
            if self._pos > 65536:  # drop what was read: memory stays about one value
                self._buf, self._pos = self._buf[self._pos:], 0
            self._buf += piece + "\n"
            return True
        self.ended = True
        return False

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the input)."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WS:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return ""

    def expect(self, char: str) -> None:
        got = self.peek()
        if got != char:
            raise ParseError(f"unexpected zfs get -j output: expected {char!r}, got "
                             f"{self._buf[self._pos:self._pos + 60]!r}")
        self._pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                val, end = _JSON.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue
                raise ParseError(f"unexpected zfs get -j output: {exc.msg} at "
                                 f"{self._buf[exc.pos:exc.pos + 60]!r}") from None
            self._pos = end
            return val

    def members(self) -> Iterator[str]:
        """The keys of an object; the caller reads each key's value before the next."""
        self.expect("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise ParseError(f"unexpected zfs get -j output: key {key!r} is not a string")
            self.expect(":")
            yield key
            if self.peek() == ",":
                self._pos += 1
                continue
            self.expect("}")
            return


def parse_get_json(pieces: Iterable[str]) -> Iterator[UserPropertyValue]:
    """`zfs get -j` output, as lines, -> one record per value, made as the document is read
    (one dataset's object at a time; ZFS prints the document on one line). Empty output
    yields nothing. Raises OutputCut when the output stops part-way through a dataset."""
    doc = _JsonStream(pieces)
    if doc.peek() == "":
        return
    for key in doc.members():
        if key != "datasets":
            doc.value()  # output_version
            continue
        for name in doc.members():
            try:
                entry = doc.value()
            except ParseError:
                if doc.ended:
                    raise OutputCut(name) from None
                raise
            props = entry.get("properties") if isinstance(entry, dict) else None
            if not isinstance(props, dict):
                raise ParseError(f"unexpected zfs get -j output for {name!r}: no properties")
            for prop, got in props.items():
                src = got.get("source") if isinstance(got, dict) else None
                if not isinstance(src, dict) or not isinstance(got.get("value"), str):
                    raise ParseError(f"unexpected zfs get -j output for {name!r} {prop}: "
                                     f"{str(got)[:120]}")
                yield UserPropertyValue(name, prop, got["value"],
                                        str(src.get("type", "-")).lower())
    if doc.peek() != "":
        raise ParseError("unexpected zfs get -j output: text after the JSON document")


class UserProperties:
    """A node's user property values as set on each dataset, resolved the way ZFS resolves
    them: a dataset without its own value inherits its parent's, a snapshot its dataset's;
    bookmarks have none. Holds only the datasets that have a value of their own (typically
    one per tenant filesystem or volume), never one entry per dataset."""

    def __init__(self) -> None:
        self._own: dict[str, dict[str, str]] = {}
        self._heads: dict[str, dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self._own)

    def add(self, rec: UserPropertyValue) -> None:
        self._own.setdefault(rec.name, {})[rec.property] = rec.value
        self._heads.clear()

    def effective(self, name: str) -> dict[str, str]:
        """The values `name` has. Datasets without values of their own get their parent's
        dict itself (the same object), so a caller may cache per dict while rows go by."""
        if "#" in name:
            return {}
        head, at, _ = name.partition("@")
        out = self._of(head)
        if at:
            own = self._own.get(name)
            if own:
                return {**out, **own}
        return out

    def _of(self, head: str) -> dict[str, str]:
        out = self._heads.get(head)
        if out is None:
            parent, slash, _ = head.rpartition("/")
            base = self._of(parent) if slash else {}
            own = self._own.get(head)
            out = {**base, **own} if own else base
            if len(self._heads) > 65536:
                self._heads.clear()
            self._heads[head] = out
        return out
