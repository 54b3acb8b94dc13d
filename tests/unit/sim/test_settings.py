"""SimSettings: the inventory's `sim:` mapping, validated, with defaults derived from the
node's name."""

from __future__ import annotations

import pytest

from xfleet.core.errors import UsageError
from xfleet.remote.host import Host
from xfleet.sim import SimTransport

from .simkit import listing, records, sim


def test_default_seed_comes_from_the_node_name() -> None:
    def unseeded(node: str) -> list[str]:
        t = SimTransport(Host(name=node, kind="sim", sim={"volumes": 50}))
        return listing(t)

    assert unseeded("a") == unseeded("a")
    assert unseeded("a") != unseeded("b")


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError, match="unknown sim setting 'volume'"):
        sim(10, volume=5)
    with pytest.raises(UsageError, match="clone_fraction"):
        sim(10, clone_fraction=2)
    t = sim(0)
    assert listing(t) == [listing(t)[0]] and listing(t)[0].startswith("tank\t")


def test_faults_are_validated() -> None:
    assert sim(10, faults={"tank": "offline"}).settings.faults == (("tank", "offline"),)
    with pytest.raises(UsageError, match="faults"):
        sim(10, faults={"tank": "melted"})
    with pytest.raises(UsageError, match="faults"):
        sim(10, faults=["tank"])
    with pytest.raises(UsageError, match="needs vdev 'mirror'"):
        sim(10, vdev="single", faults={"tank": "checksum"})


def test_snapshot_and_clone_settings() -> None:
    none = records(sim(300, seed=1, snapshots=0))
    assert not any(r.type == "snapshot" for r in none)
    assert not any(r.origin for r in none)
    many = records(sim(300, seed=1, snapshots=4, max_snapshots=8, clone_fraction=0.2))
    snaps = sum(1 for r in many if r.type == "snapshot")
    assert snaps > 300 * 3
    assert sum(1 for r in many if r.origin) > 0.1 * snaps
