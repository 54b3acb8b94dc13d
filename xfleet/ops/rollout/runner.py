"""Running a rolling upgrade: node by node, batch by batch, stage, restart, wait until ready
with the same exports, soak, verify, or roll back; pausable and resumable."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Location, Row
from xfleet.ops import initiator
from xfleet.ops.rollout.journal import (
    FINISHED,
    HEARTBEAT,
    IN_FLIGHT,
    OPEN,
    POLL,
    ROLLOUTS,
    RolloutError,
    Say,
    get,
    nodes_of,
    set_state,
)
from xfleet.ops.rollout.plan import (
    ExportsDigest,
    Options,
    Package,
    client_connections,
    exports_digest,
    safety_checks,
)
from xfleet.ops.target import TargetDriver, driver_for


@dataclass
class Result:
    id: int
    state: str
    reason: str | None
    nodes: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "reason": self.reason, "nodes": self.nodes}


class NodeFailed(Exception):
    def __init__(self, message: str, *, restarted: bool):
        super().__init__(message)
        self.restarted = restarted


class Runner:
    """Drives a rollout to its end (done), a pause or a stop; resumable at any point. The
shape of every job's runner (`jobs.JobRunner`): `Runner(...).run(rid)`."""

    def __init__(self, inv: Inventory, mirror_path: Location, conns: Connections, *,
                 say: Say | None = None, reload_inventory: bool = True):
        self.inv = inv
        self.mirror_path = mirror_path
        self.conns = conns
        self.say: Say = say or (lambda _m: None)
        self.reload_inventory = reload_inventory
        self._lock = threading.Lock()

    def _load(self, rid: int) -> None:
        """The rollout's settings, read once as its run starts."""
        self.rid = rid
        self._conn = mirror.connect(self.mirror_path)
        try:
            r = get(self._conn, rid)
        except BaseException:
            self._conn.close()
            raise
        self.clients = client_connections(self.inv)
        self.version: str = r["version"]
        self.opts = Options.from_json(r["options"])
        self.packages = {v: Package(**p) for v, p in json.loads(r["packages"]).items()}
        self.selection: list[str] | None = json.loads(r["selection"]) if r["selection"] else None

    # -- journal ---------------------------------------------------------------------------
    def _exec(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, args)

    def _log(self, node: str | None, state: str, message: str) -> None:
        self._exec("INSERT INTO rollout_log (rollout, at, node, state, message, operator) VALUES "
                   "(?, ?, ?, ?, ?, ?)",
                   (self.rid, time.time(), node, state, message, claims.operator()))
        self.say(f"{node}: {message}" if node else message)

    def _node(self, node: str, state: str, step: str | None = None, **cols: Any) -> None:
        sets = ["state = ?", "step = ?", *(f"{k} = ?" for k in cols)]
        self._exec(f"UPDATE rollout_nodes SET {', '.join(sets)} WHERE rollout = ? AND node = ?",
                   (state, step, *cols.values(), self.rid, node))
        self._exec("UPDATE rollouts SET updated_at = ? WHERE id = ?", (time.time(), self.rid))

    def _row(self) -> dict[str, Any]:
        with self._lock:
            return get(self._conn, self.rid)

    def _nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            return nodes_of(self._conn, self.rid)

    def _finish(self, state: str, reason: str | None) -> Result:
        with self._lock:
            set_state(self._conn, self.rid, state, reason)
        if reason:
            self.say(f"rollout {self.rid} {state}: {reason}")
        return Result(self.rid, state, reason, self._nodes())

    # -- claim -----------------------------------------------------------------------------
    def _claim(self) -> None:
        def prepare(c: Connection, r: Row) -> None:
            if r["state"] not in OPEN:
                raise RolloutError(f"rollout {self.rid} is {r['state']}",
                                   hint=f"xfleet rollouts show {self.rid}")
            if r["state"] == "paused":  # resume retries the nodes that failed
                c.execute("UPDATE rollout_nodes SET state = CASE WHEN from_version IS NULL "
                          "THEN 'pending' ELSE 'staged' END, error = NULL, step = NULL, "
                          "started_at = NULL, finished_at = NULL "
                          "WHERE rollout = ? AND state = 'failed'", (self.rid,))
                c.execute("UPDATE rollouts SET state = 'running' WHERE id = ?", (self.rid,))

        with self._lock:
            jobs.claim(self._conn, ROLLOUTS, self.rid, prepare=prepare,
                       set_columns={"control": None, "reason": None})

    # -- run -------------------------------------------------------------------------------
    def run(self, rid: int) -> Result:
        """Drive rollout `rid` (one per Runner) to done, a pause or a stop."""
        self._load(rid)
        try:
            self._claim()
        except BaseException:
            self._conn.close()
            self.clients.close()
            raise
        try:
            with jobs.Heartbeat(self.mirror_path, ROLLOUTS, self.rid, interval=HEARTBEAT):
                return self._run()
        finally:
            with self._lock:
                claims.release(self._conn, "rollouts", self.rid)
            self._conn.close()
            self.clients.close()

    def _run(self) -> Result:
        self._log(None, "running", f"rollout {self.rid} to {self.version} "
                  f"({'resumed' if self._row()['state'] == 'running' else 'started'})")
        pending = [n["node"] for n in self._nodes() if n["state"] == "pending"]
        if pending:  # every node staged and verified before any restart
            failed = self._stage(pending)
            if failed:
                return self._finish("paused", failed)
        if self._row()["state"] == "staging":
            with self._lock:
                self._conn.execute("UPDATE rollouts SET state = 'running' WHERE id = ?",
                                   (self.rid,))
        while True:
            self._pick_up_new_nodes()
            nodes = self._nodes()
            todo = sorted({n["batch"] for n in nodes if n["state"] not in FINISHED})
            if not todo:
                break
            b = todo[0]
            control = self._row()["control"]
            if control:
                return self._finish("paused" if control == "pause" else "stopped",
                                    f"{control} requested by the user")
            self._exec("UPDATE rollouts SET batch = ? WHERE id = ?", (b, self.rid))
            batch = [n for n in nodes if n["batch"] == b and n["state"] not in FINISHED]
            unstaged = [n["node"] for n in batch if n["state"] == "pending"]
            if unstaged:
                failed = self._stage(unstaged)
                if failed:
                    return self._finish("paused", failed)
            self._log(None, "running", f"batch {b + 1}: {', '.join(n['node'] for n in batch)}")
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                list(pool.map(self._upgrade, [n["node"] for n in batch]))
            after = [n for n in self._nodes() if n["batch"] == b]
            failures = [n for n in after if n["state"] == "failed"]
            budget = 0 if b == 0 else self.opts.max_failures
            if len(failures) > budget:
                why = "; ".join(f"{n['node']}: {n['error']}" for n in failures)
                what = "the canary" if b == 0 else f"batch {b + 1}"
                return self._finish("paused", f"{what} failed ({len(failures)} failure(s), "
                                    f"budget {budget}): {why}")
            if failures:
                self._log(None, "running", f"batch {b + 1}: {len(failures)} failure(s) within "
                          f"the budget of {budget}: "
                          + ", ".join(f"{n['node']} rolled back" for n in failures))
        nodes = self._nodes()
        back = [n["node"] for n in nodes if n["state"] == "failed"]
        note = f" ({len(back)} node(s) rolled back: {', '.join(back)})" if back else ""
        return self._finish("done", f"{len(nodes) - len(back)} of {len(nodes)} node(s) at "
                            f"{self.version}{note}")

    def _pick_up_new_nodes(self) -> None:
        """A rollout over every node with a target takes in nodes added to the inventory."""
        if self.selection is not None or not self.reload_inventory:
            return
        try:
            fresh = inventory.load(self.inv.path)
        except XfleetError as exc:
            self._log(None, "running", f"inventory not re-read ({exc.message}); carrying on")
            return
        known = {n["node"] for n in self._nodes()}
        new = [n for n, h in fresh.hosts.items() if h.target is not None and n not in known]
        if not new:
            return
        last = max((n["batch"] for n in self._nodes()), default=-1)
        for i, node in enumerate(new):
            self.inv.hosts[node] = fresh.hosts[node]
            self.conns.hosts[node] = fresh.hosts[node]
            self._exec("INSERT INTO rollout_nodes (rollout, node, batch, position, state) "
                       "VALUES (?, ?, ?, ?, 'pending')", (self.rid, node, last + 1, 10_000 + i))
        self._log(None, "running", f"new node(s) in the inventory: {', '.join(new)} "
                  f"(batch {last + 2})")

    # -- staging ---------------------------------------------------------------------------
    def _stage(self, nodes: Sequence[str]) -> str | None:
        """Copy and verify the package on `nodes` (and each one's rollback package when it is
        not there yet); the reason when any fails."""
        def one(node: str) -> str | None:
            try:
                drv = self._driver(node)
                v = drv.versions()
                cur = v.running or v.installed
                self._node(node, "pending", "staging", from_version=cur)
                wanted = [self.version] + ([cur] if cur and cur != self.version
                                           and cur in self.packages else [])
                for ver in wanted:
                    self._stage_one(drv, self.packages[ver])
                self._node(node, "staged", None)
                self._log(node, "staged", f"{self.packages[self.version].name} staged and "
                          f"verified (sha256 {self.packages[self.version].sha256[:12]})")
                return None
            except (XfleetError, OSError) as exc:
                msg = exc.message if isinstance(exc, XfleetError) else str(exc)
                self._node(node, "pending", "staging failed", error=msg)
                self._log(node, "pending", f"staging failed: {msg}")
                return f"{node}: {msg}"

        with ThreadPoolExecutor(max_workers=max(1, min(self.inv.parallel, len(nodes)))) as pool:
            errors = [e for e in pool.map(one, nodes) if e]
        return f"staging failed on {len(errors)} node(s): {'; '.join(errors)}" if errors else None

    @staticmethod
    def _stage_one(drv: TargetDriver, pkg: Package) -> None:
        remote = pkg.remote(drv.stage_dir)
        if drv.staged_digest(remote) != pkg.sha256:
            drv.put(Path(pkg.file).read_bytes(), remote)
        drv.stage(pkg.version, remote, pkg.sha256)

    def _driver(self, node: str) -> TargetDriver:
        host = self.inv.hosts.get(node)
        if host is None:
            raise RolloutError(f"{node} is no longer in the inventory",
                               hint="put it back, or stop the rollout")
        return driver_for(node, self.conns.get(node), host.target)

    # -- one node --------------------------------------------------------------------------
    def _upgrade(self, node: str) -> None:
        row = next(n for n in self._nodes() if n["node"] == node)
        started = row["started_at"] or time.time()
        deadline = started + self.opts.deadline if self.opts.deadline else math.inf
        before: str | None = row["exports_digest"]
        try:
            drv = self._driver(node)
            if row["state"] in IN_FLIGHT:
                self._log(node, row["state"], f"resuming from {row['state']}")
                if row["state"] == "rolling_back":
                    raise NodeFailed(row["error"] or "rolled back before xfleet stopped",
                                     restarted=True)
                if row["state"] == "restarting" and drv.is_ready() != self.version:
                    # xfleet stopped around the restart: do it (again); the node is down anyway
                    drv.restart(self.version,
                                self.packages[self.version].remote(drv.stage_dir))
            else:
                self._node(node, "checking", "ok-to-stop checks", started_at=started,
                           error=None)
                v = drv.versions()
                if v.running == self.version and drv.is_ready() == self.version:
                    self._node(node, "skipped", None, finished_at=time.time())
                    self._log(node, "skipped", f"already running {self.version}")
                    return
                listed = ExportsDigest()
                bad = [c for c in safety_checks(self.mirror_path, drv, self.inv.hosts[node],
                                                 self.opts.skip, listed) if not c.ok]
                if bad:
                    raise NodeFailed("not ok to stop: " + "; ".join(
                        f"{c.name}: {c.message}" for c in bad), restarted=False)
                if listed.complete:
                    count, before = listed.count, listed.hexdigest
                else:  # the exports and identities checks were skipped
                    count, before = exports_digest(drv.iter_exports())
                self._node(node, "restarting", f"restart into {self.version}",
                           exports=count, exports_digest=before)
                self._log(node, "restarting", f"{row['from_version']} -> {self.version}: "
                          f"restarting with {count} export(s)")
                drv.restart(self.version, self.packages[self.version].remote(drv.stage_dir))
            self._node(node, "restarting", f"waiting for {self.version} to be ready")
            drv.wait_ready(self.version, timeout=self._left(deadline, self.opts.ready_timeout))
            self._node(node, "ready", "checking exports")
            count, after = exports_digest(drv.iter_exports())
            if before is not None and after != before:
                raise NodeFailed(f"ready at {self.version} but its exports changed "
                                 f"({count} export(s) now, {row['exports']} before)",
                                 restarted=True)
            self._node(node, "soaking", f"soak {self.opts.soak:g}s")
            self._soak(drv, deadline)
            self._node(node, "verifying", "verifying from the initiators")
            self._verify_clients(node, drv, deadline)
            t = time.time()
            self._node(node, "done", None, finished_at=t, error=None)
            nodes = self._nodes()
            done = sum(1 for n in nodes if n["state"] in ("done", "skipped"))
            self._log(node, "done", f"at {self.version} in {t - started:.1f}s "
                      f"({done}/{len(nodes)} nodes done)")
        except NodeFailed as exc:
            self._fail(node, str(exc), rolled=exc.restarted)
        except (XfleetError, OSError) as exc:
            msg = exc.message if isinstance(exc, XfleetError) else str(exc)
            self._fail(node, msg, rolled=True)

    def _left(self, deadline: float, cap: float) -> float:
        left = deadline - time.time()
        if left <= 0:
            raise NodeFailed(f"progress deadline of {self.opts.deadline:g}s exceeded",
                             restarted=True)
        return min(cap, left)

    def _soak(self, drv: TargetDriver, deadline: float) -> None:
        end = time.monotonic() + self.opts.soak
        while time.monotonic() < end:
            self._left(deadline, 0)
            time.sleep(min(POLL, max(0.0, end - time.monotonic())))
        seen = drv.is_ready()
        if seen != self.version:
            raise NodeFailed(f"not ready at {self.version} after the soak of "
                             f"{self.opts.soak:g}s (reports {seen or 'not ready'})",
                             restarted=True)

    def _verify_clients(self, node: str, drv: TargetDriver, deadline: float) -> None:
        """Every initiator connected to this node's subsystems has its paths live again with
        the identities it had (uuid/nguid per subsystem equal to the exports'). Only the
        exports of subsystems an initiator is connected to are kept."""
        if not self.inv.initiators or "clients" in self.opts.skip:
            return
        connected = {c.nqn for name in sorted(self.inv.initiators)
                     for c in initiator.controllers(self.clients.get(name))}
        want = {e.nqn: (e.uuid, e.nguid) for e in drv.iter_exports() if e.nqn in connected}
        if not want:
            self._log(node, "verifying", "no initiator in the inventory is connected to it")
            return
        until = min(deadline, time.time() + self.opts.ready_timeout)
        for name in sorted(self.inv.initiators):
            t = self.clients.get(name)
            while True:
                ctrls = [c for c in initiator.controllers(t) if c.nqn in want]
                not_live = [c for c in ctrls if c.state != "live"]
                wrong = [c for c in ctrls for ns in c.namespaces
                         if (ns.uuid, ns.nguid) != want[c.nqn]]
                if wrong:
                    raise NodeFailed(f"{name} sees changed identities on "
                                     f"{', '.join(sorted({c.nqn for c in wrong}))}",
                                     restarted=True)
                if not not_live:
                    if ctrls:
                        self._log(node, "verifying", f"{name}: {len(ctrls)} path(s) live, "
                                  "identities unchanged")
                    break
                if time.time() >= until:
                    raise NodeFailed(f"{name}: {len(not_live)} path(s) not live again "
                                     f"({', '.join(c.state for c in not_live[:3])})",
                                     restarted=True)
                time.sleep(POLL)

    def _fail(self, node: str, message: str, *, rolled: bool) -> None:
        row = next(n for n in self._nodes() if n["node"] == node)
        prev = row["from_version"]
        if not rolled or prev is None or prev == self.version:
            self._node(node, "failed", None, finished_at=time.time(), error=message)
            self._log(node, "failed", message)
            return
        self._node(node, "rolling_back", f"rolling back to {prev}", error=message)
        self._log(node, "rolling_back", f"{message}; rolling back to {prev}")
        try:
            drv = self._driver(node)
            pkg = self.packages[prev]
            drv.rollback(prev, pkg.remote(drv.stage_dir))
            drv.wait_ready(prev, timeout=self.opts.ready_timeout)
            note = f"{message}; rolled back to {prev}"
        except (XfleetError, OSError, KeyError) as exc:
            why = exc.message if isinstance(exc, XfleetError) else str(exc)
            note = f"{message}; ROLLBACK TO {prev} FAILED: {why}"
        self._node(node, "failed", None, finished_at=time.time(), error=note)
        self._log(node, "failed", note)


def resume(inv: Inventory, mirror_path: Location, conns: Connections, rid: int, *,
           say: Say | None = None) -> Result:
    return Runner(inv, mirror_path, conns, say=say).run(rid)
