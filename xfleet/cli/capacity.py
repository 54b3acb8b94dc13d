"""`xfleet report capacity`: a thin face over xfleet.ops.capacity (docs/capacity.md), added to
the `report` group of xfleet/cli/compression.py.

The library is imported inside the command, so that `xfleet --help` stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import click

from xfleet.cli.compression import report_group
from xfleet.cli.output import (
    Ctx,
    console,
    echo_json,
    emit,
    nodes_option,
    output_format,
    pass_ctx,
    report_options,
    say,
)
from xfleet.core.errors import UsageError


def _html_target(path: str) -> Path:
    """Where --html writes, checked before the report is built: a file in a writable
    directory."""
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"--html {path}: is a directory", hint="give a file name, e.g. "
                         f"{p / 'capacity.html'}")
    if not parent.is_dir():
        raise UsageError(f"--html {path}: the directory {parent} does not exist",
                         hint="create it first, or write the report elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"--html {path}: not writable (permission denied)",
                         hint="write the report somewhere you can write to")
    return p


@click.command("capacity")
@nodes_option("Only these nodes (repeatable). Default: all.", metavar="NODE")
@click.option("--by", "by", type=click.Choice(["pool", "tenant"]), default="pool",
              show_default=True, help="One row per pool, or per tenant (over the pools).")
@click.option("--days", type=click.IntRange(3, 3650), default=30, show_default=True,
              help="Days of daily history the trend is fitted on.")
@report_options("At most this many rows (soonest to 90% or fastest growing first; 0: all).")
@pass_ctx
def report_capacity(c: Ctx, nodes: tuple[str, ...], by: str, days: int, limit: int,
                    html_path: str | None, as_json: bool, as_csv: bool) -> None:
    """Capacity report: allocation, overcommit, growth trend and days until full.

    Per pool: size, allocated, Σ volsize / size (overcommit), allocated if every
    volume filled, the growth per day (least squares over the daily history, with its
    95% interval) and the days until 80%, 90% and 100% at that trend (earliest..latest
    at the interval's ends; '-' when not growing or under 3 days of history). Per
    tenant: volumes, volsize, used now and the growth of used. Reads the mirror only;
    every sync records the day (docs/capacity.md).

    \b
    Examples:
      xfleet -i inventory/demo.yaml report capacity
      xfleet -i inventory/demo.yaml report capacity --by tenant --limit 10
      xfleet -i inventory/demo.yaml report capacity -n n1 --days 14 --csv > n1.csv
      xfleet -i inventory/demo.yaml report capacity --html capacity.html
    """
    from xfleet.ops import capacity

    fmt = output_format(as_json, as_csv)
    target = _html_target(html_path) if html_path else None
    with c.reader() as conn:
        rep = capacity.build(conn, by=by, days=days, nodes=nodes, limit=limit or None)
    if target is not None:
        try:
            target.write_text(capacity.render_html(rep), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--html {html_path}: cannot write: {exc.strerror or exc}") from None
        say(f"wrote {html_path}")
    if fmt == "json":
        echo_json(rep.to_dict())
    elif fmt == "csv":
        cols = capacity.csv_columns(rep)
        emit(list(cols), rep.rows(), "csv")
    else:
        scope = ", ".join(rep.nodes) if rep.nodes else "all nodes"
        emit(list(capacity.table_columns(rep)), capacity.table_rows(rep), "table",
             title=f"capacity by {by} ({scope}; trend over {days} days)")
        for note in rep.notes:
            console().print(f"  {note}", style="dim")


report_group.add_command(report_capacity)
