"""Compression policy: which volumes should use which compression, the plan, and applying it.

A policy is a YAML file of ordered rules (docs/compression.md)::

    rules:
      - name: archive
        match: {labels: {zone: b}, volsize: ">=1T", properties: {"xfleet:tier": cold}}
        compression: zstd-9
      - name: default
        compression: lz4          # no `match`: every volume not matched above

The first rule that matches a volume gives its desired compression; a volume no rule matches
is left alone. Rules are compiled to one SQL expression, so a plan over a million mirror rows
is a single query (nothing is loaded into Python but the groups and the rows shown).

Applying a plan is a durable run journaled in the mirror (`compression_runs`, one
`compression_changes` row per volume: the audit): changes are applied per node in batches of
`zfs set compression=X NAME...` (a few commands per node whatever the number of volumes), each
batch is recorded when it finished, and an interrupted run resumes from its pending rows.

A new setting only affects data written afterwards: existing blocks keep the compression they
were written with until they are rewritten (e.g. a move without `zfs send -c`).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.core.names import validate_dataset
from xfleet.core.yamlsrc import Val, shown
from xfleet.mirror import claims, jobs, query
from xfleet.mirror.backend import Connection, Location, Row
from xfleet.mirror.store import inserted_id
from xfleet.ops.policyfile import MATCH_KEYS as MATCH_KEYS
from xfleet.ops.policyfile import PolicyError as PolicyError
from xfleet.ops.policyfile import PolicyFile
from xfleet.ops.policyfile import match_sql as match_sql

if TYPE_CHECKING:
    from xfleet.fleet.connections import Connections
    from xfleet.fleet.inventory import Inventory
    from xfleet.remote.transport import Transport


HEARTBEAT = 20.0  # seconds between heartbeats of a run being applied


# ---------------------------------------------------------------------------------------------
# compression values

ZSTD_FAST_LEVELS = (*range(1, 11), *range(20, 101, 10), 500, 1000)
ALIASES = {"zstd": "zstd-3", "gzip": "gzip-6", "zstd-fast": "zstd-fast-1", "on": "lz4"}
_VALUE_HINT = ("one of off, lz4, zstd (= zstd-3), zstd-1 .. zstd-19, zstd-fast-N "
               f"(N in {', '.join(map(str, ZSTD_FAST_LEVELS))}), gzip (= gzip-6), gzip-1 .. gzip-9")


def canonical(value: str) -> str:
    """The one spelling of a compression setting: zstd -> zstd-3, gzip -> gzip-6, on -> lz4."""
    return ALIASES.get(value, value)


def validate_compression(value: Any) -> str:
    """`value` if a policy may ask for it, else a UsageError saying what is allowed."""
    text = value.strip().lower() if isinstance(value, str) else ""
    ok = text in ("off", "lz4", "zstd", "gzip", "zstd-fast")
    m = re.fullmatch(r"(zstd|gzip|zstd-fast)-(\d+)", text)
    if m:
        n = int(m.group(2))
        ok = {"zstd": 1 <= n <= 19, "gzip": 1 <= n <= 9,
              "zstd-fast": n in ZSTD_FAST_LEVELS}[m.group(1)]
    if not ok:
        hint = _VALUE_HINT
        if text == "on":
            hint = "'on' means lz4 today but may change with the ZFS version; write lz4"
        elif text in ("zle", "lzjb"):
            hint = f"{text} is legacy; use lz4 or zstd. Allowed: {_VALUE_HINT}"
        raise UsageError(f"{value!r} is not a compression setting a policy can ask for",
                         hint=hint)
    return text


def canonical_sql(col: str) -> str:
    """SQL for the canonical spelling of the compression in column `col`."""
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in ALIASES.items())
    return f"(CASE {col} {whens} ELSE {col} END)"


# ---------------------------------------------------------------------------------------------
# the policy

RULE_KEYS = ("name", "match", "compression")


@dataclass
class Rule:
    name: str
    compression: str
    line: int
    match: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compression": self.compression, "match": self.match,
                "line": self.line}


@dataclass
class Policy:
    path: Path | None
    rules: list[Rule]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None,
                "rules": [r.to_dict() for r in self.rules]}

    def compile(self, inventory: Inventory | None = None,
                tenant_property: str = "xfleet:tenant") -> tuple[str, str, list[Any]]:
        """SQL expressions (desired compression, rule name) over a `datasets` row, and their
        parameters (the desired expression's parameters first, then the rule's)."""
        whens: list[str] = []
        params: list[Any] = []
        for r in self.rules:
            cond, p = match_sql(r.match, inventory, tenant_property)
            whens.append(cond)
            params.extend(p)
        if not whens:
            return "NULL", "NULL", []
        desired = "CASE " + " ".join(f"WHEN {w} THEN ?" for w in whens) + " END"
        rule = desired
        dparams: list[Any] = []
        rparams: list[Any] = []
        i = 0
        for r, w in zip(self.rules, whens, strict=True):
            n = w.count("?")
            dparams.extend([*params[i:i + n], r.compression])
            rparams.extend([*params[i:i + n], r.name])
            i += n
        return desired, rule, dparams + rparams


def _in(col: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{col} IN ({', '.join('?' for _ in values)})", list(values)


class _Rules(PolicyFile[Rule]):
    """The compression policy file: `rules:`, each a Rule (xfleet.ops.policyfile)."""

    kind = "compression policy"
    missing_hint = ("pass --policy FILE or set the fleet var compression_policy; "
                    "see inventory/compression.yaml")
    key = "rules"
    shape = "a compression policy is a mapping with a 'rules:' list"
    shape_hint = "see inventory/compression.yaml"
    noun = "rule"

    def entry(self, i: int, item: Val) -> Rule:
        body = self.body(i, item, RULE_KEYS, "name, match and compression")
        name = f"rule-{i + 1}"
        if "name" in body:
            nv = body["name"]
            if not isinstance(nv.value, str) or not nv.value.strip():
                raise self.err(nv.line, f"a rule name must be a non-empty string, got "
                               f"{shown(nv.value)}")
            name = nv.value.strip()
        if "compression" not in body:
            raise self.err(item.line, f"rule {name!r} has no 'compression'",
                           hint=f"add compression: ..., {_VALUE_HINT}")
        cv = body["compression"]
        value = cv.value
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on as a boolean
            value = "off" if value is False else "on"
        try:
            comp = validate_compression(value)
        except UsageError as exc:
            raise self.err(cv.line, f"rule {name!r}: {exc.message}", hint=exc.hint) from None
        return Rule(name, comp, item.line, self.match(name, body.get("match")))


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy; raises PolicyError naming file:line."""
    return Policy(Path(path), _Rules(Path(path)).load())


def parse_policy(text: str, where: str = "<policy>") -> Policy:
    return Policy(Path(where), _Rules(Path(where)).parse(text))


def policy_for(inventory: Inventory | None, path: str | None) -> Policy:
    """The policy named by `path`, else by the inventory's `compression_policy`."""
    if path:
        return load_policy(path)
    if inventory is not None and inventory.compression_policy is not None:
        return load_policy(inventory.compression_policy)
    raise UsageError("no compression policy given",
                     hint="pass --policy FILE, or set the fleet var compression_policy in the "
                     "inventory (see inventory/compression.yaml and docs/compression.md)")


# ---------------------------------------------------------------------------------------------
# the plan: desired vs current, in SQL


@dataclass
class Scope:
    nodes: Sequence[str] = ()
    where: str = "TRUE"  # extra SQL condition on datasets (xfleet.mirror.query.Selection.compile)
    params: Sequence[Any] = ()


def scope_for(inv: Inventory, nodes: Sequence[str] = (), where: Sequence[str] = (),
              pattern: str | None = None, tenants: Sequence[str] = ()) -> Scope:
    """The volumes a compression command covers: nodes or groups (all when empty), `--where`
    conditions, a name glob and tenants (xfleet.mirror.query.Selection), for the CLI and
    playbooks."""

    sel = query.Selection(where=tuple(where), tenants=tuple(tenants), pattern=pattern,
                          tenant_property=inv.tenant_property)
    clause, params = sel.compile()
    names = [h.name for h in inv.select(list(nodes))] if nodes else []
    return Scope(names, clause, params)


def _changes_sql(policy: Policy, inventory: Inventory | None, scope: Scope,
                 tenant_property: str) -> tuple[str, list[Any]]:
    """SELECT node, name, old, new, rule, ... of every volume whose desired compression differs
    from the current one (canonical spellings compared)."""
    desired, rule, params = policy.compile(inventory, tenant_property)
    node_clause, node_params = ("TRUE", []) if not scope.nodes else _in("node", scope.nodes)
    sql = (
        "SELECT node, name, old, new, rule, volsize, referenced, logicalreferenced, "
        "refreservation, compressratio, refcompressratio FROM ("
        f"SELECT node, name, compression AS old, {desired} AS new, {rule} AS rule, volsize, "
        "referenced, logicalreferenced, refreservation, compressratio, refcompressratio "
        f"FROM datasets WHERE type = 'volume' AND {node_clause} AND ({scope.where})) AS w "
        f"WHERE new IS NOT NULL AND {canonical_sql('old')} IS DISTINCT FROM "
        f"{canonical_sql('new')}"
    )
    return sql, [*params, *node_params, *scope.params]


def _estimate_join(alias: str = "c") -> str:
    return (f"LEFT JOIN compression_estimates e ON e.node = {alias}.node AND "
            f"e.name = {alias}.name AND e.algorithm = {canonical_sql(alias + '.new')}")


@dataclass
class PlanGroup:
    node: str
    old: str | None
    new: str
    rule: str
    volumes: int
    referenced: int
    logicalreferenced: int
    thick: int
    estimated: int  # volumes with an estimate for the new setting
    referenced_after: int | None  # of the estimated volumes, after a rewrite (estimate)
    referenced_estimated: int  # of the estimated volumes, now

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Plan:
    policy: Policy
    groups: list[PlanGroup]
    batch_size: int
    sql: str
    params: list[Any]

    @property
    def volumes(self) -> int:
        return sum(g.volumes for g in self.groups)

    def commands_by_node(self) -> dict[str, int]:
        """`zfs set` commands per node: one per `batch_size` volumes of each setting."""
        volumes: dict[tuple[str, str], int] = {}
        for g in self.groups:
            volumes[(g.node, g.new)] = volumes.get((g.node, g.new), 0) + g.volumes
        out: dict[str, int] = {}
        for (node, _), n in volumes.items():
            out[node] = out.get(node, 0) + -(-n // self.batch_size)
        return out

    @property
    def commands(self) -> int:
        return sum(self.commands_by_node().values())

    def nodes(self) -> list[str]:
        return sorted({g.node for g in self.groups})

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "volumes": self.volumes,
                "commands": self.commands, "commands_by_node": self.commands_by_node(),
                "batch_size": self.batch_size,
                "groups": [g.to_dict() for g in self.groups],
                "note": NOTE_REWRITE}


NOTE_REWRITE = ("a new compression setting only affects data written after it is set: existing "
                "blocks keep their compression until rewritten (a move without send -c, or a "
                "copy); 'referenced_after' is what a rewrite would give")


def plan(conn: Connection, policy: Policy, inventory: Inventory | None = None, *,
         scope: Scope | None = None, batch_size: int = 500,
         tenant_property: str = "xfleet:tenant") -> Plan:
    """The changes `policy` asks for, grouped by node, current and desired setting and rule."""
    scope = scope or Scope()
    sql, params = _changes_sql(policy, inventory, scope, tenant_property)
    rows = conn.execute(
        f"SELECT c.node, c.old, c.new, c.rule, count(*), coalesce(sum(c.referenced), 0), "
        "coalesce(sum(c.logicalreferenced), 0), "
        "sum(CASE WHEN coalesce(c.refreservation, 0) > 0 THEN 1 ELSE 0 END), "
        "count(e.ratio), sum(CASE WHEN e.ratio > 0 THEN c.logicalreferenced / e.ratio END), "
        "coalesce(sum(CASE WHEN e.ratio > 0 THEN c.referenced END), 0) "
        f"FROM ({sql}) c {_estimate_join()} GROUP BY c.node, c.old, c.new, c.rule "
        "ORDER BY c.node, c.new, c.old", params).fetchall()
    groups = []
    for node, old, new, rule, n, ref, lref, thick, est, after, ref_est in rows:
        groups.append(PlanGroup(node, old, new, rule, n, ref, lref, thick or 0, est,
                                int(after) if after is not None else None, ref_est))
    return Plan(policy, groups, batch_size, sql, params)


def changes(conn: Connection, p: Plan, *, limit: int | None = 20,
            order: str = "potential") -> Iterator[dict[str, Any]]:
    """The plan's changes, one per volume (largest estimated effect first by default),
    streamed from the cursor."""
    by = ("(c.referenced - coalesce(c.logicalreferenced / e.ratio, c.referenced)) DESC, "
          "c.logicalreferenced DESC" if order == "potential" else "c.node, c.name")
    sql = (f"SELECT c.node, c.name, c.old, c.new, c.rule, c.referenced, c.logicalreferenced, "
           "c.refreservation, c.refcompressratio, e.ratio AS estimated_ratio, e.ratio_low, "
           f"e.ratio_high FROM ({p.sql}) c {_estimate_join()} ORDER BY {by}"
           + (f" LIMIT {int(limit)}" if limit else ""))
    cur = conn.execute(sql, p.params)
    names = [d[0] for d in cur.description]
    for row in cur:
        d = dict(zip(names, row, strict=True))
        r = d["estimated_ratio"]
        d["referenced_after"] = int(d["logicalreferenced"] / r) if r else None
        d["thick"] = bool(d["refreservation"])
        d["needs_rewrite"] = True
        yield d


# ---------------------------------------------------------------------------------------------
# applying: a durable run, batches per node, an audit row per volume


@dataclass
class Run:
    id: int
    state: str
    changes: int
    done: int
    failed: int
    commands: int
    batch_size: int
    policy: str | None
    operator: str | None  # who planned it (claims.operator) and why (--reason)
    operator_reason: str | None
    created_at: float
    finished_at: float | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# states: planned -> applying -> done, or failed (pending changes left: `apply --resume RUN`)
COMPRESSION_RUNS = jobs.register(jobs.JobKind(
    "compression_runs", "compression run", "xfleet compression runs",
    frozenset({"planned", "applying", "failed"})))


def _run(r: Row) -> Run:
    return Run(**{f: r[f] for f in Run.__dataclass_fields__})


def get_run(conn: Connection, run_id: int) -> Run:
    return _run(jobs.get(conn, COMPRESSION_RUNS, run_id))


def runs(conn: Connection, limit: int = 20) -> list[Run]:
    return [_run(r) for r in jobs.rows(conn, COMPRESSION_RUNS, limit=limit)]


def create_run(conn: Connection, p: Plan) -> Run:
    """Record the plan as a run with one pending audit row per volume (one INSERT ... SELECT:
    the changes never pass through Python)."""
    now = time.time()
    mirror.begin(conn, "a new compression run")
    try:
        cur = conn.execute(
            "INSERT INTO compression_runs (policy, operator, operator_reason, host, state, "
            "batch_size, created_at, updated_at) VALUES (?, ?, ?, ?, 'planned', ?, ?, ?) "
            "RETURNING id",
            (str(p.policy.path) if p.policy.path else None, claims.operator(), claims.reason(),
             socket.gethostname(), p.batch_size, now, now))
        run_id = inserted_id(cur)
        assert run_id is not None
        n = conn.execute(
            "INSERT INTO compression_changes (run, node, name, old, new, rule, state) "
            f"SELECT ?, node, name, old, new, rule, 'pending' FROM ({p.sql}) AS planned "
            "ORDER BY node, new, name", (run_id, *p.params)).rowcount
        conn.execute("UPDATE compression_runs SET changes = ? WHERE id = ?", (n, run_id))
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return get_run(conn, run_id)


def set_argv(value: str, names: Sequence[str]) -> list[str]:
    """`zfs set compression=VALUE NAME...` (names validated: data, never options)."""
    validate_compression(value)
    for n in names:
        validate_dataset(n, allow_snapshot=False)
    return ["zfs", "set", f"compression={value}", *names]


@dataclass
class Batch:
    node: str
    new: str
    ids: list[int]
    names: list[str]


def pending_batches(conn: Connection, run_id: int, node: str,
                    batch_size: int) -> Iterator[Batch]:
    """The run's pending changes on `node`, `batch_size` at a time per setting (read a batch,
    apply it, mark it: only one batch is held in memory)."""
    values = [r[0] for r in conn.execute(
        "SELECT DISTINCT new FROM compression_changes WHERE run = ? AND state = 'pending' "
        "AND node = ?", (run_id, node))]
    for new in values:
        after = 0
        while True:
            rows = conn.execute(
                "SELECT id, name FROM compression_changes WHERE run = ? AND state = 'pending' "
                "AND node = ? AND new = ? AND id > ? ORDER BY id LIMIT ?",
                (run_id, node, new, after, batch_size)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            yield Batch(node, new, [r[0] for r in rows], [r[1] for r in rows])


def dry_run_commands(conn: Connection, p: Plan) -> Iterator[tuple[str, list[str]]]:
    """(node, argv) of every command `apply` would run, batch by batch."""
    for node in p.nodes():
        for new in sorted({g.new for g in p.groups if g.node == node}):
            cur = conn.execute(f"SELECT name FROM ({p.sql}) AS c WHERE node = ? AND new = ? "
                               "ORDER BY name", (*p.params, node, new))
            while True:
                names = [r[0] for r in cur.fetchmany(p.batch_size)]
                if not names:
                    break
                yield node, set_argv(new, names)


def _apply_batch(conn: Connection, t: Transport, run_id: int, b: Batch,
                 batch_no: int) -> tuple[int, int, int]:
    """Run one batch; returns (done, failed, commands)."""
    argv = set_argv(b.new, b.names)
    res = t.stream(argv)
    for _ in res:
        pass
    commands = 1
    failed: dict[str, str] = {}
    if res.exit_status != 0:
        # zfs set goes on after a name it cannot set: ask which ones have the value now
        commands += 1
        got = t.stream(["zfs", "get", "-H", "-p", "-o", "name,value", "compression", *b.names])
        now_value = {}
        for line in got:
            parts = line.split("\t")
            if len(parts) == 2:
                now_value[parts[0]] = parts[1]
        why = (res.stderr.strip().splitlines() or ["zfs set failed"])[-1]
        for n in b.names:
            if canonical(now_value.get(n, "")) != canonical(b.new):
                failed[n] = why if n in now_value else f"{why} (dataset not found)"
    now = time.time()
    mirror.begin(conn, "a compression batch")
    try:
        done_names = [n for n in b.names if n not in failed]
        for i, n in zip(b.ids, b.names, strict=True):
            if n in failed:
                conn.execute("UPDATE compression_changes SET state = 'failed', batch = ?, "
                             "at = ?, error = ? WHERE id = ?", (batch_no, now, failed[n], i))
        ok_ids = [i for i, n in zip(b.ids, b.names, strict=True) if n not in failed]
        for chunk in range(0, len(ok_ids), 500):
            part = ok_ids[chunk:chunk + 500]
            conn.execute("UPDATE compression_changes SET state = 'done', batch = ?, at = ? "
                         f"WHERE id IN ({', '.join('?' for _ in part)})", (batch_no, now, *part))
        for chunk in range(0, len(done_names), 500):
            names = done_names[chunk:chunk + 500]
            conn.execute("UPDATE datasets SET compression = ? WHERE node = ? AND name IN "
                         f"({', '.join('?' for _ in names)})", (b.new, b.node, *names))
        conn.execute("UPDATE compression_runs SET done = done + ?, failed = failed + ?, "
                     "commands = commands + ?, heartbeat = ?, updated_at = ? WHERE id = ?",
                     (len(done_names), len(failed), commands, now, now, run_id))
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return len(done_names), len(failed), commands


@dataclass
class NodeApply:
    node: str
    done: int = 0
    failed: int = 0
    commands: int = 0
    batches: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Applier:
    """Applies compression runs (journaled jobs, xfleet/mirror/jobs.py): `run(run_id)` applies (or
    resumes) run RUN: every node's pending changes, batch by batch, nodes in parallel. A node
    that fails keeps its pending rows (resume later); other nodes go on. The shape of every
    job's runner (`jobs.JobRunner`)."""

    def __init__(self, mirror_path: Location, connections: Connections, *, parallel: int = 8,
                 progress: Any = None) -> None:
        self.mirror_path, self.connections = mirror_path, connections
        self.parallel, self.progress = parallel, progress

    def run(self, run_id: int) -> tuple[Run, list[NodeApply]]:
        return _apply(self.mirror_path, run_id, self.connections, parallel=self.parallel,
                      progress=self.progress)


def _apply(mirror_path: Location, run_id: int, connections: Connections, *,
           parallel: int, progress: Any) -> tuple[Run, list[NodeApply]]:

    conn = mirror.connect(mirror_path)
    try:
        run = get_run(conn, run_id)
        if run.state == "done":
            return run, []
        jobs.claim(conn, COMPRESSION_RUNS, run_id,
                   set_columns={"state": "applying", "updated_at": time.time(), "error": None})
        nodes = [r[0] for r in conn.execute(
            "SELECT DISTINCT node FROM compression_changes WHERE run = ? AND state = 'pending'",
            (run_id,))]
        batch_base = conn.execute("SELECT coalesce(max(batch), 0) FROM compression_changes "
                                  "WHERE run = ?", (run_id,)).fetchone()[0]
    finally:
        conn.close()
    counter = [batch_base]

    lock = threading.Lock()

    def one(node: str, t: Transport) -> NodeApply:
        out = NodeApply(node)
        c = mirror.connect(mirror_path)
        try:
            for b in pending_batches(c, run_id, node, run.batch_size):
                with lock:
                    counter[0] += 1
                    no = counter[0]
                d, f, n = _apply_batch(c, t, run_id, b, no)
                out.done += d
                out.failed += f
                out.commands += n
                out.batches += 1
                if progress:
                    progress(out)
        finally:
            c.close()
        return out

    with jobs.Heartbeat(mirror_path, COMPRESSION_RUNS, run_id, interval=HEARTBEAT):
        results = connections.each(nodes, one, parallel=parallel)
    per_node: list[NodeApply] = []
    errors = []
    for r in results:
        if r.value is not None:
            per_node.append(r.value)
        else:
            per_node.append(NodeApply(r.node, error=str(r.error)))
            errors.append(f"{r.node}: {r.error}")
    conn = mirror.connect(mirror_path)
    try:
        pending = conn.execute("SELECT count(*) FROM compression_changes WHERE run = ? AND "
                               "state = 'pending'", (run_id,)).fetchone()[0]
        state = "failed" if pending else "done"
        jobs.finish(conn, COMPRESSION_RUNS, run_id, state, "; ".join(errors) or None,
                    final=state == "done")
        return get_run(conn, run_id), per_node
    finally:
        conn.close()


def audit(conn: Connection, *, run_id: int | None = None, volume: str | None = None,
          limit: int = 100) -> Iterator[dict[str, Any]]:
    """Audit rows (who, when, node, volume, old -> new, batch, state), newest first."""
    where: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        where.append("c.run = ?")
        params.append(run_id)
    if volume is not None:
        where.append("c.name = ?")
        params.append(volume)
    sql = ("SELECT c.run, r.operator, c.at, c.node, c.name, c.old, c.new, c.rule, c.batch, "
           "c.state, c.error FROM compression_changes c JOIN compression_runs r ON r.id = c.run "
           + (f"WHERE {' AND '.join(where)} " if where else "")
           + "ORDER BY c.id DESC LIMIT ?")
    cur = conn.execute(sql, (*params, limit))
    names = [d[0] for d in cur.description]
    for row in cur:
        yield dict(zip(names, row, strict=True))
