"""Prometheus metrics from the mirror (docs/serve.md, "Metrics").

One scrape is a handful of bounded queries: the `nodes` and `pools` rows (the per-pool
summaries a sync keeps), the newest sync runs per node, job counts by state, the standing
replicas grouped by policy and target node, the capacity forecasts (from the daily history) and,
only when asked for, a capped set of volumes. Nothing scans `datasets`, so the scrape costs the
same at 1k and 100k volumes per node; the replica series are per (policy, target node), never
per volume, so their number does not grow with the replicas either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xfleet import __version__, mirror
from xfleet.core.errors import UsageError
from xfleet.mirror import jobs, query
from xfleet.mirror.backend import Connection
from xfleet.ops import alerts, capacity
from xfleet.ops import compression as _compression  # noqa: F401 - registers its job kind
from xfleet.ops.moves import journal as _moves  # noqa: F401 - registers its job kind
from xfleet.ops.replicate import journal as replicas
from xfleet.ops.replicate.status import summary as replica_summary
from xfleet.ops.rollout import journal as _rollouts  # noqa: F401 - registers its job kind
from xfleet.ops.snapshots import run as _snapshot_runs  # noqa: F401 - registers its job kind
from xfleet.playbook import journal as _plays  # noqa: F401 - registers its job kind

Reader = Callable[[], AbstractContextManager[Connection]]

GIB = 1 << 30
POOL_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED")
DATASET_TYPES = (("volume", "volumes"), ("filesystem", "filesystems"),
                 ("snapshot", "snapshots"), ("bookmark", "bookmarks"), ("clone", "clones"))
# a job kind's table -> the `kind` label (docs/serve.md). Not `replicas`: a standing replica
# is no job that runs and ends (it lives as long as its policy); xfleet_replicas counts them.
JOB_LABELS = {"moves": "move", "rollouts": "rollout", "play_runs": "play",
              "compression_runs": "compression", "snapshot_runs": "snapshot"}
SYNC_KINDS_SCANNED = 20  # newest ok runs read per node to find each kind's last duration
DEFAULT_VOLUME_CAP = 1000


@dataclass(frozen=True)
class VolumeMetrics:
    """Which volumes get their own series (`--volume-metrics`): the `top` largest by `used`
    per node, and every volume of `tenants`; at most `cap` per node in all."""

    top: int = 0
    tenants: tuple[str, ...] = ()
    cap: int = DEFAULT_VOLUME_CAP

    @property
    def enabled(self) -> bool:
        return self.top > 0 or bool(self.tenants)

    @classmethod
    def parse(cls, specs: Sequence[str], cap: int = DEFAULT_VOLUME_CAP) -> VolumeMetrics:
        top, tenants = 0, []
        for spec in specs:
            kind, sep, value = spec.partition(":")
            if kind == "top" and sep and value.isdigit() and int(value) > 0:
                top = max(top, int(value))
            elif kind == "tenant" and sep and value:
                tenants.append(value)
            else:
                raise UsageError(f"cannot read --volume-metrics {spec!r}",
                                 hint="use top:K (the K largest volumes per node) or "
                                 "tenant:NAME (repeatable)")
        if cap <= 0:
            raise UsageError("--volume-metrics-cap must be at least 1")
        return cls(top=top, tenants=tuple(tenants), cap=cap)


@dataclass
class ServiceState:
    """What the service itself reports (set by service.Service)."""

    started: float = field(default_factory=time.time)
    engine: str = "sqlite"
    watch_states: Callable[[], dict[str, str]] = dict  # node -> watch state
    mirror_errors: Callable[[], int] = lambda: 0


def _g(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class MirrorCollector(Collector):
    """Reads the figures of one scrape from the mirror."""

    def __init__(self, reader: Reader, *, service: ServiceState | None = None,
                 volumes: VolumeMetrics | None = None, price_per_gb_month: float = 0.0,
                 currency: str = "USD", nodes: Callable[[], Sequence[str]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.service = service or ServiceState()
        self.volumes = volumes or VolumeMetrics()
        self.price = price_per_gb_month
        self.currency = currency
        self.nodes = nodes  # the inventory's nodes (None: every node in the mirror)
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # figures are read at collection only (no query at registration)

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        now = self.clock()
        keep = set(self.nodes()) if self.nodes is not None else None  # once a collection
        with self.reader() as conn:
            out = [*self._nodes(conn, now, keep), *self._pools(conn, now, keep),
                   *self._jobs(conn, now), *self._replicas(conn, now)]
            if self.volumes.enabled:
                out += self._volumes(conn, keep)
        yield from out
        yield from self._service(time.perf_counter() - t0)

    # -- nodes ----------------------------------------------------------------------------

    @staticmethod
    def _node_rows(conn: Connection, keep: set[str] | None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in conn.execute("SELECT * FROM nodes ORDER BY name")]
        return rows if keep is None else [r for r in rows if r["name"] in keep]

    def _nodes(self, conn: Connection, now: float, keep: set[str] | None) -> list[Metric]:
        up = _g("xfleet_node_up", "1 when the node's last sync or watch succeeded", ["node"])
        last = _g("xfleet_node_last_sync_timestamp_seconds",
                  "Unix time of the node's last successful sync", ["node"])
        lag = _g("xfleet_node_mirror_lag_seconds",
                 "Seconds since the mirror was last confirmed current for the node", ["node"])
        event = _g("xfleet_node_last_event_age_seconds",
                   "Seconds since the last change applied from the node's feed", ["node"])
        gaps = CounterMetricFamily("xfleet_node_event_gaps",
                                   "Times the node's change feed lost events", labels=["node"])
        dur = _g("xfleet_node_sync_duration_seconds",
                 "Duration of the node's last finished sync, by kind", ["node", "kind"])
        following = _g("xfleet_node_watch_following",
                       "1 while a watch follows the node's event stream", ["node"])
        count = _g("xfleet_node_datasets", "Datasets of the node in the mirror", ["node"])
        for n in self._node_rows(conn, keep):
            node = n["name"]
            ok = n["last_success"] is not None and not n["stale"]
            up.add_metric([node], 1.0 if ok else 0.0)
            if n["last_success"] is not None:
                last.add_metric([node], float(n["last_success"]))
            confirmed = query.confirmed_at(n, now)
            if confirmed is not None:
                lag.add_metric([node], max(0.0, now - confirmed))
            if n.get("last_change_at") is not None:
                event.add_metric([node], max(0.0, now - n["last_change_at"]))
            gaps.add_metric([node], float(n.get("gaps") or 0))
            live = query.watch_live(n, now) and n.get("watch_state") == "following"
            following.add_metric([node], 1.0 if live else 0.0)
            count.add_metric([node], float(n.get("datasets") or 0))
            seen: set[str] = set()
            for kind, started, finished in conn.execute(
                    "SELECT kind, started_at, finished_at FROM sync_runs WHERE node = ? AND "
                    f"status = 'ok' ORDER BY id DESC LIMIT {SYNC_KINDS_SCANNED}", (node,)):
                if kind not in seen and finished is not None:
                    seen.add(kind)
                    dur.add_metric([node, kind], max(0.0, finished - started))
        return [up, last, lag, event, gaps, dur, following, count]

    # -- pools ----------------------------------------------------------------------------

    def _pools(self, conn: Connection, now: float, keep: set[str] | None) -> list[Metric]:
        labels = ["node", "pool"]
        fams: dict[str, GaugeMetricFamily] = {}

        def g(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            fams[name] = _g(name, doc, [*labels, *extra])
            return fams[name]

        size = g("xfleet_pool_size_bytes", "Pool size (zpool list)")
        alloc = g("xfleet_pool_allocated_bytes", "Pool allocated bytes (zpool list)")
        free = g("xfleet_pool_free_bytes", "Pool free bytes (zpool list)")
        cap = g("xfleet_pool_capacity_ratio", "Allocated / size")
        frag = g("xfleet_pool_fragmentation_ratio", "Free-space fragmentation, 0-1")
        health = g("xfleet_pool_health", "1 for the pool's current state", ["state"])
        rerr = g("xfleet_pool_read_errors", "Read errors summed over the leaf vdevs")
        werr = g("xfleet_pool_write_errors", "Write errors summed over the leaf vdevs")
        cerr = g("xfleet_pool_checksum_errors", "Checksum errors summed over the leaf vdevs")
        derr = g("xfleet_pool_data_errors", "Files with permanent errors")
        scan = g("xfleet_pool_scan_running", "1 while a scrub or resilver runs", ["function"])
        scrub = g("xfleet_pool_last_scrub_timestamp_seconds",
                  "When the last scrub finished (0: never)")
        kinds = g("xfleet_pool_datasets", "Datasets in the pool by type", ["type"])
        volsize = g("xfleet_pool_volsize_bytes", "Sum of the volumes' volsize")
        over = g("xfleet_pool_overcommit_ratio", "Sum of volsize / pool size")
        filled = g("xfleet_pool_if_filled_ratio",
                   "Capacity if every thin volume filled: (allocated + thin headroom) / size")
        logical = g("xfleet_pool_logical_bytes", "The volumes' logical bytes")
        physical = g("xfleet_pool_physical_bytes", "What the volumes take on disk")
        saved = g("xfleet_pool_compression_saved_bytes", "Logical - physical bytes")
        money = g("xfleet_pool_compression_saved_per_month",
                  "What compression saves per month, in money", ["currency"])
        growth = g("xfleet_pool_growth_bytes_per_day", "Trend of allocated bytes per day")
        until = g("xfleet_pool_days_until", "Days until the pool reaches a threshold at the "
                  "trend", ["threshold"])
        synced = g("xfleet_pool_synced_timestamp_seconds",
                   "Unix time of the sync that wrote the pool's figures")
        for p in conn.execute("SELECT * FROM pools ORDER BY node, name"):
            p = dict(p)
            if keep is not None and p["node"] not in keep:
                continue
            lv = [p["node"], p["name"]]
            for fam, col in ((size, "size"), (alloc, "allocated"), (free, "free")):
                if p[col] is not None:
                    fam.add_metric(lv, float(p[col]))
            if p["size"]:
                cap.add_metric(lv, (p["allocated"] or 0) / p["size"])
                over.add_metric(lv, (p["volsize"] or 0) / p["size"])
            if p["fragmentation"] is not None:
                frag.add_metric(lv, p["fragmentation"] / 100)
            state = (p["health"] or "").upper()
            for s in POOL_STATES:
                health.add_metric([*lv, s], 1.0 if state == s else 0.0)
            for fam, col in ((rerr, "read_errors"), (werr, "write_errors"),
                             (cerr, "checksum_errors"), (derr, "data_errors")):
                if p.get(col) is not None:
                    fam.add_metric(lv, float(p[col]))
            function = (p.get("scan_function") or "").lower()
            running = (p.get("scan_state") or "").upper() == "SCANNING"
            for fn in ("scrub", "resilver"):
                scan.add_metric([*lv, fn], 1.0 if running and function == fn else 0.0)
            if p.get("health_at") is not None:
                last_scrub = p.get("scan_end") if function == "scrub" and \
                    (p.get("scan_state") or "").upper() == "FINISHED" else None
                scrub.add_metric(lv, float(last_scrub or 0))
            for label, col in DATASET_TYPES:
                kinds.add_metric([*lv, label], float(p[col] or 0))
            volsize.add_metric(lv, float(p["volsize"] or 0))
            phys = max(0, (p["used"] or 0) - (p["usedbyrefreservation"] or 0))
            logical.add_metric(lv, float(p["logicalused"] or 0))
            physical.add_metric(lv, float(phys))
            gain = max(0, (p["logicalused"] or 0) - phys)
            saved.add_metric(lv, float(gain))
            money.add_metric([*lv, self.currency], gain / 1e9 * self.price)
            synced.add_metric(lv, float(p["synced_at"]))
        for f in capacity.forecasts(conn, now=now):
            if keep is not None and f.node not in keep:
                continue
            lv = [f.node, f.pool]
            if f.if_filled_ratio is not None:
                filled.add_metric(lv, f.if_filled_ratio)
            if f.growth_per_day is not None:
                growth.add_metric(lv, f.growth_per_day)
            for threshold, days in sorted(f.days_until.items()):
                if days is not None:
                    until.add_metric([*lv, str(threshold)], days)
        return list(fams.values())

    # -- jobs -----------------------------------------------------------------------------

    def _jobs(self, conn: Connection, now: float) -> list[Metric]:
        fam = _g("xfleet_jobs", "Journaled jobs by kind and state", ["kind", "state"])
        stalled = _g("xfleet_jobs_stalled", "Running jobs whose holder stopped beating",
                     ["kind"])
        for table, label in JOB_LABELS.items():
            kind = jobs.KINDS.get(table)
            if kind is None or not mirror.has_table(conn, table):
                continue
            for state, n in conn.execute(
                    f"SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state"):
                fam.add_metric([label, state], float(n))
            if kind.stale is not None:
                clause, params = jobs.stalled(kind, now)
                n = conn.execute(f"SELECT count(*) FROM {table} WHERE {clause}",
                                 params).fetchone()[0]
                stalled.add_metric([label], float(n))
        held = _g("xfleet_moves_io_held", "Moves that died in a live switch: their hosts' I/O "
                  "is held (no heartbeat for 60 s, or no process)")
        held.add_metric([], float(len(alerts.io_held(conn, now)))
                        if mirror.has_table(conn, "moves") else 0.0)
        return [fam, stalled, held]

    # -- standing replicas ----------------------------------------------------------------

    def _replicas(self, conn: Connection, now: float) -> list[Metric]:
        """Per (policy, target node), never per volume: two grouped queries (the counts by
        state, and `xfleet replicate status`'s summary). The counts by state include the
        promoted replicas (state="promoted"); the other series, as the summary, count the
        standing ones only (a promoted replica is a primary now)."""
        labels = ["policy", "target_node"]
        by_state = _g("xfleet_replicas", "Replicas by policy, target node and state",
                      [*labels, "state"])
        over = _g("xfleet_replicas_over_rpo",
                  "Replicas whose lag is above their RPO (never sent included)", labels)
        never = _g("xfleet_replicas_never_sent", "Replicas with no data on their target yet",
                   labels)
        lag = _g("xfleet_replica_lag_max_seconds",
                 "The largest lag (now - the source time of the data) of the sent replicas",
                 labels)
        rpo = _g("xfleet_replica_rpo_seconds", "The replicas' RPO", labels)
        last = _g("xfleet_replica_last_round_timestamp_seconds",
                  "When a round last advanced one of the replicas' cursors", labels)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for policy, target, state, n in conn.execute(
                "SELECT policy, target_node, state, count(*) FROM replicas "
                "GROUP BY policy, target_node, state ORDER BY policy, target_node, state"):
            counts.setdefault((policy, target), {})[state] = n
        for (policy, target), n_by_state in counts.items():
            for state in replicas.STATES:  # every state, 0 too: a count falls to 0, not absent
                by_state.add_metric([policy, target, state], float(n_by_state.get(state, 0)))
        for g in replica_summary(conn, now):
            lv = [g["policy"], g["target_node"]]
            over.add_metric(lv, float(g["over_rpo"] or 0))
            never.add_metric(lv, float(g["never"] or 0))
            if g["max_lag"] is not None:
                lag.add_metric(lv, max(0.0, float(g["max_lag"])))
            if g["rpo"] is not None:
                rpo.add_metric(lv, float(g["rpo"]))
            if g["last_round_at"] is not None:
                last.add_metric(lv, float(g["last_round_at"]))
        return [by_state, over, never, lag, rpo, last]

    # -- opt-in volumes -------------------------------------------------------------------

    def _volumes(self, conn: Connection, keep: set[str] | None) -> list[Metric]:
        labels = ["node", "pool", "volume", "tenant"]
        fams = [
            (_g("xfleet_volume_used_bytes", "A volume's used bytes", labels), "used"),
            (_g("xfleet_volume_volsize_bytes", "A volume's volsize", labels), "volsize"),
            (_g("xfleet_volume_logical_bytes", "A volume's logicalused", labels),
             "logicalused"),
            (_g("xfleet_volume_written_bytes", "Bytes written since the previous snapshot",
                labels), "written"),
        ]
        cols = "node, pool, name, tenant, used, volsize, logicalused, written"
        v = self.volumes
        for (node,) in conn.execute("SELECT name FROM nodes ORDER BY name").fetchall():
            if keep is not None and node not in keep:
                continue
            seen: set[str] = set()
            rows: list[Any] = []
            if v.top:
                rows += conn.execute(
                    f"SELECT {cols} FROM datasets WHERE node = ? AND type = 'volume' "
                    "ORDER BY used DESC LIMIT ?", (node, min(v.top, v.cap))).fetchall()
            for tenant in v.tenants:
                rows += conn.execute(
                    f"SELECT {cols} FROM datasets WHERE tenant = ? AND node = ? AND "
                    "type = 'volume' ORDER BY name LIMIT ?", (tenant, node, v.cap)).fetchall()
            for r in rows:
                if r[2] in seen or len(seen) >= v.cap:
                    continue
                seen.add(r[2])
                lv = [r[0], r[1], r[2], r[3] or ""]
                for fam, col in fams:
                    value = r[cols.split(", ").index(col)]
                    if value is not None:
                        fam.add_metric(lv, float(value))
        return [f for f, _ in fams]

    # -- the service ----------------------------------------------------------------------

    def _service(self, seconds: float) -> list[Metric]:
        info = _g("xfleet_serve_info", "The service's version and mirror engine",
                  ["version", "engine"])
        info.add_metric([__version__, self.service.engine], 1.0)
        start = _g("xfleet_serve_start_time_seconds", "When the service started")
        start.add_metric([], self.service.started)
        took = _g("xfleet_serve_collect_duration_seconds",
                  "Seconds this scrape's figures took to read from the mirror")
        took.add_metric([], seconds)
        errs = CounterMetricFamily("xfleet_serve_mirror_errors",
                                   "Scrapes or API requests the mirror could not answer")
        errs.add_metric([], float(self.service.mirror_errors()))
        watch = _g("xfleet_serve_watch_nodes", "Nodes the service watches, by watch state",
                   ["state"])
        counts: dict[str, int] = {}
        for st in self.service.watch_states().values():
            key = re.sub(r" in \d+s$", "", st)  # "reconnecting in 4s" -> "reconnecting"
            counts[key] = counts.get(key, 0) + 1
        for state, n in sorted(counts.items()):
            watch.add_metric([state], float(n))
        return [info, start, took, errs, watch]
