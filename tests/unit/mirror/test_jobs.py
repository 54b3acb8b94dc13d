"""The journaled-job base (xfleet/mirror/jobs.py), on a real mirror and real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from xfleet import mirror, playbook
from xfleet.core.errors import UsageError, XfleetError
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Row
from xfleet.ops import compression, moves, rollout


class BusyError(XfleetError):
    pass


# a real job table of the schema (the base is shared by moves, rollouts, plays, compression runs)
KIND = jobs.JobKind("play_runs", "playbook run", "xfleet plays list",
                    frozenset({"running", "paused"}), error=BusyError,
                    busy_hint="pause it first")
LAZY = jobs.JobKind("play_runs", "playbook run", "xfleet plays list", frozenset({"running"}),
                    stale=None)


@pytest.fixture
def conn(mirror_at: str) -> Iterator[Connection]:
    c = mirror.connect(mirror_at)
    now = time.time()
    for state in ("running", "done", "paused"):
        c.execute("INSERT INTO play_runs (file, digest, state, created_at, updated_at) "
                  "VALUES ('/p.yaml', 'd', ?, ?, ?)", (state, now, now))
    yield c
    c.close()


@pytest.fixture
def other_process() -> Iterator[int]:
    """A live process on this host that is not us: the holder of a claim."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold(conn: Connection, job_id: int, pid: int, beat: float) -> None:
    conn.execute("UPDATE play_runs SET pid = ?, host = ?, heartbeat = ? WHERE id = ?",
                 (pid, socket.gethostname(), beat, job_id))


def test_get_and_rows(conn: Connection) -> None:
    assert jobs.get(conn, KIND, 2)["state"] == "done"
    with pytest.raises(UsageError) as e:
        jobs.get(conn, KIND, 99)
    assert e.value.message == "no playbook run 99" and "xfleet plays list" in (e.value.hint or "")
    assert [r["id"] for r in jobs.rows(conn, KIND)] == [3, 2, 1]
    assert [r["id"] for r in jobs.rows(conn, KIND, open_only=True)] == [3, 1]
    assert [r["id"] for r in jobs.rows(conn, KIND, limit=1)] == [3]


def test_a_live_holder_with_a_fresh_heartbeat_refuses_the_claim(
        conn: Connection, other_process: int) -> None:
    _hold(conn, 1, other_process, time.time() - 5)
    with pytest.raises(BusyError) as e:
        jobs.claim(conn, KIND, 1)
    msg = e.value.message
    host = socket.gethostname()
    assert f"playbook run 1 is being run by process {other_process} on {host}" in msg
    assert "heartbeat 5 s ago" in msg or "heartbeat 6 s ago" in msg
    assert e.value.hint == "pause it first"
    assert jobs.get(conn, KIND, 1)["pid"] == other_process  # untouched, and no open transaction
    assert not conn.in_transaction


def test_a_dead_holder_or_a_stale_heartbeat_is_taken_over(
        conn: Connection, other_process: int) -> None:
    _hold(conn, 1, 999_999_999, time.time())  # no such process
    jobs.claim(conn, KIND, 1, set_columns={"step": 2})
    assert jobs.get(conn, KIND, 1)["pid"] != 999_999_999
    _hold(conn, 3, other_process, time.time() - 3600)  # alive, but silent for an hour
    jobs.claim(conn, KIND, 3)
    row = jobs.get(conn, KIND, 3)
    assert row["host"] == socket.gethostname() and time.time() - row["heartbeat"] < 60


def test_without_staleness_only_the_process_decides(
        conn: Connection, other_process: int) -> None:
    _hold(conn, 1, other_process, time.time() - 3600)
    with pytest.raises(UsageError, match="being run by process"):
        jobs.claim(conn, LAZY, 1)


def test_prepare_runs_in_the_claim_transaction_and_its_refusal_writes_nothing(
        conn: Connection) -> None:
    def finished(c: Connection, row: Row) -> None:
        c.execute("UPDATE play_runs SET error = 'touched' WHERE id = ?", (row["id"],))
        if row["state"] not in KIND.open_states:
            raise BusyError(f"run {row['id']} is {row['state']}")

    with pytest.raises(BusyError, match="run 2 is done"):
        jobs.claim(conn, KIND, 2, prepare=finished)
    assert jobs.get(conn, KIND, 2)["error"] is None and jobs.get(conn, KIND, 2)["pid"] is None
    jobs.claim(conn, KIND, 3, prepare=finished, set_columns={"step": 4})
    row = jobs.get(conn, KIND, 3)
    assert (row["error"], row["step"], row["pid"]) == ("touched", 4, claims.me()[0])


def test_finish_records_the_end_and_releases_the_claim(conn: Connection) -> None:
    jobs.claim(conn, KIND, 1)
    jobs.finish(conn, KIND, 1, "paused", "node n2 failed", final=False)
    row = jobs.get(conn, KIND, 1)
    assert (row["state"], row["error"], row["pid"], row["finished_at"]) == \
        ("paused", "node n2 failed", None, None)
    jobs.finish(conn, KIND, 1, "done")
    assert jobs.get(conn, KIND, 1)["finished_at"] is not None


def test_the_heartbeat_thread_keeps_the_claim_fresh(mirror_at: str,
                                                   conn: Connection) -> None:
    jobs.claim(conn, KIND, 1)
    conn.execute("UPDATE play_runs SET heartbeat = 0 WHERE id = 1")
    with jobs.Heartbeat(mirror_at, KIND, 1, interval=0.05):
        wait_for(lambda: jobs.get(conn, KIND, 1)["heartbeat"] > 0, "a heartbeat")
    beat = jobs.get(conn, KIND, 1)["heartbeat"]
    assert time.time() - beat < 60


def test_job_tables_are_checked() -> None:
    with pytest.raises(ValueError):
        jobs.JobKind("moves; DROP TABLE x", "move", "xfleet moves list", frozenset())


def test_the_four_kinds_share_the_bookkeeping_and_the_runner_shape(tmp_path: Path) -> None:
    """Moves, rollouts, compression runs and playbook runs are journaled jobs: their tables
    have the job columns, and each is driven by `Runner(...).run(job_id)` (mypy checks that
    each class below has the JobRunner shape)."""
    runners: list[type[jobs.JobRunner]] = [moves.Runner, rollout.Runner, compression.Applier,
                                           playbook.Player]
    assert all(callable(r.run) for r in runners)
    assert {"moves", "rollouts", "compression_runs", "play_runs"} <= set(jobs.KINDS)
    conn = mirror.connect(tmp_path / "kinds.db")
    for kind in jobs.KINDS.values():
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({kind.table})")}
        assert set(jobs.COLUMNS) <= cols, kind.table


def test_a_refusal_hint_names_the_job(conn: Connection, other_process: int) -> None:
    kind = jobs.JobKind("play_runs", "playbook run", "xfleet plays list", frozenset({"running"}),
                        busy_hint="pause it first (xfleet plays pause {id})")
    _hold(conn, 3, other_process, time.time())
    with pytest.raises(UsageError) as e:
        jobs.claim(conn, kind, 3)
    assert e.value.hint == "pause it first (xfleet plays pause 3)"


def test_take_refuses_names_that_are_not_identifiers(conn: Connection) -> None:
    with pytest.raises(ValueError):
        claims.take(conn, "play_runs", 1, {"step = 0, state": 1})


def test_save_writes_the_columns_and_the_journal_in_one_transaction(mirror_at: str) -> None:
    """jobs.save on moves (a kind with a journal): the columns and a move_log row; a failing
    write leaves neither; names that are not identifiers never reach SQL."""
    c = mirror.connect(mirror_at)
    try:
        cur = c.execute(
            "INSERT INTO moves (volume, source_node, target_node, target_volume, state, "
            "send_flags, receive_properties, verify, options, created_at, updated_at) VALUES "
            "('tank/x', 'n1', 'n2', 'tank/x', 'planned', '[]', '{}', 'sampled', '{}', 0, 0) "
            "RETURNING id")
        move_id = int(cur.fetchone()[0])
        jobs.save(c, moves.MOVES, move_id, {"state": "base", "step": "base copy"},
                  message="base copy")
        row = c.execute("SELECT state, step FROM moves WHERE id = ?", (move_id,)).fetchone()
        assert (row[0], row[1]) == ("base", "base copy")
        assert [tuple(r) for r in c.execute("SELECT state, message FROM move_log WHERE move = ?",
                                            (move_id,))] == [("base", "base copy")]
        with pytest.raises(Exception, match="no_such"):
            jobs.save(c, moves.MOVES, move_id, {"state": "catchup", "no_such": 1},
                      message="never")
        assert c.execute("SELECT state FROM moves WHERE id = ?", (move_id,)).fetchone()[0] \
            == "base"
        assert c.execute("SELECT count(*) FROM move_log WHERE move = ?",
                         (move_id,)).fetchone()[0] == 1
        with pytest.raises(ValueError, match="bad column"):
            jobs.save(c, moves.MOVES, move_id, {"state; DROP TABLE moves": 1})
    finally:
        c.close()
    with pytest.raises(ValueError, match="bad job table"):
        jobs.JobKind("moves", "move", "xfleet moves list", frozenset(), log=("move log", "m"))
