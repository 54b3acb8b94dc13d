"""`zfs set` and `zfs inherit`: property changes, validated like zfs and logged as the kernel
logs them (special properties one sync task each, the others together)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.names import parent_of, pool_of
from xfleet.sim.options import getopt, parse_assignments, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import INHERITABLE, READONLY, STATIC, assign, canon_prop, prop_number
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import View

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "set")
def zfs_set(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("set", args, "u", "")
    assigns: list[str] = []
    i = 0
    while i < len(rest) and "=" in rest[i]:
        assigns.append(rest[i])
        i += 1
    names = rest[i:]
    if not assigns:
        raise usage("set", "missing property=value argument(s)")
    if not names:
        raise usage("set", "missing dataset name(s)")
    props = parse_assignments("set", assigns)

    def op(txn: Transaction) -> list[str]:
        for name in names:
            rec = txn.get(name)
            if rec is None:
                ctx.fail(f"cannot open '{name}': dataset does not exist")
                continue
            refres = rec.get("refreservation")
            try:
                for k, v in props:
                    assign(rec, k, v, f"cannot set property for '{name}'")
            except Fail as f:
                ctx.fail(f.stderr, f.code)
                continue
            txn.put(rec)
            txn.touch(pool_of(name))
            logged = [canon_prop(k) or k for k, _ in props]
            if "volsize" in logged and rec.get("refreservation") != refres \
                    and "refreservation" not in logged:
                logged.append("refreservation")  # libzfs adjusts a thick volume's
            txn.log_props(rec, logged)
        return []

    return sim.mutate(op, ctx)


@command("zfs", "inherit")
def zfs_inherit(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("inherit", args, "rS", "")
    recursive = any(o == "r" for o, _ in opts)
    if not rest:
        raise usage("inherit", "missing property argument")
    if len(rest) < 2:
        raise usage("inherit", "missing dataset argument")
    prop_text, names = rest[0], rest[1:]
    prop = canon_prop(prop_text)
    if prop is None:
        raise usage("inherit", f"invalid property '{prop_text}'")
    if ":" not in prop and prop not in INHERITABLE:
        if prop in READONLY:
            raise Fail(f"{prop} property is read-only")
        raise Fail(f"'{prop}' property cannot be inherited")

    def op(txn: Transaction) -> list[str]:
        todo: list[str] = []
        for name in names:
            if not txn.view.exists(name):
                ctx.fail(f"cannot open '{name}': dataset does not exist")
                continue
            todo.append(name)
            if recursive:
                todo += [d["name"] for d in txn.subtree(name) if d["name"] != name]
        for name in todo:
            rec = txn.get(name)
            if rec is None:
                continue
            if prop in (rec.get("local") or {}):
                del rec["local"][prop]
                txn.put(rec)
            if rec["type"] == "snapshot" and ":" not in prop:
                continue
            # logged as what is in effect afterwards (dsl_prop_set_sync_impl)
            value = inherited(txn.view, rec, prop)
            pool = pool_of(name)
            txn.internal(pool, "inherit", f"{prop}={value}", txn.stamp(pool), ds=name,
                         guid=rec["guid"])
        return []

    return sim.mutate(op, ctx)


def inherited(view: View, rec: Rec, prop: str) -> str:
    """What `rec` inherits for `prop` from its ancestors (as the kernel logs it: the
    ancestor's raw value, numbers for numeric properties), or '' / the default."""
    parent = parent_of(rec["name"])
    cur = view.record(parent) if parent else None
    while cur is not None:
        local = cur.get("local") or {}
        if prop in local:
            return prop_number(prop, local[prop])
        parent = parent_of(cur["name"])
        cur = view.record(parent) if parent else None
    if ":" in prop or prop == "mountpoint":
        return ""
    return prop_number(prop, STATIC.get(prop, ""))
