"""`xfleet mirror init|migrate|status|copy`: the mirror itself, on either engine: create it,
migrate it, see what it holds, and copy it between SQLite and PostgreSQL (xfleet.mirror.status,
xfleet.mirror.copy; docs/mirror.md, "Moving between engines"; docs/team.md).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import Ctx, confirm, echo_json, emit, json_option, pass_ctx, say

if TYPE_CHECKING:
    from xfleet.mirror.status import Prepared


@click.group("mirror")
def mirror_group() -> None:
    """Create, migrate, inspect and copy the mirror (SQLite or PostgreSQL).

    The mirror is the one selected by --mirror PATH|URL (XFLEET_MIRROR), else the
    inventory's `mirror:`.

    \b
    Examples:
      xfleet --mirror postgresql://xfleet@db1/xfleet mirror init
      xfleet mirror status
      xfleet mirror migrate
      xfleet mirror copy --to postgresql://xfleet@db1/xfleet
    """


def _prepared_line(p: Prepared) -> str:
    from xfleet.mirror.backend import location
    from xfleet.mirror.status import engine

    what = f"the {engine(location(p.location))} mirror {p.location}"
    if p.created:
        return f"created {what} (schema version {p.after})"
    if p.migrated:
        return f"migrated {what} from schema version {p.before} to {p.after}"
    return f"{what} is at schema version {p.after} already: nothing to do"


@mirror_group.command("init")
@json_option
@pass_ctx
def mirror_init(c: Ctx, as_json: bool) -> None:
    """Create the mirror with this xfleet's schema (a new SQLite file, or the tables in an
    empty PostgreSQL database). Running it again changes nothing; an older mirror is
    migrated.

    \b
    Examples:
      xfleet --mirror postgresql://xfleet@db1.example.net/xfleet mirror init
      xfleet --mirror /srv/xfleet/mirror.db mirror init --json
    """
    from xfleet.mirror import status

    p = status.prepare(c.mirror_path(), create=True)
    if as_json:
        echo_json({"ok": True, **p.to_dict()})
        return
    click.echo(_prepared_line(p))


@mirror_group.command("migrate")
@json_option
@pass_ctx
def mirror_migrate(c: Ctx, as_json: bool) -> None:
    """Bring an older mirror to this xfleet's schema (each migration in its own transaction).
    A mirror newer than this xfleet is refused: upgrade xfleet instead.

    \b
    Examples:
      xfleet mirror migrate
      xfleet --mirror old.db mirror migrate --json
    """
    from xfleet.mirror import status

    p = status.prepare(c.mirror_path(), create=False)
    if as_json:
        echo_json({"ok": True, **p.to_dict()})
        return
    click.echo(_prepared_line(p))


def _load_job_kinds() -> None:
    """Import the features that register a kind of journaled job (jobs.KINDS)."""
    import xfleet.ops.compression
    import xfleet.ops.moves
    import xfleet.ops.rollout
    import xfleet.playbook.journal  # noqa: F401 - imported for their registration


@mirror_group.command("status")
@json_option
@pass_ctx
def mirror_status(c: Ctx, as_json: bool) -> None:
    """The mirror: engine, location, schema version (and this xfleet's), rows per table, size
    on disk, open jobs and the last sync of every node. Works on a mirror of any version.

    `datasets` is counted from the per-node figures the syncs keep (`nodes.datasets`), not
    by scanning millions of rows; every other table is counted exactly.

    \b
    Examples:
      xfleet mirror status
      xfleet --mirror postgresql://xfleet@db1/xfleet mirror status --json
    """
    from xfleet.core.units import format_age, format_size
    from xfleet.mirror import status

    _load_job_kinds()
    st = status.gather(c.mirror_path())
    if as_json:
        echo_json(st.to_dict())
        return
    now = time.time()
    click.echo(f"mirror:  {st.location}  ({st.engine})")
    click.echo(f"schema:  version {st.schema_version} (this xfleet: {st.xfleet_schema_version}"
               f"; {st.state})")
    click.echo(f"size:    {format_size(st.size_bytes)} on disk")
    jobs = ", ".join(f"{t} {n}" for t, n in st.open_jobs.items()) or "-"
    click.echo(f"open jobs: {jobs}")
    click.echo()
    emit(["table", "rows", "counted"],
         [{"table": t.table, "rows": "-" if t.rows is None else f"{t.rows:,}",
           "counted": t.counted if t.rows is not None else "(not in this schema version)"}
          for t in st.tables], "table")
    if st.nodes:
        click.echo()

        def ago(v: float | None) -> str:
            return "never" if v is None else f"{format_age(max(0.0, now - v))} ago"

        emit(["node", "last_sync_ok", "last_sync_tried", "stale", "datasets", "error"],
             [{"node": n["node"], "last_sync_ok": ago(n["last_success"]),
               "last_sync_tried": ago(n["last_attempt"]), "stale": "yes" if n["stale"] else "no",
               "datasets": f"{n['datasets']:,}", "error": n["last_error"] or ""}
              for n in st.nodes], "table")


class _Progress:
    """Progress of a big table's copy on stderr: a line rewritten in place on a terminal, a
    line per tenth of the table otherwise."""

    BIG = 50_000  # rows from which a table's progress is shown

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown: dict[str, int] = {}

    def __call__(self, table: str, done: int, total: int) -> None:
        if total < self.BIG:
            return
        tenth = 10 * done // max(total, 1)
        text = f"copying {table}: {done:,}/{total:,} rows ({100 * done / max(total, 1):.0f}%)"
        if self.tty:
            click.echo("\r" + text, err=True, nl=done >= total)
        elif tenth > self.shown.get(table, -1):
            self.shown[table] = tenth
            say(text)


@mirror_group.command("copy")
@click.option("--to", "target", required=True, metavar="PATH|URL",
              help="Where to copy the mirror: an SQLite file or a postgresql:// URL (created "
              "with the current schema if new; must be empty).")
@click.option("--replace", is_flag=True,
              help="Delete the target's rows first if it has any (asks; --yes to confirm).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --replace deletes rows.")
@json_option
@pass_ctx
def mirror_copy(c: Ctx, target: str, replace: bool, yes: bool, as_json: bool) -> None:
    """Copy the whole mirror to another place: SQLite to PostgreSQL or back (or to another
    file or database of the same engine).

    Every table is copied with its ids (nodes, pools, datasets, sync runs, every journal and
    log) from one consistent snapshot of the source, in batches (COPY on PostgreSQL), and
    verified at the end: every table has as many rows in the target as in the source. The
    target must be empty; --replace --yes deletes its rows first. Writers may keep writing to
    the source meanwhile: what they write after the copy began is not copied.

    \b
    Examples:
      xfleet mirror copy --to postgresql://xfleet@db1.example.net/xfleet
      xfleet --mirror postgresql://xfleet@db1/xfleet mirror copy --to backup.db --json
      xfleet mirror copy --to postgresql://xfleet@db1/xfleet --replace --yes
    """
    from xfleet.mirror import copy
    from xfleet.mirror.backend import location

    source, dest = c.mirror_path(), location(target)

    def agree(present: dict[str, int]) -> None:
        rows = sum(present.values())
        confirm(yes, f"Delete the {rows:,} row(s) of {dest} ({', '.join(present)}) and "
                f"replace them with a copy of {source}?", "replace a mirror's rows")

    report = copy.copy_mirror(source, dest, replace=replace, confirm_replace=agree,
                              progress=_Progress())
    if as_json:
        echo_json(report.to_dict())
        return
    emit(["table", "rows", "seconds"],
         [{"table": t.table, "rows": f"{t.copied:,}", "seconds": f"{t.seconds:.2f}"}
          for t in report.tables], "table")
    if report.replaced:
        click.echo(f"replaced {sum(report.replaced.values()):,} row(s) the target had")
    click.echo(f"copied {report.rows:,} rows in {len(report.tables)} tables from "
               f"{report.source} ({report.source_engine}) to {report.target} "
               f"({report.target_engine}) in {report.seconds:.1f} s; verified: every "
               "table has as many rows as the source")

