"""`xfleet tui` (the SRE dashboard, xfleet.tui) and `xfleet demo` (the simulated fleet, a tour,
then the dashboard).

The dashboard (textual) is imported inside the commands that open it: it is the slowest
import of all, and `xfleet --help` should not pay for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from xfleet.cli.output import REPO_ROOT, Ctx, console, pass_ctx
from xfleet.cli.query import stats_cmd
from xfleet.cli.sync import run_sync, sync_summary
from xfleet.core.errors import UsageError

DEMO_INVENTORY = REPO_ROOT / "inventory" / "demo.yaml"


@click.command("tui")
@click.option("--write", is_flag=True,
              help="Allow actions that change the fleet (each asks for a typed confirmation).")
@pass_ctx
def tui_cmd(c: Ctx, write: bool) -> None:
    """Open the SRE dashboard over the mirror (read-only by default).

    Keys: ':' command mode (:nodes :vols :ops :comp), '/' filter, '?' help, 'enter' drill
    down, 'esc' back, 'q' quit. See docs/tui.md.

    \b
    Example:
      xfleet -i inventory/demo.yaml tui
    """
    from xfleet import mirror, tui

    inv = None
    try:
        inv = c.inventory()
    except UsageError:
        if not c.mirror_override:
            raise
    path = c.mirror_path()
    mirror.connect(path, readonly=True).close()  # a missing mirror fails before the screen
    tui.run(path, inventory=inv, write=write)


@click.command("demo")
@click.option("--no-sync", is_flag=True, help="Do not rebuild the mirror if it exists.")
@click.option("--no-tui", is_flag=True, help="Do not open the dashboard afterwards.")
@click.pass_context
def demo_cmd(ctx: click.Context, no_sync: bool, no_tui: bool) -> None:
    """Build the mirror of the built-in simulated fleet, print a tour, open the dashboard.

    The demo fleet (inventory/demo.yaml) is 3 simulated nodes with 100,000 volumes each,
    plus snapshots and clones. The dashboard opens only on a terminal.

    \b
    Example:
      xfleet demo --no-tui
    """
    from xfleet.fleet import inventory as inv_mod

    c: Ctx = ctx.obj
    path = Path(c.inventory_path) if c.inventory_path else DEMO_INVENTORY
    inv = inv_mod.load(path)
    c.use_inventory(inv, path)
    mpath = c.mirror_path()
    con = console()
    con.print(f"[bold]xfleet demo[/]: {len(inv.hosts)} simulated nodes from {path}")
    if not (no_sync and (not isinstance(mpath, Path) or mpath.exists())):
        report = run_sync(inv, mpath, (), None, quiet=False)
        sync_summary(report)
        if not report.ok:
            sys.exit(1)
    ctx.invoke(stats_cmd, nodes=(), as_json=False, as_csv=False)
    rel = os.path.relpath(path)
    first = next(iter(inv.hosts))
    con.print(f"""
[bold]Try these[/] (the mirror is {mpath}):
  .venv/bin/xfleet -i {rel} ls --node {first} --type volume --sort used --desc --limit 10
  .venv/bin/xfleet -i {rel} ls --where 'used>100G' --where compression=off --count
  .venv/bin/xfleet -i {rel} ls --type clone --limit 5
  .venv/bin/xfleet -i {rel} show --node {first} "$(.venv/bin/xfleet -i {rel} ls --node {first} \
--type clone --limit 1 --csv -o origin | tail -1)"
  .venv/bin/xfleet -i {rel} stats
  .venv/bin/xfleet -i {rel} sql --list
  .venv/bin/xfleet -i {rel} sql "SELECT tenant, count(*) n, sum(used) FROM datasets \
WHERE type='volume' GROUP BY tenant ORDER BY 3 DESC LIMIT 5"
  .venv/bin/xfleet -i {rel} tui
""", soft_wrap=True)
    if not no_tui and sys.stdin.isatty() and sys.stdout.isatty():
        from xfleet import tui

        con.print("opening the dashboard (q quits, ? shows the keys) ...")
        tui.run(mpath, inventory=inv)
