"""Writers of the mirror never wait long for each other (issue #16): a full sync holds the
write lock only in short chunks, never while the node lists; a writer that meets the lock
retries and says what it waits for; a change made on a node is journaled before it runs and
never reported as failed because the mirror was busy; killed syncs do not stay `running`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PATIENCE, ROOT, run_cli, wait_for, write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import MirrorError


def _runs(db: Path, node: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM sync_runs WHERE node = ? ORDER BY id",
                            (node,)).fetchall()
    finally:
        conn.close()


def _listing(db: Path, node: str) -> bool:
    """The node's full sync is under way (its run is recorded, its listing not applied)."""
    try:
        return db.exists() and any(r["status"] == "running" and r["kind"] == "full"
                                   for r in _runs(db, node))
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return False


def test_a_long_full_sync_never_blocks_the_other_writers(tmp_path: Path) -> None:
    # `slow` lists 40 rows a second: its full sync takes minutes (as a 100k-volume node does)
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {
        "slow": {"seed": 1, "volumes": 2000, "rows_per_second": 40},
        "other": {"seed": 2, "volumes": 20}})
    db = tmp_path / "mirror.db"
    first = run_cli("-i", str(inv), "sync", "--node", "other", "--json")
    assert first.code == 0, first.err
    argv = [sys.executable, "-m", "xfleet", "-i", str(inv), "sync", "--full", "--node", "slow",
            "--json"]
    slow = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        wait_for(lambda: _listing(db, "slow"), "the full sync of slow to be listing")
        # a lifecycle command on another node: made, journaled and mirrored, not "FAILED"
        snap = run_cli("-i", str(inv), "snapshot", "tank/*", "--node", "other", "--type",
                       "volume", "--name", "during", "--yes", "--json")
        assert snap.code == 0, f"exit {snap.code}\n{snap.out}\n{snap.err}"
        assert "locked" not in snap.err
        # watch (its heartbeat) and a second sync, meanwhile
        watch = run_cli("-i", str(inv), "watch", "--node", "other", "--duration", "3",
                        "--json-lines")
        assert watch.code == 0 and "Traceback" not in watch.err, watch.err
        again = run_cli("-i", str(inv), "sync", "--node", "other", "--json")
        assert again.code == 0, again.err
        # all of it while the slow node was still listing: nobody waited for it
        assert slow.poll() is None, "the slow sync ended first: this test proved nothing"
        assert _listing(db, "slow")
    finally:
        slow.kill()
        slow.communicate(timeout=60)
    conn = sqlite3.connect(db)
    volumes = conn.execute("SELECT count(*) FROM datasets WHERE node = 'other' AND type = "
                           "'volume'").fetchone()[0]
    journal = conn.execute("SELECT state, ok, argv FROM lifecycle_log WHERE op = 'snapshot' "
                           "AND node = 'other'").fetchall()
    made = conn.execute("SELECT count(*) FROM datasets WHERE node = 'other' AND name LIKE "
                        "'%@during'").fetchone()[0]
    conn.close()
    assert journal and all(state == "done" and ok == 1 for state, ok, _ in journal), journal
    assert sum(len(json.loads(argv)) - 2 for _, _, argv in journal) == volumes == made

    # the killed sync's run is not `running` for ever: the node's next sync closes it
    (killed,) = [r for r in _runs(db, "slow") if r["status"] == "running"]
    inv.write_text(inv.read_text().replace("rows_per_second: 40", "rows_per_second: 0"))
    done = run_cli("-i", str(inv), "sync", "--node", "slow", "--json")
    assert done.code == 0, done.err
    runs = {r["id"]: r for r in _runs(db, "slow")}
    assert runs[killed["id"]]["status"] == "interrupted"
    assert "ended before it finished" in runs[killed["id"]]["error"]
    assert [r["status"] for r in runs.values()][-1] == "ok"


# `python -m xfleet` with SIGINT as a terminal leaves it: a suite started as a background job
# (CI runners, nohup, `make test &`) hands its children SIGINT ignored, and Python keeps it so
INTERACTIVE = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "runpy.run_module('xfleet', run_name='__main__', alter_sys=True)")


def test_ctrl_c_stops_a_long_full_sync_at_once_and_its_run_says_so(tmp_path: Path) -> None:
    # the listing alone takes ~150 s (2000 volumes at 40 rows/s): Ctrl-C must not wait for it
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {
        "slow": {"seed": 1, "volumes": 2000, "rows_per_second": 40}})
    db = tmp_path / "mirror.db"
    argv = [sys.executable, "-c", INTERACTIVE, "-i", str(inv), "sync", "--full", "--node",
            "slow"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        wait_for(lambda: _listing(db, "slow"), "the full sync of slow to be listing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
    assert [r["status"] for r in _runs(db, "slow")] == ["interrupted"]


def test_a_writer_that_meets_the_lock_waits_and_says_what_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "m.db"
    holder = mirror.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write, as it looks from here
    released = threading.Event()

    def release_when_told() -> None:
        released.wait(60)
        holder.execute("COMMIT")

    waiter = mirror.connect(db)
    t = threading.Thread(target=release_when_told)
    t.start()
    try:
        with caplog.at_level("WARNING", logger="xfleet.mirror"):
            # give up quickly when nobody lets go: a clear error, not "database is locked"
            with pytest.raises(MirrorError) as exc:
                mirror.begin(waiter, "a test row", patience=0.5)
            assert "could not record a test row" in str(exc.value)
            assert exc.value.hint and "ps -ef" in exc.value.hint
            assert not waiter.in_transaction
            # wait for the lock, saying so, and get it once the holder commits
            got: list[float] = []

            def wait() -> None:
                mirror.begin(waiter, "a test row", patience=60)
                got.append(time.monotonic())

            w = threading.Thread(target=wait)
            w.start()
            wait_for(lambda: any("waiting for the mirror's write lock to record a test row"
                                 in r.getMessage() for r in caplog.records),
                     "the waiting writer to say what it waits for")
            assert not got
            released.set()
            w.join(60)
            assert got and waiter.in_transaction
            waiter.execute("COMMIT")
    finally:
        released.set()
        t.join(60)
        holder.close()
        waiter.close()


def test_a_failed_write_is_reported_as_itself_not_as_a_failed_rollback(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    conn = mirror.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = " +
                 str(conn.execute("PRAGMA page_count").fetchone()[0] + 2))
    with pytest.raises(sqlite3.OperationalError) as exc, \
            mirror.transaction(conn, "a big row"):  # noqa: PT012
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 1_000_000,))
    assert "full" in str(exc.value)  # SQLITE_FULL, not "cannot rollback"
    assert not conn.in_transaction
    conn.close()
