"""`zfs create` and `zfs clone`: new filesystems, volumes and clones, with the defaults, checks
and history records of OpenZFS 2.3; also the helpers other commands create datasets with
(missing parents of `zfs rename -p`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xfleet.sim.content import content_of
from xfleet.sim.formats import parse_size
from xfleet.sim.journal import dsid
from xfleet.sim.names import name_problem, parent_of, pool_of
from xfleet.sim.options import getopt, parse_assignments, source_and_target, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import assign, canon_prop, prop_number
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.space import CLONE_REF, FS_LREF, FS_REF, ZVOL_MIN_LREF, ZVOL_MIN_REF, reservation
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import open_dataset

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "create")
def zfs_create(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("create", args, "psu", "Vbo")
    parents = sparse = False
    volsize_text: str | None = None
    vbs_text: str | None = None
    props_text: list[str] = []
    for o, v in opts:
        if o == "p":
            parents = True
        elif o == "s":
            sparse = True
        elif o == "V":
            volsize_text = v
        elif o == "b":
            vbs_text = v
        elif o == "o":
            props_text.append(v)
    if len(rest) != 1:
        raise usage("create", "missing filesystem argument" if not rest
                    else "too many arguments")
    name = rest[0]
    props = parse_assignments("create", props_text)
    for k, v in props:
        if k == "volblocksize":
            vbs_text = v
    if volsize_text is None and (sparse or vbs_text is not None):
        raise usage("create", "'-s' and '-b' can only be used when creating a volume")
    volsize = None
    if volsize_text is not None:
        volsize = parse_size(volsize_text)
        if volsize is None:
            raise Fail(f"bad volume size '{volsize_text}': invalid numeric suffix")
    vbs = 16384
    if vbs_text is not None:
        got = parse_size(vbs_text)
        if got is None:
            raise Fail(f"bad volume block size '{vbs_text}'")
        vbs = got
    prefix = f"cannot create '{name}'"

    def op(txn: Transaction) -> list[str]:
        problem = name_problem(name, snapshot=False)
        if problem is not None:
            raise Fail(f"{prefix}: {problem}")
        existing = txn.view.record(name)
        if existing is not None:
            if parents and existing["type"] != "snapshot":
                return []
            raise Fail(f"{prefix}: dataset already exists")
        missing = check_parent(txn, name, parents, prefix)
        typ = "volume" if volsize is not None else "filesystem"
        rec = new_dataset(txn, name, typ)
        if volsize is not None:
            if vbs < 512 or vbs > 131072 or vbs & (vbs - 1):
                raise Fail(f"{prefix}: 'volblocksize' must be power of 2 from 512B to "
                           "128KB")
            if volsize == 0:
                raise Fail(f"{prefix}: volume size cannot be zero")
            if volsize % vbs:
                raise Fail(f"{prefix}: volume size must be a multiple of volume block "
                           "size")
            rec["volsize"] = volsize
            rec["volblocksize"] = vbs
            rec["refreservation"] = 0 if sparse else reservation(volsize, vbs)
        for k, v in props:
            assign(rec, k, v, prefix, creating=True)
        need = rec["refreservation"] - rec["written"]
        pool = name.split("/")[0]
        if need > 0 and need > txn.view.avail(pool):
            raise Fail(f"{prefix}: out of space")
        for p in missing:
            put_created(txn, new_dataset(txn, p, "filesystem"), None)
        args: list[tuple[str, Any]] = []
        for o, v in opts:
            if o == "V":
                args.append(("volsize", volsize))
            elif o == "b":
                args.append(("volblocksize", vbs))
            elif o == "o":
                k = v.split("=", 1)[0]
                args.append((canon_prop(k) or k, None))
        if rec["refreservation"] and not any(k == "refreservation" for k, _ in args):
            args.append(("refreservation", None))
        put_created(txn, rec, args)
        if volsize is not None and vbs < 16384:
            ctx.err.append(
                f"Warning: volblocksize ({vbs}) is less than the default minimum block size"
                " (16384).\nTo reduce wasted space a volblocksize of 16384 is "
                "recommended.\n")
        return []

    return sim.mutate(op, ctx)


@command("zfs", "clone")
def zfs_clone(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("clone", args, "pu", "o")
    parents = any(o == "p" for o, _ in opts)
    props = parse_assignments("clone", [v for o, v in opts if o == "o"])
    source, target = source_and_target("clone", rest)

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        snap = open_dataset(v, source, snapshot=None)
        if snap["type"] != "snapshot":
            raise Fail(f"cannot open '{source}': operation not applicable to datasets of "
                       "this type")
        prefix = f"cannot create '{target}'"
        problem = name_problem(target, snapshot=False)
        if problem is not None:
            raise Fail(f"{prefix}: {problem}")
        if target.split("/", 1)[0] != source.split("/", 1)[0].split("@", 1)[0]:
            raise Fail(f"{prefix}: source and target pools differ")
        if v.exists(target):
            raise Fail(f"{prefix}: dataset already exists")
        missing = check_parent(txn, target, parents, prefix)
        head = v.record(source.split("@", 1)[0])
        assert head is not None
        rec = new_dataset(txn, target, head["type"])
        rec.update(origin=source, volsize=snap.get("volsize"),
                   volblocksize=head.get("volblocksize"),
                   referenced=snap["referenced"],
                   logicalreferenced=snap["logicalreferenced"],
                   written=CLONE_REF, ubd=CLONE_REF, lused_own=CLONE_REF // 2,
                   content=content_of(snap))
        for k, val in props:
            assign(rec, k, val, prefix)
        s = txn.get(source)
        assert s is not None
        s["clones"] = [*(s.get("clones") or []), target]
        for p in missing:
            put_created(txn, new_dataset(txn, p, "filesystem"), None)
        txn.put(s)
        put_created(txn, rec, [(canon_prop(k) or k, None) for k, _ in props], origin=s)
        return []

    return sim.mutate(op, ctx)



def check_parent(txn: Transaction, name: str, make_parents: bool, prefix: str,
                 ) -> list[str]:
    """Missing ancestors of `name` to create (with -p), or raise like libzfs."""
    pool = name.split("/", 1)[0]
    if pool not in txn.view.base.pool_range:
        raise Fail(f"{prefix}: no such pool '{pool}'")
    missing: list[str] = []
    parent = parent_of(name)
    while parent is not None:
        rec = txn.view.record(parent)
        if rec is not None:
            if rec["type"] != "filesystem":
                raise Fail(f"{prefix}: parent is not a filesystem")
            break
        missing.append(parent)
        parent = parent_of(parent)
    if missing and not make_parents:
        raise Fail(f"{prefix}: parent does not exist")
    return list(reversed(missing))


def new_dataset(txn: Transaction, name: str, typ: str) -> Rec:
    pool = name.split("/", 1)[0]
    rec: Rec = {
        "name": name, "type": typ, "guid": txn.guid(name), "createtxg": txn.txg(pool),
        "creation": txn.now, "origin": None, "volsize": None, "volblocksize": None,
        "referenced": FS_REF, "logicalreferenced": FS_LREF, "written": FS_REF,
        "ubd": FS_REF, "ubs": 0, "refreservation": 0, "lused_own": FS_LREF,
        "snapshots_changed": 0, "local": {},
    }
    if typ == "volume":
        rec.update(referenced=ZVOL_MIN_REF, logicalreferenced=ZVOL_MIN_LREF,
                   written=ZVOL_MIN_REF, ubd=ZVOL_MIN_REF, lused_own=ZVOL_MIN_LREF)
    return rec



def put_created(txn: Transaction, rec: Rec, props: list[tuple[str, Any]] | None,
                origin: Rec | None = None) -> None:
    """Put a new filesystem, volume or clone and log it like zfs_ioc_create/clone: the
    create (or clone) record in its own txg, then its properties (`props`: the ioctl's
    props in order, None values taken from `rec`; None: no props nvlist at all)."""
    name = rec["name"]
    pool = pool_of(name)
    txg = txn.stamp(pool)
    rec["createtxg"] = txg
    txn.put(rec)
    if origin is not None:
        txn.internal(pool, "clone", f"origin={origin['name']} ({dsid(origin['guid'])})",
                     txg, ds=name, guid=rec["guid"])
    else:
        txn.internal(pool, "create", " ", txg, ds=name, guid=rec["guid"])
    values = [(k, prop_arg(rec, k) if v is None else v) for k, v in props or ()]
    txn.log_props(rec, [k for k, _ in values if k not in ("volsize", "volblocksize")])
    args: list[tuple[str, Any]] = []
    if origin is not None:
        args.append(("origin", origin["name"]))
    else:
        args.append(("type", 3 if rec["type"] == "volume" else 2))
    if props is not None:
        args.append(("props", values))
    txn.ioctl(pool, "clone" if origin is not None else "create", args)


def prop_arg(rec: Rec, prop: str) -> Any:
    """The value of `prop` (set on `rec`) as libzfs passes it to the kernel: numbers for
    numeric and index properties, strings for the others."""
    if prop == "refreservation":
        return int(rec["refreservation"])
    if prop in ("volsize", "volblocksize"):
        return int(rec[prop])
    value = (rec.get("local") or {}).get(prop, "")
    if ":" in prop:
        return value
    num = prop_number(prop, value)
    return int(num) if num.isdigit() else num
