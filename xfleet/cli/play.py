"""`xfleet play FILE`, `xfleet plays list|show`: the CLI face of xfleet.playbook.

The playbook engine is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from xfleet.cli.output import Ctx, console, echo_json, emit, failed_doc, json_option, pass_ctx
from xfleet.core.errors import UsageError


def _vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k.isidentifier():
            raise UsageError(f"--var {p!r} is not NAME=VALUE", hint="e.g. --var node=n3")
        out[k] = v
    return out


@click.command("play")
@click.argument("file", required=False)
@click.option("--check", is_flag=True,
              help="Print exactly what would happen (commands and counts); change nothing.")
@click.option("--var", "-e", "variables", multiple=True, metavar="NAME=VALUE",
              help="A variable for the playbook's {{ NAME }} (repeatable).")
@click.option("--resume", "resume", type=int, metavar="RUN",
              help="Continue run RUN after a crash or failure (finished steps and items "
              "are skipped).")
@json_option
@pass_ctx
def play_cmd(c: Ctx, file: str | None, check: bool, variables: tuple[str, ...],
             resume: int | None, as_json: bool) -> None:
    """Run a playbook: YAML steps (sync, query, snapshot, clone, destroy, set, resize,
    move, drain, wait, assert, run) over the fleet.

    The whole file is validated first (unknown kinds or fields, wrong types, undefined
    variables: errors with file:line). Runs are journaled in the mirror; after a crash
    `--resume RUN` continues (FILE may be omitted: the run knows its file). docs/playbooks.md
    describes every step kind.

    \b
    Examples:
      xfleet play playbooks/nightly-snapshot.yaml --check
      xfleet play playbooks/branch-tenant.yaml --var volume=tank/acme/db --var branch=qa
      xfleet play --resume 12
    """
    from xfleet import mirror, playbook
    from xfleet.fleet.connections import Connections

    if check and resume is not None:
        raise UsageError("--check and --resume exclude each other")
    inv = c.inventory()
    path = c.mirror_path()
    if file is None:
        if resume is None:
            raise UsageError("no playbook given", hint="xfleet play FILE (see playbooks/)")
        conn = mirror.connect(path)
        try:
            row = conn.execute("SELECT file FROM play_runs WHERE id = ?",
                               (resume,)).fetchone()
        finally:
            conn.close()
        if row is None:
            raise UsageError(f"no playbook run {resume}", hint="xfleet plays list")
        file = row[0]
    assert file is not None
    if resume is not None and variables:
        raise UsageError("--var is fixed when a run starts; a resumed run keeps its values")
    pb = playbook.load(file, _vars(variables))
    err = console(stderr=True)
    say: Callable[[str], None] = (lambda m: None) if as_json else (
        lambda m: err.print(m, highlight=False))
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        report = playbook.play(inv, path, pb, conns, check=check, resume=resume, say=say)
    if as_json:
        doc = report.to_dict()
        if not report.ok:
            bad = [st for st in report.steps if st.error]
            doc = failed_doc(
                doc, f"run {report.run_id} is {report.state}"
                + (f": step {bad[0].idx + 1} (line {bad[0].line}) {bad[0].label}: "
                   f"{bad[0].error}" if bad else ""),
                where=f"{pb.path}:{bad[0].line}" if bad else str(pb.path),
                hint=f"xfleet play --resume {report.run_id} continues"
                if report.run_id is not None else None)
        echo_json(doc)
    else:
        if check:
            for s in report.steps:
                click.echo(f"step {s.idx + 1} ({s.kind}, line {s.line}) {s.label}: "
                           f"{s.state}, {len(s.commands)} command(s)")
                for cmd in s.commands:
                    click.echo(f"  {cmd}")
                for note in s.notes:
                    click.echo(f"  # {note}")
                if s.error:
                    click.echo(f"  error: {s.error}")
            total = sum(len(s.commands) for s in report.steps)
            click.echo(f"check: {len(report.steps)} step(s), {total} command(s); nothing "
                       "was changed")
        else:
            for s in report.steps:
                if s.error:
                    click.echo(f"step {s.idx + 1} (line {s.line}) {s.label}: {s.error}",
                               err=True)
            click.echo(f"run {report.run_id}: {report.state}"
                       + (f" — xfleet play --resume {report.run_id} continues"
                          if not report.ok else ""))
    if not report.ok:
        sys.exit(1)


@click.group("plays")
def plays_group() -> None:
    """List and show journaled playbook runs.

    \b
    Examples:
      xfleet plays list
      xfleet plays show 3 --json
    """


@plays_group.command("list")
@click.option("--limit", "-l", type=click.IntRange(1), default=50, show_default=True)
@json_option
@pass_ctx
def plays_list(c: Ctx, limit: int, as_json: bool) -> None:
    """The latest playbook runs.

    \b
    Example:
      xfleet plays list
    """
    from xfleet import playbook

    with c.reader() as conn:
        rows = playbook.runs(conn, limit)
    if as_json:
        emit([], rows, "json")
        return
    emit(["id", "name", "state", "step", "started", "operator", "error"],
         [{**r, "step": r["step"] + 1 if r["step"] is not None else None,
           "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))}
          for r in rows], "table")


@plays_group.command("show")
@click.argument("run", type=int)
@json_option
@pass_ctx
def plays_show(c: Ctx, run: int, as_json: bool) -> None:
    """A run's steps, their states and failed items.

    \b
    Example:
      xfleet plays show 3
    """
    from xfleet import playbook

    with c.reader() as conn:
        d = playbook.show(conn, run)
    if as_json:
        echo_json(d)
        return
    click.echo(f"run {d['id']} {d['name']} ({d['file']}): {d['state']}"
               + (f" — {d['error']}" if d["error"] else ""))
    emit(["idx", "kind", "name", "line", "state", "items", "done", "commands", "error"],
         [{**s, "idx": s["idx"] + 1} for s in d["steps"]], "table")
    for f in d["failed_items"]:
        click.echo(f"  failed item (step {f['step'] + 1}) {f['item']}: {f['error']}")
