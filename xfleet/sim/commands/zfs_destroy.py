"""`zfs destroy`: bookmarks, snapshots (`ds@a,b`), datasets and whole subtrees (-r), with
dependent clones (-R), dry runs (-n -v -p), and the history OpenZFS logs for each."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from xfleet.sim.formats import nicenum
from xfleet.sim.names import dataset_of, in_subtree, name_problem, pool_of
from xfleet.sim.options import getopt, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import View, open_dataset, snapshots_of

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "destroy")
def zfs_destroy(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("destroy", args, "dfnpRrv", "")
    flags = {o for o, _ in opts}
    recurse = bool(flags & {"r", "R"})
    clones_too = "R" in flags
    dry = "n" in flags
    parsable = "p" in flags
    verbose = "v" in flags or parsable
    if len(rest) != 1:
        raise usage("destroy", "missing dataset argument" if not rest
                    else "too many arguments")
    target = rest[0]
    verb = "would" if dry else "will"

    def say(lines: list[str], name: str) -> None:
        if verbose:
            lines.append(f"destroy\t{name}" if parsable else f"{verb} destroy {name}")

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        lines: list[str] = []
        if "#" in target:
            if v.record(target) is None:
                raise Fail(f"bookmark '{target}' does not exist.")
            say(lines, target)
            if not dry:
                txn.drop(target, base=False, subtree=False)
                # the kernel logs no internal record for a bookmark's destruction
                txn.ioctl(pool_of(target), "destroy_bookmarks", [(target, True)])
            return lines
        if "@" in target:
            ds, spec = target.split("@", 1)
            problem = name_problem(ds, snapshot=False)
            if problem is not None:
                raise Fail(f"cannot open '{ds}': {problem}")
            if v.record(ds) is None:
                raise Fail("could not find any snapshots to destroy; check snapshot names.")
            dsets = [ds]
            if recurse:
                dsets += [d["name"] for d in txn.subtree(ds, frozenset({"fs", "vol"}))
                          if d["name"] != ds]
            found: list[Rec] = []
            for dname in dsets:
                for sn in spec.split(","):
                    rec = v.record(f"{dname}@{sn}")
                    if rec is not None:
                        found.append(rec)
            if not found:
                raise Fail("could not find any snapshots to destroy; check snapshot names.")
            deps = _dependents(txn, [c for s in found for c in s.get("clones") or ()])
            if deps and not clones_too:
                cloned = next(s["name"] for s in found if s.get("clones"))
                raise Fail(f"cannot destroy '{cloned}': snapshot has dependent clones\n"
                           "use '-R' to destroy the following datasets:\n"
                           + "\n".join(deps))
            extra = _clone_closure(txn, [c for s in found for c in s.get("clones") or ()])
            for name in deps:
                say(lines, name)
            for s in found:
                say(lines, s["name"])
            if verbose:
                reclaim = sum(s["unique"] for s in found)
                lines.append(f"reclaim\t{reclaim}" if parsable
                             else f"{verb} reclaim {nicenum(reclaim)}")
            if dry:
                return lines
            _refuse_held([*found, *(d for recs in extra.values() for d in recs)])
            _log_destroys(txn, [*(v.record(n) for n in deps), *found])
            remove(txn, extra, [s["name"] for s in found])
            return lines
        rec = open_dataset(v, target, snapshot=False)
        pool = target.split("/", 1)[0]
        if target == pool:
            if not recurse:
                raise Fail(f"cannot destroy '{pool}': operation does not apply to pools\n"
                           f"use 'zfs destroy -r {pool}' to destroy all datasets in the "
                           f"pool\nuse 'zpool destroy {pool}' to destroy the pool itself")
            return _destroy_pool_contents(txn, pool, lines, say, dry, verbose)
        sub = txn.subtree(target)
        typ = rec["type"]
        if len(sub) > 1 and not recurse:
            raise Fail(f"cannot destroy '{target}': {typ} has children\nuse '-r' to "
                       "destroy the following datasets:\n"
                       + "\n".join(d["name"] for d in sub[1:]))
        inside = {d["name"] for d in sub}
        outside = [c for d in _destroy_order(sub) if d["type"] == "snapshot"
                   for c in d.get("clones") or () if c not in inside]
        deps = _dependents(txn, outside)
        if deps and not clones_too:
            raise Fail(f"cannot destroy '{target}': {typ} has dependent clones\nuse '-R' "
                       "to destroy the following datasets:\n" + "\n".join(deps))
        extra = _clone_closure(txn, outside)
        for name in deps:
            say(lines, name)
        for d in _destroy_order(sub):
            say(lines, d["name"])
        if dry:
            return lines
        _refuse_held([*sub, *(d for recs in extra.values() for d in recs)])
        _log_destroys(txn, [*(v.record(n) for n in deps), *_destroy_order(sub)])
        remove(txn, {target: sub, **extra}, [])
        return lines

    return sim.mutate(op, ctx)


def _refuse_held(recs: Iterable[Rec]) -> None:
    """A snapshot with a user hold cannot be destroyed (lzc_destroy_snaps: EBUSY)."""
    for d in recs:
        if d["type"] == "snapshot" and d.get("holds"):
            raise Fail(f"cannot destroy snapshot {d['name']}: dataset is busy")


def _log_destroys(txn: Transaction, recs: Iterable[Rec | None]) -> None:
    """History of destroying `recs` in this order, as `zfs destroy` does it: each run of
    snapshots in one lzc_destroy_snaps (one txg, an ioctl record), each filesystem or
    volume in its own txg (a thick one first drops its refreservation)."""
    batch: list[Rec] = []

    def flush() -> None:
        if batch:
            pool = pool_of(batch[0]["name"])
            txg = txn.stamp(pool)
            for snap in batch:
                txn.internal(pool, "destroy", " ", txg, ds=snap["name"], guid=snap["guid"])
            txn.ioctl(pool, "destroy_snaps", [("snaps", [(x["name"], True) for x in batch])])
            batch.clear()

    for d in recs:
        if d is None or d["type"] == "bookmark":
            continue
        if d["type"] == "snapshot":
            batch.append(d)
            continue
        flush()
        name = d["name"]
        pool = pool_of(name)
        txg = txn.stamp(pool)
        if d.get("refreservation"):
            txn.internal(pool, "set", "refreservation=0", txg, ds=name, guid=d["guid"])
        mintxg = d.get("origin_createtxg", 1)
        if d.get("origin") and "origin_createtxg" not in d:
            origin = txn.view.record(d["origin"])
            mintxg = origin["createtxg"] if origin is not None else 1
        txn.internal(pool, "destroy", f"(bptree, mintxg={mintxg})", txg, ds=name,
                     guid=d["guid"])
    flush()


def _dependents(txn: Transaction, clones: Iterable[str]) -> list[str]:
    """Clones (oldest first) with everything that depends on them, in the order zfs lists
    them in 'use -R to destroy the following datasets' (dependents before their origin)."""
    out: list[str] = []
    seen: set[str] = set()
    v = txn.view

    def by_txg(names: Iterable[str]) -> list[str]:
        recs = [(v.record(n), n) for n in names if n not in seen]
        return [n for r, n in sorted((x for x in recs if x[0] is not None),
                                     key=lambda x: x[0]["createtxg"])]  # type: ignore[index]

    def visit(clone: str) -> None:
        seen.add(clone)
        for d in _destroy_order(txn.subtree(clone)):
            if d["type"] == "snapshot":
                for c in by_txg(d.get("clones") or ()):
                    visit(c)
            out.append(d["name"])

    for c in by_txg(clones):
        if c not in seen:
            visit(c)
    return out


def _clone_closure(txn: Transaction, clones: Iterable[str]) -> dict[str, list[Rec]]:
    """Subtrees of `clones`, and of clones of their snapshots, recursively (for -R)."""
    out: dict[str, list[Rec]] = {}
    todo = list(clones)
    covered: set[str] = set()
    while todo:
        c = todo.pop()
        if c in covered or any(in_subtree(c, r) for r in out):
            continue
        sub = txn.subtree(c)
        out[c] = sub
        for d in sub:
            covered.add(d["name"])
            if d["type"] == "snapshot":
                todo.extend(x for x in d.get("clones") or () if x not in covered)
    return out


def remove(txn: Transaction, subtrees: dict[str, list[Rec]], snapshots: list[str]) -> None:
    """Destroy whole subtrees (root -> its derived records) and single snapshots, fixing the
    records that survive: origin snapshots' clone lists and heads of destroyed snapshots."""
    v = txn.view
    gone: set[str] = set(snapshots)
    for recs in subtrees.values():
        gone.update(d["name"] for d in recs)
    base_roots = {r: v.is_base(r) for r in subtrees}
    base_snaps = {s: v.is_base(s) for s in snapshots}
    fix_clones: dict[str, list[str]] = {}
    for recs in subtrees.values():
        for d in recs:
            o = d.get("origin")
            if d["type"] != "snapshot" and o and o not in gone:
                fix_clones.setdefault(o, []).append(d["name"])
    heads: dict[str, list[Rec]] = {}
    for s in snapshots:
        head = s.split("@", 1)[0]
        if head not in gone:
            rec = v.record(s)
            assert rec is not None
            heads.setdefault(head, []).append(rec)
    remaining = {h: [d for d in snapshots_of(v, h) if d["name"] not in gone]
                 for h in heads}
    for root, is_base in base_roots.items():
        for name in [n for n in txn.ov.records if in_subtree(n, root)]:
            txn.drop(name, base=False, subtree=False)
        if is_base:
            txn.drop(root, base=True, subtree=True)
    for s, is_base in base_snaps.items():
        txn.drop(s, base=is_base, subtree=False)
    for o, names in fix_clones.items():
        rec = txn.get(o)
        if rec is not None:
            rec["clones"] = [c for c in rec.get("clones") or () if c not in names]
            txn.put(rec)
    for h, gone_snaps in heads.items():
        rec = txn.get(h)
        if rec is None:
            continue
        rest = remaining[h]
        last_txg = max((d["createtxg"] for d in rest), default=-1)
        old_ubs = rec["ubs"]
        for sr in gone_snaps:
            rec["ubs"] = max(0, rec["ubs"] - sr["unique"])
            if sr["createtxg"] > last_txg:
                rec["written"] = min(rec["referenced"], rec["written"] + sr["written"])
        if not rest:
            rec["written"] = rec["ubd"] if rec.get("origin") else rec["referenced"]
            rec["ubs"] = 0
        before = rec["ubd"] + old_ubs
        if before:
            rec["lused_own"] = rec["lused_own"] * (rec["ubd"] + rec["ubs"]) // before
        rec["snapshots_changed"] = txn.now
        txn.put(rec)


def _destroy_pool_contents(txn: Transaction, pool: str, lines: list[str],
                           say: Callable[[list[str], str], None], dry: bool,
                           verbose: bool) -> list[str]:
    v = txn.view
    if verbose or not dry:
        recs = list(_destroy_order_iter(v, pool)) if verbose else None
        for d in recs or ():
            say(lines, d["name"])
        if not dry:
            _log_destroys(txn, recs if recs is not None
                          else _destroy_order_iter(v, pool))
    if dry:
        return lines
    b = v.base
    a, z = b.pool_range[pool]
    for k in range(a, z):
        tname = b.tenant_name(k)
        if not txn.ov.hides(tname):
            txn.drop(tname, base=True, subtree=True)
    for name in [n for n in txn.ov.records if n != pool and pool_of(n) == pool]:
        txn.drop(name, base=False, subtree=False)
    root = txn.get(pool)
    assert root is not None
    if root["ubs"] or root["written"] != root["referenced"] or root.get("snapshots_changed"):
        root.update(ubs=0, written=root["referenced"], snapshots_changed=txn.now,
                    lused_own=root["logicalreferenced"])
        txn.put(root)
    return lines


def _destroy_order(recs: list[Rec]) -> list[Rec]:
    """Children before parents, each dataset's snapshots just before it."""
    snaps: dict[str, list[Rec]] = {}
    dsets: list[Rec] = []
    for d in recs:
        if d["type"] in ("snapshot", "bookmark"):
            snaps.setdefault(dataset_of(d["name"]), []).append(d)
        else:
            dsets.append(d)
    out: list[Rec] = []
    for d in reversed(dsets):
        out.extend(snaps.pop(d["name"], []))
        out.append(d)
    for rest in snaps.values():
        out.extend(rest)
    return out


def _destroy_order_iter(view: View, pool: str) -> Iterator[Rec]:
    """What `zfs destroy -r POOL` destroys, in order, tenant by tenant (without keeping
    them all)."""
    for d in view.loose_derived(pool):
        if d["name"].startswith(pool + "@"):
            yield d
    chunk: list[Rec] = []
    current: str | None = None
    def ordered(chunk: list[Rec]) -> list[Rec]:
        # a clone's origin is mostly in its tenant: note its txg (history's mintxg) here
        txgs = {d["name"]: d["createtxg"] for d in chunk if d["type"] == "snapshot"}
        for d in chunk:
            if d.get("origin") in txgs:
                d["origin_createtxg"] = txgs[d["origin"]]
        return _destroy_order(chunk)

    for d in view.items(pool, None, None, frozenset({"fs", "vol", "snap"}), None, keep=False):
        top = "/".join(dataset_of(d["name"]).split("/", 2)[:2])
        if current is not None and top != current:
            yield from ordered(chunk)
            chunk = []
        current = top
        if not d["name"].startswith(pool + "@"):
            chunk.append(d)
    yield from ordered(chunk)
