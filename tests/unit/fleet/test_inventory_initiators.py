"""The inventory's `all: initiators:`: NVMe/TCP hosts reached like storage nodes but never
treated as one; errors name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_error, line_of, load_error, write

from xfleet.core.errors import InventoryError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.remote.local import LocalTransport

PINNED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII1P3Q7wr7M2ucJNbmdYBNfN+k8ouuG3DYJPojornvei "
          "root@client1")


FLEET = """
all:
  vars:
    user: root
    identity_file: /keys/lab
    connect_timeout: 20
    pools: [tank]                 # a storage default: not inherited by initiators
    max_streams: 4
    labels: {site: lab}
  hosts:
    lab1: {address: 127.0.0.1, port: 2231}
    lab2: {address: 127.0.0.1, port: 2232}
  initiators:
    client1:
      address: 127.0.0.1
      port: 2233
      host_key: "PINNED"
      labels: {role: initiator}
    db2: {user: postgres}
"""


def fleet(tmp_path: Path) -> Path:
    return write(tmp_path, FLEET.replace("PINNED", PINNED))


def test_initiators_are_hosts_apart_from_the_storage_nodes(tmp_path: Path) -> None:
    path = fleet(tmp_path)
    inv = inventory.load(path)
    assert list(inv.hosts) == ["lab1", "lab2"]  # nothing else treats an initiator as a node
    assert list(inv.initiators) == ["client1", "db2"]
    c = inv.initiators["client1"]
    assert (c.address, c.port, c.user, c.identity_file, c.connect_timeout) == \
        ("127.0.0.1", 2233, "root", "/keys/lab", 20.0)  # connection settings from all.vars
    assert c.host_key == PINNED.strip()
    assert c.pools == () and c.max_streams == 2  # storage defaults are not inherited
    assert c.labels == {"site": "lab", "role": "initiator"}
    assert c.sources["port"] == f"{path}:{line_of(path, 'port: 2233')} (initiator)"
    d = inv.initiators["db2"]
    assert (d.address, d.user) == ("db2", "postgres")  # address defaults to the name
    assert inv.select() == [inv.hosts["lab1"], inv.hosts["lab2"]]
    with pytest.raises(InventoryError):
        inv.select(["client1"])
    assert inv.hosts["lab1"].pools == ("tank",) and inv.hosts["lab1"].max_streams == 4


def test_no_initiators_is_an_empty_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1: {pools: [tank]}\n")
    assert inventory.load(path).initiators == {}


def test_connections_reach_initiators(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1: {kind: sim}\n"
                 "  initiators:\n    here: {kind: local}\n")
    inv = inventory.load(path)
    with Connections(inv.initiators, state_dir=inv.state_dir) as conns:
        t = conns.get("here")
        assert isinstance(t, LocalTransport)
        assert t.run(["echo", "hello"]).stdout == "hello\n"
        assert t.commands == 1


@pytest.mark.parametrize("key", ["pools: [tank]", "target: {driver: nvmet}", "max_streams: 2",
                                 "bwlimit: 10M", "sim: {seed: 1}",
                                 "hooks: {pre_cutover: [true]}"])
def test_storage_keys_are_refused_on_an_initiator(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"""
    all:
      hosts:
        n1: {{address: 10.0.0.1}}
      initiators:
        db1:
          address: 10.0.9.1
          {key}
    """)
    name = key.split(":")[0]
    assert_error(load_error(path), path, line_of(path, key), repr(name),
                 "storage-node setting", "initiator 'db1'")


def test_a_name_both_host_and_initiator(tmp_path: Path) -> None:
    path = write(tmp_path, """
    all:
      hosts:
        lab1: {address: 10.0.0.1}
      initiators:
        lab1: {address: 10.0.9.1}
    """)
    assert_error(load_error(path), path, line_of(path, "lab1:", 2),
                 "'lab1' is both an initiator and a host", f"line {line_of(path, 'lab1:')}")


def test_a_name_both_group_and_initiator(tmp_path: Path) -> None:
    path = write(tmp_path, """
    all:
      initiators:
        zone-a: {address: 10.0.9.1}
      children:
        zone-a:
          hosts:
            n1: {address: 10.0.0.1}
    """)
    assert_error(load_error(path), path, line_of(path, "zone-a:"),
                 "both an initiator and a group")


def test_initiators_only_under_all(tmp_path: Path) -> None:
    path = write(tmp_path, """
    all:
      children:
        zone-a:
          hosts:
            n1: {address: 10.0.0.1}
          initiators:
            db1: {address: 10.0.9.1}
    """)
    assert_error(load_error(path), path, line_of(path, "initiators:"), "'initiators'",
                 "all: initiators:")


@pytest.mark.parametrize("body, needle, words", [
    ("db1: {port: 99999}", "db1:", ["port must be"]),
    ("db1: {adress: 10.0.0.9}", "db1:", ["unknown setting 'adress' for initiator 'db1'",
                                         "address"]),
    ("db1: {kind: sim}", "db1:", ["kind sim", "kind: ssh"]),
    ("db1: {mirror: x.db}", "db1:", ["fleet-level setting", "initiator 'db1'"]),
    ("db1: [a, b]", "db1:", ["initiator 'db1' must be a mapping"]),
    ("db1: {host_key: 'ssh-ed25519 nope'}", "db1:", ["host_key"]),
])
def test_bad_initiators(tmp_path: Path, body: str, needle: str, words: list[str]) -> None:
    path = write(tmp_path, f"""
    all:
      hosts:
        n1: {{address: 10.0.0.1}}
      initiators:
        {body}
    """)
    assert_error(load_error(path), path, line_of(path, needle), *words)


def test_initiators_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, """
    all:
      hosts:
        n1: {address: 10.0.0.1}
      initiators: [db1]
    """)
    assert_error(load_error(path), path, line_of(path, "initiators:"),
                 "initiators must be a mapping")


def test_a_duplicate_initiator(tmp_path: Path) -> None:
    # YAML itself rejects a duplicate key in one mapping; the loader's own check names both
    path = write(tmp_path, """
    all:
      hosts:
        n1: {address: 10.0.0.1}
      initiators:
        db1: {address: 10.0.9.1}
        db1: {address: 10.0.9.2}
    """)
    err = load_error(path)
    assert err.where == f"{path}:{line_of(path, 'db1:', 2)}" and "db1" in str(err)
