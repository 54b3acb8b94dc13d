"""Keyset paging over the mirror: every row exactly once, in order, in both directions."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.mirror.backend import Connection
from xfleet.mirror.paging import Count, Pager, Sort, has_index, parse_filter

COLS = ("node", "pool", "name", "type", "used", "compression", "compressratio", "tenant",
        "volsize", "origin", "synced_at", "sync_run")


@pytest.fixture
def conn(mirror_at: str) -> Connection:
    """A mirror with heavy ties and NULLs in the sort columns (deterministic), on each engine."""
    rng = random.Random(4)
    c = mirror.connect(mirror_at)
    rows: list[tuple[Any, ...]] = []
    for node in ("n1", "n2", "n3"):
        for i in range(137):
            snap = i % 3 == 0
            name = f"tank/t{i % 7}/vol-{i:04d}" + ("@s1" if snap else "")
            rows.append((
                node, "tank", name, "snapshot" if snap else "volume",
                rng.choice([None, 100, 200, 300, 4 << 30]),  # used: ties and NULLs
                None if snap else rng.choice(["off", "lz4", "zstd"]),
                rng.choice([None, 1.0, 1.5]),
                None if i % 5 == 0 else f"t{i % 7}",
                (8 << 30) if not snap else None,
                "tank/t0/vol-0000@s1" if i % 11 == 1 else None,
                0.0, 1,
            ))
    rng.shuffle(rows)
    c.executemany(f"INSERT INTO datasets ({', '.join(COLS)}) VALUES "
                  f"({', '.join('?' for _ in COLS)})", rows)
    return c


def _all(conn: Connection, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT id FROM datasets WHERE {where}", params)]


def _expected(conn: Connection, sort: Sort, where: str = "TRUE",
              params: tuple[Any, ...] = ()) -> list[int]:
    """The reference order computed in Python: NULLs last, then id (or name) as tie-break."""
    cols = ", ".join(dict.fromkeys(["id", *sort.key]))
    rows = conn.execute(f"SELECT {cols} FROM datasets WHERE {where}", params).fetchall()
    nonnull = [r for r in rows if r[sort.column] is not None]
    nulls = [r for r in rows if r[sort.column] is None]
    nonnull.sort(key=lambda r: tuple(r[k] for k in sort.key), reverse=sort.desc)
    nulls.sort(key=lambda r: r["id"], reverse=sort.desc)
    return [r["id"] for r in nonnull + nulls]


SORTS = [Sort(c, d) for c in ("node", "name", "used", "compression", "compressratio",
                              "tenant", "type", "volsize") for d in (False, True)]


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: f"{s.column}-{'desc' if s.desc else 'asc'}")
@pytest.mark.parametrize("page", [3, 50])
def test_paging_forward_and_back_yields_each_row_once_in_order(
    conn: Connection, sort: Sort, page: int
) -> None:
    p = Pager(conn, sort=sort)
    want = _expected(conn, sort)
    assert len(want) == 411

    seen: list[int] = []
    rows = p.first(page)
    while rows:
        seen += [r["id"] for r in rows]
        rows = p.after(p.key_of(rows[-1]), page)
    assert seen == want

    back: list[int] = []
    rows = p.last(page)
    while rows:
        back = [r["id"] for r in rows] + back
        rows = p.before(p.key_of(rows[0]), page)
    assert back == want


def test_filter_and_sort_combine(conn: Connection) -> None:
    f = parse_filter("node=n2 used>150 vol-00")
    p = Pager(conn, sort=Sort("used", desc=True), filter=f)
    want = _expected(conn, Sort("used", True),
                     "node = 'n2' AND used > 150 AND instr(name, 'vol-00') > 0")
    assert want, "the fixture must have matching rows"
    got: list[int] = []
    rows = p.first(10)
    while rows:
        got += [r["id"] for r in rows]
        rows = p.after(p.key_of(rows[-1]), 10)
    assert got == want
    assert all(r["node"] == "n2" for r in p.first(100))
    assert p.count() == Count(len(want))


def test_around_keeps_the_place_and_fills_at_the_end(conn: Connection) -> None:
    p = Pager(conn, sort=Sort("used"))
    want = _expected(conn, Sort("used"))
    mid = p.first(200)[100]
    rows = p.around(p.key_of(mid), 20)
    assert [r["id"] for r in rows] == want[100:120]
    tail = p.last(1)[0]
    rows = p.around(p.key_of(tail), 20)
    assert [r["id"] for r in rows] == want[-20:]


def test_position_counts_rows_before(conn: Connection) -> None:
    for sort in (Sort("used"), Sort("used", True), Sort("node")):
        p = Pager(conn, sort=sort)
        rows = p.first(300)
        for i in (0, 1, 150, 299):
            assert p.position(p.key_of(rows[i])) == Count(i)


def test_count_is_capped_and_marked(conn: Connection) -> None:
    p = Pager(conn, filter=parse_filter("type=volume"))
    exact = p.count()
    assert exact.exact and exact.n == len(_all(conn, "type = 'volume'"))
    capped = p.count(cap=50)
    assert (capped.n, capped.exact, capped.capped) == (50, False, True)
    assert capped.label() == "≥50" and capped.reason() == "capped"
    stopped = p.count(budget_s=0.0)
    assert not stopped.exact and not stopped.capped
    assert stopped.reason().startswith("counting stopped")
    assert Pager(conn).count().n == 411


def test_filter_words() -> None:
    assert parse_filter("").empty
    f = parse_filter("vol-01 used>10G compression=off")
    assert f.clause == "instr(name, ?) > 0 AND used > ? AND compression = ?"
    assert f.params == ("vol-01", 10 << 30, "off")
    assert parse_filter("tank/*@s1").clause == "glob(?, name)"
    assert parse_filter("a b").params == ("a", "*b*")
    assert "origin IS NOT NULL" in parse_filter("type=clone").clause


@pytest.mark.parametrize("bad", ["used>lots", "colour=red", "used>", "'open", "used~x*"])
def test_bad_filters_raise_usage_errors_with_hints(bad: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_filter(bad)
    assert exc.value.message


def test_bad_sort_column() -> None:
    with pytest.raises(UsageError, match="cannot sort"):
        Sort("bogus")


def test_clone_filter_finds_clones(conn: Connection) -> None:
    rows = Pager(conn, filter=parse_filter("type=clone")).first(500)
    assert rows and all(r["origin"] for r in rows)
    assert len(rows) == len(_all(conn, "origin IS NOT NULL"))


def test_sorted_reads_use_an_index_when_there_is_one(conn: Connection) -> None:
    if mirror.is_postgres(conn):  # the planner's choice on 411 rows says nothing: what paging
        # relies on is has_index (a sort on an indexed column is read as a range)
        assert has_index(conn, "node") and has_index(conn, "used") and has_index(conn, "name")
        assert not has_index(conn, "written")
        conn.execute("CREATE INDEX datasets_written ON datasets (written)")
        assert has_index(conn, "written")
        plan = " ".join(Pager(conn, sort=Sort("used", desc=True)).sql_plan())
        assert "Limit" in plan
        return
    plan = " ".join(Pager(conn, sort=Sort("node")).sql_plan())
    assert "USING INDEX datasets_node_name" in plan and "TEMP B-TREE" not in plan
    assert has_index(conn, "node") and has_index(conn, "tenant")
    assert has_index(conn, "used") and has_index(conn, "name")
    plan = " ".join(Pager(conn, sort=Sort("used", desc=True)).sql_plan())
    assert "datasets_used" in plan and "TEMP B-TREE" not in plan
    plan = " ".join(Pager(conn, sort=Sort("name")).sql_plan())
    assert "datasets_name" in plan and "TEMP B-TREE" not in plan
    assert not has_index(conn, "written")
    conn.execute("CREATE INDEX datasets_written ON datasets (written)")
    assert has_index(conn, "written")
    plan = " ".join(Pager(conn, sort=Sort("written", desc=True)).sql_plan())
    assert "datasets_written" in plan and "TEMP B-TREE" not in plan


def test_paging_imports_neither_textual_nor_click() -> None:
    code = ("import sys, xfleet.mirror.paging\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'click')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
