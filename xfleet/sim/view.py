"""One consistent view of a node (base fleet + overlay) for one command: current records, the
derived space figures (used, logicalused, ratios) zfs computes, property values and their
sources as `zfs get -p` prints them, and iteration in `zfs list` order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from xfleet.sim.base import BaseFleet, record_from_row
from xfleet.sim.generator import FIELD_INDEX, Env
from xfleet.sim.names import (
    dataset_of,
    depth_below,
    in_subtree,
    list_key,
    name_problem,
    parent_of,
    pool_of,
)
from xfleet.sim.overlay import Overlay, Rec
from xfleet.sim.properties import ALL_PROPS, INHERITABLE, KIND_OF, READONLY, STATIC, TYPE_LETTER
from xfleet.sim.registry import Context, Fail
from xfleet.sim.space import ratio
from xfleet.sim.stream import token

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


class View:
    """The node `sim` as the overlay `ov` leaves it, with what it derives cached for the
    command's duration."""

    def __init__(self, sim: SimTransport, ov: Overlay):
        self.sim = sim
        self.base = sim.base
        self.st = sim.settings
        self.ov = ov
        self.tprop = self.st.tenant_property
        idx = ov.index(self.base)
        self.group_names: dict[int, list[str]] = idx.groups
        self.loose: dict[str, list[str]] = idx.loose
        self.affected: set[int] = idx.affected
        self._group_recs: dict[int, dict[str, Rec]] = {}
        self._last_group: tuple[int, dict[str, Rec]] | None = None
        self._root_rec: dict[str, Rec] = {}
        self._group_basefs: dict[int, tuple[int, int, int]] = {}
        self._slow: dict[int, list[Rec]] = {}
        self._loose_derived: dict[str, list[Rec]] = {}
        self._root: dict[str, Rec] = {}
        self._avail: dict[str, int] = {}
        self._base_names: dict[int, set[str]] = {}

    # -- records -------------------------------------------------------------------------------
    def group_records(self, k: int, keep: bool = True) -> dict[str, Rec]:
        """Visible records of tenant k's subtree: base rows not hidden, plus overlay records.
        Kept for the rest of the command unless `keep` is False (big iterations)."""
        got = self._group_recs.get(k)
        if got is None and self._last_group is not None and self._last_group[0] == k:
            got = self._last_group[1]
        if got is not None:
            return got
        rows = self.base.tenant_rows(k, Env())
        fs = rows[0]
        f = FIELD_INDEX
        self._group_basefs[k] = (fs[f["used"]], fs[f["logicalused"]], fs[f["phys"]])
        ov = self.ov
        recs: dict[str, Rec] = {}
        clones: dict[str, list[str]] = {}
        for t in rows:
            name = t[0]
            if name in ov.records or ov.hides(name):
                continue
            recs[name] = record_from_row(t, self.tprop)
            if t[4] != "-":
                clones.setdefault(t[4], []).append(name)
        for name, rec in recs.items():
            if rec["type"] == "snapshot":
                rec["clones"] = clones.get(name, [])
        for name in self.group_names.get(k, ()):
            recs[name] = ov.records[name]
        if keep:
            self._group_recs[k] = recs
        self._last_group = (k, recs)
        return recs

    def record(self, name: str) -> Rec | None:
        """The current record of `name` (not derived), or None if it does not exist."""
        rec = self.ov.records.get(name)
        if rec is not None:
            return rec
        if name in self.base.pool_range:
            got = self._root_rec.get(name)
            if got is None:
                got = self._root_rec[name] = self.base.root_record(name)
            return got
        k = self.base.group_of(name)
        if k is None:
            return None
        return self.group_records(k).get(name)

    def exists(self, name: str) -> bool:
        return self.record(name) is not None

    def is_base(self, name: str) -> bool:
        """Whether the base fleet has `name` and it is not hidden: removing the name (a
        destroy, a rename away) must hide the base's row, whether or not the overlay holds a
        changed copy of it."""
        if name in self.base.pool_range:
            return True
        k = self.base.group_of(name)
        if k is None or self.ov.hides(name):
            return False
        names = self._base_names.get(k)
        if names is None:
            names = self._base_names[k] = {t[0] for t in self.base.tenant_rows(k, Env())}
        return name in names

    # -- inheritance -------------------------------------------------------------------------
    def effective(self, rec: Rec, prop: str) -> tuple[str, str]:
        """(value, source) of an inheritable or user property, following parents."""
        cur: Rec | None = rec
        first = True
        while cur is not None:
            local = cur.get("local") or {}
            if prop in local:
                value = local[prop]
                if first:
                    return value, "local"
                if prop == "mountpoint" and value.startswith("/"):
                    rel = dataset_of(rec["name"])[len(cur["name"]):]
                    value = value.rstrip("/") + rel if value != "/" else rel
                return value, f"inherited from {cur['name']}"
            first = False
            parent = parent_of(cur["name"])
            cur = self.record(parent) if parent else None
        if prop == "mountpoint":
            return "/" + dataset_of(rec["name"]), "default"
        if ":" in prop:
            return "-", "-"
        return STATIC.get(prop, "-"), "default"

    # -- derived figures -----------------------------------------------------------------------
    def _derive(self, recs: Iterable[Rec]) -> list[Rec]:
        """Copies of `recs` (sorted) with used, logicalused, ratios... filled in; descendants of
        a filesystem must all be in `recs` for its sums to be right."""
        out = sorted((dict(r) for r in recs), key=lambda r: list_key(r["name"], r["createtxg"]))
        sums: dict[str, list[int]] = {}
        for d in reversed(out):
            name = d["name"]
            if d["type"] == "bookmark":
                continue
            if d["type"] == "snapshot":
                d["used"] = d["unique"]
                d["compressratio"] = d["refcompressratio"] = ratio(d["logicalreferenced"],
                                                                   d["referenced"])
                d["numclones"] = len(d.get("clones") or ())
                continue
            uchild, lchild, pchild = sums.pop(name, (0, 0, 0))
            written = d["written"]
            refres = d["refreservation"]
            ubr = refres - written if refres > written else 0
            phys = d["ubd"] + d["ubs"] + pchild
            d["ubr"] = ubr
            d["uchild"] = uchild
            d["used"] = d["ubd"] + d["ubs"] + ubr + uchild
            d["lused"] = d["lused_own"] + lchild
            d["phys"] = phys
            d["compressratio"] = ratio(d["lused"], phys)
            d["refcompressratio"] = ratio(d["logicalreferenced"], d["referenced"])
            parent = parent_of(name)
            if parent is not None:
                acc = sums.setdefault(parent, [0, 0, 0])
                acc[0] += d["used"]
                acc[1] += d["lused"]
                acc[2] += phys
        return out

    def slow_group(self, k: int, keep: bool = True) -> list[Rec]:
        got = self._slow.get(k)
        if got is None:
            got = self._derive(self.group_records(k, keep).values())
            if keep:
                self._slow[k] = got
        return got

    def base_fs_totals(self, k: int) -> tuple[int, int, int]:
        if k not in self._group_basefs:
            self.group_records(k, keep=False)
        return self._group_basefs[k]

    def loose_derived(self, pool: str) -> list[Rec]:
        got = self._loose_derived.get(pool)
        if got is None:
            got = self._derive(self.ov.records[n] for n in self.loose[pool])
            self._loose_derived[pool] = got
        return got

    def root(self, pool: str, totals: tuple[int, int, int] | None) -> Rec:
        """The derived pool root. `totals` are the base tenants' sums (None: space unknown)."""
        got = self._root.get(pool)
        if got is not None:
            return got
        rec = dict(self.ov.records.get(pool) or self.base.root_record(pool))
        rec["numclones"] = 0
        u, lu, ph = totals if totals is not None else (0, 0, 0)
        for k in sorted(self.affected):
            if self.base.pool_of_tenant(k) != pool:
                continue
            bu, blu, bph = self.base_fs_totals(k)
            u, lu, ph = u - bu, lu - blu, ph - bph
            for d in self.slow_group(k):
                if parent_of(d["name"]) == pool and d["type"] != "snapshot":
                    u, lu, ph = u + d["used"], lu + d["lused"], ph + d["phys"]
        for d in self.loose_derived(pool):
            if parent_of(d["name"]) == pool and d["type"] != "snapshot":
                u, lu, ph = u + d["used"], lu + d["lused"], ph + d["phys"]
        written = rec["written"]
        refres = rec["refreservation"]
        ubr = refres - written if refres > written else 0
        rec["ubr"] = ubr
        rec["uchild"] = u
        rec["used"] = rec["ubd"] + rec["ubs"] + ubr + u
        rec["lused"] = rec["lused_own"] + lu
        rec["phys"] = rec["ubd"] + rec["ubs"] + ph
        rec["compressratio"] = ratio(rec["lused"], rec["phys"])
        rec["refcompressratio"] = ratio(rec["logicalreferenced"], rec["referenced"])
        if totals is not None:
            self._root[pool] = rec
        return rec

    def totals(self, pool: str) -> tuple[int, int, int]:
        return self.base.totals(pool, self.sim.store)

    def pool_figures(self, pool: str) -> tuple[int, int, int]:
        """(size, allocated, root available) of a pool."""
        root = self.root(pool, self.totals(pool))
        size = self.base.pool_size(pool, self.sim.store)
        slop = min(max(size >> 5, 128 << 20), 128 << 30)
        alloc = root["phys"] + (root["phys"] >> 9)
        avail = max(0, size - slop - root["used"])
        return size, min(alloc, size), avail

    def avail(self, pool: str) -> int:
        got = self._avail.get(pool)
        if got is None:
            got = self._avail[pool] = self.pool_figures(pool)[2]
        return got

    def derived(self, name: str) -> Rec | None:
        """The derived record of one dataset."""
        b = self.base
        if name in b.pool_range:
            return self.root(name, self.totals(name))
        k = b.group_of(name)
        if k is not None:
            for d in self.slow_group(k):
                if d["name"] == name:
                    return d
            return None
        pool = pool_of(name)
        if pool not in self.loose:
            return None
        for d in self.loose_derived(pool):
            if d["name"] == name:
                return d
        return None

    def derived_for(self, name: str, need_space: bool) -> Rec | None:
        """The derived record of one named dataset; a pool root's space figures only when
        `need_space`."""
        if name in self.base.pool_range:
            return self.root(name, self.totals(name) if need_space else None)
        return self.derived(name)

    # -- rendering -----------------------------------------------------------------------------
    def value(self, d: Rec, prop: str) -> tuple[str, str] | None:
        """(value, source) of a property of a derived record as `-p` prints it; None when the
        property does not apply to this type."""
        typ = d["type"]
        letter = TYPE_LETTER[typ]
        if typ == "bookmark":
            if prop in ("name", "type", "guid", "createtxg", "creation", "referenced",
                        "logicalreferenced"):
                return str(d[prop]) if prop != "type" else typ, "-"
            return None
        if ":" in prop:
            return self.effective(d, prop)
        if prop in _DATA_PATH_PROPS:
            return _data_path_value(d, prop)
        if prop.startswith(("written@", "written#")):
            since = self.written_since(d, prop[8:]) if prop[7] == "@" else None
            return (str(since), "-") if since is not None else None
        types = ALL_PROPS.get(prop)
        if types is None or letter not in types:
            return None
        snap = typ == "snapshot"
        if snap and types != "s" and ("v" if d.get("volsize") is not None else "f") not in types:
            return None  # e.g. 'exec' on a snapshot of a volume
        if prop == "volsize" and d.get("volsize") is None:
            return None
        simple: dict[str, Callable[[], Any]] = {
            "name": lambda: d["name"], "type": lambda: typ, "guid": lambda: d["guid"],
            "createtxg": lambda: d["createtxg"], "creation": lambda: d["creation"],
            "used": lambda: d["used"], "referenced": lambda: d["referenced"],
            "logicalreferenced": lambda: d["logicalreferenced"],
            "written": lambda: d["written"], "compressratio": lambda: d["compressratio"],
            "refcompressratio": lambda: d["refcompressratio"],
            "objsetid": lambda: 256 + d["guid"] % 1000003,
        }
        if prop in simple:
            return str(simple[prop]()), "-"
        if snap:
            if prop == "volsize":
                return str(d["volsize"]), "local"
            if prop == "numclones":
                return str(d["numclones"]), "-"
            if prop == "clones":
                return (",".join(d["clones"]), "-") if d.get("clones") else None
            if prop in INHERITABLE:
                return self.effective(d, prop)
            return STATIC.get(prop, "-"), "-" if prop in READONLY else "default"
        pool = d["name"].split("/", 1)[0]
        figures: dict[str, Callable[[], Any]] = {
            "available": lambda: self.avail(pool) + d["ubr"],
            "logicalused": lambda: d["lused"], "usedbysnapshots": lambda: d["ubs"],
            "usedbydataset": lambda: d["ubd"], "usedbychildren": lambda: d["uchild"],
            "usedbyrefreservation": lambda: d["ubr"],
        }
        if prop in figures:
            return str(figures[prop]()), "-"
        if prop == "origin":
            return (d["origin"], "-") if d.get("origin") else None
        if prop == "volsize":
            return str(d["volsize"]), "local"
        if prop == "volblocksize":
            return str(d["volblocksize"]), "-"
        if prop == "refreservation":
            return str(d["refreservation"]), "local" if d["refreservation"] else "default"
        if prop == "snapshots_changed":
            return (str(d["snapshots_changed"]), "-") if d.get("snapshots_changed") else None
        if prop == "mounted":
            mounted = self.effective(d, "canmount")[0] != "off" and \
                self.effective(d, "mountpoint")[0].startswith("/")
            return ("yes" if mounted else "no"), "-"
        local = d.get("local") or {}
        if prop in local:
            return local[prop], "local"
        if prop in INHERITABLE:
            return self.effective(d, prop)
        return STATIC.get(prop, "-"), "-" if prop in READONLY else "default"

    def line(self, d: Rec, cols: Sequence[str]) -> str:
        out = []
        for c in cols:
            v = self.value(d, c)
            out.append("-" if v is None or v[0] is None else v[0])
        return "\t".join(out)

    def env(self, pool: str, cols: Sequence[str], need_avail: bool) -> Env:
        root = self.ov.records.get(pool) or self.base.root_record(pool)
        uvals = []
        seen: set[str] = set()
        for c in cols:
            if ":" in c and c != self.tprop and c not in seen:
                seen.add(c)
                uvals.append(self.effective(root, c)[0])
        return Env(
            A=self.avail(pool) if need_avail else 0,
            COMP=self.effective(root, "compression")[0],
            RO=self.effective(root, "readonly")[0],
            VM=self.effective(root, "volmode")[0],
            MP=self.effective(root, "mountpoint")[0],
            U=tuple(uvals),
        )

    # -- iteration in `zfs list` order -----------------------------------------------------------
    def items(self, pool: str, roots: Sequence[str] | None, depth: int | None,
              kinds: frozenset[str], fast: Callable[[int], list[Any]] | None,
              keep: bool = True) -> Iterator[Any]:
        """Rows of `pool` after its root, in zfs list order: derived records, or (for untouched
        tenants, when `fast` is given) whatever fast(k) returns (a list of formatted lines)."""
        b = self.base

        def selected(name: str) -> bool:
            if roots is None:
                return depth is None or depth_below(name, pool) <= depth
            for r in roots:
                if in_subtree(name, r) and (depth is None or depth_below(name, r) <= depth):
                    return True
            return False

        def wanted(d: Rec) -> bool:
            return KIND_OF[d["type"]] in kinds and selected(d["name"])

        loose = self.loose_derived(pool)
        li = 0
        a, z = b.pool_range[pool]
        whole = roots is None or pool in roots
        # Tenants are the pool's direct children: with roots below the pool, only the tenants
        # holding a root are visited (named datasets are looked up, not searched for).
        ks: Iterable[int] = range(a, z) if whole else sorted(
            {k for r in roots or () if (k := b.group_of(r)) is not None and a <= k < z})
        for k in ks:
            tname = b.tenant_name(k)
            if whole:
                full, touched = True, True
            else:
                assert roots is not None
                full = any(in_subtree(tname, r) for r in roots)
                touched = full or any(in_subtree(r, tname) for r in roots)
            if not touched:
                continue
            first = (tname, 0, 0)
            while li < len(loose) and list_key(loose[li]["name"], loose[li]["createtxg"]) < first:
                if wanted(loose[li]):
                    yield loose[li]
                li += 1
            last = (b.last_dataset(k), 2, 0)
            inside = []
            while li < len(loose) and list_key(loose[li]["name"], loose[li]["createtxg"]) < last:
                inside.append(loose[li])
                li += 1
            if fast is not None and full and depth is None and k not in self.affected \
                    and not inside:
                yield fast(k)
                continue
            recs = self.slow_group(k, keep)
            if inside:
                recs = sorted([*recs, *inside], key=lambda r: list_key(r["name"], r["createtxg"]))
            for d in recs:
                if wanted(d):
                    yield d
        while li < len(loose):
            if wanted(loose[li]):
                yield loose[li]
            li += 1


    def written_since(self, d: Rec, since: str) -> int | None:
        """`written@SNAP` of a filesystem or volume: what it wrote since its snapshot SNAP (a
        short name, or the full one), None when there is no such snapshot."""
        if d["type"] == "snapshot" or d["type"] == "bookmark":
            return None
        name = since if "@" in since else f"{d['name']}@{since}"
        if dataset_of(name) != d["name"]:
            return None
        snaps = snapshots_of(self, d["name"])
        at = next((i for i, x in enumerate(snaps) if x["name"] == name), None)
        if at is None:
            return None
        later = sum(int(x["written"]) for x in snaps[at + 1:])
        return min(int(d["referenced"]), int(d["written"]) + later)


# properties of the data path: partial receives, holds, keys (never stored as local values)
_DATA_PATH_PROPS = frozenset({"receive_resume_token", "keystatus", "inconsistent", "userrefs"})


def _data_path_value(d: Rec, prop: str) -> tuple[str, str] | None:
    snap = d["type"] == "snapshot"
    if prop == "userrefs":
        return (str(len(d.get("holds") or {})), "-") if snap else None
    if snap:
        return None if prop != "inconsistent" else ("0", "-")
    recv = d.get("recv")
    if prop == "receive_resume_token":
        return (token(recv["token"]), "-") if recv and recv.get("token") else None
    if prop == "inconsistent":
        return ("1" if d.get("inconsistent") else "0"), "-"
    return None  # keystatus: no encryption on simulated nodes


# ---------------------------------------------------------------------------------------------
# opening what a command names


def cannot_open(view: View, name: str, *, snapshot: bool | None) -> str | None:
    """What zfs prints when it cannot open `name`, or None when it can."""
    problem = name_problem(name, snapshot=snapshot)
    if problem is not None:
        return f"cannot open '{name}': {problem}"
    if not view.exists(name):
        return f"cannot open '{name}': dataset does not exist"
    return None


def open_roots(view: View, names: Sequence[str], ctx: Context) -> list[str]:
    """The names a `zfs list`/`zfs get` can open (each once, in order); the others are
    reported on stderr as ZFS does."""
    roots: list[str] = []
    for n in names:
        err = cannot_open(view, n, snapshot=None)
        if err is not None:
            ctx.fail(err)
        elif n not in roots:
            roots.append(n)
    return roots


def by_pool(pools: Sequence[str], roots: list[str]
            ) -> Iterator[tuple[str, list[str] | None]]:
    """(pool, the roots in it) for the pools holding a root; every pool (None: all of it)
    when there are no roots."""
    for pool in pools:
        if not roots:
            yield pool, None
            continue
        mine = [r for r in roots if pool_of(r) == pool]
        if mine:
            yield pool, mine


def open_dataset(view: View, name: str, *, snapshot: bool | None) -> Rec:
    """The record zfs would open for `name`, or the failure it would print."""
    err = cannot_open(view, name, snapshot=snapshot)
    if err is not None:
        raise Fail(err)
    rec = view.record(name)
    assert rec is not None
    return rec


def snapshots_of(view: View, ds: str) -> list[Rec]:
    """Derived snapshots of one dataset, oldest first."""
    pool = ds.split("/", 1)[0]
    if ds == pool:
        out = [d for d in view.loose_derived(pool) if d["name"].startswith(ds + "@")]
    else:
        out = [d for d in view.items(pool, [ds], 1, frozenset({"snap"}), None)
               if d["name"].startswith(ds + "@")]
    return out


def open_pools(base: BaseFleet, pools: list[str], ctx: Context) -> list[str]:
    """The pools a zpool command can open (all of them when none is named); the others are
    reported on stderr as zpool does."""
    if not pools:
        return list(base.pools)
    out = []
    for p in pools:
        if p in base.pool_range:
            out.append(p)
        else:
            ctx.fail(f"cannot open '{p}': no such pool")
    return out
