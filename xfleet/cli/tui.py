"""`xfleet tui` (the SRE dashboard, xfleet.tui) and `xfleet demo` (the simulated fleet, a tour,
then the dashboard).

The dashboard (textual) is imported inside the commands that open it: it is the slowest
import of all, and `xfleet --help` should not pay for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import REPO_ROOT, Ctx, console, pass_ctx
from xfleet.cli.query import stats_cmd
from xfleet.cli.sync import run_sync, sync_summary
from xfleet.core.errors import UsageError

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory
    from xfleet.mirror.backend import Location
    from xfleet.ops.sync import SyncReport

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
@click.option("--no-sync", is_flag=True,
              help="Keep the mirror if it exists (no set-up): just the tour and the dashboard.")
@click.option("--no-tui", is_flag=True, help="Do not open the dashboard afterwards.")
@click.pass_context
def demo_cmd(ctx: click.Context, no_sync: bool, no_tui: bool) -> None:
    """Set up the built-in simulated fleet, print a tour, open the dashboard.

    The demo fleet (inventory/demo.yaml) is 3 simulated nodes with 100,000 volumes each,
    plus snapshots and clones. The set-up starts it and its mirror afresh, then runs
    xfleet's own operations on it so that every view and report has real figures: a full
    sync, a week of history (a tenant grows, branches, a sync a day), compression estimates
    on a sample, a rolling upgrade of the simulated target, a playbook run, and the
    compression and capacity reports as HTML; each step is timed. The dashboard opens only
    on a terminal.

    \b
    Example:
      xfleet demo --no-tui
    """
    from xfleet.cli import demo
    from xfleet.fleet import inventory as inv_mod

    c: Ctx = ctx.obj
    path = Path(c.inventory_path) if c.inventory_path else DEMO_INVENTORY
    inv = inv_mod.load(path)
    c.use_inventory(inv, path)
    mpath = c.mirror_path()
    con = console()
    con.print(f"[bold]xfleet demo[/]: {len(inv.hosts)} simulated nodes from {path}")
    out_dir = mpath.parent if isinstance(mpath, Path) else inv.state_dir
    files = {k: out_dir / name for k, name in demo.REPORTS.items()}
    if not (no_sync and (not isinstance(mpath, Path) or mpath.exists())):
        demo.require_sim(inv)

        def full_sync(i: Inventory, p: Location, full: bool) -> SyncReport:
            report = run_sync(i, p, (), None, quiet=False, full=full)
            sync_summary(report)
            return report

        def done(s: demo.Step) -> None:
            con.print(f"  [bold]{s.name:<10}[/] {s.seconds:6.1f} s  "
                      + (f"[dim]{s.summary}[/]" if s.skipped else s.summary),
                      highlight=False, soft_wrap=True)

        con.print("setting up the demo (each step is one of xfleet's own operations):")
        built = demo.build(inv, mpath, out_dir=out_dir, playbooks=REPO_ROOT / "playbooks",
                           sync_fn=full_sync, on_step=done)
        con.print(f"  [bold]{'total':<10}[/] {built.seconds:6.1f} s", highlight=False)
        files.update(built.files)
    ctx.invoke(stats_cmd, nodes=(), as_json=False, as_csv=False)
    con.print(tour(inv, path, mpath, files), soft_wrap=True, highlight=False)
    if not no_tui and sys.stdin.isatty() and sys.stdout.isatty():
        from xfleet import tui

        con.print("opening the dashboard (q quits, ? shows the keys) ...")
        tui.run(mpath, inventory=inv)


def tour(inv: Inventory, path: Path, mpath: Location, files: dict[str, Path]) -> str:
    """One command per capability (each runs from the repository's root), with where the
    demo wrote its reports."""
    x = f".venv/bin/xfleet -i {os.path.relpath(path)}"
    first = next(iter(inv.hosts))

    def shown(key: str) -> str:
        p = files.get(key)
        return os.path.relpath(p) if p is not None and p.is_file() else "(not written)"

    lines = [
        f"[bold]Try these[/] (the mirror is {mpath}):",
        "  # the mirror: every pool, volume, snapshot and clone of every node",
        f"  {x} ls --node {first} --type volume --sort used --desc --limit 10",
        f"  {x} ls --where 'used>100G' --where compression=off --count",
        f"  {x} show --node {first} \"$({x} ls --node {first} --type clone --limit 1 --csv "
        "-o origin | tail -1)\"",
        f"  {x} sql \"SELECT tenant, count(*) n, sum(used) FROM datasets WHERE type='volume' "
        "GROUP BY tenant ORDER BY 3 DESC LIMIT 5\"",
        "  # freshness, pool health and alerts",
        f"  {x} status",
        f"  # compression: saved now and what the policy would save (HTML: "
        f"{shown('compression')})",
        f"  {x} report compression --by tenant --limit 10",
    ]
    if inv.compression_policy is not None:
        lines.append(f"  {x} compression plan --show 5")
    lines += [
        f"  # capacity: growth, days until full, overcommit (HTML: {shown('capacity')})",
        f"  {x} report capacity",
    ]
    if any(h.target is not None for h in inv.hosts.values()):
        lines += ["  # the NVMe-oF target: rolled out node by node, journaled",
                  f"  {x} target status",
                  f"  {x} rollouts list"]
    lines += [
        f"  # playbooks: journaled runs (the nightly one wrote {shown('nightly')})",
        f"  {x} plays list",
    ]
    if len(inv.hosts) > 1:
        last = list(inv.hosts)[-1]
        lines += [
            f"  # moves: verified send/receive with cutover (the history moved a volume a day "
            f"off {first})",
            f"  {x} moves list",
            f"  # a node's evacuation, planned (the demo summed it up above; the table lists "
            f"every move: ~40 s for 100k volumes): {x.removeprefix('.venv/bin/')} drain {last} "
            "--dry-run",
        ]
    lines += [
        f"  # the service (metrics, JSON API): {x.removeprefix('.venv/bin/')} serve",
        f"  {x} tui",
    ]
    return "\n" + "\n".join(lines) + "\n"
