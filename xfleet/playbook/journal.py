"""The run journal, in the mirror (`play_runs`, `play_steps`, `play_items`; docs/mirror.md):
a run's rows are written as it goes, so a crashed or failed run resumes (`xfleet play --resume
RUN`), and are read back by `xfleet plays list|show`."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from xfleet import mirror
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Location, Row
from xfleet.mirror.store import inserted_id
from xfleet.playbook.model import Playbook, PlaybookError

# a playbook step may run for hours between heartbeats: only the pid decides who runs a run
PLAY_RUNS = jobs.register(jobs.JobKind(
    "play_runs", "playbook run", "xfleet plays list", frozenset({"running", "failed"}),
    stale=None, error=PlaybookError))


class Journal:
    """The run's rows in the mirror (one connection, serialised by a lock)."""

    def __init__(self, mirror_path: Location, run_id: int):
        self.conn = mirror.connect(mirror_path)
        self.run_id = run_id
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def exec(self, sql: str, args: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.execute(sql, args)

    def step(self, idx: int) -> Row | None:
        with self.lock:
            row: Row | None = self.conn.execute(
                "SELECT * FROM play_steps WHERE run = ? AND idx = ?",
                (self.run_id, idx)).fetchone()
            return row

    def items(self, idx: int) -> dict[str, Row]:
        with self.lock:
            return {r["item"]: r for r in self.conn.execute(
                "SELECT * FROM play_items WHERE run = ? AND step = ?", (self.run_id, idx))}

    def heartbeat(self, step: int) -> None:
        self.exec("UPDATE play_runs SET heartbeat = ?, updated_at = ?, step = ? WHERE id = ?",
                  (time.time(), time.time(), step, self.run_id))


def start(inv: Inventory, mirror_path: Location, pb: Playbook) -> int:
    """Create the run's journal row (the built-ins are frozen here); returns the run id."""
    now = time.time()
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a new playbook run")
        cur = conn.execute(
            "INSERT INTO play_runs (file, name, digest, vars, state, pid, host, heartbeat, "
            "created_at, updated_at, operator, operator_reason, held_by, held_since) VALUES "
            "(?, ?, ?, '{}', 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (str(pb.path.resolve()), pb.name, pb.digest, os.getpid(), socket.gethostname(),
             now, now, now, claims.operator(), claims.reason(), claims.operator(), now))
        run_id = inserted_id(cur)
        assert run_id is not None
        frozen = {**pb.vars, "date": time.strftime("%Y%m%d", time.gmtime(now)),
                  "time": time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)), "now": int(now),
                  "run": run_id, "check": False}
        conn.execute("UPDATE play_runs SET vars = ? WHERE id = ?",
                     (json.dumps(frozen, sort_keys=True, default=str), run_id))
        for s in pb.steps:
            conn.execute("INSERT INTO play_steps (run, idx, kind, name, line, state) "
                         "VALUES (?, ?, ?, ?, ?, 'pending')",
                         (run_id, s.idx, s.kind, s.name, s.line))
        conn.execute("COMMIT")
        return run_id
    finally:
        conn.close()


def claim(mirror_path: Location, run_id: int) -> Row:
    """Take over a run for --resume: refused while another live process runs it."""

    def resumable(conn: Connection, row: Row) -> None:
        if row["state"] == "done":
            raise PlaybookError(f"run {run_id} is done already", hint=f"xfleet plays show {run_id}")

    conn = mirror.connect(mirror_path)
    try:
        return jobs.claim(conn, PLAY_RUNS, run_id, prepare=resumable,
                          set_columns={"state": "running", "error": None})
    finally:
        conn.close()


def finish(mirror_path: Location, run_id: int, state: str, error: str | None) -> None:
    """End a run (done or failed): no process holds it any more."""
    conn = mirror.connect(mirror_path)
    try:
        jobs.finish(conn, PLAY_RUNS, run_id, state, error, final=state == "done")
    finally:
        conn.close()


def runs(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest runs, newest first (`xfleet plays list`)."""
    cols = ("id", "name", "file", "state", "step", "created_at", "finished_at", "error",
            "operator", "operator_reason")
    return [{c: r[c] for c in cols} for r in jobs.rows(conn, PLAY_RUNS, limit=limit)]


def show(conn: Connection, run_id: int) -> dict[str, Any]:
    """A run with its variables, steps and failed items (`xfleet plays show`)."""
    row = jobs.get(conn, PLAY_RUNS, run_id)
    steps = [dict(r) for r in conn.execute(
        "SELECT idx, kind, name, line, state, items, done, commands, started_at, finished_at, "
        "error FROM play_steps WHERE run = ? ORDER BY idx", (run_id,))]
    failed = [dict(r) for r in conn.execute(
        "SELECT step, item, error FROM play_items WHERE run = ? AND state = 'failed' "
        "ORDER BY step, item LIMIT 50", (run_id,))]
    out = dict(row)
    out["vars"] = json.loads(out["vars"])
    return {**out, "steps": steps, "failed_items": failed}
