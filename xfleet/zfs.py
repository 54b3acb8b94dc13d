"""ZFS command builders and pure parsers for their `-Hp` output.

Builders return argument lists (never shell strings); the transport quotes them in one place.
Parsers are pure functions from lines of text to typed records, tested on output captured from
real OpenZFS (tests/fixtures/real/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from xfleet.errors import XfleetError
from xfleet.names import pool_of, validate_dataset, validate_pool

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
