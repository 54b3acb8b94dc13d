"""Long-running operations shown by the TUI's Operations view: a small plug-in interface.

Moves, target upgrades and playbook runs are journaled jobs in the mirror
(xfleet/mirror/jobs.py). This module only reads: a *source* is a function `(conn) ->
list[Operation]`; sources are registered by name (`moves`, `rollouts`, `plays`), and the view
shows what all of them return, newest first.

No textual import here: a script (or `xfleet ops`) can list operations the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xfleet.mirror.backend import Connection
from xfleet.mirror.store import has_table


@dataclass(frozen=True)
class Operation:
    id: str
    kind: str  # "move", "upgrade", "compress", ...
    subject: str  # what it acts on: a volume, a node, a pool
    node: str | None
    state: str  # "running", "paused", "failed", "done"
    done: float | None = None  # progress in `total` units (bytes, nodes, ...)
    total: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    message: str = ""

    @property
    def progress(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


Source = Callable[[Connection], list[Operation]]
_SOURCES: dict[str, Source] = {}


def register(name: str, source: Source) -> None:
    """Add (or replace) an operation source, e.g. `register("moves", moves.operations)`."""
    _SOURCES[name] = source


def unregister(name: str) -> None:
    _SOURCES.pop(name, None)


def sources() -> dict[str, Source]:
    return dict(_SOURCES)


def moves(conn: Connection) -> list[Operation]:
    """Volume moves (xfleet.ops.moves), from the mirror's `moves` table."""
    if not has_table(conn, "moves"):
        return []
    from xfleet.core.units import format_age
    from xfleet.ops import moves as moves_mod

    out = []
    for m in moves_mod.listing(conn)[:500]:
        eta = m.eta
        speed = f"{m.rate / 2**20:,.1f} MiB/s, ETA {format_age(eta)}; " \
            if m.rate and eta is not None else ""
        out.append(Operation(
            id=str(m.id), kind="move", subject=m.volume,
            node=f"{m.source_node}->{m.target_node}",
            state=m.state if m.state in ("failed", "paused") else
            "done" if m.state in ("done", "aborted") else "running",
            done=float(m.bytes_done), total=float(m.bytes_total) if m.bytes_total else None,
            started_at=m.created_at, updated_at=m.updated_at,
            message=f"{m.state}: {speed}{m.error or m.step or ''}"))
    return out


register("moves", moves)


def rollouts(conn: Connection) -> list[Operation]:
    """Rolling target upgrades (xfleet.ops.rollout): nodes done/total, the current node and step,
    the time of each finished node."""
    if not has_table(conn, "rollouts"):
        return []
    from xfleet.ops import rollout

    out = []
    for r in rollout.list_rollouts(conn, limit=50):
        times = ", ".join(f"{n['node']} {n['seconds']:.0f}s" for n in r["nodes"]
                          if n["state"] == "done" and n["seconds"] is not None)
        now = "; ".join(r["current"]) or r["reason"] or ""
        out.append(Operation(
            id=str(r["id"]), kind="upgrade", subject=f"target {r['version']}",
            node=f"{r['nodes_done']}/{r['nodes_total']} nodes",
            state=r["state"] if r["state"] in ("paused", "done") else
            "done" if r["state"] == "stopped" else "running",
            done=float(r["nodes_done"]), total=float(r["nodes_total"]) or None,
            started_at=r["created_at"], updated_at=r["finished_at"] or r["created_at"],
            message=f"{r['state']}: {now}" + (f" (per node: {times})" if times else "")))
    return out


register("rollouts", rollouts)


def plays(conn: Connection) -> list[Operation]:
    """Playbook runs (xfleet.playbook): steps finished (done, or skipped by their `when`) of
    all its steps, and the run's error."""
    if not has_table(conn, "play_runs"):
        return []
    from xfleet import playbook

    out = []
    for r in playbook.runs(conn, 50):
        steps = conn.execute("SELECT count(*), sum(CASE WHEN state IN ('done', 'skipped') "
                             "THEN 1 ELSE 0 END) FROM play_steps WHERE run = ?",
                             (r["id"],)).fetchone()
        total, done = int(steps[0] or 0), int(steps[1] or 0)
        out.append(Operation(
            id=str(r["id"]), kind="play", subject=str(r["name"] or r["file"]),
            node=f"{done}/{total} steps",
            state=r["state"] if r["state"] in ("failed", "done") else "running",
            done=float(done), total=float(total) or None,
            started_at=r["created_at"], updated_at=r["finished_at"] or r["created_at"],
            message=f"{r['state']}: {r['file']}" + (f": {r['error']}" if r["error"] else "")))
    return out


register("plays", plays)


def collect(conn: Connection) -> tuple[list[Operation], list[str]]:
    """All operations from all sources, and the errors of sources that failed."""
    ops: list[Operation] = []
    errors: list[str] = []
    for name, source in _SOURCES.items():
        try:
            ops += source(conn)
        except Exception as exc:  # a broken plug-in must not take the dashboard down
            errors.append(f"{name}: {exc}")
    ops.sort(key=lambda o: o.updated_at or o.started_at or 0.0, reverse=True)
    return ops, errors
