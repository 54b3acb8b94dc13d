"""`zfs rename` and `zfs promote`: records move to new names keeping their guids, with the
origin and clone references around them fixed (a promote moves snapshots between a clone and
its origin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.commands.zfs_create import check_parent, new_dataset, put_created
from xfleet.sim.names import name_problem, pool_of
from xfleet.sim.options import getopt, source_and_target, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import ALL_KINDS
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import open_dataset, snapshots_of

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "rename")
def zfs_rename(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("rename", args, "fpru", "")
    flags = {o for o, _ in opts}
    old, new = source_and_target("rename", rest)

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        rec = open_dataset(v, old, snapshot=None)
        target = new
        prefix = f"cannot rename to '{new}'"
        if rec["type"] == "snapshot":
            ds, sn = old.split("@", 1)
            if target.startswith("@"):
                target = ds + target
            if "@" not in target or target.split("@", 1)[0] != ds:
                raise Fail(f"cannot rename to '{new}': snapshots must be part of same "
                           "dataset")
            problem = name_problem(target, snapshot=True)
            if problem is not None:
                raise Fail(f"{prefix}: {problem}")
            nsn = target.split("@", 1)[1]
            pairs = {old: target}
            if "r" in flags:
                for d in txn.subtree(ds, frozenset({"fs", "vol"})):
                    if d["name"] != ds and v.exists(f"{d['name']}@{sn}"):
                        pairs[f"{d['name']}@{sn}"] = f"{d['name']}@{nsn}"
            for n in pairs.values():
                if v.exists(n):
                    raise Fail(f"cannot rename to '{n}': dataset already exists")
            pool = pool_of(ds)
            txg = txn.stamp(pool)
            for a, b in pairs.items():
                snap = v.record(a)
                assert snap is not None
                txn.internal(pool, "rename", f"-> @{b.split('@', 1)[1]}", txg, ds=a,
                             guid=snap["guid"])
            _move(txn, pairs)
            return []
        if "r" in flags:
            raise usage("rename", "-r can only be used on snapshots")
        problem = name_problem(target, snapshot=False)
        if problem is not None:
            raise Fail(f"{prefix}: {problem}")
        pool = old.split("/", 1)[0]
        if old == pool:
            raise Fail(f"cannot rename '{old}': operation does not apply to pools")
        if target.split("/", 1)[0] != pool:
            raise Fail(f"{prefix}: datasets must be within same pool")
        if target.startswith(old + "/"):
            raise Fail(f"{prefix}: New dataset name cannot be a descendant of current "
                       "dataset name")
        if v.exists(target):
            raise Fail(f"{prefix}: dataset already exists")
        missing = check_parent(txn, target, "p" in flags, f"cannot create '{new}'")
        sub = txn.subtree(old, ALL_KINDS)
        mapping = {d["name"]: target + d["name"][len(old):] for d in sub}
        for p in missing:
            put_created(txn, new_dataset(txn, p, "filesystem"), None)
        txn.internal(pool, "rename", f"-> {target}", txn.stamp(pool), ds=old,
                     guid=rec["guid"])
        _move(txn, mapping, subtree_root=old)
        return []

    return sim.mutate(op, ctx)


@command("zfs", "promote")
def zfs_promote(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    _, rest = getopt("promote", args, "", "")
    if len(rest) != 1:
        raise usage("promote", "missing clone filesystem argument" if not rest
                    else "too many arguments")
    name = rest[0]

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        rec = open_dataset(v, name, snapshot=False)
        origin = rec.get("origin")
        if not origin:
            raise Fail(f"cannot promote '{name}': not a cloned filesystem")
        snap = v.record(origin)
        assert snap is not None
        ods = origin.split("@", 1)[0]
        osnaps = snapshots_of(v, ods)
        moved = [s for s in osnaps if s["createtxg"] <= snap["createtxg"]]
        later = [s for s in osnaps if s["createtxg"] > snap["createtxg"]]
        mine = {d["name"].split("@", 1)[1] for d in snapshots_of(v, name)}
        for s in moved:
            short = s["name"].split("@", 1)[1]
            if short in mine:
                raise Fail(f"cannot promote '{name}': conflicting snapshot '{short}' from "
                           f"parent '{ods}'")
        mapping = {s["name"]: f"{name}@{s['name'].split('@', 1)[1]}" for s in moved}
        moved_unique = sum(s["unique"] for s in moved)
        c = txn.get(name)
        o = txn.get(ods)
        assert c is not None and o is not None
        former = o.get("origin")
        c["origin"] = former
        c["ubs"] += moved_unique
        c["ubd"] = c["referenced"]
        o["ubs"] = max(0, o["ubs"] - moved_unique)
        o["ubd"] = min(o["referenced"], o["written"] + sum(s["written"] for s in later))
        for r in (c, o):
            ratio = r["logicalreferenced"] / r["referenced"] if r["referenced"] else 1.0
            r["lused_own"] = int((r["ubd"] + r["ubs"]) * ratio) >> 9 << 9
            r["snapshots_changed"] = txn.now
        txn.put(c)
        txn.put(o)
        orig = txn.get(origin)
        assert orig is not None
        orig["clones"] = [ods if x == name else x for x in orig.get("clones") or ()]
        txn.put(orig)
        if former:
            z = txn.get(former)
            if z is not None:
                z["clones"] = [name if x == ods else x for x in z.get("clones") or ()]
                txn.put(z)
        pool = pool_of(name)
        txn.internal(pool, "promote", " ", txn.stamp(pool), ds=name, guid=c["guid"])
        _move(txn, mapping)
        return []

    return sim.mutate(op, ctx)



def _move(txn: Transaction, mapping: dict[str, str], subtree_root: str | None = None) -> None:
    """Rename records old -> new, keeping guids, and fix origin/clone references."""
    v = txn.view
    base_root = v.is_base(subtree_root) if subtree_root else False
    base_names = {} if subtree_root else {n: v.is_base(n) for n in mapping}
    recs = {}
    for n in mapping:
        rec = txn.get(n)
        assert rec is not None
        recs[n] = rec
    outside: dict[str, Rec] = {}
    for n, rec in recs.items():
        if rec["type"] == "snapshot":
            for c in rec.get("clones") or ():
                if c not in mapping:
                    other = outside.get(c) or txn.get(c)
                    if other is not None:
                        other["origin"] = mapping[n]
                        outside[c] = other
        elif rec.get("origin") and rec["origin"] not in mapping:
            o = rec["origin"]
            snap = outside.get(o) or txn.get(o)
            if snap is not None:
                snap["clones"] = [mapping.get(c, c) for c in snap.get("clones") or ()]
                outside[o] = snap
    heads: set[str] = set()
    for n, rec in recs.items():
        rec["name"] = mapping[n]
        if rec.get("origin") in mapping:
            rec["origin"] = mapping[rec["origin"]]
        if rec["type"] == "snapshot":
            rec["clones"] = [mapping.get(c, c) for c in rec.get("clones") or ()]
            if subtree_root is None:
                heads.add(n.split("@", 1)[0])
                heads.add(mapping[n].split("@", 1)[0])
    for n in mapping:
        txn.drop(n, base=base_names.get(n, False), subtree=False)
    if subtree_root is not None and base_root:
        txn.drop(subtree_root, base=True, subtree=True)
    for rec in recs.values():
        txn.put(rec)
    for rec in outside.values():
        txn.put(rec)
    for h in heads:
        rec = txn.get(h)
        if rec is not None and rec["type"] != "snapshot":
            rec["snapshots_changed"] = txn.now
            txn.put(rec)
