"""The mirror side of a replication round at fleet scale (issue #20): a round after --changed of
--volumes replicated volumes changed reads and writes the mirror in time that does not blow up
with the volumes (the unit tests prove the streams and remote commands, tests/unit/ops/
replicate/test_scale.py; the simulator's own per-stream cost makes a 100k-volume first full
round impractical there).

    .venv/bin/python benchmarks/bench_replicate.py [--volumes 100000] [--snapshots 30]
        [--changed 100] [--quick] [--postgres] [--explain] [--workdir DIR]

The mirror (SQLite; --postgres: a PostgreSQL server of its own, tests/pgserver.py, stopped by
PID at the end) is built without a simulator, through xfleet's own ingest
(`mirror.write_datasets_chunked`, what a full sync writes with): --volumes volumes
`tank/db/vNNNNNN` on n1, each with --snapshots snapshots of the policy `db`
(`xfleet_db_<stamp>Z`, 15 minutes apart, each taken in one txg for all volumes as a policy's
`zfs snapshot` takes them, `written` > 0), and their copies on n2, each with the same snapshots
and one older one its source's retention already destroyed (what the round's prune finds).
Then the round's mirror steps (xfleet/ops/replicate/round.py), each timed:

1. `ensure` with no replica yet: --volumes added (one INSERT ... SELECT); the replicas then get
   their cursor, the newest snapshot (one executemany UPDATE), and `ensure` again: 0 added;
2. a new snapshot of every volume, `written` = 0 except on --changed volumes;
3. the prune's selection (`Round._prune`'s SELECT, run through the method itself with a
   connection that times the query and hands back no rows: nothing is planned or destroyed):
   --volumes snapshots of the copies (the one each source no longer has);
4. `catch_up_quiet`: --volumes - --changed replicas current without a stream;
5. `due`: exactly --changed replicas to send;
6. the same after a second new snapshot of every volume, all written: `catch_up_quiet` 0,
   `due` --volumes (the ratio --changed / all changed).

The counts are checked: the script exits 1 if one is wrong. --explain prints the query plans
(SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN) of the round's queries. --quick: 10x fewer
volumes. Record the figures in docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pgserver.py, for --postgres

from benchkit import closing_line, command_line, load_avg, machine_header, stop_pg, working_dir

from xfleet import mirror
from xfleet.mirror import is_postgres
from xfleet.mirror.backend import Connection, Cursor
from xfleet.ops.replicate.round import Round, _policy_filter, catch_up_quiet, due, ensure
from xfleet.ops.snapshots.policy import Policies, parse_policies

if TYPE_CHECKING:
    from pgserver import PgServer

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC: the newest snapshot of the mirror
PERIOD = 900  # the policy's schedule
TXG0 = 1_000_000  # the first snapshot's txg; +100 per policy snapshot
POLICY = """\
policies:
  - name: db
    match: {node: n1, name: "tank/db/*"}
    schedule: {every: 15m}
    keep: {frequently: 40}
    replicate: [{node: n2, pool: tank, rpo: 1h}]
"""
GIB = 1 << 30
SYNC_RUN = 1


def _row(node: str, name: str, typ: str, guid: int, txg: int, creation: float, used: int,
         written: int | None) -> tuple[Any, ...]:
    """A `datasets` row in mirror.DATASET_TABLE_COLUMNS order (a thin 8 GiB volume, lz4)."""
    vol = typ != "filesystem"
    return (node, "tank", name, typ, str(guid), txg, None, int(creation),
            8 * GIB if vol else None, 16384 if vol else None, used, used, used * 3 // 2,
            used * 3 // 2, None if typ == "snapshot" else 0, 0 if vol else None,
            0 if vol else None, written, None if typ == "snapshot" else "lz4", 1.5, 1.5, None,
            None, T0, SYNC_RUN)


def vol_name(i: int) -> str:
    return f"tank/db/v{i:06d}"


def snap_name(ps: Policies, k: int, snapshots: int) -> str:
    """The k-th policy snapshot (0 the oldest; k = snapshots the first one after the build)."""
    return ps.policies[0].snapshot_name(snap_time(k, snapshots))


def snap_time(k: int, snapshots: int) -> float:
    return T0 - (snapshots - 1 - k) * PERIOD


def snap_txg(k: int) -> int:
    return TXG0 + 100 * k


def guid(i: int, k: int) -> int:
    """The guid of volume i's k-th snapshot (k = -1: its volume; the copy's snapshot has the
    source's guid, as a received snapshot does)."""
    return (i + 1) * 1_000_003 + k + 2


def fleet_rows(ps: Policies, volumes: int, snapshots: int) -> Iterator[tuple[Any, ...]]:
    """n1: the volumes and their snapshots 0..snapshots-1; n2: the copies (volmode none) with
    snapshots -1..snapshots-1 (-1: older than the source keeps)."""
    for node in ("n1", "n2"):
        yield _row(node, "tank", "filesystem", 7 if node == "n1" else 8, 1, T0 - 10**7, 0, None)
        yield _row(node, "tank/db", "filesystem", 9 if node == "n1" else 10, 2, T0 - 10**7, 0,
                   None)
    for i in range(volumes):
        v = vol_name(i)
        used = (1 + i % 7) << 28
        yield _row("n1", v, "volume", guid(i, -1), 100 + i, T0 - 10**6, used, 4096)
        for k in range(snapshots):
            yield _row("n1", f"{v}@{snap_name(ps, k, snapshots)}", "snapshot", guid(i, k),
                       snap_txg(k), snap_time(k, snapshots), 65536, 1 << 20)
    for i in range(volumes):
        v = vol_name(i)
        used = (1 + i % 7) << 28
        yield _row("n2", v, "volume", 10**12 + i, 200 + i, T0 - 10**6, used, 0)
        for k in range(-1, snapshots):
            yield _row("n2", f"{v}@{snap_name(ps, k, snapshots)}", "snapshot", guid(i, k),
                       snap_txg(k) + 50, snap_time(k, snapshots) + 60, 65536, 1 << 20)


def new_snapshot(conn: Connection, ps: Policies, volumes: int, snapshots: int, k: int,
                 changed: set[int] | None) -> float:
    """Snapshot k of every volume on n1 (xfleet's ingest); `written` > 0 only on the volumes
    in `changed` (None: all). Returns the seconds."""
    name = snap_name(ps, k, snapshots)
    rows = (_row("n1", f"{vol_name(i)}@{name}", "snapshot", guid(i, k), snap_txg(k),
                 snap_time(k, snapshots), 65536 if changed is None or i in changed else 0,
                 (1 << 20) if changed is None or i in changed else 0) for i in range(volumes))
    t = time.perf_counter()
    n = mirror.write_datasets_chunked(conn, rows, what=f"benchmark snapshot {k}")
    assert n == volumes, (n, volumes)
    return time.perf_counter() - t


class TimedSelect:
    """A connection for `Round._prune`: its SELECT runs on the real connection, timed, rows
    kept; the method gets no rows back, so it plans and destroys nothing."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sql = ""
        self.params: Sequence[Any] = ()
        self.rows: list[Any] = []
        self.seconds = 0.0

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        if not sql.lstrip().upper().startswith("SELECT"):
            raise AssertionError(f"Round._prune wrote before its SELECT: {sql[:80]}")
        self.sql, self.params = sql, parameters
        t = time.perf_counter()
        self.rows = self.conn.execute(sql, parameters).fetchall()
        self.seconds = time.perf_counter() - t
        return self.conn.execute("SELECT 1 WHERE 1 = 0")  # no rows: nothing to plan

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        raise AssertionError("Round._prune only selects here")

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        pass


class Figures:
    def __init__(self, conn: Connection, explain: bool) -> None:
        self.conn, self.explain = conn, explain
        self.rows: list[tuple[str, float, str]] = []
        self.wrong: list[str] = []

    def add(self, label: str, seconds: float, count: int | None, want: int | None,
            unit: str = "rows") -> None:
        what = "" if count is None else f"{count:,} {unit}"
        if want is not None and count != want:
            what += f" (EXPECTED {want:,})"
            self.wrong.append(f"{label}: {count} {unit}, expected {want}")
        self.rows.append((label, seconds, what))
        print(f"{label}: {seconds:.3f} s{'; ' + what if what else ''}", flush=True)

    def plan(self, label: str, sql: str, params: Sequence[Any]) -> None:
        if not self.explain:
            return
        print(f"-- plan of {label}:")
        if is_postgres(self.conn):
            lines = [r[0] for r in self.conn.execute(f"EXPLAIN {sql}", params)]
        else:
            lines = [f"{r[0]}<-{r[1]} {r[3]}"
                     for r in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        for line in lines:
            print(f"--   {line}")

    def table(self) -> None:
        print("\n| step | seconds | result |\n|---|---:|---|")
        for label, seconds, what in self.rows:
            print(f"| {label} | {seconds:.3f} | {what} |")


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def run(where: str, volumes: int, snapshots: int, changed: int, explain: bool) -> list[str]:
    """The round's mirror steps on a mirror at `where`; returns what came out wrong."""
    ps = parse_policies(POLICY)
    conn = mirror.connect(where)
    fig = Figures(conn, explain)
    try:
        with mirror.transaction(conn, "the benchmark's nodes"):
            for node in ("n1", "n2"):
                mirror.upsert_node(conn, node, "sim", None, {}, [])
        t = time.perf_counter()
        n = mirror.write_datasets_chunked(conn, fleet_rows(ps, volumes, snapshots),
                                          what="the benchmark's datasets")
        built = time.perf_counter() - t
        if is_postgres(conn):  # what autovacuum does after a big insert, in its own time
            conn.execute("ANALYZE datasets")
        print(f"# mirror: {n:,} dataset rows ({volumes:,} volumes x {snapshots} snapshots on "
              f"n1, their copies x {snapshots + 1} on n2) written in {built:.1f} s "
              f"({n / built:,.0f} rows/s, mirror.write_datasets_chunked)", flush=True)

        # 1. the replicas: none yet, then all with their cursor
        s, added = timed(ensure, conn, ps, None, T0)
        fig.add("ensure, no replica yet (INSERT ... SELECT)", s, added, volumes, "added")
        newest = snap_name(ps, snapshots - 1, snapshots)
        t = time.perf_counter()
        with mirror.transaction(conn, "the benchmark's cursors"):
            conn.executemany(
                "UPDATE replicas SET state = 'idle', cursor = ?, cursor_guid = ?, "
                "cursor_txg = ?, as_of = ?, rounds = 1, last_round_at = ? WHERE source_node = "
                "'n1' AND volume = ? AND target_node = 'n2'",
                [(newest, str(guid(i, snapshots - 1)), snap_txg(snapshots - 1),
                  snap_time(snapshots - 1, snapshots), T0, vol_name(i))
                 for i in range(volumes)])
        cursors = time.perf_counter() - t
        print(f"# cursors set (one executemany UPDATE): {cursors:.1f} s", flush=True)
        s, added = timed(ensure, conn, ps, None, T0 + 60)
        fig.add("ensure, every replica there", s, added, 0, "added")

        # 2. a new snapshot: `changed` volumes wrote something
        step = max(1, volumes // changed)
        wrote = set(range(0, volumes, step)[:changed])
        s = new_snapshot(conn, ps, volumes, snapshots, snapshots, wrote)
        print(f"# snapshot {snapshots + 1} of every volume ({len(wrote):,} written) stored in "
              f"{s:.1f} s", flush=True)
        k_figs = round_steps(conn, fig, ps, volumes, volumes - len(wrote), len(wrote),
                             f"{len(wrote):,} changed", snap_time(snapshots, snapshots))

        # 6. another snapshot, every volume written
        s = new_snapshot(conn, ps, volumes, snapshots, snapshots + 1, None)
        print(f"# snapshot {snapshots + 2} of every volume (all written) stored in {s:.1f} s",
              flush=True)
        all_figs = round_steps(conn, fig, ps, volumes, 0, volumes, "all changed",
                               snap_time(snapshots + 1, snapshots))
        fig.table()
        total_k, total_all = sum(k_figs.values()), sum(all_figs.values())
        print(f"\nthe round's mirror steps (prune selection, catch_up_quiet, due): "
              f"{total_k:.2f} s with {len(wrote):,} changed, {total_all:.2f} s with all "
              f"{volumes:,} changed (ratio {total_k / total_all:.2f}); due alone "
              f"{k_figs['due'] / all_figs['due']:.2f}")
    finally:
        conn.close()
    return fig.wrong


def round_steps(conn: Connection, fig: Figures, ps: Policies, volumes: int, quiet: int,
                to_send: int, label: str, newest_time: float) -> dict[str, float]:
    """3.-5.: the prune's selection, catch_up_quiet (the replicas it updates then as of
    `newest_time`), due; their seconds."""
    out: dict[str, float] = {}
    probe = TimedSelect(conn)
    pruned = Round.__new__(Round)._prune(cast(Connection, probe), ps)  # noqa: SLF001
    assert pruned == 0
    fig.plan("the prune's selection", probe.sql, probe.params)
    fig.add(f"prune selection ({label})", probe.seconds, len(probe.rows), volumes, "snapshots")
    out["prune"] = probe.seconds

    with mirror.transaction(conn, "the benchmark's catch_up_quiet"):
        s, n = timed(catch_up_quiet, conn, ps)
    fig.add(f"catch_up_quiet ({label})", s, n, quiet, "updated")
    out["catch_up_quiet"] = s
    if quiet:  # their data as of the newest snapshot: its creation
        at = conn.execute("SELECT count(*) FROM replicas WHERE as_of = ?",
                          (newest_time,)).fetchone()[0]
        if at != quiet:
            fig.wrong.append(f"catch_up_quiet: {at} replicas as of the newest snapshot, "
                             f"expected {quiet}")

    where, params = _policy_filter(ps)
    s, work = timed(lambda: list(due(conn, where, params)))
    fig.add(f"due ({label})", s, len(work), to_send, "to send")
    out["due"] = s
    if fig.explain:
        plan_due(fig, where, params)
    return out


def plan_due(fig: Figures, where: str, params: list[Any]) -> None:
    """The plans of catch_up_quiet's UPDATE and due's SELECT, their SQL caught on the way."""
    seen: list[tuple[str, Any]] = []

    class Catch:
        def __init__(self, conn: Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
            seen.append((sql, parameters))
            return self.conn.execute("SELECT 1 WHERE 1 = 0")

    catch = cast(Connection, Catch(fig.conn))
    ps = parse_policies(POLICY)
    catch_up_quiet(catch, ps)
    list(due(catch, where, params))
    for (sql, p), what in zip(seen, ("catch_up_quiet", "due"), strict=True):
        fig.plan(what, sql, p)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=30)
    ap.add_argument("--changed", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="10x fewer volumes")
    ap.add_argument("--postgres", action="store_true",
                    help="a PostgreSQL mirror (a server of its own) instead of SQLite")
    ap.add_argument("--explain", action="store_true", help="print the queries' plans")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    volumes = args.volumes // 10 if args.quick else args.volumes
    if not 0 < args.changed <= volumes or args.snapshots < 1:
        ap.error("need 0 < --changed <= --volumes and --snapshots >= 1")
    started = time.monotonic()
    pg: PgServer | None = None
    wrong: list[str] = []
    with working_dir(args.workdir, "xfleet-bench-replicate-") as d:
        try:
            if args.postgres:
                from pgserver import PgServer

                pg = PgServer().start()
                where = pg.database("replicate")
                version = pg.psql("SHOW server_version").split()[0]
                print(machine_header(f", PostgreSQL {version} (tests/pgserver.py: fsync=off); "
                                     "engine postgresql"))
            else:
                where = str(d / "m.db")
                print(machine_header("; engine sqlite"))
            print(command_line())
            print(f"# load average before: {load_avg()}", flush=True)
            wrong = run(where, volumes, args.snapshots, args.changed, args.explain)
        finally:
            stop_pg(pg)
    print(closing_line(started))
    if wrong:
        print("WRONG:\n  " + "\n  ".join(wrong), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
