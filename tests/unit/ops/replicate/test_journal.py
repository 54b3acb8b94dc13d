"""The replica journal (xfleet/ops/replicate/journal.py) on a real mirror: finding a replica by id
or by either end's NODE:VOLUME with clear errors, the claim of a round (another live holder
keeps its replicas; a dead process on this host, or a stale heartbeat elsewhere, does not), and
a replica's lag against its RPO."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.mirror.backend import Connection
from xfleet.mirror.store import inserted_id
from xfleet.ops.replicate import journal


def _add(conn: Connection, volume: str, target: str = "n2", *, as_of: float | None = None,
         state: str = "idle", rpo: float = 3600, pid: int | None = None,
         host: str | None = None, beat: float | None = None, policy: str = "db") -> int:
    now = time.time()
    cur = conn.execute(
        "INSERT INTO replicas (policy, source_node, volume, target_node, target_volume, rpo, "
        "state, as_of, pid, host, heartbeat, created_at, updated_at) VALUES "
        "(?, 'n1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (policy, volume, target, volume, rpo, state, as_of, pid, host, beat, now, now))
    return inserted_id(cur)


@pytest.fixture
def conn(tmp_path: Path) -> Connection:
    return mirror.connect(tmp_path / "mirror.db")


def test_a_replica_is_found_by_id_or_either_end(conn: Connection) -> None:
    a = _add(conn, "tank/a")
    _add(conn, "tank/b", "n2")
    _add(conn, "tank/b", "n3")
    assert journal.find(conn, str(a)).volume == "tank/a"
    assert journal.find(conn, "n1:tank/a").id == a
    assert journal.find(conn, "n2:tank/a").id == a  # by its copy
    with pytest.raises(journal.ReplicaError, match="has 2 replicas") as exc:
        journal.find(conn, "n1:tank/b")
    assert exc.value.hint == "give the replica's id"
    with pytest.raises(journal.ReplicaError, match="no replica of or at n1:tank/zz"):
        journal.find(conn, "n1:tank/zz")
    with pytest.raises(journal.ReplicaError, match="names no replica"):
        journal.find(conn, "tank/a")
    with pytest.raises(Exception, match="no replica with id 99"):
        journal.find(conn, "99")


def test_a_round_claims_only_what_no_other_live_process_holds(conn: Connection) -> None:
    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)  # a process of this host that has exited
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        free = _add(conn, "tank/free")
        live = _add(conn, "tank/live", pid=other.pid, host=here, beat=time.time())
        gone = _add(conn, "tank/gone", pid=dead_pid, host=here, beat=time.time())
        far = _add(conn, "tank/far", pid=1, host="elsewhere", beat=time.time())
        stale = _add(conn, "tank/stale", pid=1, host="elsewhere", beat=time.time() - 3600)
        mine = _add(conn, "tank/mine", pid=os.getpid(), host=here, beat=time.time())
        got = journal.claim_many(conn, [free, live, gone, far, stale, mine])
        assert sorted(got) == sorted([free, gone, stale, mine])
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, pid, host FROM replicas")}
        assert rows[live] == (other.pid, here) and rows[far] == (1, "elsewhere")
        assert all(rows[i] == (os.getpid(), here) for i in got)
        journal.release_all(conn, got)
        assert conn.execute("SELECT count(*) FROM replicas WHERE pid = ?",
                            (os.getpid(),)).fetchone()[0] == 0
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=30)


def test_lag_and_rpo(conn: Connection) -> None:
    now = time.time()
    r = journal.get(conn, _add(conn, "tank/a", "n7", as_of=now - 600, rpo=900))
    assert r.tag == "xfleet-replica-n7"  # one tag per destination node
    d = r.to_dict(now)
    assert d["lag"] == pytest.approx(600) and d["within_rpo"] is True
    late = journal.get(conn, _add(conn, "tank/b", as_of=now - 1000, rpo=900)).to_dict(now)
    assert late["within_rpo"] is False
    never = journal.get(conn, _add(conn, "tank/c")).to_dict(now)
    assert never["lag"] is None and never["within_rpo"] is False
