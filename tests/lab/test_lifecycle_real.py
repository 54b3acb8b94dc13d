"""Lifecycle operations on real OpenZFS over real SSH: snapshot, clone, destroy, set and
resize through the CLI, batched (remote commands counted), refusals (clones, holds, shrink),
and the mirror equal to a fresh full sync afterwards."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .labkit import TENANT, Lab

pytestmark = pytest.mark.lab

NODE = "lab1"
VOLS = [f"tank/lc/v{i:02d}" for i in range(12)]


def sync(lab: Lab, db: Path, *more: str) -> None:
    res = lab.xfleet("sync", *more, "--json", mirror=db)
    assert res.code == 0, res.explain()


def structure(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute(
            "SELECT node, name, type, guid, origin, volsize, volblocksize, compression, "
            "refreservation, tenant, user_properties FROM datasets"))
    finally:
        conn.close()


def one(db: Path, sql: str, *args: Any) -> Any:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(sql, args).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lab.run(NODE, ["zfs", "create", "-p", "-o", "volmode=none", "tank/lc"])
    for v in VOLS:
        lab.run(NODE, ["zfs", "create", "-s", "-V", "64M", "-o", f"{TENANT}=lc", v])
    path = tmp_path_factory.mktemp("lifecycle") / "lab.db"
    sync(lab, path)
    return path


def test_snapshot_is_one_command_per_pool_whatever_the_count(lab: Lab, db: Path) -> None:
    few = lab.xfleet("snapshot", *VOLS[:3], "--node", NODE, "--name", "few", "--json",
                     mirror=db)
    assert few.code == 0, few.explain()
    many = lab.xfleet("snapshot", "--tenant", "lc", "--name", "many", "--json", mirror=db)
    assert many.code == 0, many.explain()
    # the change, then the mirror's batched re-fetch (the listing, the user properties): the
    # same for 3 and 12 volumes
    assert few.json()["commands"] == many.json()["commands"] == 3
    snaps = lab.run(NODE, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                           "tank/lc"]).stdout.split()
    assert sum(s.endswith("@many") for s in snaps) == 12
    assert sum(s.endswith("@few") for s in snaps) == 3
    assert one(db, "SELECT count(*) FROM datasets WHERE name GLOB 'tank/lc/*@many'") == 12
    again = lab.xfleet("snapshot", "--tenant", "lc", "--name", "many", "--json", mirror=db)
    assert again.code == 0 and again.json()["commands"] == 0, again.explain()


def test_set_and_resize_in_batches_and_validation(lab: Lab, db: Path) -> None:
    bad = lab.xfleet("set", "compression=zstd-42", "--tenant", "lc", "--yes", mirror=db)
    assert bad.code == 2 and "not a valid value for compression" in bad.err, bad.explain()
    ro = lab.xfleet("set", "volblocksize=8K", "--tenant", "lc", "--yes", mirror=db)
    assert ro.code == 2 and "read-only" in ro.err, ro.explain()
    res = lab.xfleet("set", "compression=zstd", "xfleet:tier=free", "--tenant", "lc", "--yes",
                     "--json", mirror=db)
    assert res.code == 0, res.explain()
    assert res.json()["commands"] == 3  # the set, the re-fetch's listing and properties
    got = lab.run(NODE, ["zfs", "get", "-H", "-o", "value", "-r", "-t", "volume",
                         "compression", "tank/lc"]).stdout.split()
    assert got == ["zstd"] * 12
    shrink = lab.xfleet("resize", VOLS[0], "--node", NODE, "--size", "32M", mirror=db)
    assert shrink.code != 0 and "shrinking is refused" in shrink.err, shrink.explain()
    odd = lab.xfleet("resize", VOLS[0], "--node", NODE, "--size", "+1000", mirror=db)
    assert odd.code != 0 and "multiple of its volblocksize" in odd.err, odd.explain()
    grow = lab.xfleet("resize", "--tenant", "lc", "--size", "+16M", "--yes", "--json",
                      mirror=db)
    assert grow.code == 0, grow.explain()
    assert grow.json()["commands"] == 3  # one `zfs set volsize=` for all, one re-fetch (2)
    # a sparse volume's resize posts no zpool event: the re-fetch is what updates the mirror
    assert one(db, "SELECT volsize FROM datasets WHERE name = ?", VOLS[5]) == 80 << 20
    assert lab.run(NODE, ["zfs", "get", "-Hp", "-o", "value", "volsize", VOLS[5]]
                   ).stdout.strip() == str(80 << 20)


def test_clone_destroy_refusals_promote_and_holds(lab: Lab, db: Path) -> None:
    res = lab.xfleet("clone", VOLS[0], "tank/lc/branch", "--snapshot", "many", "-o",
                     "xfleet:env=qa", "--json", mirror=db)
    assert res.code == 0, res.explain()
    assert lab.run(NODE, ["zfs", "get", "-H", "-o", "value", "origin", "tank/lc/branch"]
                   ).stdout.strip() == f"{VOLS[0]}@many"
    refused = lab.xfleet("destroy", VOLS[0], "--yes", mirror=db)
    assert refused.code != 0 and "tank/lc/branch" in refused.err and "--clones" in refused.err
    dry = lab.xfleet("destroy", VOLS[0], "--clones", "promote", "--dry-run", mirror=db)
    assert dry.code == 0, dry.explain()
    assert f"{NODE}: zfs promote tank/lc/branch" in dry.out
    assert f"{NODE}: zfs destroy -r {VOLS[0]}" in dry.out
    ok = lab.xfleet("destroy", VOLS[0], "--clones", "promote", "--yes", "--json", mirror=db)
    assert ok.code == 0, ok.explain()
    assert not lab.run(NODE, ["zfs", "list", VOLS[0]], check=False).ok
    assert lab.run(NODE, ["zfs", "get", "-H", "-o", "value", "origin", "tank/lc/branch"]
                   ).stdout.strip() == "-"
    assert one(db, "SELECT count(*) FROM datasets WHERE name GLOB 'tank/lc/branch@*'") == 2
    # a held snapshot (a move's retired source is kept like this) is refused unless released
    lab.run(NODE, ["zfs", "hold", "keep", f"{VOLS[1]}@few"])
    held = lab.xfleet("destroy", f"{VOLS[1]}@few", "--yes", mirror=db)
    assert held.code != 0 and "held snapshot" in held.err and "--release" in held.err
    snaps = lab.xfleet("destroy", f"{VOLS[1]}@few", f"{VOLS[1]}@many", "--release",
                       "--dry-run", mirror=db)
    assert f"zfs release keep {VOLS[1]}@few" in snaps.out
    assert f"zfs destroy {VOLS[1]}@few,many" in snaps.out  # one command per volume
    done = lab.xfleet("destroy", f"{VOLS[1]}@few", f"{VOLS[1]}@many", "--release", "--yes",
                      mirror=db)
    assert done.code == 0, done.explain()
    assert lab.run(NODE, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", VOLS[1]]
                   ).stdout.strip() == ""


def test_mirror_equals_a_fresh_full_sync(lab: Lab, db: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    sync(lab, fresh, "--full")
    assert structure(db) == structure(fresh)
