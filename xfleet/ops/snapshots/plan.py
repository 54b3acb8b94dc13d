"""A snapshot policy's plan, from the mirror alone (never `zfs list -t snapshot`): which volumes
are due a snapshot now, and which of the policy's own snapshots its retention prunes, with the
bytes each frees (docs/snapshots.md).

Everything is SQL over indexed ranges, streamed: the due volumes are counted per pool (their
names are read only when a pool's snapshot is taken), and the snapshots are read one dataset
after another in name order (a policy's names sort by time), so memory holds one dataset's
snapshots at a time, whatever the fleet's size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet.mirror.backend import Connection
from xfleet.ops.snapshots.policy import Policies, SnapshotPolicy
from xfleet.ops.snapshots.retention import Snap, decide

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

# the character after '_' in code point order: `name < X || '`'` ends a range of `X_...`
AFTER_UNDERSCORE = "`"


@dataclass
class PoolPlan:
    policy: str
    node: str
    pool: str
    volumes: int = 0  # volumes the policy takes
    due: int = 0  # of which due a snapshot now
    snapshots: int = 0  # the policy's snapshots of these volumes
    prune: int = 0
    prune_bytes: int = 0  # the pruned snapshots' `used` (what each alone holds: at least this)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Plan:
    now: float
    pools: list[PoolPlan] = field(default_factory=list)
    prunes: list[dict[str, Any]] = field(default_factory=list)  # the first `show` prunes

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "pools": [p.to_dict() for p in self.pools],
                "prunes": self.prunes}


def volumes_sql(policies: Policies, inventory: Inventory | None) -> tuple[str, list[Any]]:
    """The WHERE condition of a `datasets` row taken by the policy named by the last parameter
    (append it): a volume, the first policy that matches, and not a standing replica's copy
    (copies are kept by their replication, never snapshotted or pruned by a policy)."""
    expr, params = policies.compile(inventory)
    return (f"type = 'volume' AND ({expr}) = ? AND NOT EXISTS (SELECT 1 FROM replicas rc "
            "WHERE rc.target_node = datasets.node AND rc.target_volume = datasets.name AND "
            "rc.state != 'promoted')", params)


def newest_sql(policies: Policies, p: SnapshotPolicy, columns: str,
               inventory: Inventory | None = None) -> tuple[str, list[Any]]:
    """`SELECT COLUMNS, newest FROM ...`: policy `p`'s volumes with the creation of each one's
    newest snapshot of the policy (NULL: none), an index range of the volume's names each."""
    where, params = volumes_sql(policies, inventory)
    owned = "@" + p.owned
    vcols = ", ".join(f"v.{c.strip()}" for c in columns.split(","))
    return (f"SELECT {vcols}, (SELECT max(s.creation) FROM datasets s WHERE s.node = v.node "
            "AND s.name >= v.name || ? AND s.name < v.name || ?) AS newest "
            f"FROM (SELECT {columns} FROM datasets WHERE {where}) AS v",
            [owned, owned[:-1] + AFTER_UNDERSCORE, *params, p.name])


def due_counts(conn: Connection, policies: Policies, p: SnapshotPolicy, now: float,
               inventory: Inventory | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (node, pool): (volumes of policy `p`, how many are due a snapshot)."""
    vols, params = newest_sql(policies, p, "node, pool, name", inventory)
    cur = conn.execute(
        "SELECT node, pool, count(*), sum(CASE WHEN newest IS NULL OR newest < ? THEN 1 ELSE 0 "
        f"END) FROM ({vols}) AS vols GROUP BY node, pool ORDER BY node, pool",
        [p.schedule.last_slot(now), *params])
    return {(r[0], r[1]): (int(r[2]), int(r[3] or 0)) for r in cur}


def status(conn: Connection, policies: Policies, *, now: float | None = None,
           inventory: Inventory | None = None) -> list[dict[str, Any]]:
    """Per policy and tenant: volumes, how many are behind the schedule (due), never
    snapshotted, and the age of the most behind volume's newest snapshot against the
    schedule's period (`lag_periods`: 1 is one slot missed)."""
    now = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    for p in policies.policies:
        vols, params = newest_sql(policies, p, "node, name, tenant", inventory)
        for tenant, n, behind, never, oldest in conn.execute(
                "SELECT tenant, count(*), sum(CASE WHEN newest IS NULL OR newest < ? THEN 1 "
                "ELSE 0 END), sum(CASE WHEN newest IS NULL THEN 1 ELSE 0 END), min(newest) "
                f"FROM ({vols}) AS vols GROUP BY tenant ORDER BY tenant",
                [p.schedule.last_slot(now), *params]):
            age = None if oldest is None else max(0.0, now - oldest)
            out.append({"policy": p.name, "tenant": tenant, "volumes": int(n),
                        "behind": int(behind or 0), "never": int(never or 0),
                        "oldest_newest_age": None if age is None else round(age, 1),
                        "period": p.schedule.period,
                        "lag_periods": None if age is None else
                        round(age / p.schedule.period, 2)})
    return out


def owned_snapshots(conn: Connection, policies: Policies, p: SnapshotPolicy,
                    inventory: Inventory | None = None) -> Iterator[tuple[str, str, list[Any]]]:
    """(node, dataset, rows) per volume of policy `p`: its snapshots taken by the policy, oldest
    first, each (name, creation, used, protected); protected: a clone's origin."""
    where, params = volumes_sql(policies, inventory)
    owned = "@" + p.owned
    cur = conn.execute(
        "SELECT v.node, v.name, s.name, s.creation, s.used, "
        "CASE WHEN EXISTS (SELECT 1 FROM datasets c WHERE c.origin = s.name AND c.node = "
        "s.node) THEN 1 ELSE 0 END "
        f"FROM (SELECT node, name FROM datasets WHERE {where}) AS v "
        "JOIN datasets s ON s.node = v.node AND s.name >= v.name || ? AND s.name < v.name || ? "
        "ORDER BY v.node, v.name, s.name",
        [*params, p.name, owned, owned[:-1] + AFTER_UNDERSCORE])
    group: list[Any] = []
    key: tuple[str, str] | None = None
    for node, vol, snap, creation, used, protected in cur:
        if key != (node, vol):
            if key is not None:
                yield key[0], key[1], group
            key, group = (node, vol), []
        group.append((snap, creation, used, bool(protected)))
    if key is not None:
        yield key[0], key[1], group


def plan(conn: Connection, policies: Policies, *, now: float | None = None,
         inventory: Inventory | None = None, show: int = 20) -> Plan:
    """What every policy would do now: snapshots due per pool, prunes per pool with bytes."""
    now = time.time() if now is None else now
    out = Plan(now)
    for p in policies.policies:
        pools: dict[tuple[str, str], PoolPlan] = {}
        for (node, pool), (n, due) in due_counts(conn, policies, p, now, inventory).items():
            pools[(node, pool)] = PoolPlan(p.name, node, pool, volumes=n, due=due)
        for node, vol, rows in owned_snapshots(conn, policies, p, inventory):
            pool = vol.split("/", 1)[0]
            pp = pools.setdefault((node, pool), PoolPlan(p.name, node, pool))
            pp.snapshots += len(rows)
            used = {name: u for name, _, u, _ in rows}
            d = decide([Snap(name, creation or 0, prot) for name, creation, _, prot in rows],
                       p.keep, p.schedule.tz)
            for name in d.prune:
                pp.prune += 1
                pp.prune_bytes += used[name] or 0
                if len(out.prunes) < show:
                    out.prunes.append({"policy": p.name, "node": node, "snapshot": name,
                                       "used": used[name]})
        out.pools += [pools[k] for k in sorted(pools)]
    return out
