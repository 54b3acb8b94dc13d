"""The shipped alert conditions, evaluated on the mirror for people without Prometheus.

`docs/alerts/xfleet.rules.yml` ships Prometheus rules over the series of `xfleet serve`
(docs/serve.md, "Alerts"); `evaluate` judges the same conditions, with the same names, severities
and thresholds (THRESHOLDS; tests/unit/test_alert_rules.py compares them with the rules file),
straight from the mirror: what `xfleet status` shows. What differs, because this reads one
snapshot rather than a history of scrapes:

- a rule's `for` cannot be judged from one reading: a condition shows as soon as it holds, and
  `since` says when it began where the mirror knows (a scrub's end, a heartbeat, a gap);
- the job rules count jobs (`xfleet_jobs{kind="move",state="failed"} > 0`); here each job is an
  alert of its own, naming it (`move 12`), so its hint is the command for that job;
- a pool past the critical capacity shows XfleetPoolCapacityCritical only (Prometheus fires
  both; the Alertmanager inhibition in docs/serve.md mutes the warning);
- the replica rules are per policy and target node, as here: one alert for a policy's replicas
  on a node (its `node` the target node, its `job` `policy NAME`), whatever their number;
- XfleetServiceDown is Prometheus' own: it watches `xfleet serve`, which the mirror cannot see.

Stale data, as in the rules: the pool alerts judge the last figures the mirror has for a node,
however old; XfleetMirrorStale (or XfleetNodeDown when the node's syncs fail) beside them says
so. An alert never disappears because xfleet stopped looking.

Reads: one query each on `nodes`, `pools`, `moves` (by its state index; a second one on the
moves not ended, for XfleetMoveIOHeld), `rollouts`,
`snapshot_runs` (by its state index) and `replicas` (grouped by policy and target node:
xfleet.ops.replicate.status.summary, what `xfleet replicate status` shows); how current a
node is comes from `query.confirmed_at`, the lag of `xfleet status` and of the exporter.
Nothing scans `datasets`. The pool forecasts
(XfleetPoolFillingUp) come from the caller: xfleet.ops.capacity computes them from the daily
history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from xfleet.core.units import format_age
from xfleet.mirror import claims, jobs, query
from xfleet.mirror.backend import Connection
from xfleet.ops.moves.journal import FINAL, MOVES
from xfleet.ops.replicate.status import summary as replica_summary

DAY = 86400.0

# The numbers of the rules' expressions (docs/alerts/xfleet.rules.yml); a test parses the rules
# and compares.
THRESHOLDS: dict[str, float] = {
    "capacity_warning": 0.80,  # XfleetPoolCapacityHigh: allocated / size above this
    "capacity_critical": 0.90,  # XfleetPoolCapacityCritical
    "fill_percent": 90,  # XfleetPoolFillingUp: the forecast's threshold (percent full) ...
    "fill_days": 14,  # ... reached in fewer days than this
    "overcommit": 2.0,  # XfleetPoolOvercommitted: sum of volsize / size above this
    "scrub_days": 35,  # XfleetScrubOverdue: no finished scrub for longer than this
    "mirror_lag": 600,  # XfleetMirrorStale: seconds since the mirror was confirmed current
    "event_gap_window": 3600,  # XfleetEventGaps: a gap in the last this many seconds
}

SEVERITIES = ("critical", "warning", "info")  # most severe first: the order of the list

# Every alert `evaluate` can raise, with its severity (the rules' `severity` label).
SEVERITY: dict[str, str] = {
    "XfleetPoolCapacityHigh": "warning",
    "XfleetPoolCapacityCritical": "critical",
    "XfleetPoolFillingUp": "warning",
    "XfleetPoolOvercommitted": "warning",
    "XfleetPoolDegraded": "critical",
    "XfleetPoolErrors": "warning",
    "XfleetScrubOverdue": "warning",
    "XfleetMirrorStale": "warning",
    "XfleetNodeDown": "critical",
    "XfleetEventGaps": "info",
    "XfleetMoveFailed": "warning",
    "XfleetMoveStuck": "warning",
    "XfleetMoveIOHeld": "critical",
    "XfleetRolloutHalted": "warning",
    "XfleetSnapshotRunFailed": "warning",
    "XfleetReplicaOverRPO": "warning",
    "XfleetReplicaFailed": "warning",
}
# Rules only Prometheus can judge (they watch `xfleet serve` itself).
PROMETHEUS_ONLY = ("XfleetServiceDown",)

# A rollout in one of these states waits for an operator. Rollouts pause on failures (there is
# no `failed` rollout state today); `failed` is here as in the rule, so the two agree.
ROLLOUT_HALTED = ("paused", "failed")


@dataclass(frozen=True)
class Alert:
    """One condition that holds now."""

    name: str  # the rule's alert name, e.g. "XfleetPoolDegraded"
    severity: str  # critical, warning, info
    node: str | None  # what it is about: a node, its pool, a job ("move 12")
    pool: str | None
    job: str | None
    summary: str  # one line for humans
    hint: str  # what to do (a command)
    since: float | None  # unix time the condition began, when the mirror knows it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ForecastLike(Protocol):
    """What XfleetPoolFillingUp needs of a pool's forecast (xfleet.ops.capacity's Forecast)."""

    @property
    def node(self) -> str: ...

    @property
    def pool(self) -> str: ...

    @property
    def days_until(self) -> Mapping[int, float | None]:
        """Days until the pool is this percent full at its trend (None: not growing)."""


def _first_line(text: str | None, limit: int = 160) -> str:
    """The first line of an error text, at most `limit` characters (one line of a table)."""
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _alert(name: str, *, summary: str, hint: str, node: str | None = None,
           pool: str | None = None, job: str | None = None,
           since: float | None = None) -> Alert:
    return Alert(name, SEVERITY[name], node, pool, job, summary, hint, since)


def evaluate(conn: Connection, *, now: float, forecasts: Iterable[ForecastLike] = (),
             nodes: Sequence[str] | None = None) -> list[Alert]:
    """The alert conditions that hold at `now`, most severe first, then by node and pool.
    `nodes` limits node and pool alerts to those nodes, move alerts to moves from or to them
    and replica alerts to replicas on them (None: every node of the mirror); rollout alerts
    concern the fleet and always show."""
    wanted = None if nodes is None else set(nodes)
    out = [*_node_alerts(conn, now, wanted), *_pool_alerts(conn, now, wanted),
           *_forecast_alerts(forecasts, wanted), *_move_alerts(conn, now, wanted),
           *_io_held_alerts(conn, now, wanted),
           *_rollout_alerts(conn), *_snapshot_run_alerts(conn),
           *_replica_alerts(conn, now, wanted)]
    out.sort(key=lambda a: (SEVERITIES.index(a.severity), a.node is None, a.node or "",
                            a.pool or "", a.name))  # stable: jobs stay in id order
    return out


def _node_alerts(conn: Connection, now: float, wanted: set[str] | None) -> list[Alert]:
    out: list[Alert] = []
    for row in conn.execute("SELECT * FROM nodes ORDER BY name"):
        n = dict(row)
        node = n["name"]
        if wanted is not None and node not in wanted:
            continue
        confirmed = query.confirmed_at(n, now)  # the lag of `xfleet status` and the exporter
        lag = None if confirmed is None else max(0.0, now - confirmed)
        if n["stale"] or n["last_success"] is None:  # xfleet_node_up == 0
            out.append(_alert(
                "XfleetNodeDown", node=node,
                summary=f"xfleet cannot sync {node}: "
                f"{_first_line(n['last_error']) or 'it has no successful sync'}",
                hint=f"xfleet sync --node {node} (retries and says why it fails)"))
        elif lag is not None and lag > THRESHOLDS["mirror_lag"]:
            out.append(_alert(
                "XfleetMirrorStale", node=node, since=now - lag + THRESHOLDS["mirror_lag"],
                summary=f"the mirror of {node} was last confirmed current {format_age(lag)} "
                "ago: no watch follows it and no sync ran",
                hint=f"run xfleet serve or xfleet watch for it; xfleet sync --node {node} now"))
        gap_at = n["last_gap_at"]
        if gap_at is not None and now - gap_at < THRESHOLDS["event_gap_window"]:
            why = f": {_first_line(n['last_gap'])}" if n["last_gap"] else ""
            out.append(_alert(
                "XfleetEventGaps", node=node, since=gap_at,
                summary=f"the change feed of {node} lost events "
                f"{format_age(max(0.0, now - gap_at))} ago{why} (caught up; the mirror is right)",
                hint="if it repeats, raise the node's zfs_zevent_len_max"))
    return out


_POOL_COLUMNS = ("node", "name", "size", "allocated", "volsize", "health", "read_errors",
                 "write_errors", "checksum_errors", "data_errors", "scan_function",
                 "scan_state", "scan_end", "health_at")


def _pool_alerts(conn: Connection, now: float, wanted: set[str] | None) -> list[Alert]:
    out: list[Alert] = []
    cur = conn.execute(f"SELECT {', '.join(_POOL_COLUMNS)} FROM pools ORDER BY node, name")
    for row in cur:
        p = dict(zip(_POOL_COLUMNS, row, strict=True))
        node, pool = p["node"], p["name"]
        if wanted is not None and node not in wanted:
            continue
        where = f"{node}:{pool}"
        size = p["size"] or 0
        if size > 0 and p["allocated"] is not None:
            ratio = p["allocated"] / size
            if ratio > THRESHOLDS["capacity_critical"]:
                out.append(_alert(
                    "XfleetPoolCapacityCritical", node=node, pool=pool,
                    summary=f"pool {where} is {ratio:.0%} full",
                    hint=f"free space or move volumes off: xfleet drain {node} --dry-run"))
            elif ratio > THRESHOLDS["capacity_warning"]:
                out.append(_alert(
                    "XfleetPoolCapacityHigh", node=node, pool=pool,
                    summary=f"pool {where} is {ratio:.0%} full",
                    hint="xfleet report capacity (the trend); free space or move volumes"))
        if size > 0 and (p["volsize"] or 0) / size > THRESHOLDS["overcommit"]:
            out.append(_alert(
                "XfleetPoolOvercommitted", node=node, pool=pool,
                summary=f"the volumes of pool {where} promise {p['volsize'] / size:.1f}x its "
                "size",
                hint="xfleet report capacity; place new volumes elsewhere"))
        if (p["health"] or "ONLINE").upper() != "ONLINE":
            out.append(_alert(
                "XfleetPoolDegraded", node=node, pool=pool,
                summary=f"pool {where} is {p['health']}",
                hint=f"zpool status -v {pool} on {node}; replace or bring back the device"))
        errors = sum(p[c] or 0 for c in ("read_errors", "write_errors", "checksum_errors"))
        if errors > 0 or (p["data_errors"] or 0) > 0:
            out.append(_alert(
                "XfleetPoolErrors", node=node, pool=pool,
                summary=f"pool {where} has {errors} read/write/checksum error(s) and "
                f"{p['data_errors'] or 0} file(s) with permanent errors",
                hint=f"zpool status -v {pool} on {node}; fix, then zpool clear {pool} and scrub"))
        scrub = _scrub_overdue(p, now, node, pool)
        if scrub is not None:
            out.append(scrub)
    return out


def _scrub_overdue(p: dict[str, Any], now: float, node: str, pool: str) -> Alert | None:
    """XfleetScrubOverdue, from the last scan `zpool status` shows: only a finished scrub
    counts (a resilver or a cancelled scrub is no scrub); a running scrub is not overdue; a
    pool whose health was never read is not judged."""
    if p["health_at"] is None:
        return None
    scrub = (p["scan_function"] or "").upper() == "SCRUB"
    state = (p["scan_state"] or "").upper()
    if scrub and state == "SCANNING":
        return None
    last = p["scan_end"] if scrub and state == "FINISHED" else None
    limit = THRESHOLDS["scrub_days"] * DAY
    if last is not None and now - last <= limit:
        return None
    what = ("has no finished scrub on record" if last is None
            else f"was last scrubbed {format_age(now - last)} ago")
    return _alert("XfleetScrubOverdue", node=node, pool=pool,
                  since=None if last is None else last + limit,
                  summary=f"pool {node}:{pool} {what}",
                  hint=f"zpool scrub {pool} on {node} (off-peak)")


def _forecast_alerts(forecasts: Iterable[ForecastLike], wanted: set[str] | None) -> list[Alert]:
    percent = int(THRESHOLDS["fill_percent"])
    out: list[Alert] = []
    for f in forecasts:
        days = f.days_until.get(percent)
        if (wanted is None or f.node in wanted) and days is not None \
                and days < THRESHOLDS["fill_days"]:
            out.append(_alert(
                "XfleetPoolFillingUp", node=f.node, pool=f.pool,
                summary=f"pool {f.node}:{f.pool} reaches {percent}% full in {days:.1f} days "
                "at its trend",
                hint=f"xfleet report capacity; plan a move (xfleet drain {f.node} --dry-run)"))
    return out


def _move_alerts(conn: Connection, now: float, wanted: set[str] | None) -> list[Alert]:
    """XfleetMoveFailed, and XfleetMoveStuck: a move in an open state whose holder (a process
    took it: `pid` is set) has not beaten for longer than the lease: it died (killed, crashed,
    its host gone). A move stopped in order (Ctrl-C, a pause) has no holder; a planned move
    nobody took yet neither. The same test as the exporter's xfleet_jobs_stalled."""
    lease = MOVES.stale if MOVES.stale is not None else claims.STALE
    stuck, params = jobs.stalled(MOVES, now)
    cur = conn.execute(
        "SELECT id, volume, source_node, target_node, state, step, error, pid, host, heartbeat, "
        f"updated_at, options FROM moves WHERE state = 'failed' OR {stuck} ORDER BY id", params)
    out: list[Alert] = []
    for (mid, volume, src, dst, state, step, error, pid, host, beat, updated, opts) in cur:
        if wanted is not None and src not in wanted and dst not in wanted:
            continue
        what = f"move {mid} of {volume} ({src} -> {dst})"
        if state == "failed":
            why = _first_line(error)
            out.append(_alert(
                "XfleetMoveFailed", node=src, job=f"move {mid}", since=updated,
                summary=f"{what} {step or 'failed'}" + (f": {why}" if why else ""),
                hint=f"xfleet moves show {mid}; then xfleet moves resume {mid} "
                f"(or xfleet moves abort {mid} --yes)"))
        if pid is not None and (beat is None or beat < now - lease):
            quiet = "no heartbeat" if beat is None else \
                f"no heartbeat for {format_age(now - beat)}"
            held = _live_switching(opts)
            out.append(_alert(
                "XfleetMoveStuck", node=src, job=f"move {mid}",
                since=None if beat is None else beat + lease,
                summary=f"{what} in {state}: {quiet} from its process (pid {pid} on {host})"
                + ("; it died in a live switch: the hosts' I/O is held until it is resumed"
                   if held else ""),
                hint=f"xfleet moves resume {mid} (takes the move over and continues it)"))
    return out


# XfleetMoveIOHeld: the process of a move in a live switch stopped beating this long ago.
# Far shorter than the lease: each second of it is a database host whose I/O waits.
IO_HELD_AFTER = 60.0


@dataclass(frozen=True)
class HeldMove:
    """A move that left its hosts' I/O held: in a live switch (the source's ANA group
    inaccessible, the copy's not yet optimized) with no process driving it."""

    id: int
    volume: str
    source_node: str
    target_node: str
    state: str
    pid: int | None
    host: str | None
    heartbeat: float | None


def io_held(conn: Connection, now: float) -> list[HeldMove]:
    """Moves whose live switch began and did not end (live_state.switching) and whose process
    is gone: it stopped beating IO_HELD_AFTER seconds ago, or it let go of the move (failed,
    or stopped) without giving the hosts a path back. The hosts' I/O waits for `xfleet moves
    resume`. One query on the moves not ended; their options are read, not scanned in SQL
    (the same in both engines). The one test of the alert and of xfleet_moves_io_held."""
    marks = ", ".join("?" for _ in FINAL)
    cur = conn.execute(
        "SELECT id, volume, source_node, target_node, state, pid, host, heartbeat, options "
        f"FROM moves WHERE state NOT IN ({marks}) ORDER BY id", FINAL)
    out = []
    for mid, volume, src, dst, state, pid, host, beat, opts in cur:
        if not _live_switching(opts):
            continue
        if pid is not None and beat is not None and beat >= now - IO_HELD_AFTER:
            continue  # its process is alive: the switch is under way
        out.append(HeldMove(int(mid), str(volume), str(src), str(dst), str(state),
                            None if pid is None else int(pid), host,
                            None if beat is None else float(beat)))
    return out


def _io_held_alerts(conn: Connection, now: float, wanted: set[str] | None) -> list[Alert]:
    out = []
    for h in io_held(conn, now):
        if wanted is not None and h.source_node not in wanted and h.target_node not in wanted:
            continue
        gone = (f"its process (pid {h.pid} on {h.host}) stopped "
                + ("beating" if h.heartbeat is None else
                   f"beating {format_age(now - h.heartbeat)} ago")
                if h.pid is not None else f"no process holds it ({h.state})")
        out.append(_alert(
            "XfleetMoveIOHeld", node=h.source_node, job=f"move {h.id}",
            since=None if h.heartbeat is None else h.heartbeat + IO_HELD_AFTER,
            summary=f"move {h.id} of {h.volume} ({h.source_node} -> {h.target_node}) died in "
            f"a live switch: the hosts' I/O is held; {gone}",
            hint=f"xfleet moves resume {h.id} (finishes the switch: the hosts resume on "
            f"{h.target_node}); xfleet moves show {h.id}"))
    return out


def _live_switching(options: str | None) -> bool:
    """The move's options (JSON) say a live switch began and did not end (moves/live.py)."""
    try:
        st = json.loads(options or "{}").get("live_state") or {}
    except (ValueError, AttributeError):
        return False
    return bool(st.get("switching")) and not st.get("switched")


def _rollout_alerts(conn: Connection) -> list[Alert]:
    marks = ", ".join("?" for _ in ROLLOUT_HALTED)
    cur = conn.execute(f"SELECT id, version, state, reason, updated_at FROM rollouts "
                       f"WHERE state IN ({marks}) ORDER BY id", ROLLOUT_HALTED)
    return [_alert("XfleetRolloutHalted", job=f"rollout {rid}", since=updated,
                   summary=f"rollout {rid} to {version} is {state}"
                   + (f": {_first_line(reason)}" if reason else ""),
                   hint=f"xfleet rollouts show {rid}; then xfleet rollouts resume {rid} "
                   f"(or xfleet rollouts stop {rid})")
            for rid, version, state, reason, updated in cur]


def _snapshot_run_alerts(conn: Connection) -> list[Alert]:
    """XfleetSnapshotRunFailed: a snapshot run a node refused a command of; it stays failed
    until `xfleet snapshots run --resume ID` (docs/snapshots.md), so each is its own alert. The
    runs concern policies, not one node: they always show."""
    cur = conn.execute("SELECT id, policy, step, taken, pruned, updated_at FROM snapshot_runs "
                       "WHERE state = 'failed' ORDER BY id")
    return [_alert("XfleetSnapshotRunFailed", job=f"snapshot run {rid}", since=updated,
                   summary=f"snapshot run {rid} (policies {policy}) failed"
                   + (f" {_first_line(step)}" if step else "")
                   + f" after {taken} taken, {pruned} pruned",
                   hint="xfleet snapshots runs (its step; --json: the detail); then xfleet "
                   f"snapshots run --resume {rid}")
            for rid, policy, step, taken, pruned, updated in cur]


def _replica_alerts(conn: Connection, now: float, wanted: set[str] | None) -> list[Alert]:
    """XfleetReplicaOverRPO and XfleetReplicaFailed, per policy and target node as the rules
    judge xfleet_replicas_over_rpo and xfleet_replicas{state="failed"}: the summary of `xfleet
    replicate status` (one grouped query; promoted replicas are primaries and not counted). A
    replica never sent is over its RPO: there is no copy at all. The over-RPO `since` is when
    the most behind sent replica passed its RPO (unknown when only never-sent ones are over)."""
    out: list[Alert] = []
    for g in replica_summary(conn, now):
        policy, target = g["policy"], g["target_node"]
        if wanted is not None and target not in wanted:
            continue
        of = f"of policy {policy} on {target}"
        over, never, failed = int(g["over_rpo"] or 0), int(g["never"] or 0), int(g["failed"] or 0)
        if over:
            rpo = float(g["rpo"] or 0)
            lag = None if g["max_lag"] is None else max(0.0, float(g["max_lag"]))
            notes = ([f"{never} never sent"] if never else []) + (
                [f"the most behind is {format_age(lag)} old"] if lag is not None else [])
            out.append(_alert(
                "XfleetReplicaOverRPO", node=target, job=f"policy {policy}",
                since=now - lag + rpo if lag is not None and lag > rpo else None,
                summary=f"{over} of {g['replicas']} replica(s) {of} are over their RPO of "
                f"{format_age(rpo)}" + (f" ({'; '.join(notes)})" if notes else ""),
                hint="xfleet replicate status (the most behind, and why); are the rounds "
                "running? (xfleet serve --snapshot-policy, or xfleet replicate run)"))
        if failed:
            out.append(_alert(
                "XfleetReplicaFailed", node=target, job=f"policy {policy}",
                summary=f"{failed} replica(s) {of} failed in their last round",
                hint="xfleet replicate status (their errors), xfleet replicate show ID; the "
                "next round retries (a cut stream resumes from its token)"))
    return out
