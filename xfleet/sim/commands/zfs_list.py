"""`zfs list`: rows in zfs list order, selected by names, depth and types, as -H -p prints them
or as a table. Untouched tenants take the fast path: lines formatted by the compiled generator,
one list per tenant, so the per-line work stays in C."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING

from xfleet.sim.base import TenantLines
from xfleet.sim.formats import HEADERS, SIZE_PROPS, human, table
from xfleet.sim.generator import FAST_COLUMNS, IDENTITY_COLUMNS, compile_generator
from xfleet.sim.names import list_key
from xfleet.sim.options import getopt, parse_columns, parse_types, usage
from xfleet.sim.properties import KIND_OF
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.view import View, by_pool, open_roots

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "list")
def zfs_list(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, names = getopt("list", args, "Hpr", "odtsS")
    scripted = parsable = recursive = False
    cols = ["name", "used", "available", "referenced", "mountpoint"]
    kinds: frozenset[str] | None = None
    depth: int | None = None
    for o, v in opts:
        if o == "H":
            scripted = True
        elif o == "p":
            parsable = True
        elif o == "r":
            recursive = True
        elif o == "o":
            cols = parse_columns("list", v)
        elif o == "t":
            kinds = parse_types("list", v)
        elif o == "d":
            if not v.isdigit():
                raise usage("list", f"invalid depth '{v}'")
            depth = int(v)
            recursive = True
        else:
            raise Fail(f"sim: 'zfs list -{o}' (sorting) is not simulated; rows come in the "
                       "default name order\n", 2)
    if kinds is None:
        kinds = frozenset({"fs", "vol"} | {"snap" for n in names if "@" in n}
                          | {"bm" for n in names if "#" in n})
    if names and not recursive and kinds == frozenset({"snap"}):
        recursive, depth = True, 1
    view = View(sim, sim.current_overlay())
    lines = chain.from_iterable(_list_chunks(sim, view, cols, kinds, names, recursive,
                                             depth, ctx))
    if scripted and parsable:
        return lines
    return _present(lines, cols, scripted, parsable)


def _present(lines: Iterable[str], cols: list[str], scripted: bool,
             parsable: bool) -> Iterator[str]:
    rows = []
    for line in lines:
        vals = line.split("\t")
        if not parsable:
            vals = [human(c, v) for c, v in zip(cols, vals, strict=True)]
        if scripted:
            yield "\t".join(vals)
        else:
            rows.append(vals)
    if not scripted and rows:
        header = [HEADERS.get(c, c.upper()) for c in cols]
        right = {i for i, c in enumerate(cols) if c in SIZE_PROPS
                 or c in ("compressratio", "refcompressratio", "createtxg", "guid")}
        yield from table(header, rows, right)


def _list_chunks(sim: SimTransport, view: View, cols: list[str], kinds: frozenset[str],
                 names: list[str], recursive: bool, depth: int | None,
                 ctx: Context) -> Iterator[list[str]]:
    """`zfs list` output as lists of lines (one list per tenant on the fast path, so the
    per-line work stays in C: chain.from_iterable flattens them)."""
    b = sim.base
    need_space = any(not (c in IDENTITY_COLUMNS or ":" in c) for c in cols)
    need_avail = "available" in cols
    roots = open_roots(view, names, ctx)
    if names and not roots:
        return
    if names and not recursive:
        found = []
        for n in roots:
            d = view.derived_for(n, need_space)
            assert d is not None
            if KIND_OF[d["type"]] not in kinds:
                ctx.fail(f"cannot open '{n}': operation not applicable to datasets of "
                         "this type")
                continue
            found.append(d)
        found.sort(key=lambda d: list_key(d["name"], d["createtxg"]))
        yield [view.line(d, cols) for d in found]
        return
    fast_ok = all(c in FAST_COLUMNS or ":" in c for c in cols)
    for pool, pool_roots in by_pool(b.pools, roots):
        whole = pool_roots is None or pool in pool_roots
        root_row = whole and "fs" in kinds
        totals: tuple[int, int, int] | None = None
        spool = False
        if need_space:
            totals = b.cached_totals(pool, sim.store)
            if totals is None and (need_avail or (root_row and depth is not None)):
                totals = view.totals(pool)
            elif totals is None and root_row:
                spool = True
        fast: TenantLines | None = None
        if fast_ok:
            gen = compile_generator(tuple(cols), kinds, need_space, sim.settings.tenant_property)
            fast = TenantLines(b, gen, pool, view.env(pool, cols, need_avail))
        if not spool:
            if root_row:
                yield [view.line(view.root(pool, totals), cols)]
            line = view.line
            for it in view.items(pool, pool_roots, depth, kinds, fast, fast is not None):
                if type(it) is list:
                    yield it
                else:
                    yield [line(it, cols)]
            continue
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n") as tmp:
            write = tmp.write
            line = view.line
            for it in view.items(pool, pool_roots, depth, kinds, fast, fast is not None):
                if type(it) is list:
                    if it:
                        write("\n".join(it))
                        write("\n")
                else:
                    write(line(it, cols) + "\n")
            a, z = b.pool_range[pool]
            u, lu, ph = fast.sums if fast is not None else (0, 0, 0)
            done = fast.done if fast is not None else set()
            for k in range(a, z):
                if k not in done:
                    bu, blu, bph = view.base_fs_totals(k)
                    u, lu, ph = u + bu, lu + blu, ph + bph
            totals = (u, lu, ph)
            b.remember_totals(pool, totals, sim.store)
            yield [view.line(view.root(pool, totals), cols)]
            tmp.seek(0)
            pending = ""
            while True:
                data = tmp.read(1 << 20)
                if not data:
                    break
                parts = (pending + data).split("\n")
                pending = parts.pop()
                yield parts
            if pending:
                yield [pending]
