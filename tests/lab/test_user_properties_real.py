"""Whatever a node holds, it stays syncable: the most hostile user property values real
OpenZFS stores (tools.hostile: tabs and newlines that forge `zfs list -H` lines, values
that imitate `zpool events` and `zpool history` records, control characters, 8191 bytes,
bytes that are not UTF-8), then a full and an incremental sync through the CLI.

The same on the simulator, and the parsers on captured output:
tests/unit/ops/sync/test_full_user_properties.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tools import hostile
from tools import scenario as sc
from xfleet.core.identity import HOSTS_PROPERTY, UUID_PROPERTY
from xfleet.fleet.inventory import load as load_inventory

from .labkit import Lab

pytestmark = pytest.mark.lab

NODE = "lab1"
POOL = "tank"


def mirrored(db: Path, prefix: str) -> dict[str, tuple[str | None, dict[str, str]]]:
    conn = sqlite3.connect(db)
    try:
        return {name: (tenant, json.loads(props) if props else {}) for name, tenant, props in
                conn.execute("SELECT name, tenant, user_properties FROM datasets WHERE "
                             "node = ? AND (name = ? OR name LIKE ? OR name LIKE ?)",
                             (NODE, prefix, prefix + "/%", prefix + "@%"))}
    finally:
        conn.close()


def names_on_node(lab: Lab) -> set[str]:
    # names cannot hold a tab or a newline: this listing is exact
    out = lab.run(NODE, ["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", POOL]).stdout
    return set(out.splitlines())


@pytest.fixture(scope="module")
def inventory(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory, mirroring a second user property."""
    text = lab.inventory.read_text()
    assert "\n  vars:\n" in text, text
    path = tmp_path_factory.mktemp("hostile") / "lab.yaml"
    path.write_text(text.replace("\n  vars:\n", "\n  vars:\n    user_properties: "
                                 f"[xfleet:tenant, {hostile.NOTE}]\n", 1))
    return path


def test_full_and_incremental_sync_mirror_every_hostile_value(
        lab: Lab, inventory: Path, tmp_path: Path) -> None:
    lab.run(NODE, sc.commands_argv(hostile.commands(POOL)))
    db = tmp_path / "mirror.db"
    res = lab.xfleet("sync", "--full", "--json", "--node", NODE, inventory=inventory,
                     mirror=db)
    assert res.code == 0, res.explain()
    node = res.json()["nodes"][0]
    assert node["ok"], res.explain()
    assert mirrored(db, f"{POOL}/{hostile.ROOT}") == hostile.expected(POOL)
    conn = sqlite3.connect(db)
    listed = {r[0] for r in conn.execute("SELECT name FROM datasets WHERE node = ?", (NODE,))}
    conn.close()
    assert listed == names_on_node(lab)  # no row forged by a value, none lost
    # zpool list, zpool events, zfs list, zfs get -j, zpool status -j; where ZFS cut the JSON
    # short (the value that is not UTF-8): each mirrored property read with -H (the two of
    # the inventory, and xfleet:uuid and xfleet:hosts, which every inventory mirrors), one zfs
    # get -j for the rest
    mirrored_props = load_inventory(inventory).user_properties
    assert mirrored_props == ("xfleet:tenant", hostile.NOTE, UUID_PROPERTY, HOSTS_PROPERTY)
    assert node["commands"] == 5 + len(mirrored_props) + 1, res.explain()

    for argv in hostile.changes(NODE, POOL):
        lab.run(NODE, argv)
    res = lab.xfleet("sync", "--json", "--node", NODE, inventory=inventory, mirror=db)
    assert res.code == 0, res.explain()
    node = res.json()["nodes"][0]
    assert node["ok"] and node["mode"] == "incremental", res.explain()
    assert f"could not be read whole (on {POOL}/{hostile.ROOT}/cr)" in node["gap"], res.explain()
    assert mirrored(db, f"{POOL}/{hostile.ROOT}") == hostile.expected_after_changes(NODE, POOL)
    assert mirrored(db, f"{POOL}/victim") == {}
    conn = sqlite3.connect(db)
    listed = {r[0] for r in conn.execute("SELECT name FROM datasets WHERE node = ?", (NODE,))}
    conn.close()
    assert listed == names_on_node(lab)
