"""Each replica's lag against its RPO, from the mirror alone (docs/replicate.md): a summary
per policy and destination in one grouped query, and the most behind replicas."""

from __future__ import annotations

from typing import Any

from xfleet.mirror.backend import Connection
from xfleet.ops.replicate.journal import Replica, from_row


def summary(conn: Connection, now: float) -> list[dict[str, Any]]:
    """Per (policy, target node): replicas, never sent, failed, over their RPO, the largest
    lag and the RPO (promoted replicas are not counted: they are primaries now)."""
    cur = conn.execute(
        "SELECT policy, target_node, count(*) AS replicas, "
        "sum(CASE WHEN as_of IS NULL THEN 1 ELSE 0 END) AS never, "
        "sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed, "
        "sum(CASE WHEN as_of IS NULL OR ? - as_of > rpo THEN 1 ELSE 0 END) AS over_rpo, "
        "max(? - as_of) AS max_lag, max(rpo) AS rpo, max(last_round_at) AS last_round_at "
        "FROM replicas WHERE state != 'promoted' GROUP BY policy, target_node "
        "ORDER BY policy, target_node", (now, now))
    return [dict(r) for r in cur]


def behind(conn: Connection, now: float, *, limit: int | None = 20,
           include_promoted: bool = False) -> list[Replica]:
    """The replicas, most behind first (never sent first of all), up to `limit`."""
    sql = ("SELECT * FROM replicas" + ("" if include_promoted else
                                        " WHERE state != 'promoted'")
           + " ORDER BY CASE WHEN as_of IS NULL THEN 0 ELSE 1 END, as_of, id")
    args: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [from_row(r) for r in conn.execute(sql, args)]
