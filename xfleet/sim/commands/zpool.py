"""`zpool list`, `zpool get` and `zpool status`: the pools of a node with their sizes (from the
base fleet's totals and the overlay), features and vdev layout, as OpenZFS 2.3 prints them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.formats import SIZE_PROPS, human, table
from xfleet.sim.options import getopt, usage
from xfleet.sim.registry import Context, command
from xfleet.sim.settings import DAY, FEATURES, mix
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


@command("zpool", "status")
def zpool_status(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, pools = getopt("zpool status", args, "DegiLpPstvx", "Tc")
    flags = {o for o, _ in opts}
    chosen = open_pools(sim.base, pools, ctx)
    if "x" in flags:
        return iter(["all pools are healthy"] if chosen else [])
    out: list[str] = []
    disk = 0
    for n, pool in enumerate(chosen):
        if n:
            out.append("")
        h = mix(sim.settings.seed, sim.node, "scrub", pool)
        end = sim.settings.now - (h % (20 * DAY)) - 3 * DAY
        took = 600 + h % 5000
        out += [f"  pool: {pool}", " state: ONLINE",
                f"  scan: scrub repaired 0B in {took // 3600:02d}:{took // 60 % 60:02d}:"
                f"{took % 60:02d} with 0 errors on {_ctime(end)}", "config:", ""]
        tree: list[tuple[int, str]] = [(0, pool)]
        if sim.settings.vdev == "mirror":
            tree.append((2, "mirror-0"))
            tree += [(4, f"nvme{disk}n1"), (4, f"nvme{disk + 1}n1")]
            disk += 2
        else:
            tree.append((2, f"nvme{disk}n1"))
            disk += 1
        width = max(10, max(len(name) + depth for depth, name in tree))
        out.append(f"\t{'NAME':<{width}}  {'STATE':<8} {'READ':>5} {'WRITE':>5} "
                   f"{'CKSUM':>5}")
        for depth, name in tree:
            out.append(f"\t{' ' * depth}{name:<{width - depth}}  {'ONLINE':<8} "
                       f"{'0':>5} {'0':>5} {'0':>5}")
        out += ["", "errors: No known data errors"]
    return iter(out)


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
        "dedupratio": ("1.00", ro), "health": ("ONLINE", ro), "altroot": ("-", df),
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
