"""Volume lifecycle operations: snapshot, clone, destroy, set, resize.

Every operation is planned first, from the mirror (plus, for a destroy, one read per node of
the snapshots' holds), then executed in batches per node, then the mirror is brought up to
date for exactly the names it touched (sync's own batched re-fetch, `zfs list NAME...`).

Batching (what the zfs command line allows):

- `zfs snapshot a@s b@s c@s ...`: one command per pool (a multi-name snapshot is one atomic
  transaction group per pool) and per `ARGV_BUDGET` bytes of names;
- `zfs set p=v q=w a b c ...`: one command per node, property set and `ARGV_BUDGET` of names;
  a resize groups the volumes by their new volsize;
- `zfs destroy ds@a,b,c`: the snapshots of one dataset in one command (a comma list); a
  volume or filesystem is one command each (`zfs destroy` takes one dataset);
- `zfs clone`: one command per clone (the command line takes one).

Refusals come before any command: a destroy whose targets have clones outside the set
(`clones="refuse"`, the default; `"destroy"` adds `-R`, `"promote"` promotes them first), held
snapshots and retired move sources (`*.xfleet-moved-*`, kept by moves.py with a hold) unless
`release=True`, volumes in an unfinished move; a shrinking resize; unknown, read-only or
malformed properties.
"""

from __future__ import annotations

import difflib
import heapq
import json
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from xfleet import mirror
from xfleet.core.errors import RemoteCommandError, UsageError, XfleetError
from xfleet.core.names import pool_of, validate_dataset
from xfleet.core.units import MAX_SIZE, parse_size
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims
from xfleet.mirror.backend import ERRORS, Connection, DatabaseError, Location, Row
from xfleet.mirror.store import inserted_id
from xfleet.ops.sync import refetch
from xfleet.remote.host import Host
from xfleet.remote.transport import Transport, quote_command

# Bytes of dataset names per command: far below the 128 KiB a single argument may have (over
# SSH the whole command line is one argument of the remote shell).
ARGV_BUDGET = 64 * 1024
CLONE_CHOICES = ("refuse", "destroy", "promote")
RETIRED_MARK = ".xfleet-moved-"  # moves.py renames a moved volume's source to VOL.xfleet-moved-ID


class LifecycleError(XfleetError):
    """An operation that xfleet refuses to do (and why)."""


# ---------------------------------------------------------------------------------------------
# properties


_ON_OFF = ("on", "off")
_COMPRESSION = re.compile(
    r"^(on|off|lz4|lzjb|zle|gzip|gzip-[1-9]|zstd|zstd-(1[0-9]|[1-9])|zstd-fast|"
    r"zstd-fast-([1-9]|[1-9]0|100|500|1000))\Z")
_CHECKSUM = ("on", "off", "fletcher2", "fletcher4", "sha256", "noparity", "sha512", "skein",
             "edonr", "blake3")
# property -> (types it applies to, allowed values or a value kind)
SETTABLE: dict[str, tuple[tuple[str, ...], Any]] = {
    "compression": (("volume", "filesystem"), _COMPRESSION),
    "checksum": (("volume", "filesystem"), _CHECKSUM),
    "sync": (("volume", "filesystem"), ("standard", "always", "disabled")),
    "logbias": (("volume", "filesystem"), ("latency", "throughput")),
    "primarycache": (("volume", "filesystem", "snapshot"), ("all", "none", "metadata")),
    "secondarycache": (("volume", "filesystem", "snapshot"), ("all", "none", "metadata")),
    "readonly": (("volume", "filesystem"), _ON_OFF),
    "volmode": (("volume", "filesystem"), ("default", "full", "geom", "dev", "none")),
    "snapdev": (("volume", "filesystem"), ("hidden", "visible")),
    "dedup": (("volume", "filesystem"), ("on", "off", "verify", "sha256", "sha256,verify",
                                         "sha512", "sha512,verify", "skein", "skein,verify",
                                         "edonr,verify", "blake3", "blake3,verify")),
    "copies": (("volume", "filesystem"), ("1", "2", "3")),
    "redundant_metadata": (("volume", "filesystem"), ("all", "most", "some", "none")),
    "refreservation": (("volume", "filesystem"), "size|none|auto"),
    "reservation": (("volume", "filesystem"), "size|none"),
    "quota": (("filesystem",), "size|none"),
    "refquota": (("filesystem",), "size|none"),
    "atime": (("filesystem",), _ON_OFF),
    "relatime": (("filesystem",), _ON_OFF),
    "canmount": (("filesystem",), ("on", "off", "noauto")),
    "recordsize": (("filesystem",), "power2:512-16M"),
    "snapdir": (("filesystem",), ("hidden", "visible", "disabled")),
    "keylocation": (("volume", "filesystem"), "text"),
}
READONLY = frozenset({
    "type", "creation", "used", "available", "referenced", "compressratio", "refcompressratio",
    "mounted", "origin", "guid", "createtxg", "logicalused", "logicalreferenced", "written",
    "usedbysnapshots", "usedbydataset", "usedbychildren", "usedbyrefreservation", "userrefs",
    "volblocksize", "clones", "defer_destroy", "objsetid", "encryption", "keyformat",
    "pbkdf2iters", "encryptionroot", "keystatus", "inconsistent", "receive_resume_token",
    "snapshots_changed", "version", "utf8only", "normalization", "casesensitivity", "redact_snaps",
    "filesystem_count", "snapshot_count", "snapshot_limit_reached",
})
_USER_PROP = re.compile(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]*\Z")
MAX_USER_VALUE = 8191  # ZFS_MAXPROPLEN - 1


def validate_properties(props: dict[str, Any], *, types: Iterable[str] = ("volume",),
                        where: str | None = None) -> dict[str, str]:
    """Check property assignments before anything runs; returns them with string values.
    User properties (`module:name`) take any value up to 8191 bytes."""
    out: dict[str, str] = {}
    kinds = set(types)
    for raw_key, raw_value in props.items():
        key = str(raw_key)  # values may come from YAML: true/false are on/off
        value = "on" if raw_value is True else "off" if raw_value is False else str(raw_value)
        if ":" in key:
            if not _USER_PROP.match(key) or len(key) > 256:
                raise UsageError(f"invalid user property name {key!r}", where=where,
                                 hint="user properties are MODULE:NAME in lower case, e.g. "
                                 "xfleet:tenant")
            if len(value.encode()) > MAX_USER_VALUE or "\n" in value or "\0" in value:
                raise UsageError(f"value of {key} is too long or has a newline", where=where)
            out[key] = value
            continue
        if key == "volsize":
            raise UsageError("volsize is changed by a resize, not by set", where=where,
                             hint="xfleet resize VOLUME --size SIZE (grow only)")
        if key in READONLY:
            raise UsageError(f"{key} is a read-only property", where=where,
                             hint="ZFS computes it; it cannot be set")
        if key not in SETTABLE:

            close = difflib.get_close_matches(key, list(SETTABLE), n=1)
            raise UsageError(f"unknown property {key!r}", where=where,
                             hint=(f"did you mean {close[0]!r}? " if close else "")
                             + "settable: " + ", ".join(sorted(SETTABLE))
                             + ", or a user property MODULE:NAME")
        applies, allowed = SETTABLE[key]
        wrong = sorted(kinds - set(applies))
        if wrong:
            raise UsageError(f"{key} does not apply to a {wrong[0]}", where=where,
                             hint=f"it applies to: {', '.join(applies)}")
        if not _value_ok(allowed, value):
            shown = allowed.pattern if isinstance(allowed, re.Pattern) else (
                ", ".join(allowed) if isinstance(allowed, tuple) else allowed)
            raise UsageError(f"{value!r} is not a valid value for {key}", where=where,
                             hint=f"valid: {shown}")
        out[key] = value
    return out


def _value_ok(allowed: Any, value: str) -> bool:
    if isinstance(allowed, re.Pattern):
        return bool(allowed.match(value))
    if isinstance(allowed, tuple):
        return value in allowed
    if allowed == "text":
        return bool(value) and "\n" not in value
    if allowed.startswith("size"):
        if value in allowed.split("|")[1:]:
            return True
        try:
            parse_size(value)
            return True
        except (UsageError, ValueError):
            return False
    if allowed.startswith("power2"):
        try:
            n = parse_size(value)
        except (UsageError, ValueError):
            return False
        return 512 <= n <= 16 << 20 and n & (n - 1) == 0
    return False


# ---------------------------------------------------------------------------------------------
# plans


@dataclass
class Command:
    node: str
    argv: list[str]
    what: str  # a short label: "snapshot 120 volumes"

    def line(self) -> str:

        return f"{self.node}: {quote_command(self.argv)}"


@dataclass
class LifecyclePlan:
    """What an operation would do: the commands in order, what it creates, changes and
    destroys, and what was skipped (already done: plans are idempotent)."""

    op: str
    commands: list[Command] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)  # (node, name)
    changed: list[tuple[str, str]] = field(default_factory=list)
    destroyed: list[tuple[str, str, str]] = field(default_factory=list)  # (node, name, type)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (node, name, why)
    refetch_trees: list[tuple[str, str]] = field(default_factory=list)  # promoted, etc.

    def nodes(self) -> list[str]:
        return sorted({c.node for c in self.commands})

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "commands": [{"node": c.node, "argv": c.argv, "what": c.what}
                         for c in self.commands],
            "created": [{"node": n, "name": x} for n, x in self.created],
            "changed": [{"node": n, "name": x} for n, x in self.changed],
            "destroyed": [{"node": n, "name": x, "type": t} for n, x, t in self.destroyed],
            "skipped": [{"node": n, "name": x, "why": w} for n, x, w in self.skipped],
        }


@dataclass
class Target:
    node: str
    name: str
    type: str
    volsize: int | None = None
    volblocksize: int | None = None
    origin: str | None = None


def targets_from_rows(rows: Iterable[dict[str, Any]]) -> list[Target]:
    return [Target(r["node"], r["name"], r["type"], r.get("volsize"), r.get("volblocksize"),
                   r.get("origin")) for r in rows]


def resolve(conn: Connection, names: Sequence[str], node: str | None = None,
            *, where: str | None = None) -> list[Target]:
    """Dataset names (optionally on one node) to mirror rows; an unknown or ambiguous name is
    an error."""
    out = []
    for name in names:
        validate_dataset(name)
        rows = conn.execute(
            "SELECT node, name, type, volsize, volblocksize, origin FROM datasets WHERE name = ?"
            + (" AND node = ?" if node else ""), (name, *([node] if node else []))).fetchall()
        if not rows:
            raise UsageError(f"{name} is not in the mirror" + (f" of {node}" if node else ""),
                             where=where, hint="check the name (xfleet ls), or xfleet sync")
        if len(rows) > 1:
            raise UsageError(f"{name} exists on several nodes: "
                             f"{', '.join(r['node'] for r in rows)}", where=where,
                             hint="pass the node (--node NODE)")
        out.append(targets_from_rows([dict(rows[0])])[0])
    return out


def resolve_optional(conn: Connection, name: str, node: str) -> Target | None:
    row = conn.execute("SELECT node, name, type, volsize, volblocksize, origin FROM datasets "
                       "WHERE node = ? AND name = ?", (node, name)).fetchone()
    return targets_from_rows([dict(row)])[0] if row else None


def _batches(names: Sequence[str], budget: int = ARGV_BUDGET) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for n in names:
        if batch and size + len(n) + 1 > budget:
            yield batch
            batch, size = [], 0
        batch.append(n)
        size += len(n) + 1
    if batch:
        yield batch


def _exists(conn: Connection, node: str, name: str) -> bool:
    return conn.execute("SELECT 1 FROM datasets WHERE node = ? AND name = ?",
                        (node, name)).fetchone() is not None


def _prop_args(props: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in sorted(props.items()):
        out += ["-o", f"{k}={v}"]
    return out


def plan_snapshot(conn: Connection, targets: Sequence[Target], snapname: str,
                  *, properties: dict[str, str] | None = None) -> LifecyclePlan:
    """`zfs snapshot` of every target, one command per (node, pool) and batch of names.
    Targets that already have the snapshot are skipped."""
    props = validate_properties(properties or {}, types=("snapshot",)) if properties else {}
    p = LifecyclePlan("snapshot")
    by_pool: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in targets:
        if t.type not in ("volume", "filesystem"):
            p.skipped.append((t.node, t.name, f"a {t.type} has no snapshots"))
            continue
        full = validate_dataset(f"{t.name}@{snapname}")
        if _exists(conn, t.node, full):
            p.skipped.append((t.node, full, "exists already"))
            continue
        by_pool[(t.node, pool_of(t.name))].append(full)
        p.created.append((t.node, full))
        p.changed.append((t.node, t.name))
    for (node, _pool), names in sorted(by_pool.items()):
        for batch in _batches(names):
            p.commands.append(Command(node, ["zfs", "snapshot", *_prop_args(props), *batch],
                                      f"snapshot {len(batch)} dataset(s)"))
    return p


def plan_clone(conn: Connection, source: Target, target: str, *,
               snapshot: str | None = None, properties: dict[str, str] | None = None,
               stamp: str | None = None) -> LifecyclePlan:
    """A branch of `source` named `target` on the same node: a clone of `snapshot` (pinned: an
    existing snapshot), of `source` itself when it is a snapshot, else of a new snapshot
    `SOURCE@branch-STAMP`. Skipped when `target` exists already as a clone of that snapshot."""
    validate_dataset(target, allow_snapshot=False)
    props = validate_properties(properties or {}, types=("volume",)) if properties else {}
    p = LifecyclePlan("clone")
    node = source.node
    if source.type == "snapshot":
        if snapshot:
            raise UsageError(f"{source.name} is a snapshot already; drop --snapshot")
        origin = source.name
    elif source.type in ("volume", "filesystem"):
        if snapshot:
            origin = validate_dataset(f"{source.name}@{snapshot.lstrip('@')}")
            if not _exists(conn, node, origin):
                raise UsageError(f"{origin} is not in the mirror of {node}",
                                 hint=f"xfleet ls '{source.name}@*' --node {node}")
        else:
            origin = validate_dataset(
                f"{source.name}@branch-{stamp or time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
            if not _exists(conn, node, origin):
                p.commands.append(Command(node, ["zfs", "snapshot", origin],
                                          "snapshot the branch point"))
                p.created.append((node, origin))
    else:
        raise UsageError(f"{source.name} is a {source.type}; clone a volume or a snapshot")
    if pool_of(target) != pool_of(origin):
        raise LifecycleError(f"{target} is in another pool than {origin}",
                             hint="a clone lives in its origin's pool")
    row = conn.execute("SELECT origin FROM datasets WHERE node = ? AND name = ?",
                       (node, target)).fetchone()
    if row is not None:
        if row[0] == origin:
            p.skipped.append((node, target, f"exists already as a clone of {origin}"))
            return p
        raise LifecycleError(f"{target} exists already on {node}",
                             hint="choose another name, or destroy it first")
    parent = target.rsplit("/", 1)[0]
    if "/" in target and not _exists(conn, node, parent):
        raise LifecycleError(f"the parent {parent} of {target} does not exist on {node}",
                             hint=f"create it first (zfs create -p {parent})")
    p.commands.append(Command(node, ["zfs", "clone", *_prop_args(props), origin, target],
                              f"clone {origin}"))
    p.created.append((node, target))
    return p


def _active_moves(conn: Connection, node: str, name: str) -> list[int]:
    try:
        return [r[0] for r in conn.execute(
            "SELECT id FROM moves WHERE source_node = ? AND (volume = ? OR retired_as = ?) AND "
            "state NOT IN ('done', 'aborted')", (node, name, name))]
    except ERRORS:  # a mirror older than moves
        return []


def _subtree(conn: Connection, node: str, root: str) -> list[Row]:
    rows: list[Row] = []
    for lo, hi in mirror.tree_ranges(root):  # one index range per query
        if hi is None:
            rows += conn.execute("SELECT name, type, origin, createtxg FROM datasets WHERE "
                                 "node = ? AND name = ?", (node, lo)).fetchall()
        else:
            rows += conn.execute("SELECT name, type, origin, createtxg FROM datasets WHERE "
                                 "node = ? AND name >= ? AND name < ?", (node, lo, hi)).fetchall()
    return rows


def _clones_of(conn: Connection, node: str, snaps: Sequence[str]) -> list[Row]:
    out: list[Row] = []
    for s in snaps:
        out.extend(conn.execute(
            "SELECT d.name, d.type, d.origin, o.createtxg AS origin_txg FROM datasets d "
            "INDEXED BY datasets_origin LEFT JOIN datasets o ON o.node = d.node AND "
            "o.name = d.origin WHERE d.origin = ? AND d.node = ?", (s, node)))
    return out


class Holds(Protocol):
    def userrefs(self, node: str, roots: list[str]) -> dict[str, int]: ...

    def tags(self, node: str, snaps: list[str]) -> dict[str, list[str]]: ...


def read_holds(transport: Transport, roots: list[str]) -> dict[str, int]:
    """`zfs get -H -p -o name,value -r -t snapshot userrefs ROOT...`: held snapshots (one
    command per batch of roots). Missing roots are ignored (already gone)."""
    held: dict[str, int] = {}
    for batch in _batches(roots):
        res = transport.run(["zfs", "get", "-H", "-p", "-o", "name,value", "-r", "-t",
                             "snapshot", "userrefs", *batch], check=False)
        if res.exit_status not in (0, 1):
            raise RemoteCommandError(transport.node, ["zfs", "get"], res.exit_status,
                                     res.stderr)
        for line in res.stdout.splitlines():
            name, _, value = line.partition("\t")
            if value.strip().isdigit() and int(value) > 0:
                held[name] = int(value)
    return held


def read_hold_tags(transport: Transport, snaps: list[str]) -> dict[str, list[str]]:
    """`zfs holds -H SNAP...` -> {tag: [snapshots]}."""
    tags: dict[str, list[str]] = defaultdict(list)
    for batch in _batches(snaps):
        for line in transport.run(["zfs", "holds", "-H", *batch]).stdout.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                tags[parts[1]].append(parts[0])
    return dict(tags)


def plan_destroy(conn: Connection, targets: Sequence[Target], *,
                 clones: str = "refuse", release: bool = False,
                 holds: Holds | None = None) -> LifecyclePlan:
    """Destroy volumes/filesystems (with their snapshots: `-r`) and snapshots (comma lists per
    dataset). Refused: clones outside the set (unless `clones` is destroy or promote), held
    snapshots and retired move sources (unless `release`), volumes in an unfinished move.
    `holds` reads the nodes' holds (RemoteHolds); without it none are checked."""
    if clones not in CLONE_CHOICES:
        raise UsageError(f"clones must be one of {', '.join(CLONE_CHOICES)}, not {clones!r}")
    p = LifecyclePlan("destroy")
    by_node: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        by_node[t.node].append(t)
    problems: list[str] = []
    for node, ts in sorted(by_node.items()):
        datasets = sorted({t.name for t in ts if t.type in ("volume", "filesystem")})
        # a snapshot inside a destroyed dataset goes with it
        inside = set(datasets)
        snaps = sorted({t.name for t in ts if t.type == "snapshot"
                        and t.name.split("@", 1)[0] not in inside})
        for t in ts:
            if t.type not in ("volume", "filesystem", "snapshot"):
                p.skipped.append((node, t.name, f"a {t.type} is not destroyed here"))
        gone: dict[str, str] = {}  # name -> type, everything the commands remove
        for d in datasets:
            for r in _subtree(conn, node, d):
                gone[r["name"]] = r["type"]
            for mid in _active_moves(conn, node, d):
                problems.append(f"{node}:{d} is in move {mid} (xfleet moves show {mid})")
        for s in snaps:
            gone[s] = "snapshot"
        gone_snaps = [n for n, typ in gone.items() if typ == "snapshot"]
        deps = [r for r in _clones_of(conn, node, gone_snaps) if r["name"] not in gone]
        for name in [*datasets, *snaps]:
            if RETIRED_MARK in name and not release:
                problems.append(f"{node}:{name} is a retired move source (kept on purpose)")
        held: dict[str, int] = {}
        if holds is not None and (datasets or snaps):
            held = holds.userrefs(node, [*datasets, *snaps])
            held = {k: v for k, v in held.items() if k in gone}
        if held and not release:
            shown = ", ".join(sorted(held)[:5]) + (" ..." if len(held) > 5 else "")
            problems.append(f"{node}: {len(held)} held snapshot(s): {shown}")
        promote: list[str] = []
        extra: dict[str, str] = {}
        if deps:
            names = sorted({r["name"] for r in deps})
            if clones == "refuse":
                shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
                problems.append(f"{node}: {len(names)} clone(s) depend on what would be "
                                f"destroyed: {shown}")
            elif clones == "destroy":
                for c in names:
                    for r in _subtree(conn, node, c):
                        extra[r["name"]] = r["type"]
                for r in _clones_of(conn, node, [n for n, t in extra.items()
                                                 if t == "snapshot"]):
                    extra.setdefault(r["name"], r["type"])
            else:
                order = sorted(deps, key=lambda r: (r["origin_txg"] or 0, r["name"]))
                promote = list(dict.fromkeys(r["name"] for r in order))
                # a promote hands the origin's snapshots up to the branch point to the clone
                for r in order:
                    ds = r["origin"].split("@", 1)[0]
                    for sr in _subtree(conn, node, ds):
                        if sr["type"] == "snapshot" and sr["name"].startswith(ds + "@") and \
                                (sr["createtxg"] or 0) <= (r["origin_txg"] or 0):
                            gone.pop(sr["name"], None)
        if problems:
            continue
        if held and release and holds is not None:
            for tag, tagged in sorted(holds.tags(node, sorted(held)).items()):
                for batch in _batches(tagged):
                    p.commands.append(Command(node, ["zfs", "release", tag, *batch],
                                              f"release hold {tag!r}"))
        for c in promote:
            p.commands.append(Command(node, ["zfs", "promote", c], "promote a dependent clone"))
            p.refetch_trees.append((node, c))
            p.changed.append((node, c))
        flag = ["-R"] if clones == "destroy" and extra else []
        # inside another destroyed dataset: -r takes it
        roots = [d for d in datasets if not any(d.startswith(o + "/") for o in datasets)]
        for d in _clones_first(conn, node, roots):
            p.commands.append(Command(node, ["zfs", "destroy", "-r", *flag, d],
                                      f"destroy {gone.get(d, 'dataset')} and its snapshots"))
        by_ds: dict[str, list[str]] = defaultdict(list)
        for s in snaps:
            ds, sn = s.split("@", 1)
            by_ds[ds].append(sn)
        for ds, sns in sorted(by_ds.items()):
            chunk: list[str] = []
            size = 0
            for sn in sns:
                if chunk and size + len(sn) + 1 > ARGV_BUDGET:
                    p.commands.append(Command(node, ["zfs", "destroy", *flag,
                                                     f"{ds}@{','.join(chunk)}"],
                                              f"destroy {len(chunk)} snapshot(s)"))
                    chunk, size = [], 0
                chunk.append(sn)
                size += len(sn) + 1
            p.commands.append(Command(node, ["zfs", "destroy", *flag, f"{ds}@{','.join(chunk)}"],
                                      f"destroy {len(chunk)} snapshot(s)"))
            p.changed.append((node, ds))
        for name, typ in sorted({**gone, **extra}.items()):
            p.destroyed.append((node, name, typ))
    if problems:
        raise LifecycleError(
            "refusing to destroy: " + "; ".join(problems),
            hint="clones: --clones destroy (destroys them too) or --clones promote (keeps "
            "them); held snapshots and retired move sources: --release, after checking why "
            "they are kept (xfleet moves list)")
    return p


def _clones_first(conn: Connection, node: str, roots: list[str]) -> list[str]:
    """`roots` ordered so that a clone is destroyed before the dataset its origin snapshot
    belongs to (ZFS refuses to destroy an origin while its clone exists: "volume has dependent
    clones"), whichever order the user named them in."""
    by_name = set(roots)

    def root_of(name: str) -> str | None:
        parts = name.split("@", 1)[0].split("/")
        return next((r for r in ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                     if r in by_name), None)

    blocks: dict[str, list[str]] = defaultdict(list)  # clone root -> origin roots it blocks
    waiting = dict.fromkeys(roots, 0)  # origin root -> clone roots still to go first
    for r in roots:
        for row in _subtree(conn, node, r):
            o = root_of(row["origin"]) if row["origin"] else None
            if o is not None and o != r:
                blocks[r].append(o)
                waiting[o] += 1
    ready = [r for r, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        r = heapq.heappop(ready)
        out.append(r)
        for o in blocks[r]:
            waiting[o] -= 1
            if waiting[o] == 0:
                heapq.heappush(ready, o)
    # a cycle cannot happen in ZFS; whatever is left keeps name order
    done = set(out)
    return out + sorted(r for r in roots if r not in done)


@dataclass
class RemoteHolds:
    """Reads holds from the nodes (for plan_destroy): one command per node and batch."""

    conns: Connections

    def userrefs(self, node: str, roots: list[str]) -> dict[str, int]:
        return read_holds(self.conns.get(node), roots)

    def tags(self, node: str, snaps: list[str]) -> dict[str, list[str]]:
        return read_hold_tags(self.conns.get(node), snaps)


def plan_set(conn: Connection, targets: Sequence[Target],
             properties: dict[str, str]) -> LifecyclePlan:
    """`zfs set p=v ... NAME...`: one command per node and batch of names."""
    if not properties:
        raise UsageError("no property to set", hint="e.g. compression=zstd")
    kinds = {t.type for t in targets} or {"volume"}
    props = validate_properties(properties, types=kinds)
    p = LifecyclePlan("set")
    by_node: dict[str, list[str]] = defaultdict(list)
    for t in targets:
        by_node[t.node].append(t.name)
        p.changed.append((t.node, t.name))
    assigns = [f"{k}={v}" for k, v in sorted(props.items())]
    for node, names in sorted(by_node.items()):
        for batch in _batches(names):
            p.commands.append(Command(node, ["zfs", "set", *assigns, *batch],
                                      f"set {', '.join(assigns)} on {len(batch)}"))
    return p


def new_volsize(current: int, spec: str) -> int:
    """'+10G' grows by 10G; '20G' is the new size."""
    spec = spec.strip()
    if spec.startswith("+"):
        grown = current + parse_size(spec[1:])
        if grown > MAX_SIZE:
            raise UsageError(f"{spec}: the volume would be larger than ZFS can hold (8E)")
        return grown
    if spec.startswith("-"):
        raise LifecycleError(f"{spec}: shrinking a volume is refused",
                             hint="a zvol's data beyond the new size would be lost")
    return parse_size(spec)


def plan_resize(conn: Connection, targets: Sequence[Target], size: str) -> LifecyclePlan:
    """Grow volumes' volsize (`zfs set volsize=N`, volumes of the same new size together).
    Refused: shrinking, non-volumes, sizes that are not a multiple of volblocksize."""
    p = LifecyclePlan("resize")
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    problems = []
    for t in targets:
        if t.type != "volume":
            problems.append(f"{t.name} is a {t.type}, not a volume")
            continue
        cur = t.volsize or 0
        new = new_volsize(cur, size)
        if new < cur:
            problems.append(f"{t.name}: {new:,} is smaller than its volsize {cur:,} (shrinking "
                            "is refused)")
            continue
        if new == cur:
            p.skipped.append((t.node, t.name, "already that size"))
            continue
        vbs = t.volblocksize or 512
        if new % vbs:
            problems.append(f"{t.name}: {new:,} is not a multiple of its volblocksize {vbs:,}")
            continue
        groups[(t.node, new)].append(t.name)
        p.changed.append((t.node, t.name))
    if problems:
        raise LifecycleError("refusing to resize: " + "; ".join(problems[:10]) +
                             (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""),
                             hint="volsize only grows, in multiples of volblocksize")
    for (node, new), names in sorted(groups.items()):
        for batch in _batches(names):
            p.commands.append(Command(node, ["zfs", "set", f"volsize={new}", *batch],
                                      f"volsize={new} on {len(batch)}"))
    return p


# ---------------------------------------------------------------------------------------------
# execution


@dataclass
class NodeOutcome:
    node: str
    ok: bool
    commands: int = 0  # remote commands issued (the changes and the mirror's re-fetch)
    done: list[str] = field(default_factory=list)  # the plan's commands that succeeded
    error: str | None = None
    refetched: int = 0
    backend: str = "zfs"  # "libzfs_core" on a local node with OpenZFS's Python bindings
    lzc_calls: int = 0  # changes made through libzfs_core (no process forked)
    # what the node did that the mirror could not record (the changes stand; `xfleet sync`
    # brings the mirror up to date): never a reason to report the node as failed
    unrecorded: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    op: str
    nodes: list[NodeOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes)

    @property
    def commands(self) -> int:
        return sum(n.commands for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "ok": self.ok, "commands": self.commands,
                "nodes": [asdict(n) for n in self.nodes]}


def execute(inv: Inventory, mirror_path: Location, plan: LifecyclePlan, conns: Connections, *,
            parallel: int | None = None, source: str = "cli") -> Outcome:
    """Run the plan's commands, nodes in parallel and each node's in order (a node stops at
    its first failure), then re-fetch the touched names into the mirror. Every command is
    recorded in `lifecycle_log`."""
    out = Outcome(plan.op)
    by_node: dict[str, list[Command]] = defaultdict(list)
    for c in plan.commands:
        by_node[c.node].append(c)
    touched: dict[str, set[str]] = defaultdict(set)
    trees: dict[str, set[str]] = defaultdict(set)
    for node, name in [*plan.created, *plan.changed]:
        touched[node].add(name)
    for node, name, _ in plan.destroyed:
        touched[node].add(name)
    for node, name in plan.refetch_trees:
        trees[node].add(name)
        row_origin = _origin_dataset(mirror_path, node, name)
        if row_origin:
            trees[node].add(row_origin)

    def run_node(node: str, t: Transport) -> NodeOutcome:
        start = t.commands
        res = NodeOutcome(node, True)
        lzc = local_lzc(inv.hosts[node]) if node in inv.hosts else None
        if lzc is not None:
            res.backend = "libzfs_core"
        try:
            for c in by_node.get(node, []):
                # journal before acting: a command the mirror cannot record is not run
                try:
                    log_id = _journal(mirror_path, plan.op, node, c.argv, source)
                except (XfleetError, sqlite3.Error, DatabaseError) as exc:
                    raise XfleetError(f"not run: {c.line()}: the mirror could not record it "
                                      f"({_why(exc)})") from None
                via = "zfs"
                try:
                    if lzc is not None and lzc_run(lzc, c.argv, node):
                        via = "libzfs_core"
                        res.lzc_calls += 1
                    else:
                        t.run(c.argv)
                except XfleetError as exc:
                    _outcome(mirror_path, log_id, False, exc.message, via, res, c)
                    raise
                _outcome(mirror_path, log_id, True, None, via, res, c)
                res.done.append(c.line())
        except XfleetError as exc:
            res.ok, res.error = False, exc.message
        # whatever happened, the mirror learns what the node has now
        try:
            res.refetched = refetch(inv, mirror_path, node, t, sorted(touched[node]),
                                    sorted(trees[node]))
        except (XfleetError, sqlite3.Error, DatabaseError) as exc:
            res.unrecorded.append(f"the mirror was not updated ({_why(exc)}); run `xfleet "
                                  f"sync --node {node}` to bring it up to date")
        res.commands = t.commands - start
        return res

    nodes = sorted(set(by_node) | set(touched))
    for r in conns.each(nodes, run_node, parallel=parallel or inv.parallel):
        out.nodes.append(r.value if r.value is not None else
                         NodeOutcome(r.node, False, error=r.error.message if r.error else "?"))
    return out


def _origin_dataset(mirror_path: Location, node: str, name: str) -> str | None:
    conn = mirror.connect(mirror_path)
    try:
        row = conn.execute("SELECT origin FROM datasets WHERE node = ? AND name = ?",
                           (node, name)).fetchone()
        return row[0].split("@", 1)[0] if row and row[0] else None
    finally:
        conn.close()


def _journal(mirror_path: Location, op: str, node: str, argv: list[str], source: str) -> int:
    """The intent, before the command runs: a `lifecycle_log` row in state `started`."""
    conn = mirror.connect(mirror_path)
    try:
        with mirror.transaction(conn, f"a {op} command on {node}"):
            cur = conn.execute(
                "INSERT INTO lifecycle_log (at, op, node, argv, ok, error, source, via, state, "
                "operator, operator_reason) VALUES (?, ?, ?, ?, 0, NULL, ?, 'zfs', 'started', "
                "?, ?) RETURNING id",
                (time.time(), op, node, json.dumps(argv), source, claims.operator(),
                 claims.reason()))
            return inserted_id(cur)
    finally:
        conn.close()


def _outcome(mirror_path: Location, log_id: int, ok: bool, error: str | None, via: str,
             res: NodeOutcome, c: Command) -> None:
    """The outcome, after: the journal row becomes `done` or `failed`. If the mirror cannot
    take it, the node's result says what ran and that row `log_id` stays `started`."""
    try:
        conn = mirror.connect(mirror_path)
        try:
            with mirror.transaction(conn, "a lifecycle command's outcome"):
                conn.execute("UPDATE lifecycle_log SET ok = ?, error = ?, via = ?, state = ? "
                             "WHERE id = ?",
                             (int(ok), error, via, "done" if ok else "failed", log_id))
        finally:
            conn.close()
    except (XfleetError, sqlite3.Error, DatabaseError) as exc:
        res.unrecorded.append(f"{c.line()}: {'done' if ok else 'failed'} on {res.node}, but "
                              f"the mirror could not record it ({_why(exc)}); lifecycle_log "
                              f"row {log_id} stays 'started'")


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, XfleetError) else str(exc)


# ---------------------------------------------------------------------------------------------
# libzfs_core: on the storage node itself, no `zfs` process per change


def local_lzc(host: Host) -> Any | None:
    """OpenZFS's Python bindings of libzfs_core (Debian `python3-pyzfs`, module
    `libzfs_core`) when xfleet runs on the node itself (`kind: local`) and they import; None
    otherwise (the `zfs` command line is used)."""
    if host.kind != "local":
        return None
    try:
        import libzfs_core  # optional: only on a node with python3-pyzfs
    except Exception:  # absent, or built for another OpenZFS: the CLI works everywhere
        return None
    needed = ("lzc_snapshot", "lzc_clone", "lzc_destroy_snaps", "lzc_release", "lzc_promote")
    return libzfs_core if all(hasattr(libzfs_core, f) for f in needed) else None


def _split_opts(args: list[str]) -> tuple[dict[bytes, bytes], list[str]] | None:
    props: dict[bytes, bytes] = {}
    i = 0
    while i < len(args) and args[i] == "-o" and i + 1 < len(args):
        k, _, v = args[i + 1].partition("=")
        if ":" not in k:
            return None  # native properties need typed nvlist values: leave them to the CLI
        props[k.encode()] = v.encode()
        i += 2
    rest = args[i:]
    if any(a.startswith("-") for a in rest):
        return None
    return props, rest


def lzc_run(lzc: Any, argv: list[str], node: str) -> bool:
    """Make the change `argv` describes through libzfs_core; False when it has no exact
    libzfs_core equivalent (the caller runs the command instead). Handled: `zfs snapshot`
    (all names in ONE atomic lzc_snapshot), `zfs clone`, `zfs destroy DS@A,B` (snapshots, one
    lzc_destroy_snaps), `zfs release TAG SNAP...`, `zfs promote`; with user properties only."""
    if len(argv) < 3 or argv[0] != "zfs":
        return False
    sub, args = argv[1], argv[2:]
    parsed = _split_opts(args) if sub in ("snapshot", "clone") else ({}, args)
    if parsed is None:
        return False
    props, rest = parsed
    call: Callable[[], Any]
    if sub == "snapshot" and rest:
        call = lambda: lzc.lzc_snapshot([n.encode() for n in rest], props)  # noqa: E731
    elif sub == "clone" and len(rest) == 2:
        call = lambda: lzc.lzc_clone(rest[1].encode(), rest[0].encode(), props)  # noqa: E731
    elif sub == "destroy" and len(rest) == 1 and "@" in rest[0] and "%" not in rest[0] \
            and not any(a.startswith("-") for a in rest):
        ds, snaps = rest[0].split("@", 1)
        names = [f"{ds}@{sn}".encode() for sn in snaps.split(",")]
        call = lambda: lzc.lzc_destroy_snaps(names, False)  # noqa: E731
    elif sub == "release" and len(rest) >= 2 and not rest[0].startswith("-"):
        holds = {sn.encode(): [rest[0].encode()] for sn in rest[1:]}
        call = lambda: lzc.lzc_release(holds)  # noqa: E731
    elif sub == "promote" and len(rest) == 1 and not rest[0].startswith("-"):
        call = lambda: lzc.lzc_promote(rest[0].encode())  # noqa: E731
    else:
        return False
    try:
        call()
    except Exception as exc:  # libzfs_core raises its own ZFSError subclasses
        errors = getattr(exc, "errors", None)
        detail = "; ".join(str(e) for e in errors) if errors else str(exc) or type(exc).__name__
        raise LifecycleError(f"libzfs_core {sub} failed: {detail}", where=node) from None
    return True
