"""Running moves on the simulator: a node without a data path fails a move resumably, stream
slots, pause and resume, sampled verification (moves that carry data between simulated nodes:
test_runner_sim.py; real data in the lab: tests/lab/test_moves_real.py)."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest
from conftest import PATIENCE, run_cli, wait_for

from unit.ops.moves.conftest import Fleet, make_fleet, move_row
from xfleet import mirror
from xfleet.ops import moves
from xfleet.remote.local import LocalTransport
from xfleet.sim import SimTransport


def test_a_node_without_a_data_path_fails_the_move_and_says_so(tmp_path: Path) -> None:
    inv, inv_path, _ = make_fleet(tmp_path, data_path=False)
    res = run_cli("-i", str(inv_path), "move", "tank/app/db", "--to", "n2", "--json")
    assert res.code == 1 and "Traceback" not in res.err
    m = json.loads(res.out)
    assert m["state"] == "failed" and "no data path" in m["error"]["message"]
    # nothing on the target; the failed move is listed and can be aborted
    assert not SimTransport(inv.hosts["n2"], state_dir=inv.state_dir).run(
        ["zfs", "list", "tank/app/db"], check=False).ok
    res = run_cli("-i", str(inv_path), "moves", "list", "--json")
    assert [x["state"] for x in json.loads(res.out)] == ["failed"]
    res = run_cli("-i", str(inv_path), "moves", "abort", str(m["id"]))
    assert res.code != 0 and "--yes" in res.err  # no confirmation on a pipe
    res = run_cli("-i", str(inv_path), "moves", "abort", str(m["id"]), "--yes")
    assert res.code == 0, res.err
    conn = sqlite3.connect(str(inv.mirror))
    assert conn.execute("SELECT state FROM moves").fetchone()[0] == "aborted"


def test_stream_slots_count_this_process_and_live_moves_of_others(fleet: Fleet) -> None:
    import threading
    import time

    inv, _, _ = fleet
    inv.hosts["n1"].max_streams, inv.hosts["n2"].max_streams = 4, 2
    conn = mirror.connect(inv.mirror)
    move_row(conn, "n1", "n2", "base", 4242, time.time())  # another host's live move
    move_row(conn, "n1", "n2", "catchup", 4243, time.time() - 3600)  # dead: stale heartbeat
    move_row(conn, "n1", "n2", "done", None, time.time())  # finished
    me = moves.Move(move_row(conn, "n1", "n2", "planned", None, 0), "tank/x", "n1", "n2",
                    "tank/x", "planned")
    assert moves.streams_elsewhere(conn, me.id) == {"n1": 1, "n2": 1}
    slots = moves.StreamSlots(inv)
    halt = threading.Event()
    assert slots.acquire(conn, me, halt)  # n2: 1 elsewhere + 0 here < 2
    other = moves.Move(move_row(conn, "n1", "n2", "planned", None, 0), "tank/y", "n1", "n2",
                       "tank/y", "planned")
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(
        mirror.connect(inv.mirror), other, halt)))
    waiter.start()
    step = wait_for(lambda: conn.execute("SELECT step FROM moves WHERE id = ?",
                                         (other.id,)).fetchone()[0], "the waiter to say why")
    assert step == "waiting for a stream slot on n2 (max_streams 2)"
    assert got == []  # n2 full: 1 elsewhere + 1 here (it wrote that step instead of returning)
    slots.release(me)
    waiter.join(PATIENCE)
    assert got == [True]
    halt.set()  # a halted waiter gives up
    third = moves.Move(move_row(conn, "n1", "n2", "planned", None, 0), "tank/z", "n1", "n2",
                       "tank/z", "planned")
    assert slots.acquire(conn, third, halt) is False


def test_pause_of_a_move_nobody_runs_and_resume_goes_back(fleet: Fleet) -> None:
    inv, inv_path, _ = fleet
    conn = mirror.connect(inv.mirror)
    m = moves.create(inv, conn, moves.plan_move(inv, conn, "tank/app/db", "n2"))
    res = run_cli("-i", str(inv_path), "moves", "pause", str(m.id), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)[0]["state"] == "paused"
    assert moves.get(conn, m.id).options["failed_state"] == "planned"
    assert [x.state for x in moves.listing(conn, active_only=True)] == ["paused"]
    with pytest.raises(moves.MoveError):  # still the volume's move: no second one
        moves.plan_move(inv, conn, "tank/app/db", "n2")
    # resume goes back to planned, then to the nodes, and to its end
    res = run_cli("-i", str(inv_path), "moves", "resume", str(m.id), "--json")
    after = json.loads(res.out)
    assert after["state"] == "done", after
    assert any("resuming in planned" in e["message"] for e in moves.log(conn, m.id))
    res = run_cli("-i", str(inv_path), "moves", "pause", "999")
    assert res.code != 0 and "no move with id 999" in res.err and "Traceback" not in res.err


def test_sampled_verification_hashes_each_slice_in_one_process(tmp_path: Path) -> None:
    """The verify program, run as a node runs it: each 1 MiB slice's SHA-256 at its offset,
    a slice past the end hashing nothing; equal to hashing the slices here."""
    data = random.Random(3).randbytes(5 * 2**20 + 4096)
    dev = tmp_path / "vol"
    dev.write_bytes(data)
    t = LocalTransport("local")
    out = t.run(moves.sample_hashes_argv(str(dev), [4, 0, 5, 9])).stdout
    want = [f"{hashlib.sha256(data[o << 20:(o + 1) << 20]).hexdigest()} {o}" for o in (4, 0, 5, 9)]
    assert out.splitlines() == want
    assert t.commands == 1
