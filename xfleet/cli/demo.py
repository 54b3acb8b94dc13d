"""The demo's set-up (`xfleet demo`): a simulated fleet made to tell the whole story, by
xfleet's own operations run against it, so that every view and report shows real figures.

`build(inv, mirror_path, ...)` runs the steps in order and times each (docs: README.md, "The
demo"):

1. `fleet`: the simulated nodes and the mirror start afresh (`reset`), then a full sync.
2. `history`: a simulated past of `days` days: the first day is the fleet as synced; on each
   later day tenant GROW_TENANT's volumes grow (`xfleet resize`), every node gets a branch
   (`xfleet clone`), the first node is rebalanced (its largest volume up to MOVE_MAX moves
   to the node with the most free space: `xfleet move`, then `xfleet moves retire
   --destroy`), the mirror is synced, and the day's capacity and compression totals are
   recorded at that day's time (`record_daily(conn, now=...)`, what every sync does for
   today); the last day is today.
3. `estimates`: compressibility sampled on the `sample` largest uncompressed volumes (`xfleet
   compression estimate --where compression=off`), for every setting the fleet has and the
   policy asks for, so the report can say what the policy would save, with its interval, and
   which volumes gain most.
4. `upgrade`: a rolling upgrade of the simulated NVMe-oF target from TARGET_FROM to TARGET_TO
   (`xfleet upgrade target`), with packages written under the state dir.
5. `playbook`: a playbook run (`xfleet play`): playbooks/nightly-snapshot.yaml for the
   tenant, which ends with the tenant's compression report.
6. `drain`: the plan of a drain of the last node (`xfleet drain NODE --dry-run`), summed up
   (the finished moves are the history's).
7. `reports`: today's totals recorded as the set-up left the fleet, then the compression and
   capacity reports written as HTML (the tour names them).

Steps that need what an inventory does not have (a target, a policy) are skipped with a
note. Nothing here prints: `on_step` is told each finished step (the command prints it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet import mirror, playbook
from xfleet.core.errors import UsageError, XfleetError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import query
from xfleet.mirror.backend import Connection, Location
from xfleet.ops import capacity, compression, estimate, lifecycle, moves, report, rollout
from xfleet.ops.charts import fmt_bytes
from xfleet.ops.sync import SyncReport, sync

DAY = 86400.0
HISTORY_DAYS = 7  # the trend's days (the first is the fleet as synced, the last today)
GROW_TENANT = "t0001"  # the tenant whose volumes grow every day of the history
GROW_BY = "+4G"
MOVE_MAX = 200 << 30  # each day, the largest volume up to this moves off the first node
# The compressibility sample: the largest uncompressed volumes, each for every setting (the
# report learns from them how each setting compares with each other). Uncompressed, because
# their space figures are their data's; the simulator's blocks are not the invented ratios of
# its compressed volumes (docs/compression.md, "On the demo fleet").
SAMPLE = 48
SAMPLE_WHERE = "compression=off"
BLOCKS = 64  # data blocks sampled per volume
TARGET_FROM, TARGET_TO = "1.0", "1.1"
PLAYBOOK = "nightly-snapshot.yaml"
PACKAGES = "demo-packages"  # under the inventory's state_dir
REPORTS = {"compression": "demo-compression.html", "capacity": "demo-capacity.html",
           "nightly": "demo-nightly-compression.html"}

# a sync of the whole fleet: (inventory, mirror, full) -> report; the command's shows progress
SyncFn = Callable[[Inventory, Location, bool], SyncReport]


@dataclass
class Step:
    """One finished step: its name, how long it took and what it did (one line)."""

    name: str
    seconds: float
    summary: str
    skipped: bool = False  # the step did not apply; `summary` says why


@dataclass
class Demo:
    steps: list[Step] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # REPORTS' keys -> written files
    algorithms: list[str] = field(default_factory=list)  # what the estimates sampled

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


class Skipped(Exception):
    """A step that does not apply: its message is the step's summary (why)."""


def require_sim(inv: Inventory) -> None:
    """The demo changes its nodes and starts them afresh: simulated nodes only."""
    real = [h.name for h in inv.hosts.values() if h.kind != "sim"]
    if real:
        raise UsageError(f"the demo runs on simulated nodes only; {', '.join(real[:5])} "
                         f"{'is' if len(real) == 1 else 'are'} not (kind: sim)",
                         where=str(inv.path),
                         hint="run it on inventory/demo.yaml (xfleet demo), or on an "
                         "inventory whose hosts are all kind: sim")


def reset(inv: Inventory, mirror_path: Location) -> None:
    """Start afresh: the simulated nodes' changes and target (their files `sim-*` in the state
    dir, docs/sim.md "State"), the demo's packages and the mirror file are removed."""
    require_sim(inv)
    if not isinstance(mirror_path, Path):
        raise UsageError("the demo builds its own SQLite mirror; it does not reset a "
                         "PostgreSQL database", hint="drop --mirror (or use --no-sync to only "
                         "look at an existing mirror)")
    for p in [*inv.state_dir.glob("sim-*"), *(inv.state_dir / PACKAGES).glob("*")]:
        if p.is_file():
            p.unlink()
    for suffix in ("", "-wal", "-shm", "-journal"):
        mirror_path.with_name(mirror_path.name + suffix).unlink(missing_ok=True)


def build(inv: Inventory, mirror_path: Location, *, out_dir: Path, playbooks: Path,
          sync_fn: SyncFn | None = None, on_step: Callable[[Step], None] | None = None,
          days: int = HISTORY_DAYS, sample: int = SAMPLE, blocks: int = BLOCKS) -> Demo:
    """Reset the simulated fleet and its mirror, then run every step (module docstring).
    Raises XfleetError when a step fails (its message says which and why)."""
    if days < 3:
        raise UsageError("the demo's history needs at least 3 days (a trend)")
    demo = Demo()
    tell = on_step or (lambda _s: None)

    def step(name: str, fn: Callable[[], str]) -> None:
        t0 = time.monotonic()
        skipped = False
        try:
            summary = fn()
        except Skipped as why:
            summary, skipped = str(why), True
        except XfleetError as exc:
            raise XfleetError(f"demo step {name!r} failed: {exc.message}",
                              where=exc.where, hint=exc.hint) from None
        s = Step(name, time.monotonic() - t0, summary, skipped=skipped)
        demo.steps.append(s)
        tell(s)

    out_dir.mkdir(parents=True, exist_ok=True)
    do_sync = sync_fn or (lambda i, p, full: sync(i, p, full=full))

    def fleet() -> str:
        reset(inv, mirror_path)
        rep = do_sync(inv, mirror_path, True)
        _check_sync(rep)
        rows = sum(n.datasets for n in rep.nodes)
        return f"{len(rep.nodes)} nodes, {rows:,} rows mirrored (full sync)"

    step("fleet", fleet)
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        step("history", lambda: _history(inv, mirror_path, conns, days))
        step("estimates", lambda: _estimates(inv, mirror_path, conns, demo, sample, blocks))
        step("upgrade", lambda: _upgrade(inv, mirror_path, conns))
        step("playbook", lambda: _playbook(inv, mirror_path, conns, playbooks / PLAYBOOK,
                                           out_dir / REPORTS["nightly"], demo))
        step("drain", lambda: _drain(inv, mirror_path))
    step("reports", lambda: _reports(inv, mirror_path, out_dir, demo))
    return demo


def _check_sync(rep: SyncReport) -> None:
    if not rep.ok:
        bad = rep.failed[0]
        raise XfleetError(f"the sync of {bad.node} failed: {bad.error}", where=bad.node,
                          hint=bad.hint)


def _record(conn: Connection, at: float, *, tenants: bool = False) -> None:
    """The day's totals, as every sync records them for today."""
    report.record_daily(conn, now=at)
    capacity.record_daily(conn, now=at, tenants=tenants)


def _history(inv: Inventory, path: Location, conns: Connections, days: int) -> str:
    """The fleet as synced is the first day; each later day, GROW_TENANT grows and every node
    gets a branch; the last day is today (module docstring)."""
    now = time.time()
    conn = mirror.connect(path)
    try:
        _record(conn, now - (days - 1) * DAY)
        grown = branches = moved = 0
        for ago in range(days - 2, -1, -1):
            day = days - 1 - ago
            rows = [dict(r) for r in conn.execute(
                "SELECT node, name, type, volsize, volblocksize, origin FROM datasets WHERE "
                "type = 'volume' AND tenant = ? ORDER BY node, name", (GROW_TENANT,))]
            targets = lifecycle.targets_from_rows(rows)
            plans = [lifecycle.plan_resize(conn, targets, GROW_BY)] if targets else []
            first: dict[str, lifecycle.Target] = {}
            for t in targets:
                if t.origin is None:
                    first.setdefault(t.node, t)
            plans += [lifecycle.plan_clone(conn, t, f"{t.name}-qa{day}", stamp=f"demo{day}",
                                           properties={"xfleet:env": "qa"})
                      for t in first.values()]
            for plan in plans:
                out = lifecycle.execute(inv, path, plan, conns, source="demo")
                if not out.ok:
                    bad = next(n for n in out.nodes if not n.ok)
                    raise XfleetError(f"{plan.op} on {bad.node}: {bad.error}", where=bad.node)
            grown += len(targets)
            branches += len(first)
            moved += _rebalance(inv, path, conn, conns)
            _check_sync(sync(inv, path, connections=conns))
            if ago:
                _record(conn, now - ago * DAY)
        n = conn.execute("SELECT count(DISTINCT day) FROM capacity_daily").fetchone()[0]
    finally:
        conn.close()
    return (f"{n} days recorded: {grown:,} resizes of {GROW_TENANT}'s volumes ({GROW_BY} a "
            f"day), {branches} branches, {days - 1} moves ({fmt_bytes(moved)}) off "
            f"{next(iter(inv.hosts))}, a sync a day")


def _algorithms(conn: Connection, policy: compression.Policy | None) -> list[str]:
    """Every setting the fleet's volumes have, and the policy's (the report's 'possible' needs
    both sides of each change)."""
    names = [r[0] for r in conn.execute(
        "SELECT DISTINCT compression FROM datasets WHERE type = 'volume' AND compression IS "
        "NOT NULL ORDER BY 1")]
    names += [r.compression for r in policy.rules] if policy is not None else ["lz4", "zstd"]
    out: list[str] = []
    for name in names:
        try:
            out.append(compression.canonical(compression.validate_compression(name)))
        except UsageError:
            continue  # a setting xfleet does not estimate (e.g. a new algorithm)
    return list(dict.fromkeys(out))


def _policy(inv: Inventory) -> compression.Policy | None:
    return compression.policy_for(inv, None) if inv.compression_policy is not None else None


def _estimates(inv: Inventory, path: Location, conns: Connections, demo: Demo, sample: int,
               blocks: int) -> str:
    policy = _policy(inv)
    clause, params = query.Selection(where=(SAMPLE_WHERE,),
                                     tenant_property=inv.tenant_property).compile()
    conn = mirror.connect(path)
    try:
        demo.algorithms = _algorithms(conn, policy)
        items = estimate.targets(conn, clause, params, limit=sample)
        ests, fails = estimate.estimate_fleet(conn, conns, items, demo.algorithms,
                                              blocks=blocks, parallel=inv.parallel)
    finally:
        conn.close()
    if fails:
        f = fails[0]
        raise XfleetError(f"{len(fails)} volume(s) could not be estimated; first "
                          f"{f.node}:{f.name}: {f.error}", where=f.node)
    return (f"{len(items)} volumes ({SAMPLE_WHERE}) sampled, {blocks} blocks each, for "
            f"{', '.join(demo.algorithms)}: {len(ests)} estimates")


def _rebalance(inv: Inventory, path: Location, conn: Connection, conns: Connections) -> int:
    """A day's move (docs/moves.md): the largest plain volume of the first node up to MOVE_MAX
    whose name the target has not, to the other node with the most free space; then its
    source retired (destroyed). Returns the bytes moved (0: no node to move to)."""
    src, *others = inv.hosts
    if not others:
        return 0
    (dst,) = conn.execute(
        f"SELECT node FROM pools WHERE node IN ({', '.join('?' for _ in others)}) "
        "ORDER BY free DESC, node LIMIT 1", others).fetchone()
    row = conn.execute(
        "SELECT d.name, d.used FROM datasets d WHERE d.node = ? AND d.type = 'volume' AND "
        "d.origin IS NULL AND coalesce(d.refreservation, 0) = 0 AND d.used <= ? AND d.name "
        "NOT LIKE '%.xfleet-moved-%' AND NOT EXISTS (SELECT 1 FROM datasets c WHERE c.node = "
        "d.node AND c.origin > d.name || '@' AND c.origin < d.name || 'A') AND NOT EXISTS "
        "(SELECT 1 FROM datasets t WHERE t.node = ? AND t.name = d.name) "
        "ORDER BY d.used DESC, d.name LIMIT 1", (src, MOVE_MAX, dst)).fetchone()
    if row is None:
        return 0
    move = moves.create(inv, conn, moves.plan_move(inv, conn, row[0], dst, source_node=src))
    done = moves.Runner(inv, path, conns).run(move.id)
    if done.state != "done":
        raise XfleetError(f"move {move.id} of {row[0]} is {done.state}: {done.error}",
                          hint=f"xfleet moves show {move.id}")
    moves.retire(inv, path, conns, move.id)
    return int(row[1])


def _drain(inv: Inventory, path: Location) -> str:
    """The plan of a drain of the last node, as `xfleet drain NODE --dry-run` prints it."""
    *others, node = inv.hosts
    if not others:
        raise Skipped("skipped: a drain needs another node")
    conn = mirror.connect(path, readonly=True)
    try:
        plans, refused = moves.plan_drain(inv, conn, node)
    finally:
        conn.close()
    to = sorted({p.target_node for p in plans})
    return (f"drain plan of {node}: {len(plans):,} moves "
            f"({fmt_bytes(sum(p.needed_bytes for p in plans))} with headroom) to "
            f"{', '.join(to) or 'nowhere'}; {len(refused):,} volumes cannot move (`xfleet "
            f"drain {node} --dry-run` says why)")


def _upgrade(inv: Inventory, path: Location, conns: Connections) -> str:
    if all(h.target is None for h in inv.hosts.values()):
        raise Skipped("skipped: no node of the inventory has a target (docs/upgrades.md)")
    nodes = rollout.target_nodes(inv, None)
    pkgs = inv.state_dir / PACKAGES
    pkgs.mkdir(parents=True, exist_ok=True)
    files = {}
    for version in (TARGET_FROM, TARGET_TO):
        files[version] = pkgs / f"xfleet-sim-target_{version}"
        files[version].write_text(f"xfleet-sim-target {version}\n")
    opts = rollout.Options(serial=["100%"], soak=0.0)  # the canary, then the others at once
    plan = rollout.plan(inv, path, conns, TARGET_TO, f"{TARGET_TO}={files[TARGET_TO]}",
                        [f"{TARGET_FROM}={files[TARGET_FROM]}"], opts)
    rid = rollout.start(path, plan)
    result = rollout.Runner(inv, path, conns).run(rid)
    if result.state != "done":
        raise XfleetError(f"rollout {rid} is {result.state}: {result.reason}",
                          hint=f"xfleet rollouts show {rid}")
    return (f"rollout {rid}: the target {TARGET_FROM} -> {TARGET_TO} on {len(nodes)} nodes "
            f"({len(plan.batches)} batches, canary {plan.batches[0][0]})")


def _playbook(inv: Inventory, path: Location, conns: Connections, file: Path, html: Path,
              demo: Demo) -> str:
    pb = playbook.load(file, {"tenant": GROW_TENANT, "report": str(html)})
    rep = playbook.play(inv, path, pb, conns)
    if not rep.ok:
        bad = next((s for s in rep.steps if s.error), None)
        raise XfleetError(f"playbook run {rep.run_id} is {rep.state}"
                          + (f": step {bad.idx + 1} {bad.label}: {bad.error}" if bad else ""),
                          hint=f"xfleet plays show {rep.run_id}")
    demo.files["nightly"] = html
    return f"run {rep.run_id} of {file.name} ({pb.name}): {len(rep.steps)} steps done"


def _reports(inv: Inventory, path: Location, out_dir: Path, demo: Demo) -> str:
    """Today's totals recorded as the set-up left the fleet (the tenants' too, though a sync
    rewrites those once an hour), then the compression and capacity reports as HTML."""
    conn = mirror.connect(path)
    try:
        _record(conn, time.time(), tenants=True)
        comp = report.build(conn, policy=_policy(inv), inventory=inv,
                            price_per_gb_month=inv.price_per_gb_month,
                            tenant_property=inv.tenant_property)
        cap = capacity.build(conn)
    finally:
        conn.close()
    for key, page in (("compression", report.render_html(comp)),
                      ("capacity", capacity.render_html(cap))):
        demo.files[key] = out_dir / REPORTS[key]
        demo.files[key].write_text(page, encoding="utf-8")
    t: dict[str, Any] = comp.total
    possible = "no policy" if t["possible"] is None else (
        f"possible by policy {fmt_bytes(t['possible'])} ({fmt_bytes(t['possible_low'])}.."
        f"{fmt_bytes(t['possible_high'])}) = {t['possible_money']:,.2f} {comp.currency}/month")
    return (f"saved now {fmt_bytes(t['saved'])} = {t['saved_money']:,.2f} {comp.currency}/month,"
            f" {possible}; {len(comp.trend)} days of trend; capacity of "
            f"{cap.total['pools']} pools")
