"""`zfs snapshot` (alias `zfs snap`) and `zfs bookmark`: snapshots of one or more datasets in
one sync task, and bookmarks of snapshots or of other bookmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.content import content_of
from xfleet.sim.journal import dsid
from xfleet.sim.names import dataset_of, name_problem, pool_of
from xfleet.sim.options import getopt, parse_assignments, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import assign, canon_prop, prop_number
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.transaction import Transaction

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "snapshot", "snap")
def zfs_snapshot(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, names = getopt("snapshot", args, "r", "o")
    recursive = any(o == "r" for o, _ in opts)
    props = parse_assignments("snapshot", [v for o, v in opts if o == "o"])
    if not names:
        raise usage("snapshot", "missing snapshot argument")

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        for n in names:
            problem = name_problem(n, snapshot=True)
            if problem is not None:
                raise Fail(f"cannot create snapshot '{n}': {problem}")
        targets: list[tuple[str, str]] = []
        for n in names:
            ds, sname = n.split("@", 1)
            rec = v.record(ds)
            if rec is None:
                raise usage("snapshot", f"cannot open '{ds}': dataset does not exist")
            targets.append((ds, sname))
            if recursive:
                for d in txn.subtree(ds, frozenset({"fs", "vol"})):
                    if d["name"] != ds:
                        targets.append((d["name"], sname))
        seen: set[str] = set()
        for ds, _ in targets:
            if ds in seen:
                raise Fail("cannot create snapshots : multiple snapshots of same fs not "
                           "allowed")
            seen.add(ds)
        exists = [f"{ds}@{sn}" for ds, sn in targets if v.exists(f"{ds}@{sn}")]
        if exists:
            raise Fail("".join(f"cannot create snapshot '{n}': dataset already exists\n"
                               for n in exists))
        txgs: dict[str, int] = {}
        for ds, sn in targets:
            head = txn.get(ds)
            assert head is not None
            name = f"{ds}@{sn}"
            pool = pool_of(ds)
            if pool not in txgs:
                txgs[pool] = txn.stamp(pool)  # one sync task for all the snapshots
            snap: Rec = {
                "name": name, "type": "snapshot", "guid": txn.guid(name),
                "createtxg": txgs[pool], "creation": txn.now,
                "referenced": head["referenced"],
                "logicalreferenced": head["logicalreferenced"],
                "written": head["written"], "unique": 0,
                "volsize": head.get("volsize"), "clones": [], "local": {},
                "content": content_of(head),
            }
            for k, val in props:
                assign(snap, k, val, f"cannot create snapshot '{name}'")
            head["written"] = 0
            head["snapshots_changed"] = txn.now
            txn.put(head)
            txn.put(snap)
            txn.internal(pool, "snapshot", " ", txgs[pool], ds=name, guid=snap["guid"])
            for k, _ in props:
                prop = canon_prop(k) or k
                txn.internal(pool, "set", f"{prop}={prop_number(prop, snap['local'][prop])}",
                             txgs[pool], ds=name, guid=snap["guid"])
        txn.ioctl(pool_of(targets[0][0]), "snapshot", [
            ("snaps", [(f"{ds}@{sn}", True) for ds, sn in targets]),
            ("props", [(canon_prop(k) or k, v) for k, v in props])])
        return []

    return sim.mutate(op, ctx)


@command("zfs", "bookmark")
def zfs_bookmark(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    _, rest = getopt("bookmark", args, "", "")
    if len(rest) != 2:
        raise usage("bookmark", "missing snapshot argument" if not rest
                    else "missing bookmark argument" if len(rest) == 1
                    else "too many arguments")
    source, target = rest
    if target.startswith("#"):
        target = dataset_of(source) + target

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        prefix = f"cannot create bookmark '{target}'"
        if "@" not in source and "#" not in source:
            raise Fail(f"{prefix}: source must be a snapshot or bookmark")
        src = v.record(source)
        if src is None:
            raise Fail(f"{prefix}: dataset does not exist")
        problem = name_problem(target, snapshot=None, bookmark=True)
        if problem is not None:
            raise Fail(f"{prefix}: {problem}")
        if dataset_of(target) != dataset_of(source):
            raise Fail(f"{prefix}: source is not an ancestor of the new bookmark's dataset")
        if v.exists(target):
            raise Fail(f"{prefix}: bookmark exists")
        txn.put({"name": target, "type": "bookmark", "guid": src["guid"],
                 "createtxg": src["createtxg"], "creation": src["creation"],
                 "referenced": src["referenced"],
                 "logicalreferenced": src["logicalreferenced"], "local": {}})
        head = v.record(dataset_of(source))
        assert head is not None
        pool = pool_of(source)
        short = target.split("#", 1)[1]
        if "@" in source:
            text = (f"name={short} creation_txg={src['createtxg']} "
                    f"target_snap={dsid(src['guid'])} redact_obj=0")
        else:
            text = f"name={short} creation_txg={src['createtxg']} source_guid={src['guid']}"
        txn.internal(pool, "bookmark", text, txn.stamp(pool), ds=head["name"],
                     guid=head["guid"])
        txn.ioctl(pool, "bookmark", [(target, source)])
        return []

    return sim.mutate(op, ctx)
