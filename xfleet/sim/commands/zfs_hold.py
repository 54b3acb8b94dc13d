"""`zfs hold`, `zfs release` and `zfs holds`: user holds on snapshots (a held snapshot cannot
be destroyed: `zfs destroy` says the dataset is busy), with the history OpenZFS 2.3 logs
(tests/fixtures/real/zpool_history_ops.txt: `hold ... tag=keep temp=0 refs=1`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.formats import table
from xfleet.sim.names import dataset_of, pool_of
from xfleet.sim.options import getopt, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.registry import Context, command
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import View

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "hold")
def zfs_hold(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    return _hold_or_release(sim, args, ctx, holding=True)


@command("zfs", "release")
def zfs_release(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    return _hold_or_release(sim, args, ctx, holding=False)


def _hold_or_release(sim: SimTransport, args: list[str], ctx: Context, *,
                     holding: bool) -> Iterator[str]:
    cmd = "hold" if holding else "release"
    opts, rest = getopt(cmd, args, "r", "")
    recursive = bool(opts)
    if len(rest) < 2:
        raise usage(cmd)
    tag, names = rest[0], rest[1:]
    if holding and tag.startswith("."):
        raise usage(cmd, "tag may not start with '.'")

    def op(txn: Transaction) -> list[str]:
        v = txn.view
        for path in names:
            if "@" not in path:
                ctx.fail(f"'{path}' is not a snapshot")
                continue
            ds, short = path.split("@", 1)
            if v.record(ds) is None:
                ctx.fail(f"cannot open '{ds}': dataset does not exist")
                continue
            snaps = [f"{ds}@{short}"]
            if recursive:
                snaps += [f"{d['name']}@{short}" for d in txn.subtree(ds, frozenset({"fs",
                                                                                   "vol"}))
                          if d["name"] != ds and v.exists(f"{d['name']}@{short}")]
            recs = [r for r in (txn.get(s) for s in snaps) if r is not None]
            if not recs:
                what = "cannot hold snapshot" if holding else "cannot release hold from " \
                    "snapshot"
                ctx.fail(f"{what} '{path}': dataset does not exist")
                continue
            bad = [r for r in recs if (tag in (r.get("holds") or {})) == holding]
            if bad:
                for r in bad:
                    if holding:
                        ctx.fail(f"cannot hold snapshot '{r['name']}': tag already exists "
                                 "on this dataset")
                    else:
                        ctx.fail(f"cannot release hold from snapshot '{r['name']}': no such "
                                 "tag on this dataset")
                continue
            _apply(txn, recs, tag, holding)
        return []

    return sim.mutate(op, ctx)


def _apply(txn: Transaction, recs: list[Rec], tag: str, holding: bool) -> None:
    """One lzc_hold / lzc_release: every snapshot in one txg, then the ioctl's record."""
    pool = pool_of(recs[0]["name"])
    txg = txn.stamp(pool)
    for r in recs:
        holds = dict(r.get("holds") or {})
        if holding:
            holds[tag] = txn.now
            text = f"tag={tag} temp=0 refs={len(holds)}"
        else:
            holds.pop(tag, None)
            text = f"tag={tag} refs={len(holds)}"
        r["holds"] = holds
        txn.put(r)
        txn.internal(pool, "hold" if holding else "release", text, txg, ds=r["name"],
                     guid=r["guid"])
    if holding:
        txn.ioctl(pool, "hold", [("holds", [(r["name"], tag) for r in recs])])
    else:
        txn.ioctl(pool, "release", [(r["name"], [(tag, True)]) for r in recs])


@command("zfs", "holds")
def zfs_holds(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("holds", args, "rHp", "")
    flags = {o for o, _ in opts}
    if not rest:
        raise usage("holds")
    view = View(sim, sim.current_overlay())
    rows: list[list[str]] = []
    for path in rest:
        if "@" not in path:
            ctx.fail(f"'{path}' is not a snapshot")
            continue
        rec = view.record(path)
        if rec is None:
            ctx.fail(f"cannot open '{path}': dataset does not exist")
            continue
        snaps = [rec]
        if "r" in flags:
            short = path.split("@", 1)[1]
            for d in view.items(pool_of(path), [dataset_of(path)], None,
                                frozenset({"snap"}), None):
                if d["name"].endswith("@" + short) and d["name"] != path:
                    snaps.append(d)
        for s in snaps:
            for tag, when in sorted((s.get("holds") or {}).items()):
                shown = str(when) if "p" in flags else \
                    time.strftime("%a %b %e %H:%M %Y", time.localtime(int(when)))
                rows.append([s["name"], tag, shown])
    if "H" in flags:
        return iter(["\t".join(r) for r in rows])
    return table(["NAME", "TAG", "TIMESTAMP"], rows, set())
