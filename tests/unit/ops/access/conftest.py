"""A simulated fleet with targets (the simulated daemon behind the command driver) and three
initiators whose host NQNs are in the mirror, as `xfleet initiators --read` leaves them."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from xfleet import mirror, sim
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Location, location
from xfleet.ops.access import initiators
from xfleet.ops.sync import sync
from xfleet.ops.target import driver_for

HOSTS = {f"db{i}": f"nqn.2014-08.org.nvmexpress:uuid:{i:08d}-0000-4000-8000-00000000000{i}"
         for i in (1, 2, 3)}


def access_inventory(path: Path, nodes: dict[str, dict[str, int]]) -> Path:
    """Sim nodes with the simulated target, and the initiators db1..db3 (kind local)."""
    write_sim_inventory(path, nodes, extra=f"    target: {json.dumps(sim.TARGET)}")
    with path.open("a") as f:
        f.write("  initiators:\n" + "".join(f"    {n}: {{kind: local}}\n" for n in HOSTS))
    return path


@dataclass
class Fleet:
    inv: Inventory
    where: Location
    conns: Connections

    def exports(self, node: str = "n1") -> dict[str, tuple[str, bool, tuple[str, ...]]]:
        """{volume: (nqn, allow_any_host, hosts)} as the node's target lists them."""
        d = driver_for(node, self.conns.get(node), self.inv.hosts[node].target)
        return {e.device.removeprefix("/dev/zvol/"): (e.nqn, e.allow_any_host, e.hosts)
                for e in d.iter_exports()}

    def prop(self, volume: str, node: str = "n1") -> str:
        return self.conns.get(node).run(["zfs", "get", "-H", "-o", "value", "xfleet:hosts",
                                         volume]).stdout.strip()


def make_fleet(tmp_path: Path, nodes: dict[str, dict[str, int]]
               ) -> Generator[Fleet, None, None]:
    inv = inventory.load(access_inventory(tmp_path / "fleet.yaml", nodes))
    where = location(str(tmp_path / "mirror.db"))
    assert sync(inv, where).ok
    conn = mirror.connect(where)
    initiators.record(conn, {n: (nqn, None) for n, nqn in HOSTS.items()})
    conn.close()
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        yield Fleet(inv, where, conns)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """n1 (30 volumes) and n2 (20), synced."""
    yield from make_fleet(tmp_path, {"n1": {"seed": 1, "volumes": 30},
                                     "n2": {"seed": 2, "volumes": 20}})
