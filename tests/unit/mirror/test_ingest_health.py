"""Pool health in the mirror (ingest.write_health, write_pools): the health columns of `pools`
and the `vdevs` tree, replaced whole, on both engines; from real `zpool status -j` output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import FIXTURES

from xfleet import mirror
from xfleet.core.zfs import PoolRecord, parse_status_json
from xfleet.mirror.backend import Connection
from xfleet.mirror.ingest import HEALTH_COLUMNS, VDEV_COLUMNS

REAL = FIXTURES / "real"


def _pool(name: str) -> PoolRecord:
    return PoolRecord(name, "1", 1 << 30, 1 << 20, (1 << 30) - (1 << 20), "ONLINE", 12, 1, 0,
                      1.0)


def _select(conn: Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def test_health_and_vdevs_are_written_and_replaced_whole(mirror_at: str) -> None:
    health = {p.name: p for p in parse_status_json(
        (REAL / "zpool_status_json_all.txt").read_text())}
    conn = mirror.connect(mirror_at)
    try:
        with mirror.transaction(conn, "a test"):
            mirror.upsert_node(conn, "n1", "sim", None, {}, [])
            # zpool list showed three of the four pools status shows
            mirror.write_pools(conn, "n1", [_pool(n) for n in ("hx deg.1", "hx_cksum", "tank")])
            written = mirror.write_health(conn, "n1", list(health.values()), 1000.5)
        assert written == 3
        rows = {r[0]: r[1:] for r in _select(
            conn, "SELECT name, health, status, scan_function, scan_state, scan_start, "
            "scan_end, scan_errors, read_errors, write_errors, checksum_errors, data_errors, "
            "health_at FROM pools WHERE node = ?", "n1")}
        assert set(rows) == {"hx deg.1", "hx_cksum", "tank"}
        paused = health["hx_cksum"]
        assert rows["hx_cksum"] == (
            "ONLINE", paused.status, "SCRUB", "PAUSED", paused.scan_start, None, 0, 0, 0,
            paused.checksum_errors, 0, 1000.5)
        assert rows["tank"][1] is None and rows["tank"][2:4] == ("SCRUB", "FINISHED")
        vdevs = _select(conn, "SELECT position, parent, depth, name, vdev_type, path, state, "
                        "read_errors, write_errors, checksum_errors, slow_ios FROM vdevs WHERE "
                        "node = ? AND pool = ? ORDER BY position", "n1", "hx deg.1")
        assert [v[3] for v in vdevs] == [v.name for v in health["hx deg.1"].vdevs]
        assert vdevs[3][3] == "/var/tmp/xfleet health/deg\tb.img"  # a tab survives
        assert vdevs[4][:7] == (4, None, 0, "logs", None, None, None)
        assert _select(conn, "SELECT count(*) FROM vdevs WHERE pool = ?", "hx-data:1") == [(0,)]

        # the next read replaces a pool's tree whole; a pool zpool list no longer shows goes
        scrubbed = parse_status_json((REAL / "zpool_status_json_scrubbed.txt").read_text())
        with mirror.transaction(conn, "a test"):
            mirror.write_pools(conn, "n1", [_pool("hx deg.1"), _pool("tank")])
            mirror.write_health(conn, "n1", scrubbed, 2000.0)
        assert _select(conn, "SELECT pool, count(*) FROM vdevs WHERE node = ? GROUP BY pool "
                       "ORDER BY pool", "n1") == [("hx deg.1", 10), ("tank", 2)]
        assert _select(conn, "SELECT name, health_at FROM pools WHERE node = ? ORDER BY name",
                       "n1") == [("hx deg.1", 1000.5), ("tank", 2000.0)]
    finally:
        conn.close()


def test_the_health_columns_are_the_records_fields(tmp_path: Path) -> None:
    """Every column of the `pools` health and of `vdevs` (docs/mirror.md) is written."""
    conn = mirror.connect(tmp_path / "m.db")
    try:
        pools = {r[1] for r in conn.execute("PRAGMA table_info(pools)")}
        vdevs = {r[1] for r in conn.execute("PRAGMA table_info(vdevs)")}
    finally:
        conn.close()
    assert {*HEALTH_COLUMNS, "health", "health_at"} <= pools
    assert {"node", "pool", *VDEV_COLUMNS} == vdevs
