"""ZFS command builders and pure parsers for their `-Hp` output.

Builders return argument lists (never shell strings); the transport quotes them in one place.
Parsers are pure functions from lines of text to typed records, tested on output captured from
real OpenZFS (tests/fixtures/real/).
"""

from __future__ import annotations

import calendar
import json
import re
import time
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


# A vdev's state as `zpool status` prints it (AVAIL and INUSE: spares).
VDEV_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "AVAIL",
               "INUSE", "SPLIT", "SUSPENDED", "UNKNOWN")
# A config line: the name (which may hold spaces and tabs: the longest prefix that leaves a
# state), the state, the three counters (not for spares), then a note such as
# "(resilvering)" or "too many errors".
_VDEV_LINE = re.compile(
    rf"^(?P<name>.*\S)\s+(?P<state>{'|'.join(VDEV_STATES)})"
    r"(?:\s+(?P<read>\S+)\s+(?P<write>\S+)\s+(?P<cksum>\S+))?(?:\s+(?P<note>.*?))?\s*$")
_STATUS_KEYS = frozenset({"pool", "id", "state", "status", "action", "see", "scan", "config",
                          "errors", "remove", "checkpoint", "expand"})


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def parse_status(text: str) -> list[PoolStatus]:
    """Parse `zpool status -p` output (one or more pools). A vdev name may hold spaces and
    tabs (a file vdev's path); one with a line break comes back whole too (the break splits
    its config line in two: a name-only line, then a line that does not start with a tab)."""
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
        if m and not raw.startswith("\t") and m.group(1) in _STATUS_KEYS:
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
            torn = not raw.startswith("\t")  # the rest of a name holding a line break
            stripped = raw[1:] if raw.startswith("\t") else raw
            indent = len(stripped) - len(stripped.lstrip(" "))
            body = stripped.strip(" ")
            if body.split()[:2] == ["NAME", "STATE"]:
                continue
            line = _VDEV_LINE.match(body)
            name = line.group("name") if line else body.strip()
            state = line.group("state") if line else ""
            if torn and vdevs and not vdevs[-1].state:
                prev = vdevs.pop()
                name, depth = f"{prev.name}\n{name}", prev.depth
            else:
                if base_indent is None:
                    base_indent = indent
                depth = (indent - base_indent) // 2
            vdevs.append(
                VdevStatus(
                    name=name,
                    state=state,
                    read=_count(line.group("read")) if line else None,
                    write=_count(line.group("write")) if line else None,
                    cksum=_count(line.group("cksum")) if line else None,
                    depth=depth,
                )
            )
            continue
        if key and raw.startswith("\t") and raw.strip() and key in cur:
            cur[key] = (cur[key] + " " + raw.strip()).strip()
    flush()
    return pools


# ---------------------------------------------------------------------------------------------
# pool health: `zpool status -j --json-int` (OpenZFS 2.3), else the text form
#
# JSON is read first: every name arrives quoted (a file vdev's path may hold any byte). The
# text form is the fallback for a node whose zpool has no -j (older OpenZFS), and for output
# ZFS's JSON printer cuts short (it stops, and exits 0, at a vdev path that is not UTF-8).

# The headings under which `zpool status` lists the vdevs of the other allocation classes,
# beside the pool's root vdev: the JSON key -> the text heading.
CLASS_HEADINGS: dict[str, str] = {"dedup": "dedup", "special": "special", "logs": "logs",
                                  "l2cache": "cache", "spares": "spares"}
_HEADINGS = frozenset(CLASS_HEADINGS.values())
# An interior vdev's name is its type, a dash and its index (raidz and draid add their
# layout: raidz2-0, draid1:2d:6c:0s-0).
_INTERIOR = re.compile(r"^(mirror|raidz|draid|replacing|spare|indirect)(?:\d[^-]*)?-\d+\Z")
_SCAN_DATE = "%a %b %d %H:%M:%S %Y"


def zpool_status_json(pools: Sequence[str] = ()) -> list[str]:
    """`zpool status -j --json-int [POOL...]`: every pool's health as one JSON document,
    numbers as numbers (sizes in bytes, times in unix seconds)."""
    return ["zpool", "status", "-j", "--json-int", *map(validate_pool, pools)]


def status_json_unsupported(stderr: str) -> bool:
    """Whether a failed `zpool status -j --json-int` says this zpool has no such option:
    OpenZFS before 2.3 prints "invalid option 'j'", then its usage text (2.3 says "invalid
    option" of a long option it does not know too, naming it '\\0':
    tests/fixtures/real/zpool_status_bad_option.txt)."""
    first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
    return first.startswith("invalid option ")


# Classes of `zpool events` after which a pool's health may read otherwise: error reports,
# a vdev's state change or removal (resource.fs.zfs.*), a scrub or resilver starting,
# pausing or ending, a vdev attached, onlined, cleared (`zpool clear`) or removed.
HEALTH_EVENT_PREFIXES = ("ereport.", "resource.fs.zfs.", "sysevent.fs.zfs.scrub_",
                         "sysevent.fs.zfs.resilver_", "sysevent.fs.zfs.errorscrub_",
                         "sysevent.fs.zfs.vdev_")


def health_event(cls: str) -> bool:
    """Whether an event of class `cls` may change what `zpool status` shows."""
    return cls.startswith(HEALTH_EVENT_PREFIXES)


@dataclass(frozen=True, slots=True)
class VdevHealth:
    """One node of a pool's vdev tree, depth first: the root vdev (position 0), its children,
    then each class heading (`logs`, `cache`, `spares`, `special`, `dedup`: depth 0, no
    parent, type, state or counters) with its vdevs."""

    position: int
    parent: int | None
    depth: int
    name: str
    vdev_type: str | None  # root, mirror, raidz, disk, file, ...; None: a heading, or unknown
    path: str | None
    state: str | None
    read_errors: int | None
    write_errors: int | None
    checksum_errors: int | None
    slow_ios: int | None
    leaf: bool = False  # a device or file (no vdevs under it)


@dataclass(frozen=True, slots=True)
class PoolHealth:
    """One pool of `zpool status`: state, the explanation of a problem and what to do, the
    last or running scan, the error counters summed over the leaf vdevs, and the tree."""

    name: str
    state: str
    status: str | None
    action: str | None
    scan_function: str | None  # SCRUB, RESILVER, ...; None: never scanned
    scan_state: str | None  # SCANNING, PAUSED (a paused scrub), FINISHED, CANCELED
    scan_start: float | None
    scan_end: float | None  # None while the scan runs
    scan_errors: int | None
    read_errors: int
    write_errors: int
    checksum_errors: int
    data_errors: int | None  # "errors:" (JSON error_count); None: not said
    vdevs: tuple[VdevHealth, ...]

    @property
    def errors(self) -> int:
        """Read, write and checksum errors of the leaf vdevs, and data errors."""
        return (self.read_errors + self.write_errors + self.checksum_errors
                + (self.data_errors or 0))


def _text(value: Any) -> str | None:
    """A message of `zpool status` on one line (its continuation lines joined)."""
    return (" ".join(value.split()) or None) if isinstance(value, str) else None


def _int_field(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _pool_health(name: str, state: str, status: str | None, action: str | None,
                 scan: tuple[str | None, str | None, float | None, float | None, int | None],
                 data_errors: int | None, vdevs: list[VdevHealth]) -> PoolHealth:
    leaves = [v for v in vdevs if v.leaf]
    return PoolHealth(
        name=name, state=state, status=status, action=action,
        scan_function=scan[0], scan_state=scan[1], scan_start=scan[2], scan_end=scan[3],
        scan_errors=scan[4],
        read_errors=sum(v.read_errors or 0 for v in leaves),
        write_errors=sum(v.write_errors or 0 for v in leaves),
        checksum_errors=sum(v.checksum_errors or 0 for v in leaves),
        data_errors=data_errors, vdevs=tuple(vdevs))


def _json_vdevs(out: list[VdevHealth], children: Any, parent: int | None, depth: int,
                where: str) -> None:
    if not isinstance(children, dict):
        raise ParseError(f"unexpected zpool status -j output: {where}: vdevs is not an object")
    for key, v in children.items():
        if not isinstance(v, dict):
            raise ParseError(f"unexpected zpool status -j output: {where}: vdev {key!r}")
        below = v.get("vdevs")
        name = v.get("name", key)
        pos = len(out)
        out.append(VdevHealth(
            position=pos, parent=parent, depth=depth, name=str(name),
            vdev_type=v.get("vdev_type") if isinstance(v.get("vdev_type"), str) else None,
            path=v.get("path") if isinstance(v.get("path"), str) else None,
            state=v.get("state") if isinstance(v.get("state"), str) else None,
            read_errors=_int_field(v, "read_errors"),
            write_errors=_int_field(v, "write_errors"),
            checksum_errors=_int_field(v, "checksum_errors"),
            slow_ios=_int_field(v, "slow_ios"),
            leaf=not below))
        if below:
            _json_vdevs(out, below, pos, depth + 1, where)


def _json_scan(pool: dict[str, Any]) -> tuple[str | None, str | None, float | None,
                                               float | None, int | None]:
    scan = pool.get("scan_stats")
    if not isinstance(scan, dict):
        return None, None, None, None, None
    state = scan.get("state") if isinstance(scan.get("state"), str) else None
    if state == "SCANNING" and _int_field(scan, "scrub_pause"):
        state = "PAUSED"  # `zpool scrub -p`: "scrub paused since ..."
    start, end = _int_field(scan, "start_time"), _int_field(scan, "end_time")
    function = scan.get("function") if isinstance(scan.get("function"), str) else None
    return (function, state, float(start) if start else None,
            float(end) if end and state not in ("SCANNING", "PAUSED") else None,
            _int_field(scan, "errors"))


def parse_status_json(text: str) -> list[PoolHealth]:
    """`zpool status -j --json-int` output -> one record per pool, in ZFS's order. Raises
    ParseError for output that is not the whole document (ZFS cuts it short, exit 0, at a
    vdev path that is not UTF-8: the caller reads the text form instead)."""
    if not text.strip():
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"zpool status -j output is not a whole JSON document (cut short?): "
                         f"{exc}") from None
    pools = doc.get("pools") if isinstance(doc, dict) else None
    if not isinstance(pools, dict):
        raise ParseError("unexpected zpool status -j output: no \"pools\" object")
    out: list[PoolHealth] = []
    for key, pool in pools.items():
        if not isinstance(pool, dict):
            raise ParseError(f"unexpected zpool status -j output for pool {key!r}")
        name = str(pool.get("name", key))
        vdevs: list[VdevHealth] = []
        _json_vdevs(vdevs, pool.get("vdevs", {}), None, 0, name)
        for cls, heading in CLASS_HEADINGS.items():
            if cls not in pool:
                continue
            pos = len(vdevs)
            vdevs.append(VdevHealth(pos, None, 0, heading, None, None, None, None, None, None,
                                    None))
            _json_vdevs(vdevs, pool[cls], pos, 1, name)
        out.append(_pool_health(
            name, str(pool.get("state", "UNKNOWN")), _text(pool.get("status")),
            _text(pool.get("action")), _json_scan(pool), _int_field(pool, "error_count"),
            vdevs))
    return out


def _scan_time(text: str) -> float | None:
    """A date of the scan line (`Sun Dec  6 02:03:55 2026`, the node's local time, taken as
    UTC); None when it does not read as one (another locale)."""
    try:
        return float(calendar.timegm(time.strptime(" ".join(text.split()), _SCAN_DATE)))
    except ValueError:
        return None


_SCAN_DONE = re.compile(
    r"^(?P<fn>scrub repaired|resilvered|error scrub repaired)\b.*? in "
    r"(?:(?P<days>\d+) days? )?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d) with (?P<errors>\d+) "
    r"errors on (?P<end>.+?\d{4})\b")
_SCAN_OTHER = re.compile(
    r"^(?P<fn>scrub|resilver|error scrub) (?P<what>in progress since|paused since|canceled on) "
    r"(?P<when>.+?\d{4})\b")


def _text_scan(scan: str | None) -> tuple[str | None, str | None, float | None, float | None,
                                          int | None]:
    """The scan line of `zpool status` -> (function, state, start, end, errors)."""
    if not scan:
        return None, None, None, None, None
    done = _SCAN_DONE.match(scan)
    if done:
        fn = {"scrub repaired": "SCRUB", "resilvered": "RESILVER",
              "error scrub repaired": "ERRORSCRUB"}[done.group("fn")]
        end = _scan_time(done.group("end"))
        took = (int(done.group("days") or 0) * 86400 + int(done.group("h")) * 3600
                + int(done.group("m")) * 60 + int(done.group("s")))
        return (fn, "FINISHED", end - took if end is not None else None, end,
                int(done.group("errors")))
    other = _SCAN_OTHER.match(scan)
    if other:
        fn = other.group("fn").replace(" ", "").upper()
        what = other.group("what")
        when = _scan_time(other.group("when"))
        if what == "canceled on":
            return fn, "CANCELED", None, when, None
        if what == "paused since":
            started = re.search(r"started on (.+?\d{4})\b", scan)
            return fn, "PAUSED", _scan_time(started.group(1)) if started else None, None, None
        return fn, "SCANNING", when, None, None
    return None, None, None, None, None


def _text_data_errors(errors: str | None) -> int | None:
    if errors is None:
        return None
    if errors.startswith("No known data errors"):
        return 0
    m = re.match(r"^(\d+) data errors?\b", errors)
    return int(m.group(1)) if m else None


def _text_vdevs(vdevs: Sequence[VdevStatus]) -> list[VdevHealth]:
    out: list[VdevHealth] = []
    stack: list[tuple[int, int]] = []  # (depth, position) of the open ancestors
    for i, v in enumerate(vdevs):
        heading = v.depth == 0 and not v.state and v.name in _HEADINGS
        while stack and stack[-1][0] >= v.depth:
            stack.pop()
        parent = stack[-1][1] if stack and not heading else None
        below = i + 1 < len(vdevs) and vdevs[i + 1].depth > v.depth
        m = _INTERIOR.match(v.name)
        vtype = None if heading else "root" if i == 0 else m.group(1) if m else None
        out.append(VdevHealth(
            position=i, parent=parent, depth=v.depth, name=v.name, vdev_type=vtype,
            path=v.name if not below and not heading and v.name.startswith("/") else None,
            state=v.state or None, read_errors=v.read, write_errors=v.write,
            checksum_errors=v.cksum, slow_ios=None, leaf=not below and not heading))
        stack.append((v.depth, i))
    return out


def parse_status_text(text: str) -> list[PoolHealth]:
    """`zpool status -p` output -> the records parse_status_json makes of `-j` output, as far
    as the text says: scan times from the scan line's dates (None when they do not read),
    no slow I/Os, no vdev types but the root's and the interior vdevs' (mirror-0 ...), a
    leaf's path only when its name is one."""
    return [
        _pool_health(st.name, st.state, _text(st.status), _text(st.action), _text_scan(st.scan),
                     _text_data_errors(st.errors), _text_vdevs(st.vdevs))
        for st in parse_status(text)
    ]


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
