"""Move and drain planning from the mirror, preflight on the nodes, and the CLI's refusals."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, run_cli

from unit.ops.moves.conftest import Fleet
from xfleet import mirror
from xfleet.ops import moves
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


def test_plan_carries_properties_and_snapshots_and_chooses_flags(fleet: Fleet) -> None:
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


def test_preflight_refusals(fleet: Fleet) -> None:
    inv, _, t = fleet
    conn = mirror.connect(inv.mirror)

    def refused(volume: str, target: str, source_node: str | None = None) -> str:
        with pytest.raises(moves.MoveError) as exc:
            moves.plan_move(inv, conn, volume, target, source_node=source_node)
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


def test_cli_dry_run_and_errors(fleet: Fleet) -> None:
    _, inv_path, _ = fleet
    res = run_cli("-i", str(inv_path), "move", "tank/app/db", "--to", "n2", "--dry-run")
    assert res.code == 0 and "zfs receive -s -u" in res.out and "note:" in res.out
    res = run_cli("-i", str(inv_path), "move", "tank/app/db", "--to", "n2", "-n", "--json")
    assert json.loads(res.out)["target_volume"] == "tank/app/db"
    res = run_cli("-i", str(inv_path), "move", "tank/app/db;rm", "--to", "n2")
    assert res.code != 0 and "Traceback" not in res.err and "not allowed" in res.err
    res = run_cli("-i", str(inv_path), "moves", "show", "99")
    assert res.code != 0 and "no move with id 99" in res.err


def test_drain_plans_every_volume_biggest_first_balanced_by_room(fleet: Fleet) -> None:
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


def test_preflight_reads_the_nodes_and_the_simulated_features_match_real_zpool(
        fleet: Fleet) -> None:
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
