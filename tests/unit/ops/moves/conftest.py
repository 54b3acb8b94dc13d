"""Fixtures and helpers of the move tests: a small simulated fleet with a volume to move."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import Connection
from xfleet.mirror.store import inserted_id
from xfleet.ops import moves
from xfleet.ops.sync import sync
from xfleet.remote.relay import RelayResult, relay
from xfleet.remote.transport import Transport
from xfleet.sim import SimTransport

Fleet = tuple[inventory.Inventory, Path, SimTransport]  # the inventory, its file, node n1


def with_mirror(inv_path: Path, mirror_at: str) -> Path:
    """The inventory `inv_path` (written by write_sim_inventory) with its mirror at
    `mirror_at`: an SQLite path or a PostgreSQL URL (the `mirror_at` fixture)."""
    text = inv_path.read_text()
    assert "mirror: mirror.db\n" in text, text
    inv_path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    return inv_path


def make_fleet(tmp_path: Path, mirror_at: str = "mirror.db", *,
               data_path: bool = True) -> Fleet:
    """n1 (80 volumes and tank/app/db, 1G sparse with snapshots @a and @b) and n2, synced
    into the mirror at `mirror_at`. Without `data_path`, n2 refuses streams (a move to it
    fails in its base copy, journaled and resumable)."""
    n2: dict[str, object] = {"volumes": 20, "seed": 5}
    if not data_path:
        n2["data_path"] = "false"
    inv_path = with_mirror(write_sim_inventory(
        tmp_path / "fleet.yaml", {"n1": {"volumes": 80, "seed": 4}, "n2": n2}), mirror_at)
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "-o", "compression=zstd", "-o",
           "xfleet:tenant=acme", "tank/app/db"])
    t.run(["zfs", "snapshot", "tank/app/db@a"])
    t.run(["zfs", "snapshot", "tank/app/db@b"])
    assert sync(inv).ok
    return inv, inv_path, t


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> Fleet:
    """The same fleet on each engine of the mirror (SQLite, PostgreSQL)."""
    return make_fleet(tmp_path, mirror_at)


@pytest.fixture
def stuck_at(tmp_path: Path, mirror_at: str) -> Fleet:
    """The fleet on each engine, its n2 without a data path: moves to it fail resumably."""
    return make_fleet(tmp_path, mirror_at, data_path=False)


def move_row(conn: Connection, src: str, dst: str, state: str, pid: int | None,
              beat: float) -> int:
    cur = conn.execute(
        "INSERT INTO moves (volume, source_node, target_node, target_volume, state, send_flags,"
        " receive_properties, verify, options, created_at, updated_at, pid, host, heartbeat) "
        "VALUES ('tank/x', ?, ?, 'tank/x', ?, '[]', '{}', 'sampled', '{}', 0, 0, ?, "
        "'elsewhere', ?) RETURNING id", (src, dst, state, pid, beat))
    return inserted_id(cur)


# ---------------------------------------------------------------------------------------------
# running moves in this process (tests of the simulator's data path)


def node(inv: inventory.Inventory, name: str) -> SimTransport:
    """Another transport of a simulated node (same state: what the runner's sees)."""
    return SimTransport(inv.hosts[name], state_dir=inv.state_dir)


def planned(inv: inventory.Inventory, volume: str = "tank/app/db",
            **options: Any) -> moves.Move:
    """A move of `volume` to n2, journaled (state planned) with `options`."""
    conn = mirror.connect(inv.mirror)
    try:
        return moves.create(inv, conn, moves.plan_move(inv, conn, volume, "n2",
                                                       options=options), options)
    finally:
        conn.close()


def run_move(inv: inventory.Inventory, m: moves.Move, **runner: Any) -> moves.Move:
    """Run `m` with a Runner of its own (keywords: the Runner's, e.g. progress)."""
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        return moves.Runner(inv, inv.mirror, conns, **runner).run(m.id)


def killing_relay(times: int, flag: str = "-I") -> Callable[..., RelayResult]:
    """A stand-in for xfleet.remote.relay.relay whose first `times` streams sent with `flag`
    have their receive killed after about 2 MiB (as `pkill zfs receive` would); the others
    relay."""
    killed: list[str] = []

    def run(src: Transport, src_argv: list[str], dst: Transport, dst_argv: list[str],
            **kw: Any) -> RelayResult:
        if len(killed) >= times or flag not in src_argv:
            return relay(src, src_argv, dst, dst_argv, **kw)
        killed.append(" ".join(src_argv))
        recv, send = dst.start(dst_argv), src.start(src_argv)
        for _ in range(3):
            recv.write(send.read(1 << 20))
        recv.kill()
        send.kill()
        return RelayResult(2 << 20, 0.1, send.wait(), recv.wait(), "", "")

    return run
