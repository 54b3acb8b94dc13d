"""One round of the snapshot policies as a journaled, resumable job (docs/snapshots.md): take the
due snapshots, then prune what the retention lets go, recorded in `snapshot_runs` (the job base,
xfleet/mirror/jobs.py) with every command in `lifecycle_log`.

A run is fixed by the time it runs **as of** (`at`: `--at`, else its start): the schedule's slot
and the snapshot names come from it, so a resumed run takes the same names. Its `step` says where
it is (`taking`, `pruning`, `done`). A run stopped by a crash or SIGTERM is finished by
`resume(...)` (`xfleet snapshots run --resume ID`); `run_policies` also finishes an interrupted
run of the same policies first (its process gone), before its own round. A resumed step first
re-fetches from the nodes exactly the names it would touch (the snapshots it would take, those it
would destroy), since the process may have died after a node acted and before the mirror learnt
it; then it plans again from the mirror. So a resumed run never takes a second snapshot for the
same slot (the volume is not due any more, and the name exists) and never destroys anything
twice (a destroyed name is gone from the mirror, so it is not planned again).

The one entry point for the CLI and for a service's scheduler is `run_policies` (no click or
rich here: `progress` and `confirm` are the caller's callbacks).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import UsageError
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Location, Row
from xfleet.mirror.store import begin, connect, inserted_id, rollback
from xfleet.ops import lifecycle
from xfleet.ops.snapshots import apply
from xfleet.ops.snapshots.policy import Policies

if TYPE_CHECKING:
    from xfleet.fleet.connections import Connections
    from xfleet.fleet.inventory import Inventory

MODES = ("run", "apply", "prune")  # take and prune / take only / prune only
SKIPPED_KEPT = 100  # skipped snapshots kept in a run's `detail`

# states: running (step taking/pruning) -> done; failed (a node refused: `--resume ID` retries);
# stopped (pruning was not confirmed: final)
SNAPSHOT_RUNS = jobs.register(jobs.JobKind(
    "snapshot_runs", "snapshot run", "xfleet snapshots runs",
    frozenset({"running", "failed"}),
    busy_hint="wait for it (it is a cron or timer run?), or stop that process first"))

Progress = Callable[[str], None]
Confirm = Callable[[int], None]  # called with the number of snapshots to destroy; raises to stop


@dataclass
class RunResult:
    """What one snapshot run did (over all its attempts)."""

    id: int
    policy: str  # the policy file's path
    mode: str
    at: float
    names: dict[str, str]  # policy -> the snapshot name this run takes
    state: str
    step: str
    planned_take: int = 0
    taken: int = 0
    planned_prune: int = 0
    pruned: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # the first SKIPPED_KEPT
    skipped_count: int = 0
    commands: int = 0  # remote commands of all attempts (changes, re-fetches, holds)
    resumed: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)  # the last attempt's outcomes
    error: str | None = None
    finished_first: list[int] = field(default_factory=list)  # interrupted runs finished first

    @property
    def ok(self) -> bool:
        return self.state == "done"

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ok"] = self.ok
        return d


def digest(policies: Policies) -> str:
    """The sha256 of the policy file's text (of the parsed policies when there is no file): a
    resume with other policies would take other names or prune other snapshots, so it is
    refused."""
    path = policies.path
    if path is not None and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    text = json.dumps([p.to_dict() for p in policies.policies], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _result(row: Row) -> RunResult:
    detail = json.loads(row["detail"] or "{}")
    return RunResult(
        id=row["id"], policy=row["policy"], mode=row["mode"], at=row["at"],
        names=json.loads(row["names"] or "{}"),
        state=row["state"], step=row["step"] or "", planned_take=row["planned_take"],
        taken=row["taken"], planned_prune=row["planned_prune"], pruned=row["pruned"],
        skipped=detail.get("skipped", []), skipped_count=row["skipped"],
        commands=row["commands"], resumed=row["resumed"], nodes=detail.get("nodes", []),
        error=row["error"])


def get(conn: Connection, run_id: int) -> RunResult:
    return _result(jobs.get(conn, SNAPSHOT_RUNS, run_id))


def runs(conn: Connection, *, limit: int = 20) -> list[RunResult]:
    return [_result(r) for r in jobs.rows(conn, SNAPSHOT_RUNS, limit=limit)]


def start(mirror_location: Location, policies: Policies, *, at: float,
          mode: str = "run", max_prune: int = apply.DEFAULT_MAX_PRUNE) -> int:
    """Record a new run (state `running`, not claimed yet); returns its id."""
    if mode not in MODES:
        raise UsageError(f"unknown snapshot run mode {mode!r}", hint=", ".join(MODES))
    names = {} if mode == "prune" else {p.name: p.snapshot_name(at) for p in policies.policies}
    now = time.time()
    conn = connect(mirror_location)
    try:
        begin(conn, "a new snapshot run")
        try:
            cur = conn.execute(
                "INSERT INTO snapshot_runs (policy, policy_digest, mode, at, names, max_prune, "
                "state, step, operator, operator_reason, host, created_at, updated_at) VALUES "
                "(?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?) RETURNING id",
                (str(policies.path) if policies.path else "<policies>", digest(policies), mode,
                 at, json.dumps(names), max_prune, "pruning" if mode == "prune" else "taking",
                 claims.operator(), claims.reason(), socket.gethostname(), now, now))
            run_id = inserted_id(cur)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return run_id
    finally:
        conn.close()


def interrupted(conn: Connection, policies: Policies) -> list[int]:
    """Runs of these policies left `running` by a process that is gone (oldest first)."""
    want = digest(policies)
    return sorted(r["id"] for r in jobs.rows(conn, SNAPSHOT_RUNS, open_only=True)
                  if r["state"] == "running" and r["policy_digest"] == want
                  and claims.holder(r, stale=SNAPSHOT_RUNS.stale) is None)


class _CountedHolds:
    """lifecycle.RemoteHolds that counts its remote commands (for the run's total)."""

    def __init__(self, conns: Connections) -> None:
        self.conns = conns
        self.commands = 0

    def _counted(self, node: str, read: Callable[[Any, list[str]], Any],
                 names: list[str]) -> Any:
        t = self.conns.get(node)
        before = t.commands
        try:
            return read(t, names)
        finally:
            self.commands += t.commands - before

    def userrefs(self, node: str, roots: list[str]) -> dict[str, int]:
        got: dict[str, int] = self._counted(node, lifecycle.read_holds, roots)
        return got

    def tags(self, node: str, snaps: list[str]) -> dict[str, list[str]]:
        got: dict[str, list[str]] = self._counted(node, lifecycle.read_hold_tags, snaps)
        return got


class _Attempt:
    """One attempt at a claimed run: the steps left, from the mirror, with the counts written
    to the job's row as each step ends."""

    def __init__(self, inv: Inventory, loc: Location, conns: Connections,
                 policies: Policies, row: Row, *, progress: Progress | None,
                 confirm: Confirm | None, source: str) -> None:
        self.inv, self.loc, self.conns, self.policies = inv, loc, conns, policies
        self.row = row
        self.id: int = row["id"]
        self.resuming = row["resumed"] > 0  # an earlier attempt may have acted on the nodes
        self.progress = progress or (lambda _m: None)
        self.confirm = confirm
        self.source = source
        self.nodes: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.declined = False

    def _update(self, **cols: Any) -> None:
        cols["updated_at"] = time.time()
        conn = connect(self.loc)
        try:
            sets = ", ".join(f"{c} = ?" for c in cols)
            conn.execute(f"UPDATE snapshot_runs SET {sets} WHERE id = ?",
                         (*cols.values(), self.id))
        finally:
            conn.close()

    def _plan(self, make: Callable[[Connection], lifecycle.LifecyclePlan]
              ) -> lifecycle.LifecyclePlan:
        conn = connect(self.loc, readonly=True)
        try:
            return make(conn)
        finally:
            conn.close()

    def _execute(self, plan: lifecycle.LifecyclePlan) -> int:
        """Run `plan`; returns its remote commands, noting the nodes' outcomes and errors."""
        if not plan.commands and not plan.changed and not plan.destroyed:
            return 0
        out = lifecycle.execute(self.inv, self.loc, plan, self.conns, source=self.source)
        self.nodes = [{"node": n.node, "ok": n.ok, "changes": len(n.done),
                       "commands": n.commands, "refetched": n.refetched, "error": n.error,
                       "unrecorded": n.unrecorded} for n in out.nodes]
        self.errors += [f"{n.node}: {n.error}" for n in out.nodes if not n.ok]
        return out.commands

    def _recheck(self, names: list[tuple[str, str]]) -> int:
        """Re-fetch exactly `names` (node, name) into the mirror: an earlier attempt may have
        acted on the node without the mirror learning it. Returns the remote commands."""
        if not names:
            return 0
        check = lifecycle.LifecyclePlan(f"{self.row['mode']} re-check")
        check.changed = list(names)
        self.progress(f"resuming: re-reading {len(names)} name(s) from the node(s)")
        return self._execute(check)

    def _present(self, names: list[tuple[str, str]]) -> int:
        conn = connect(self.loc, readonly=True)
        try:
            return sum(1 for node, name in names if conn.execute(
                "SELECT 1 FROM datasets WHERE node = ? AND name = ?", (node, name)).fetchone())
        finally:
            conn.close()

    def take(self) -> None:
        at = self.row["at"]
        op = f"snapshots {self.row['mode']}"

        def plan(conn: Connection) -> lifecycle.LifecyclePlan:
            p = apply.take(conn, self.policies, now=at, inventory=self.inv)
            p.op = op
            return p

        taking = self._plan(plan)
        commands, earlier = 0, 0
        if self.resuming and taking.created:
            commands += self._recheck(taking.created)
            again = self._plan(plan)
            earlier = len(taking.created) - len(again.created)  # made before the stop
            taking = again
        if earlier:
            self.progress(f"{earlier} snapshot(s) were taken before the run stopped")
        self.row = self._set(taken=self.row["taken"] + earlier)
        planned = self.row["taken"] + len(taking.created)
        self._update(planned_take=planned, commands=self.row["commands"] + commands)
        self.progress(f"taking {len(taking.created)} snapshot(s) in {len(taking.commands)} "
                      "command(s)")
        commands += self._execute(taking)
        taken = self.row["taken"] + (len(taking.created) if not self.errors
                                     else self._present(taking.created))
        self.row = self._set(taken=taken, commands=self.row["commands"] + commands,
                             step="pruning" if self.row["mode"] == "run" and not self.errors
                             else self.row["step"])

    def prune(self) -> None:
        budget = [max(0, self.row["max_prune"] - self.row["pruned"])]  # what this run may
        # still destroy (a resume counts what its earlier attempts did)
        holds = _CountedHolds(self.conns)
        op = f"snapshots {self.row['mode']}"

        def plan(conn: Connection) -> lifecycle.LifecyclePlan:
            p = apply.prune(conn, self.policies, inventory=self.inv, holds=holds,
                            max_prune=budget[0])
            p.op = op
            return p

        pruning = self._plan(plan)
        commands, earlier = 0, 0
        if self.resuming and pruning.destroyed:
            names = [(n, x) for n, x, _ in pruning.destroyed]
            commands += self._recheck(names)
            earlier = len(names) - self._present(names)  # destroyed before the stop
            budget[0] = max(0, budget[0] - earlier)
            pruning = self._plan(plan)
        if earlier:
            self.progress(f"{earlier} snapshot(s) were destroyed before the run stopped")
            self.row = self._set(pruned=self.row["pruned"] + earlier)
        gone = [(n, x) for n, x, _ in pruning.destroyed]
        skipped = [{"node": n, "name": x, "why": w} for n, x, w in pruning.skipped]
        detail = json.loads(self.row["detail"] or "{}")
        detail["skipped"] = skipped[:SKIPPED_KEPT]
        self.row = self._set(planned_prune=self.row["pruned"] + len(gone),
                             skipped=len(skipped), detail=json.dumps(detail),
                             commands=self.row["commands"] + commands + holds.commands)
        if gone and self.confirm is not None:
            try:
                self.confirm(len(gone))
            except BaseException:
                self.declined = True
                raise
        self.progress(f"destroying {len(gone)} snapshot(s) in {len(pruning.commands)} "
                      "command(s)")
        commands = self._execute(pruning)
        pruned = self.row["pruned"] + (len(gone) if not self.errors
                                       else len(gone) - self._present(gone))
        self.row = self._set(pruned=pruned, commands=self.row["commands"] + commands,
                             step="done" if not self.errors else self.row["step"])

    def _set(self, **cols: Any) -> Row:
        self._update(**cols)
        conn = connect(self.loc, readonly=True)
        try:
            return jobs.get(conn, SNAPSHOT_RUNS, self.id)
        finally:
            conn.close()

    def work(self) -> None:
        if self.row["step"] == "taking":
            self.take()
            if self.errors:
                return
            if self.row["mode"] == "apply":
                self.row = self._set(step="done")
        if self.row["step"] == "pruning":
            self.prune()


def resume(inv: Inventory, mirror_location: Location, conns: Connections,
           policies: Policies, run_id: int, *, progress: Progress | None = None,
           confirm: Confirm | None = None, source: str = "cli") -> RunResult:
    """Claim run `run_id` and work it to its end: `done`, `failed` (a node refused; resumable)
    or `stopped` (`confirm` raised: nothing destroyed). Refused while another live process runs
    it, when it is finished, or when `policies` are not the ones it began with."""
    want = digest(policies)

    def prepare(conn: Connection, row: Row) -> None:
        if row["state"] not in SNAPSHOT_RUNS.open_states:
            raise UsageError(f"snapshot run {run_id} is {row['state']}: nothing to resume",
                             hint="xfleet snapshots run starts a new one")
        if row["policy_digest"] != want:
            raise UsageError(f"snapshot run {run_id} began with other policies than "
                             f"{policies.path}", hint="resume it with the policy file it "
                             f"began with ({row['policy']}), unchanged")
        if row["pid"] is not None or row["state"] == "failed" or row["resumed"] or \
                row["updated_at"] != row["created_at"]:
            conn.execute("UPDATE snapshot_runs SET resumed = resumed + 1, state = 'running', "
                         "error = NULL WHERE id = ?", (run_id,))

    conn = connect(mirror_location)
    try:
        jobs.claim(conn, SNAPSHOT_RUNS, run_id, prepare=prepare)
        row = jobs.get(conn, SNAPSHOT_RUNS, run_id)
    finally:
        conn.close()
    attempt = _Attempt(inv, mirror_location, conns, policies, row, progress=progress,
                       confirm=confirm, source=source)
    state, error = "done", None
    conn = connect(mirror_location)
    try:
        with jobs.Heartbeat(mirror_location, SNAPSHOT_RUNS, run_id, interval=20):
            try:
                attempt.work()
            except BaseException as exc:
                if attempt.declined:
                    state, error = "stopped", "pruning not confirmed: nothing destroyed"
                    raise
                # a crash or SIGTERM leaves the run `running`: the next run or --resume
                # finishes it; an error the job can name is recorded, resumable
                msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                if isinstance(exc, Exception):
                    state, error = "failed", msg
                else:
                    state = "running"
                raise
            finally:
                if attempt.errors:
                    state, error = "failed", "; ".join(attempt.errors)
                detail = json.loads(attempt.row["detail"] or "{}")
                detail["nodes"] = attempt.nodes
                attempt._update(detail=json.dumps(detail))
                if state == "running":
                    claims.release(conn, SNAPSHOT_RUNS.table, run_id)
                else:
                    jobs.finish(conn, SNAPSHOT_RUNS, run_id, state, error,
                                final=state in ("done", "stopped"))
        if state == "done":
            attempt._update(step="done")
        return get(conn, run_id)
    finally:
        conn.close()


def run_policies(inv: Inventory, mirror_location: Location, conns: Connections,
                 policies: Policies, *, now: float, mode: str = "run", prune: bool = True,
                 max_prune: int = apply.DEFAULT_MAX_PRUNE, progress: Progress | None = None,
                 confirm: Confirm | None = None, finish_interrupted: bool = True,
                 source: str = "cli") -> RunResult:
    """One round of `policies` as of `now`: an interrupted run of the same policies is finished
    first (`finish_interrupted`), then a new run takes the due snapshots (`mode` run or apply)
    and prunes (`mode` run or prune; `prune=False` is mode apply). Returns the new run."""
    if mode == "run" and not prune:
        mode = "apply"
    finished: list[int] = []
    conn = connect(mirror_location, readonly=True)
    try:
        want = digest(policies)
        for r in jobs.rows(conn, SNAPSHOT_RUNS, open_only=True):
            # two rounds at once would take two snapshots for one slot (their names differ)
            if r["state"] == "running" and r["policy_digest"] == want and \
                    claims.holder(r, stale=SNAPSHOT_RUNS.stale) is not None:
                raise UsageError(f"snapshot run {r['id']} of these policies is being run by "
                                 f"{jobs.holder_text(r)}", hint=SNAPSHOT_RUNS.busy_hint)
        left = interrupted(conn, policies) if finish_interrupted else []
    finally:
        conn.close()
    for old in left:
        if progress:
            progress(f"finishing interrupted snapshot run {old} first")
        resume(inv, mirror_location, conns, policies, old, progress=progress,
               confirm=confirm, source=source)
        finished.append(old)
    run_id = start(mirror_location, policies, at=now, mode=mode, max_prune=max_prune)
    if progress:
        progress(f"snapshot run {run_id}")
    out = resume(inv, mirror_location, conns, policies, run_id, progress=progress,
                 confirm=confirm, source=source)
    out.finished_first = finished
    return out
