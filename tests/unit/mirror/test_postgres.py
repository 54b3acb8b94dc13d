"""The mirror on a real PostgreSQL (xfleet/mirror/postgres.py): SQLite's spelling translated,
SQLite's functions with SQLite's answers, errors as ours, passwords only from PGPASSFILE, and
a NOTIFY per committed write; and the tests' server never outlives a killed test process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from pgserver import PgServer

from xfleet import mirror
from xfleet.core.errors import MirrorError
from xfleet.mirror import postgres
from xfleet.mirror.backend import DatabaseError, PgUrl, ProgrammingError
from xfleet.mirror.postgres import PgConnection, translate


def test_translate_parameters_temp_tables_and_hints() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE '%x?' AND c = '%'") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE '%%x?' AND c = '%%'")
    assert translate("SELECT 1 FROM t WHERE x LIKE 'a%'", False) == (
        "SELECT 1 FROM t WHERE x LIKE 'a%'")  # no parameters: sent as is
    assert translate("INSERT INTO temp.fast VALUES (?)") == "INSERT INTO pg_temp.fast VALUES (%s)"
    assert translate("SELECT name FROM datasets INDEXED BY datasets_origin WHERE x") == (
        "SELECT name FROM datasets  WHERE x")
    assert translate("INSERT OR IGNORE INTO t VALUES (?)") == (
        "INSERT INTO t VALUES (%s) ON CONFLICT DO NOTHING")
    assert translate("SELECT :a, ':b', x::text", True, True) == "SELECT %(a)s, ':b', x::text"


def pg_conn(pg: PgServer) -> PgConnection:
    conn = mirror.connect(pg.database())
    assert isinstance(conn, PgConnection)
    return conn


GLOBS = ["tank/*", "tank/vol-00?", "*[0-9]", "*[!0-9]", "*[^0-9]", "a.b", "a+b(c)", "*]*",
         "[]]x", "*[a-c]@snap*", "t*k/v$l", "x\\y", "*", "", "[x"]
NAMES = ["tank/vol-001", "tank/vol-0010", "a.b", "axb", "a+b(c)", "]x", "x]y", "tank/b@snap1",
         "t^k/v$l", "x\\y", "", "[x", "tank/vol-00a", "TANK/vol-001"]


def test_glob_gives_sqlites_answers(pg: PgServer) -> None:
    conn = pg_conn(pg)
    lite = sqlite3.connect(":memory:")
    try:
        for pattern in GLOBS:
            for name in NAMES:
                want = bool(lite.execute("SELECT ? GLOB ?", (name, pattern)).fetchone()[0])
                got = conn.execute("SELECT glob(?, ?)", (pattern, name)).fetchone()[0]
                assert got == want, (pattern, name, conn.execute(
                    "SELECT glob_regex(?)", (pattern,)).fetchone()[0])
    finally:
        conn.close()


def test_json_extract_instr_sums_and_rows(pg: PgServer) -> None:
    conn = pg_conn(pg)
    try:
        row = conn.execute(
            "SELECT json_extract(?, ?) AS zone, instr('tank/vol', 'vol') AS at, "
            "sum(x) AS total, avg(x) AS mean FROM (VALUES (1), (2), (4)) v(x)",
            ('{"zone": "a", "k.dot": 1}', '$."zone"')).fetchone()
        assert (row["zone"], row["at"], row["total"], row[3]) == ("a", 6, 7, 7 / 3)
        assert isinstance(row["total"], int) and row.keys() == ["zone", "at", "total", "mean"]
        assert dict(row)["zone"] == "a"
    finally:
        conn.close()


def test_the_schema_has_64_bit_integers_and_code_point_text(pg: PgServer) -> None:
    conn = pg_conn(pg)
    try:
        cols = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT column_name, data_type, collation_name FROM information_schema.columns "
            "WHERE table_name = 'datasets'")}
    finally:
        conn.close()
    assert cols["used"] == ("bigint", None) and cols["compressratio"][0] == "double precision"
    assert cols["name"] == ("text", "C") and cols["origin"] == ("text", "C")


def test_errors_are_ours_and_a_read_only_connection_refuses_writes(pg: PgServer) -> None:
    url = pg.database()
    mirror.connect(url).close()
    ro = mirror.connect(url, readonly=True)
    try:
        with pytest.raises(ProgrammingError):
            ro.execute("SELECT nope FROM datasets")
        with pytest.raises(DatabaseError) as exc:
            ro.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
        assert exc.value.sqlstate == "25006"
    finally:
        ro.close()


def test_the_password_comes_from_pgpassfile_and_never_shows(
        pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pg.psql("CREATE ROLE operator LOGIN PASSWORD 'pw-7c1e'")
    db = pg.new_database()
    pg.psql(f"ALTER DATABASE {db} OWNER TO operator")
    url = pg.tcp_url(db, "operator")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(MirrorError) as exc:
        mirror.connect(url)
    assert "cannot connect" in str(exc.value) and "pgpass" in str(exc.value.hint)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg.port}:{db}:operator:pw-7c1e\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    conn = mirror.connect(url)
    try:
        assert conn.execute("SELECT current_user").fetchone()[0] == "operator"
    finally:
        conn.close()


def test_a_committed_write_notifies_listeners(pg: PgServer) -> None:
    url = pg.database()
    conn = mirror.connect(url)
    listener = postgres.listen(PgUrl(url))
    try:
        with mirror.transaction(conn, "node n1"):
            conn.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
        got = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert got == ["node n1"]
    finally:
        listener.close()
        conn.close()


def test_writers_take_turns_through_the_advisory_lock(pg: PgServer) -> None:
    url = pg.database()
    a, b = mirror.connect(url), mirror.connect(url)
    try:
        mirror.begin(a, "first")
        with pytest.raises(MirrorError) as exc:
            mirror.begin(b, "second", patience=0.3)
        assert "stayed locked" in str(exc.value) and not b.in_transaction
        a.execute("COMMIT")
        with mirror.transaction(b, "second"):
            b.execute("INSERT INTO nodes (name, kind) VALUES ('n2', 'sim')")
        assert a.execute("SELECT name FROM nodes").fetchall() == [("n2",)]
    finally:
        a.close()
        b.close()


def test_a_write_open_brings_the_functions_of_this_xfleet(pg: PgServer) -> None:
    url = pg.database()
    conn = mirror.connect(url)
    conn.execute("DROP FUNCTION instr(text, text)")  # a mirror made by an older xfleet
    conn.execute("COMMENT ON FUNCTION glob_regex(text) IS 'older'")
    conn.close()
    conn = mirror.connect(url)
    try:
        assert conn.execute("SELECT instr('tank/vol', 'vol')").fetchone()[0] == 6
    finally:
        conn.close()


def test_a_prefix_glob_is_a_range_the_name_index_answers(pg: PgServer) -> None:
    # glob() is an inlinable SQL function: the planner sees `name ~ '^tank/t0007/.*$'` and
    # ranges over the name index (text is COLLATE "C"), as SQLite does for its GLOB
    def glob_sql(column: str, pattern: str) -> tuple[str, list[str]]:
        return f"glob(?, {column})", [pattern]

    conn = pg_conn(pg)
    try:
        conn.executemany("INSERT INTO datasets (node, pool, name, type, synced_at, sync_run) "
                         "VALUES ('n1', 'tank', ?, 'volume', 0, 1)",
                         [(f"tank/t{i % 50:04d}/vol-{i:06d}",) for i in range(3000)])
        conn.execute("ANALYZE datasets")
        conn.execute("SET enable_seqscan = off")  # can an index answer it at all?

        def plan(pattern: str) -> str:
            where, params = glob_sql("name", pattern)
            return " ".join(r[0] for r in conn.execute(
                f"EXPLAIN (COSTS OFF) SELECT name FROM datasets WHERE {where}", params))

        assert "Index Cond" in plan("tank/t0007/*"), plan("tank/t0007/*")
        assert "Index Cond" not in plan("*/vol-000007")  # no literal prefix: no range
        where, params = glob_sql("name", "tank/t0007/vol-0000[0-5]?")
        got = [r[0] for r in conn.execute(f"SELECT name FROM datasets WHERE {where} "
                                          "ORDER BY name", params)]
        assert got == ["tank/t0007/vol-000007", "tank/t0007/vol-000057"]
    finally:
        conn.close()


def test_a_server_whose_test_process_is_killed_is_stopped_by_its_watcher(
        tmp_path: Path) -> None:
    """A test process killed outright (SIGKILL: no teardown runs) leaves no PostgreSQL server
    behind: the server's watcher sees its pipe close, stops the server by PID and removes its
    directory."""
    code = ("import sys, time\nsys.path.insert(0, sys.argv[1])\nfrom pgserver import PgServer\n"
            "pg = PgServer().start()\nprint(pg.pid, pg.dir, flush=True)\ntime.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parents[2])],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid_text, top = child.stdout.readline().split()
        pid = int(pid_text)
        assert Path(f"/proc/{pid}").exists() and Path(top).is_dir()
    finally:
        child.kill()
        child.wait(timeout=30)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the watcher to stop the server",
             timeout=60)
    wait_for(lambda: not Path(top).exists(), "the watcher to remove the server's files",
             timeout=30)
