"""Move planning and preflight from the mirror (no data path: the lab tests move real data,
tests/lab/test_moves_real.py), the journal, and the CLI's refusals."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest
from conftest import FIXTURES, PATIENCE, run_cli, wait_for, write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops import moves
from xfleet.ops.sync import sync
from xfleet.remote.local import LocalTransport
from xfleet.sim import SimTransport


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[inventory.Inventory, Path, SimTransport]:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 80, "seed": 4},
                                                             "n2": {"volumes": 20, "seed": 5}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "-o", "compression=zstd", "-o",
           "xfleet:tenant=acme", "tank/app/db"])
    t.run(["zfs", "snapshot", "tank/app/db@a"])
    t.run(["zfs", "snapshot", "tank/app/db@b"])
    assert sync(inv).ok
    return inv, inv_path, t


def test_plan_carries_properties_and_snapshots_and_chooses_flags(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    p = moves.plan_move(inv, conn, "tank/app/db", "n2")
    assert (p.source_node, p.target_node, p.target_volume) == ("n1", "n2", "tank/app/db")
    assert p.send_flags == ["-L", "-c"]  # same compression on the target: blocks as stored
    assert p.receive_properties == {"compression": "zstd", "volmode": "none",
                                    "xfleet:tenant": "acme"}
    assert p.snapshots == ["a", "b"]
    assert any("zfs send -L -c tank/app/db@a" in c for c in p.commands)
    assert any("-I @a" in c for c in p.commands)
    recompress = moves.plan_move(inv, conn, "tank/app/db", "n2",
                                 options={"compression": "lz4"})
    assert recompress.send_flags == ["-L"]  # recompressed by the target
    assert recompress.receive_properties["compression"] == "lz4"
    m = moves.Move(7, "tank/app/db", "n1", "n2", "tank/app/db", "planned",
                   receive_properties=p.receive_properties)
    assert moves.receive_argv(m) == [
        "zfs", "receive", "-s", "-u", "-o", "compression=zstd", "-o", "volmode=none",
        "-o", "xfleet:tenant=acme", "tank/app/db"]


def test_preflight_refusals(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, _, t = fleet
    conn = mirror.connect(inv.mirror)

    def refused(volume: str, target: str, **kw: object) -> str:
        with pytest.raises(moves.MoveError) as exc:
            moves.plan_move(inv, conn, volume, target, **kw)  # type: ignore[arg-type]
        return exc.value.message

    assert "no node named" in refused("tank/app/db", "n9")
    assert "not in the mirror" in refused("tank/app/nope", "n2")
    assert "already on n1" in refused("tank/app/db", "n1")
    assert "only volumes" in refused("tank/app", "n2")
    assert "no pool" in refused("tank/app/db", "n2/other")
    t.run(["zfs", "clone", "tank/app/db@a", "tank/app/branch"])
    assert sync(inv, nodes=["n1"]).ok
    assert "clone" in refused("tank/app/db", "n2")
    t2 = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    t2.run(["zfs", "create", "-p", "-s", "-V", "1G", "tank/app/branch"])
    assert sync(inv, nodes=["n2"]).ok
    assert "several nodes" in refused("tank/app/branch", "n2")
    assert "already has a volume named tank/app/branch" in refused("tank/app/branch", "n2",
                                                                    source_node="n1")
    t.run(["zfs", "create", "-V", "10G", "tank/app/thick"])
    assert sync(inv, nodes=["n1"]).ok
    conn.execute("UPDATE pools SET free = 10 * 1024 * 1024 * 1024 WHERE node = 'n2'")
    assert "volsize of a thick volume" in refused("tank/app/thick", "n2")


def test_journal_create_list_and_single_active_move(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    p = moves.plan_move(inv, conn, "tank/app/db", "n2")
    m = moves.create(inv, conn, p, {"verify": "full"})
    assert m.state == "planned" and m.verify == "full" and m.options["max_rounds"] == 5
    assert [x.id for x in moves.listing(conn, active_only=True)] == [m.id]
    assert "planned" in moves.log(conn, m.id)[0]["message"]
    with pytest.raises(moves.MoveError) as exc:
        moves.plan_move(inv, conn, "tank/app/db", "n2")
    assert f"already has move {m.id}" in exc.value.message


def test_the_simulator_has_no_data_path_and_says_so(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, inv_path, _ = fleet
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
    conn = sqlite3.connect(inv.mirror)
    assert conn.execute("SELECT state FROM moves").fetchone()[0] == "aborted"


def test_cli_dry_run_and_errors(fleet) -> None:  # type: ignore[no-untyped-def]
    _, inv_path, _ = fleet
    res = run_cli("-i", str(inv_path), "move", "tank/app/db", "--to", "n2", "--dry-run")
    assert res.code == 0 and "zfs receive -s -u" in res.out and "note:" in res.out
    res = run_cli("-i", str(inv_path), "move", "tank/app/db", "--to", "n2", "-n", "--json")
    assert json.loads(res.out)["target_volume"] == "tank/app/db"
    res = run_cli("-i", str(inv_path), "move", "tank/app/db;rm", "--to", "n2")
    assert res.code != 0 and "Traceback" not in res.err and "not allowed" in res.err
    res = run_cli("-i", str(inv_path), "moves", "show", "99")
    assert res.code != 0 and "no move with id 99" in res.err


def test_drain_plans_every_volume_biggest_first_balanced_by_room(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, inv_path, t = fleet
    t.run(["zfs", "clone", "tank/app/db@a", "tank/app/branch"])
    assert sync(inv, nodes=["n1"]).ok
    conn = mirror.connect(inv.mirror)
    plans, refused = moves.plan_drain(inv, conn, "n1")
    vols = {r[0] for r in conn.execute(
        "SELECT name FROM datasets WHERE node = 'n1' AND type = 'volume'")}
    on_n2 = {r[0] for r in conn.execute("SELECT name FROM datasets WHERE node = 'n2'")}
    assert {p.volume for p in plans} | {v for v, _ in refused} == vols
    assert dict(refused)["tank/app/db"].startswith("tank/app/db has 1 clone")
    assert all(v in on_n2 for v, why in refused if "already has" in why)
    assert all(p.target_node == "n2" for p in plans)
    sizes = [p.needed_bytes for p in plans]
    assert sizes == sorted(sizes, reverse=True)
    free = conn.execute("SELECT free FROM pools WHERE node = 'n2'").fetchone()[0]
    assert sum(sizes) <= free
    res = run_cli("-i", str(inv_path), "drain", "n1", "--dry-run", "--json")
    out = json.loads(res.out)
    assert len(out["moves"]) == len(plans) and len(out["refused"]) == len(refused)
    res = run_cli("-i", str(inv_path), "drain", "n1")
    assert res.code != 0 and "--yes" in res.err  # no confirmation on a pipe: nothing started
    assert conn.execute("SELECT count(*) FROM moves").fetchone()[0] == 0


def test_features_needed_follow_block_size_compression_and_encryption() -> None:
    assert moves.features_needed(16384, "lz4", False) == ["lz4_compress"]
    assert moves.features_needed(1024**2, "zstd-3", True) == [
        "large_blocks", "zstd_compress", "encryption"]
    assert moves.features_needed(131072, "off", False) == []


def test_preflight_reads_the_nodes_and_the_simulated_features_match_real_zpool(fleet) -> None:  # type: ignore[no-untyped-def]
    inv, _, t = fleet
    features = ",".join(f"feature@{f}" for f in moves.FEATURES)
    real = (FIXTURES / "real" / "zpool_get_features.txt").read_text()
    out = t.run(["zpool", "get", "-H", "-o", "property,value", features + ",feature@nope",
                 "tank"]).stdout
    assert out == real  # an unknown feature is left out silently, as by real zpool
    n2 = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    before = (t.commands, n2.commands)
    pf = moves.preflight(t, n2, "tank/app/db", "tank/app/db", ["-L", "-c"],
                         {"compression": "zstd", "volmode": "none"})
    assert (t.commands - before[0], n2.commands - before[1]) == (1, 1)
    assert pf.send_flags == ["-L", "-c"] and pf.needed == ["zstd_compress"]
    assert pf.features["zstd_compress"] == "enabled" and pf.notes == []


def _move_row(conn: sqlite3.Connection, src: str, dst: str, state: str, pid: int | None,
              beat: float) -> int:
    cur = conn.execute(
        "INSERT INTO moves (volume, source_node, target_node, target_volume, state, send_flags,"
        " receive_properties, verify, options, created_at, updated_at, pid, host, heartbeat) "
        "VALUES ('tank/x', ?, ?, 'tank/x', ?, '[]', '{}', 'sampled', '{}', 0, 0, ?, "
        "'elsewhere', ?)", (src, dst, state, pid, beat))
    conn.commit()
    assert cur.lastrowid is not None
    return cur.lastrowid


def test_stream_slots_count_this_process_and_live_moves_of_others(fleet) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    inv, _, _ = fleet
    inv.hosts["n1"].max_streams, inv.hosts["n2"].max_streams = 4, 2
    conn = mirror.connect(inv.mirror)
    _move_row(conn, "n1", "n2", "base", 4242, time.time())  # another host's live move
    _move_row(conn, "n1", "n2", "catchup", 4243, time.time() - 3600)  # dead: stale heartbeat
    _move_row(conn, "n1", "n2", "done", None, time.time())  # finished
    me = moves.Move(_move_row(conn, "n1", "n2", "planned", None, 0), "tank/x", "n1", "n2",
                    "tank/x", "planned")
    assert moves._streams_elsewhere(conn, me.id) == {"n1": 1, "n2": 1}
    slots = moves.StreamSlots(inv)
    halt = threading.Event()
    assert slots.acquire(conn, me, halt)  # n2: 1 elsewhere + 0 here < 2
    other = moves.Move(_move_row(conn, "n1", "n2", "planned", None, 0), "tank/y", "n1", "n2",
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
    third = moves.Move(_move_row(conn, "n1", "n2", "planned", None, 0), "tank/z", "n1", "n2",
                       "tank/z", "planned")
    assert slots.acquire(conn, third, halt) is False


def test_pause_of_a_move_nobody_runs_and_resume_goes_back(fleet) -> None:  # type: ignore[no-untyped-def]
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
    # resume goes back to planned, then to the nodes (the simulator has no data path)
    res = run_cli("-i", str(inv_path), "moves", "resume", str(m.id), "--json")
    after = json.loads(res.out)
    assert after["state"] == "failed" and "no data path" in after["error"]["message"]
    assert any("resuming in planned" in e["message"] for e in moves.log(conn, m.id))
    res = run_cli("-i", str(inv_path), "moves", "pause", "999")
    assert res.code != 0 and "no move with id 999" in res.err and "Traceback" not in res.err


def test_eta_from_rate_and_estimate_never_past_the_end() -> None:
    m = moves.Move(1, "tank/v", "a", "b", "tank/v", "base", bytes_total=1000, bytes_done=400,
                   rate=100.0)
    assert m.eta == 6.0 and m.progress == 0.4
    m.bytes_done = 1500  # an estimate that was low: never above 100 %, never negative
    assert m.progress == 1.0 and m.eta == 0.0
    m.state = "verify"
    assert m.eta is None
    assert "eta" in m.to_dict()


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
