"""`zpool list`, `zpool get` and `zpool status`: the pools of a node with their sizes (from the
base fleet's totals and the overlay), features, vdev layout and health (the `faults` setting),
as OpenZFS 2.3 prints them; `zpool status -j` as its JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet.sim.formats import SIZE_PROPS, human, nicenum, table
from xfleet.sim.options import getopt, usage
from xfleet.sim.registry import Context, command
from xfleet.sim.settings import DAY, FEATURES, TXG_SECONDS, mix
from xfleet.sim.space import ASHIFT
from xfleet.sim.view import View, open_pools

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

# States of pool features (`zpool get feature@NAME`) on a fresh OpenZFS 2.3 pool, for those a
# move's preflight asks about (tests/fixtures/real/zpool_get_features.txt); the others of
# FEATURES show "enabled".
_FEATURE_STATES: dict[str, str] = {"large_blocks": "enabled", "zstd_compress": "enabled",
                                   "encryption": "enabled", "lz4_compress": "active"}
_POOL_PROPS = ("name", "size", "allocated", "free", "checkpoint", "expandsize",
               "fragmentation", "capacity", "dedupratio", "health", "altroot", "guid",
               "ashift", "version", "bcloneratio", "bcloneused", "bclonesaved", "readonly",
               "autotrim", "autoexpand", "autoreplace", "failmode", "listsnapshots",
               "comment", "freeing", "leaked", "load_guid", "cachefile", "bootfs",
               "delegation", "multihost")
_POOL_ALIASES = {"alloc": "allocated", "cap": "capacity", "frag": "fragmentation",
                 "dedup": "dedupratio", "expandsz": "expandsize", "ckpoint": "checkpoint"}


@command("zpool", "list")
def zpool_list(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, pools = getopt("zpool list", args, "gHLpPv", "oT")
    scripted = parsable = False
    cols = ["name", "size", "allocated", "free", "checkpoint", "expandsize",
            "fragmentation", "capacity", "dedupratio", "health", "altroot"]
    for o, v in opts:
        if o == "H":
            scripted = True
        elif o == "p":
            parsable = True
        elif o == "o":
            cols = []
            for word in v.split(","):
                prop = _POOL_ALIASES.get(word, word)
                if prop not in _POOL_PROPS:
                    raise usage("zpool list", f"property '{word}' is not a valid pool "
                                "or vdev property")
                cols.append(prop)
    view = View(sim, sim.current_overlay())
    rows = []
    for pool in open_pools(sim.base, pools, ctx):
        vals = _pool_values(sim, view, pool)
        rows.append([vals[c][0] if parsable else human(c, vals[c][0]) for c in cols])
    if scripted:
        return iter(["\t".join(r) for r in rows])
    header = [{"allocated": "ALLOC", "fragmentation": "FRAG", "capacity": "CAP",
               "dedupratio": "DEDUP", "checkpoint": "CKPOINT",
               "expandsize": "EXPANDSZ"}.get(c, c.upper()) for c in cols]
    return table(header, rows, {i for i, c in enumerate(cols) if c in SIZE_PROPS})


@command("zpool", "get")
def zpool_get(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("zpool get", args, "Hp", "o")
    scripted = parsable = False
    fields = ["name", "property", "value", "source"]
    for o, v in opts:
        if o == "H":
            scripted = True
        elif o == "p":
            parsable = True
        else:
            fields = v.split(",")
            for f in fields:
                if f not in ("name", "property", "value", "source"):
                    raise usage("zpool get", f"invalid column name '{f}'")
    if not rest:
        raise usage("zpool get", "missing property argument")
    spec, pools = rest[0], rest[1:]
    if spec == "all":
        props = list(_POOL_PROPS)
    else:
        props = [_POOL_ALIASES.get(w, w) for w in spec.split(",")]
        for p in props:
            if p not in _POOL_PROPS and not p.startswith("feature@"):
                raise usage("zpool get", f"bad property list: invalid property '{p}'")
        # a feature this ZFS does not know is left out silently, as real zpool does
        props = [p for p in props if not p.startswith("feature@")
                 or p[len("feature@"):] in FEATURES]
    view = View(sim, sim.current_overlay())
    out = []
    for pool in open_pools(sim.base, pools, ctx):
        vals = _pool_values(sim, view, pool)
        for p in props:
            value, source = vals[p]
            cells = {"name": pool, "property": p,
                     "value": value if parsable else human(p, value), "source": source}
            out.append([cells[f] for f in fields])
    if scripted:
        return iter(["\t".join(r) for r in out])
    return table([f.upper() for f in fields], out, set())


# The messages zpool status shows for the faults of the `faults` setting, as OpenZFS 2.3
# words and breaks them (tests/fixtures/real/zpool_status_degraded.txt, ..._cksum.txt).
_Message = tuple[tuple[str, ...], tuple[str, ...], str | None]  # status, action, msgid
_OFFLINE: _Message = (("One or more devices has been taken offline by the administrator.",
             "Sufficient replicas exist for the pool to continue functioning in a",
             "degraded state."),
            ("Online the device using 'zpool online' or replace the device with",
             "'zpool replace'."), None)
_CHECKSUM: _Message = (("One or more devices has experienced an unrecoverable error.  An",
              "attempt was made to correct the error.  Applications are unaffected."),
             ("Determine if the device needs to be replaced, and clear the errors",
              "using 'zpool clear' or replace the device with 'zpool replace'."),
             "ZFS-8000-9P")
_MSG_URL = "https://openzfs.github.io/openzfs-docs/msg/"
_LONG_OPTIONS = ("--json-int", "--power")
_BLOCK = 16384  # what a repaired checksum error accounts for (a volume's block)


@dataclass
class _Vdev:
    name: str
    vdev_type: str
    guid: int
    state: str = "ONLINE"
    path: str | None = None
    cksum: int = 0
    repaired: int = 0
    children: list[_Vdev] = field(default_factory=list)


@dataclass
class _Health:
    """One pool as zpool status shows it: what both its text and its JSON are made from."""

    name: str
    guid: int
    txg: int
    size: int
    alloc: int
    state: str
    message: _Message | None
    start: int
    end: int
    repaired: int
    root: _Vdev


def _health(sim: SimTransport, view: View, pool: str) -> _Health:
    st = sim.settings
    size, alloc, _ = view.pool_figures(pool)
    h = mix(st.seed, sim.node, "scrub", pool)
    end = st.now - (h % (20 * DAY)) - 3 * DAY
    fault = dict(st.faults).get(pool)
    width = 2 if st.vdev == "mirror" else 1
    first = sim.base.pools.index(pool) * width  # nvme devices numbered across the node

    def guid(name: str) -> int:
        return mix(st.seed, sim.node, "vdev", pool, name) & (2**64 - 1)

    leaves = [_Vdev(f"nvme{first + i}n1", "disk", guid(f"nvme{first + i}n1"),
                    path=f"/dev/nvme{first + i}n1p1") for i in range(width)]
    root = _Vdev(pool, "root", sim.base.pool_guid[pool])
    if st.vdev == "mirror":
        root.children.append(_Vdev("mirror-0", "mirror", guid("mirror-0"), children=leaves))
    else:
        root.children.extend(leaves)
    message: _Message | None = None
    repaired = 0
    if fault == "offline":
        root.state = root.children[0].state = "DEGRADED"
        leaves[1].state = "OFFLINE"
        message = _OFFLINE
    elif fault == "checksum":
        leaves[1].cksum = 1 + mix(st.seed, sim.node, "cksum", pool) % 500
        leaves[1].repaired = repaired = leaves[1].cksum * _BLOCK
        message = _CHECKSUM
    txg = max(int(sim.current_overlay().meta.get(f"txg:{pool}", "0")),
              (st.now - sim.base.pool_created[pool]) // TXG_SECONDS)
    return _Health(pool, sim.base.pool_guid[pool], txg, size, alloc, root.state, message,
                   end - (600 + h % 5000), end, repaired, root)


@command("zpool", "status")
def zpool_status(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    longs = {a for a in args if a.startswith("--") and a != "--"}
    for a in longs:
        if a not in _LONG_OPTIONS:  # getopt_long's '?' for it: zpool names option '\0'
            raise usage("zpool status", "invalid option '\x00'")
    opts, pools = getopt("zpool status", [a for a in args if a not in longs],
                         "DegijLpPstvx", "Tc")
    flags = {o for o, _ in opts}
    chosen = open_pools(sim.base, pools, ctx)
    if "x" in flags and "j" not in flags:
        return iter(["all pools are healthy"] if chosen else [])
    view = View(sim, sim.current_overlay())
    health = [_health(sim, view, pool) for pool in chosen]
    if "j" in flags:
        return iter([_status_json(health, as_int="--json-int" in longs)])
    return iter(_status_text(health))


def _status_text(health: list[_Health]) -> list[str]:
    out: list[str] = []
    for n, p in enumerate(health):
        if n:
            out.append("")
        out += [f"  pool: {p.name}", f" state: {p.state}"]
        if p.message is not None:
            status, action, msgid = p.message
            out += [f"status: {status[0]}", *(f"\t{ln}" for ln in status[1:]),
                    f"action: {action[0]}", *(f"\t{ln}" for ln in action[1:])]
            if msgid:
                out.append(f"   see: {_MSG_URL}{msgid}")
        took = p.end - p.start
        out += [f"  scan: scrub repaired {nicenum(p.repaired)} in {took // 3600:02d}:"
                f"{took // 60 % 60:02d}:{took % 60:02d} with 0 errors on {_ctime(p.end)}",
                "config:", ""]
        tree = list(_walk(p.root, 0))
        width = max(10, max(len(v.name) + depth for depth, v in tree))
        out.append(f"\t{'NAME':<{width}}  {'STATE':<8} {'READ':>5} {'WRITE':>5} "
                   f"{'CKSUM':>5}")
        for depth, v in tree:
            out.append(f"\t{' ' * depth}{v.name:<{width - depth}}  {v.state:<8} "
                       f"{'0':>5} {'0':>5} {v.cksum:>5}")
        out += ["", "errors: No known data errors"]
    return out


def _walk(v: _Vdev, depth: int) -> Iterator[tuple[int, _Vdev]]:
    yield depth, v
    for c in v.children:
        yield from _walk(c, depth + 2)


def _status_json(health: list[_Health], *, as_int: bool) -> str:
    """`zpool status -j` as OpenZFS 2.3 prints it (tests/fixtures/real/zpool_status_json_*):
    one line, keys in its order; numbers as strings (sizes and times as zpool shows them)
    unless --json-int."""
    def num(value: int, kind: str = "") -> int | str:
        if as_int:
            return value
        if kind == "size":
            return nicenum(value)
        if kind == "time":
            return time.strftime("%a %b %e %H:%M:%S %Z %Y", time.localtime(value))
        return str(value)

    def counters(v: _Vdev) -> dict[str, Any]:
        return {"read_errors": num(0), "write_errors": num(0), "checksum_errors": num(v.cksum)}

    def vdev(v: _Vdev, p: _Health, parent: _Vdev | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": v.name, "vdev_type": v.vdev_type, "guid": num(v.guid)}
        if v.path:
            out["path"] = v.path
        out.update({"class": "normal", "state": v.state})
        space = {"alloc_space": num(p.alloc, "size"), "total_space": num(p.size, "size"),
                 "def_space": num(p.size, "size")}
        rep = p.size + (9 << 19)
        if v.vdev_type == "root":
            out.update(space)
        elif v.children:  # mirror-0
            out.update({**space, "rep_dev_size": num(p.size, "size")})
        else:
            if parent is not None and parent.vdev_type == "root":
                out.update(space)
            out["rep_dev_size"] = num(rep, "size")
            if v.repaired:
                out["self_healed"] = num(v.repaired, "size")
            out["phys_space"] = num(rep + (10 << 20), "size")
        out.update(counters(v))
        if v.repaired:
            out["scan_processed"] = num(v.repaired, "size")
        if not v.children:
            out["slow_ios"] = num(0)
        else:
            out["vdevs"] = {c.name: vdev(c, p, v) for c in v.children}
        return out

    pools: dict[str, Any] = {}
    for p in health:
        entry: dict[str, Any] = {"name": p.name, "state": p.state, "pool_guid": num(p.guid),
                                 "txg": num(p.txg), "spa_version": num(5000),
                                 "zpl_version": num(5)}
        if p.message is not None:
            status, action, msgid = p.message
            entry["status"] = "\n\t".join(status) + "\n"
            entry["action"] = "\n\t".join(action) + "\n"
            if msgid:
                entry.update({"msgid": msgid, "moreinfo": f"{_MSG_URL}{msgid}"})
        entry["scan_stats"] = {
            "function": "SCRUB", "state": "FINISHED", "start_time": num(p.start, "time"),
            "end_time": num(p.end, "time"), "to_examine": num(p.alloc, "size"),
            "examined": num(p.alloc, "size"), "skipped": num(0, "size"),
            "processed": num(p.repaired, "size"), "errors": num(0),
            "bytes_per_scan": num(0, "size"), "pass_start": num(p.start),
            "scrub_pause": num(0) if as_int else "-", "scrub_spent_paused": num(0),
            "issued_bytes_per_scan": num(p.alloc, "size"), "issued": num(p.alloc, "size")}
        entry["vdevs"] = {p.name: vdev(p.root, p, None)}
        entry["error_count"] = num(0)
        pools[p.name] = entry
    doc = {"output_version": {"command": "zpool status", "vers_major": 0, "vers_minor": 1},
           "pools": pools}
    return json.dumps(doc, separators=(",", ":"))


def _pool_values(sim: SimTransport, view: View, pool: str) -> dict[str, tuple[str, str]]:
    features = {f"feature@{f}": (_FEATURE_STATES.get(f, "enabled"), "local")
                for f in FEATURES}
    return {**_pool_figures(sim, view, pool), **features}


def _pool_figures(sim: SimTransport, view: View, pool: str) -> dict[str, tuple[str, str]]:
    size, alloc, _ = view.pool_figures(pool)
    h = mix(sim.settings.seed, sim.node, "frag", pool)
    cap = alloc * 100 // size if size else 0
    frag = min(80, 2 + h % 12 + cap // 4)
    ro, df = "-", "default"
    return {
        "name": (pool, ro), "size": (str(size), ro), "allocated": (str(alloc), ro),
        "free": (str(size - alloc), ro), "checkpoint": ("-", ro), "expandsize": ("-", ro),
        "fragmentation": (str(frag), ro), "capacity": (str(cap), ro),
        "dedupratio": ("1.00", ro), "altroot": ("-", df),
        "health": ("DEGRADED" if dict(sim.settings.faults).get(pool) == "offline" else "ONLINE",
                   ro),
        "guid": (str(sim.base.pool_guid[pool]), ro), "ashift": (str(ASHIFT), "local"),
        "version": ("-", df), "bcloneratio": ("1.00", ro), "bcloneused": ("0", ro),
        "bclonesaved": ("0", ro), "readonly": ("off", ro), "autotrim": ("off", df),
        "autoexpand": ("off", df), "autoreplace": ("off", df), "failmode": ("wait", df),
        "listsnapshots": ("off", df), "comment": ("-", df), "freeing": ("0", ro),
        "leaked": ("0", ro), "load_guid": (str(sim.load_guid(pool)), ro),
        "cachefile": ("-", df), "bootfs": ("-", df), "delegation": ("on", df),
        "multihost": ("off", df),
    }


def _ctime(t: int) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t))
