"""A rolling upgrade as the mirror records it: its states, its rows in `rollouts`,
`rollout_nodes` and `rollout_log`, pause/stop requests, and its claim (a journaled job,
xfleet/mirror/jobs.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Location

OPEN = ("staging", "running", "paused")  # a rollout's states before done/stopped
# a node's states (docs/mirror.md); the ones in IN_FLIGHT were mid-upgrade when xfleet stopped
IN_FLIGHT = ("restarting", "ready", "soaking", "verifying", "rolling_back")
FINISHED = ("done", "skipped", "failed")
HEARTBEAT = claims.heartbeat_every(10.0)
POLL = 1.0
Say = Callable[[str], None]


class RolloutError(XfleetError):
    """A rollout cannot start or continue (refused preflight, unknown rollout, bad options)."""


ROLLOUTS = jobs.register(jobs.JobKind(
    "rollouts", "rollout", "xfleet rollouts list", frozenset(OPEN), error=RolloutError,
    busy_hint="wait for it, or pause it (xfleet rollouts pause {id})"))


def get(conn: Connection, rid: int) -> dict[str, Any]:
    return dict(jobs.get(conn, ROLLOUTS, rid))


def nodes_of(conn: Any, rid: int) -> list[dict[str, Any]]:
    """The rollout's nodes in order, each with `seconds` (start to done, or so far)."""
    out = [dict(r) for r in conn.execute(
        "SELECT * FROM rollout_nodes WHERE rollout = ? ORDER BY batch, position", (rid,))]
    for n in out:
        n["seconds"] = (round((n["finished_at"] or time.time()) - n["started_at"], 1)
                        if n["started_at"] else None)
    return out


def log(conn: Any, rid: int, limit: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT at, node, state, message FROM rollout_log WHERE rollout = ? ORDER BY at, rowid"
    rows = [dict(r) for r in conn.execute(sql, (rid,))]
    return rows[-limit:] if limit else rows


def summary(conn: Any, rid: int) -> dict[str, Any]:
    """A rollout with its progress: nodes done/total, the current node and step, per-node
    seconds (for `rollouts show`, --json and the TUI)."""
    r = get(conn, rid)
    nodes = nodes_of(conn, rid)
    done = sum(1 for n in nodes if n["state"] in ("done", "skipped"))
    failed = [n["node"] for n in nodes if n["state"] == "failed"]
    current = [n for n in nodes if n["state"] not in (*FINISHED, "pending", "staged")]
    return {
        "id": r["id"], "version": r["version"], "state": r["state"], "control": r["control"],
        "reason": r["reason"], "batch": r["batch"],
        "batches": 1 + max((n["batch"] for n in nodes), default=-1),
        "nodes_done": done, "nodes_total": len(nodes), "failed": failed,
        "current": [f"{n['node']}: {n['step'] or n['state']}" for n in current],
        "options": json.loads(r["options"]), "created_at": r["created_at"],
        "finished_at": r["finished_at"], "pid": r["pid"], "nodes": nodes,
        "operator": r["operator"], "operator_reason": r["operator_reason"],
        "held_by": r["held_by"],
    }


def list_rollouts(conn: Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    return [summary(conn, r["id"]) for r in jobs.rows(conn, ROLLOUTS, limit=limit)]


def request(mirror_path: Location, rid: int, what: str) -> str:
    """`pause` or `stop` a rollout: the process running it acts at the next node boundary (a
    node being upgraded always finishes or rolls back first). A rollout no process runs
    changes at once. Returns the new (or requested) state."""
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a rollout's pause or stop")
        r = get(conn, rid)
        if r["state"] not in OPEN:
            mirror.rollback(conn)
            raise RolloutError(f"rollout {rid} is {r['state']}: nothing to {what}")
        if what == "pause" and r["state"] == "paused":
            mirror.rollback(conn)
            return "paused"
        if claims.holder(r) is not None:
            conn.execute("UPDATE rollouts SET control = ?, updated_at = ? WHERE id = ?",
                         (what, time.time(), rid))
            conn.execute("COMMIT")
            return f"{what} requested"
        state = "paused" if what == "pause" else "stopped"
        set_state(conn, rid, state, f"{what} requested by the user")
        conn.execute("COMMIT")
        return state
    finally:
        conn.close()


def set_state(conn: Any, rid: int, state: str, reason: str | None) -> None:
    now = time.time()
    conn.execute("UPDATE rollouts SET state = ?, reason = ?, control = NULL, updated_at = ?, "
                 "finished_at = CASE WHEN ? IN ('done', 'stopped') THEN ? ELSE finished_at END "
                 "WHERE id = ?", (state, reason, now, state, now, rid))
    conn.execute("INSERT INTO rollout_log (rollout, at, node, state, message, operator) VALUES "
                 "(?, ?, NULL, ?, ?, ?)", (rid, now, state, reason or state, claims.operator()))


def target_versions(conn: Connection) -> dict[str, str]:
    """Per node, the target version the mirror knows from the rollouts journal: the latest
    rollout that listed the node says it (its version once the node is done or skipped; the
    version it ran before while pending, and after a failure rolled it back; `OLD->NEW` while
    it is upgraded). Nodes no rollout listed are absent (`xfleet target status` asks them)."""
    out: dict[str, str] = {}
    for node, state, before, version in conn.execute(
            "SELECT n.node, n.state, n.from_version, r.version FROM rollout_nodes n JOIN "
            "rollouts r ON r.id = n.rollout WHERE r.kind = 'target' ORDER BY n.rollout"):
        if state in ("done", "skipped"):
            out[node] = version
        elif state in IN_FLIGHT:
            out[node] = f"{before or '?'}->{version}"
        elif before:
            out[node] = before
        else:
            out.pop(node, None)
    return out
