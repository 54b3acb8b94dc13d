"""Journaled jobs: the one base of moves, rollouts, playbook runs and compression runs.

A job is a row of its kind's table in the mirror with the same bookkeeping columns: `state`,
`pid`/`host`/`heartbeat` (who runs it, see xfleet/mirror/claims.py), `created_at`,
`updated_at`, `finished_at` and `error`. Everything a long operation needs to survive a crash
and be seen by another operator goes through here:

- `get` and `rows`: a job by id (a clear error naming the command that lists them), or the
  newest jobs of a kind, optionally only those not finished;
- `claim`: take a job over in one short write transaction, refused with the holder's pid, host
  and heartbeat age while another live process runs it (a job whose process died is taken
  over); a kind's own state checks run inside the same transaction;
- `Heartbeat`: a thread that keeps the claim fresh on its own connection while the job runs;
- `finish`: the final state, the error if any, the claim released;
- `JobRunner`: the one shape of what drives a job, `Runner(...).run(job_id)`.

Each feature describes its table once with a `JobKind`; the CLI's `list`/`show` commands of every
kind read through `rows`/`get` (docs/architecture.md: "Jobs").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from xfleet.core.errors import UsageError, XfleetError
from xfleet.mirror import claims
from xfleet.mirror.backend import Connection, Location, Row
from xfleet.mirror.store import begin, connect, rollback

# the bookkeeping columns every job table has (docs/mirror.md)
COLUMNS = ("id", "state", "pid", "host", "heartbeat", "created_at", "updated_at", "finished_at")


@dataclass(frozen=True)
class JobKind:
    """One kind of journaled job: its table, how it is named to users, its open states."""

    table: str  # the job table in the mirror
    noun: str  # "move", "rollout", "playbook run", "compression run"
    list_command: str  # the command that lists them, for hints ("xfleet moves list")
    open_states: frozenset[str]  # states in which the job may still run (`rows(..., open=True)`)
    stale: float | None = claims.STALE  # a heartbeat older than this frees a job; None: the pid
    # alone decides (a playbook step may run for hours between heartbeats)
    busy_hint: str = "wait for it, or stop that process first"  # {id}: the job's id
    error: type[XfleetError] = UsageError  # what a refusal raises (the feature's own error);
    # an unknown id is always a UsageError
    missing: str = "no {noun} {id}"  # the error for an unknown id
    log: tuple[str, str] | None = None  # (table, job column) of its journal: `save` writes
    # (job, at, state, message, operator) rows there

    def __post_init__(self) -> None:
        names = [self.table, *(self.log or ())]
        if not all(n.isidentifier() for n in names):  # the names are put into SQL text
            raise ValueError(f"bad job table names {names!r}")


KINDS: dict[str, JobKind] = {}


class JobRunner(Protocol):
    """What drives a job of a kind, the same for every kind: built with what it needs (the
    inventory, the mirror's path, the connections, options), then `run(job_id)` claims the job,
    works it to a final state or a resumable stop, and returns its result. A crashed or stopped
    job is resumed by running it again. moves.Runner, rollout.Runner, compression.Applier and
    playbook.Player have this shape."""

    def run(self, job_id: int, /) -> object: ...


def register(kind: JobKind) -> JobKind:
    """Make a job kind known (features register theirs at import); returns it."""
    KINDS[kind.table] = kind
    return kind


def get(conn: Connection, kind: JobKind, job_id: int) -> Row:
    row: Row | None = conn.execute(
        f"SELECT * FROM {kind.table} WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise UsageError(kind.missing.format(noun=kind.noun, id=job_id),
                         hint=f"{kind.list_command} lists them")
    return row


def rows(conn: Connection, kind: JobKind, *, open_only: bool = False,
         limit: int | None = None) -> list[Row]:
    """The newest jobs of `kind` first (only those in an open state with `open_only`)."""
    sql = f"SELECT * FROM {kind.table}"
    args: list[object] = []
    if open_only:
        states = sorted(kind.open_states)
        sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
        args += states
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return list(conn.execute(sql, args))


def stalled(kind: JobKind, now: float) -> tuple[str, list[object]]:
    """The SQL condition (and its parameters) of a `kind` job whose holder stopped beating: in
    an open state, claimed by a process (`pid` set), its heartbeat missing or older than the
    kind's lease. A job stopped in order (no holder) or never taken is not stalled. The one
    test of the metric xfleet_jobs_stalled and the alert XfleetMoveStuck."""
    states = sorted(kind.open_states)
    lease = kind.stale if kind.stale is not None else claims.STALE
    return (f"(state IN ({', '.join('?' for _ in states)}) AND pid IS NOT NULL AND "
            "(heartbeat IS NULL OR heartbeat < ?))", [*states, now - lease])


def holder_text(row: Row) -> str:
    """'OPERATOR (process PID on HOST) since HH:MM:SS, heartbeat N s ago': who holds a job,
    since when, for refusals."""
    beat = row["heartbeat"]
    age = f", heartbeat {time.time() - beat:.0f} s ago" if isinstance(beat, int | float) else ""
    keys = row.keys()
    who = row["held_by"] if "held_by" in keys else None
    since = row["held_since"] if "held_since" in keys else None
    text = f"process {row['pid']} on {row['host']}"
    if who:
        text = f"{who} ({text})"
    if isinstance(since, int | float):
        text += f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"
    return text + age


def claim(conn: Connection, kind: JobKind, job_id: int, *,
          prepare: Callable[[Connection, Row], None] | None = None,
          set_columns: dict[str, object] | None = None) -> Row:
    """Take job `job_id` over for this process, in one write transaction on `conn`: refused
    (kind.error) while another live process holds it. `prepare(conn, row)` runs inside the
    same transaction: it may refuse (e.g. a finished job) or write (e.g. reset failed parts);
    `set_columns` are written with the claim. Returns the row as it was before the claim."""
    begin(conn, f"the claim of a {kind.noun}")
    try:
        row = get(conn, kind, job_id)
        if claims.holder(row, stale=kind.stale) is not None:
            raise kind.error(f"{kind.noun} {job_id} is being run by {holder_text(row)}",
                             hint=kind.busy_hint.format(id=job_id))
        if prepare is not None:
            prepare(conn, row)
        claims.take(conn, kind.table, job_id, set_columns)
        conn.execute("COMMIT")
        return row
    except BaseException:
        rollback(conn)
        raise


def save(conn: Connection, kind: JobKind, job_id: int, values: dict[str, object], *,
         message: str | None = None) -> None:
    """Write a job's columns `values` (`state` among them) in one short write transaction,
    with `message` in the kind's journal (its `log` table) when given."""
    cols = list(values)
    if not all(c.isidentifier() for c in cols):
        raise ValueError(f"bad column names {cols!r}")
    begin(conn, f"a {kind.noun}'s progress")
    try:
        conn.execute(f"UPDATE {kind.table} SET {', '.join(f'{c} = ?' for c in cols)} "
                     "WHERE id = ?", [*values.values(), job_id])
        if message and kind.log is not None:
            table, column = kind.log
            conn.execute(f"INSERT INTO {table} ({column}, at, state, message, operator) "
                         "VALUES (?, ?, ?, ?, ?)", (job_id, time.time(), values.get("state"),
                                                   message, claims.operator()))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def finish(conn: Connection, kind: JobKind, job_id: int, state: str,
           error: str | None = None, *, final: bool = True) -> None:
    """Record the job's end (autocommit, one statement): its state and error, the claim
    released; `finished_at` is set when `final` (a paused or failed job may be resumed)."""
    now = time.time()
    conn.execute(f"UPDATE {kind.table} SET state = ?, error = ?, pid = NULL, updated_at = ?, "
                 "finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
                 (state, error, now, final, now, job_id))


class Heartbeat:
    """Keeps a claimed job's heartbeat fresh every `interval` seconds from a thread with its
    own mirror connection (short autocommit writes, never a held lock), until closed.

        with jobs.Heartbeat(mirror_path, MOVES, move_id, interval=20):
            ...  # the job's work
    """

    def __init__(self, mirror_path: str | Location, kind: JobKind, job_id: int, *,
                 interval: float) -> None:
        self.mirror_path, self.kind, self.job_id = mirror_path, kind, job_id
        self.interval = claims.heartbeat_every(interval)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"xfleet-heartbeat-{kind.table}-{job_id}")

    def _run(self) -> None:
        conn = connect(self.mirror_path)
        try:
            while not self._done.wait(self.interval):
                claims.beat(conn, self.kind.table, self.job_id)
        finally:
            conn.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
