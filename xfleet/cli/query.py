"""`xfleet ls`, `xfleet show`, `xfleet stats`, `xfleet sql`: reads from the mirror, never from
the nodes (xfleet.mirror.query; docs/query.md, docs/mirror.md).

The library and rich are imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xfleet.cli.output import (
    REPO_ROOT,
    Ctx,
    console,
    csv_option,
    echo_json,
    emit,
    format_value,
    json_option,
    nodes_option,
    output_format,
    pass_ctx,
    where_option,
)
from xfleet.core.errors import UsageError


@click.command("ls")
@click.argument("pattern", required=False)
@nodes_option("Only on these nodes.", metavar=None)
@click.option("--pool", "pools", multiple=True, help="Only in these pools.")
@click.option("--type", "-t", "types", multiple=True,
              help="volume, snapshot, filesystem, bookmark or clone (repeatable).")
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Only on nodes with this inventory label.")
@click.option("--origin", metavar="SNAPSHOT|DATASET",
              help="Clones of this snapshot (or of any snapshot of this dataset).")
@where_option()
@click.option("--sort", "-s", metavar="COLUMN", help="Sort by a column; '-used' sorts descending.")
@click.option("--desc", is_flag=True, help="Sort descending.")
@click.option("--limit", "-l", type=click.IntRange(0), metavar="N",
              help="At most N rows (0: all). Default 100 for tables, all for --json/--csv.")
@click.option("--columns", "-o", metavar="COL,COL", help="Columns to show.")
@click.option("--count", "count_only", is_flag=True, help="Only count the matching rows.")
@json_option
@csv_option
@pass_ctx
def ls_cmd(c: Ctx, pattern: str | None, nodes: tuple[str, ...], pools: tuple[str, ...],
           types: tuple[str, ...], tenants: tuple[str, ...], labels: tuple[str, ...],
           origin: str | None, where: tuple[str, ...], sort: str | None, desc: bool,
           limit: int | None, columns: str | None, count_only: bool, as_json: bool,
           as_csv: bool) -> None:
    """List datasets from the mirror (never waits on zfs list).

    PATTERN matches names: a glob if it has * ? [, else a substring.

    \b
    Examples:
      xfleet ls --node n1 --type volume --sort used --desc --limit 50
      xfleet ls 'tank/t0042/*' --type snapshot
      xfleet ls --where 'used>100G' --where compression=off --csv > big-uncompressed.csv
      xfleet ls --origin tank/t0001/vol-000001 --json     # its clones
    """
    from xfleet.mirror import query

    fmt = output_format(as_json, as_csv)
    cols = tuple(x.strip() for x in columns.split(",")) if columns else \
        query.DEFAULT_LS_COLUMNS
    default_limit = fmt == "table" and limit is None
    eff_limit = 100 if default_limit else (limit or None)
    tenant_prop = "xfleet:tenant"
    sel = query.Selection(nodes=nodes, pools=pools, types=types, tenants=tenants, labels=labels,
                          origin=origin, pattern=pattern, where=where, sort=sort, desc=desc,
                          limit=eff_limit, columns=cols, tenant_property=tenant_prop)
    sel.sql()  # validate before touching the mirror
    with c.reader() as conn:
        if count_only:
            n, capped = query.count(conn, sel, cap=10_000_000)
            if fmt == "json":
                echo_json({"count": n, "capped": capped}, indent=None)
            else:
                click.echo(f"{n}{'+' if capped else ''}")
            return
        shown = emit([query._column(x) for x in cols], query.ls(conn, sel), fmt)
        if fmt == "table":
            if shown == 0:
                console().print("no matching datasets", style="dim")
            elif default_limit and shown == eff_limit:
                total, capped = query.count(conn, sel, cap=1_000_000)
                console().print(
                    f"first {shown} of {total:,}{'+' if capped else ''} rows "
                    "(use --limit N, or --limit 0 for all)", style="dim")


@click.command("show")
@click.argument("name")
@click.option("--node", "-n", help="The node, when the name exists on several.")
@json_option
@pass_ctx
def show_cmd(c: Ctx, name: str, node: str | None, as_json: bool) -> None:
    """Show one dataset: properties, placement, snapshots, clones and origin chain.

    A pool's name (its root dataset) shows the pool's health too: state, the problem and
    what to do, the last or running scan, the error counters and the vdev tree, as the last
    sync read them from `zpool status`.

    \b
    Examples:
      xfleet show tank/t0001/vol-000001
      xfleet show tank --node n1           # the pool: health and vdevs
    """
    from rich.tree import Tree

    from xfleet.mirror import query

    with c.reader() as conn:
        d = query.show(conn, name, node)
    if as_json:
        echo_json({"dataset": d.row, "node": d.node, "snapshots": d.snapshots,
                   "clones": d.clones, "origin_chain": d.origin_chain,
                   "children": d.children, **({"pool": d.pool} if d.pool else {})})
        return
    con = console()
    r = d.row
    con.print(f"[bold]{r['name']}[/]  ({r['type']} on [bold]{r['node']}[/], pool {r['pool']})")
    props = [{"property": k, "value": format_value(k, v)} for k, v in r.items()
             if k not in ("id", "name", "sync_run", "user_properties")]
    for k, v in (r.get("user_properties") or {}).items():
        props.append({"property": k, "value": str(v)})
    emit(["property", "value"], props, "table")
    n = d.node
    con.print(f"\n[bold]placement[/]: node {n.get('name')} ({n.get('kind', '?')}"
              f"{', ' + n['address'] if n.get('address') else ''}), labels "
              f"{n.get('labels') or {}}; mirror data from "
              f"{format_value('synced_at', r.get('synced_at'))}"
              f"{' [red](node stale)[/]' if n.get('stale') else ''}")
    if d.origin_chain:
        tree = Tree("[bold]origin chain[/]")
        branch = tree
        for link in d.origin_chain:
            branch = branch.add(f"{link['snapshot']}" + ("" if link["present"] else
                                                         " [red](not in mirror)[/]"))
        con.print(tree)
    tree = Tree(f"[bold]{r['name']}[/]")
    by_snap: dict[str, list[dict[str, Any]]] = {}
    for cl in d.clones:
        by_snap.setdefault(cl["origin"], []).append(cl)
    for s in d.snapshots:
        node_s = tree.add(f"@{s['name'].split('@', 1)[1]}  written "
                          f"{format_value('written', s['written'])}"
                          f"  used {format_value('used', s['used'])}")
        for cl in by_snap.get(s["name"], []):
            node_s.add(f"[cyan]clone[/] {cl['name']}  used {format_value('used', cl['used'])}")
    if "@" in r["name"]:
        for cl in d.clones:
            tree.add(f"[cyan]clone[/] {cl['name']}")
    con.print(tree if (d.snapshots or d.clones) else "no snapshots or clones")
    if d.children:
        con.print(f"{d.children} child datasets")
    if d.pool is not None:
        _show_pool(d.pool)


def _show_pool(p: dict[str, Any]) -> None:
    """A pool's health as `zpool status` words it, from the mirror."""
    import datetime as dt
    import time

    from rich.text import Text

    from xfleet.core.text import printable
    from xfleet.core.units import format_age
    from xfleet.mirror import query

    con = console()
    now = time.time()
    head = Text("\npool ", style="bold")
    head.append(f"{p['pool']} on {p['node']}: ")
    healthy = p.get("health") == "ONLINE" and not p.get("errors")
    head.append(query.health_summary(p), style="green" if healthy else "bold red")
    if p.get("health_at") is None:
        con.print(head)
        con.print("health not read yet (run 'xfleet sync')", style="dim")
        return
    head.append(f"  (read {format_age(now - p['health_at'])} ago)", style="dim")
    con.print(head)

    def when(t: float | None) -> str:
        return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"

    for key in ("status", "action"):
        if p.get(key):
            con.print(Text(f"{key}: ", style="bold") + Text(printable(p[key])))
    scan = Text("scan: ", style="bold")
    scan.append(query.scan_summary(p, now) or "-")
    if p.get("scan_function"):
        scan.append(f" (started {when(p.get('scan_start'))}, ended {when(p.get('scan_end'))}"
                    f", {p.get('scan_errors') or 0} errors)", style="dim")
    con.print(scan)
    con.print(Text("errors: ", style="bold") + Text(
        f"read {p.get('read_errors') or 0}, write {p.get('write_errors') or 0}, checksum "
        f"{p.get('checksum_errors') or 0} (leaf vdevs); data {p.get('data_errors') or 0}"))
    rows = [{"name": "  " * v["depth"] + v["name"], "state": v["state"],
             "read": v["read_errors"], "write": v["write_errors"],
             "cksum": v["checksum_errors"], "slow": v["slow_ios"],
             "type": v["vdev_type"], "path": v["path"] if v["path"] != v["name"] else None}
            for v in p["vdevs"]]
    if rows:
        emit(["name", "state", "read", "write", "cksum", "slow", "type", "path"], rows,
             "table")


@click.command("stats")
@nodes_option("Only these nodes.", metavar=None)
@json_option
@csv_option
@pass_ctx
def stats_cmd(c: Ctx, nodes: tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Per node and pool: counts by type, logical vs physical bytes, capacity, health and
    errors, the last scan, freshness.

    ERRORS sums the read, write and checksum errors of the pool's leaf vdevs and its data
    errors; SCAN is the last or running scrub or resilver (`xfleet show POOL` has the
    details). --json has each counter, the scan's fields and `last_scrub`.

    \b
    Example:
      xfleet stats --json
    """
    import time

    from xfleet.core.units import format_age
    from xfleet.mirror import query

    fmt = output_format(as_json, as_csv)
    with c.reader() as conn:
        rows = query.stats(conn, nodes)
    now = time.time()
    for r in rows:
        r["fresh"] = ("STALE " if r["stale"] else "") + format_age(r["age_seconds"])
        r["scan"] = query.scan_summary(r, now)
    cols = ["node", "pool", "health", "errors", "scan", "volumes", "snapshots", "clones",
            "filesystems", "logicalused", "used", "compressratio", "size", "allocated", "free",
            "fresh"]
    if fmt == "table":
        for r in rows:
            r["compressratio"] = r["compressratio"] or None
    emit(cols if fmt != "json" else [], rows, fmt)


@click.command("sql")
@click.argument("query_text", required=False, metavar="SQL")
@click.option("--saved", metavar="NAME", help="Run a saved query from queries/.")
@click.option("--list", "list_saved", is_flag=True, help="List the saved queries.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A named parameter for :NAME in the query (repeatable).")
@json_option
@csv_option
@pass_ctx
def sql_cmd(c: Ctx, query_text: str | None, saved: str | None, list_saved: bool,
            params: tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Run read-only SQL on the mirror (tables: docs/mirror.md).

    \b
    Examples:
      xfleet sql "SELECT node, type, count(*) FROM datasets GROUP BY 1, 2"
      xfleet sql --list
      xfleet sql --saved biggest-volumes --param limit=10
    """
    from xfleet.mirror import query

    fmt = output_format(as_json, as_csv)
    dirs = [Path("queries"), REPO_ROOT / "queries"]
    if c.inventory_path:
        dirs.insert(1, Path(c.inventory_path).resolve().parent.parent / "queries")
    if list_saved:
        rows = [{"name": q.name, "description": q.description, "path": str(q.path)}
                for q in query.saved_queries(dirs).values()]
        emit(["name", "description"], rows, fmt)
        return
    if saved:
        queries = query.saved_queries(dirs)
        if saved not in queries:
            raise UsageError(f"no saved query {saved!r}",
                             hint=f"saved queries: {', '.join(queries) or 'none'}")
        query_text = queries[saved].sql
    if not query_text:
        raise UsageError("give a query, --saved NAME or --list")
    bound: dict[str, Any] = {}
    for p in params:
        k, sep, v = p.partition("=")
        if not sep:
            raise UsageError(f"--param {p!r} is not NAME=VALUE")
        bound[k] = v
        if v.lstrip("-").isdigit():
            number = int(v)
            if not -(2**63) <= number < 2**63:
                raise UsageError(f"--param {k}: {v[:40]} is out of range for SQLite "
                                 "(a 64-bit integer)", hint="pass a smaller number, or "
                                 "compare as text with a quoted parameter in the query")
            bound[k] = number
    with c.reader() as conn:
        names, cursor = query.run_sql(conn, query_text, bound)
        emit(names, (dict(zip(names, r, strict=True)) for r in cursor), fmt)
