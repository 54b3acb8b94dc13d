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


# --- DH-CHAP secrets: where each initiator's is kept (xfleet/fleet/secrets.py reads it) -------


def test_dhchap_secret_sources(tmp_path: Path) -> None:
    path = write(tmp_path, """
    all:
      hosts:
        n1: {address: 10.0.0.1}
      initiators:
        db1: {address: 10.0.9.1, dhchap_secret_file: secrets/db1.key}
        db2: {address: 10.0.9.2, dhchap_secret_file: /etc/xfleet/../xfleet/db2.key}
        db3:
          address: 10.0.9.3
          dhchap_secret_command: [vault, kv, get, -field=secret, nvme/db3]
        db4: {address: 10.0.9.4}
    """)
    inv = inventory.load(path)
    db1, db2, db3, db4 = (inv.initiators[n] for n in ("db1", "db2", "db3", "db4"))
    assert db1.dhchap_secret_file == tmp_path / "secrets" / "db1.key"  # beside the inventory
    assert db1.dhchap_secret_command is None
    assert db1.sources["dhchap_secret_file"] == \
        f"{path}:{line_of(path, 'secrets/db1.key')} (initiator)"
    assert db2.dhchap_secret_file == Path("/etc/xfleet/db2.key")
    assert db3.dhchap_secret_command == ("vault", "kv", "get", "-field=secret", "nvme/db3")
    assert db3.dhchap_secret_file is None
    assert db4.dhchap_secret_file is None and db4.dhchap_secret_command is None
    assert inv.hosts["n1"].dhchap_secret_file is None


def test_dhchap_secret_file_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, """
    all:
      hosts: {n1: {address: 10.0.0.1}}
      initiators:
        db1: {dhchap_secret_file: ~/nvme/db1.key}
    """)
    assert inventory.load(path).initiators["db1"].dhchap_secret_file == \
        tmp_path / "home" / "nvme" / "db1.key"


@pytest.mark.parametrize("body, needle, words", [
    ("db1:\n  dhchap_secret_file: db1.key\n  dhchap_secret_command: [pass, show, db1]",
     "dhchap_secret_command", ["both dhchap_secret_file and dhchap_secret_command",
                               "initiator 'db1'"]),
    ("db1: {dhchap_secret_command: pass show nvme/db1}", "db1:",
     ["dhchap_secret_command is a string", "give the command as a list of arguments"]),
    ("db1: {dhchap_secret_command: []}", "db1:", ["dhchap_secret_command must be",
                                                  "non-empty list"]),
    ("db1: {dhchap_secret_command: {pass: show}}", "db1:", ["dhchap_secret_command must be"]),
    ("db1:\n  dhchap_secret_command:\n    - pass\n    - 3", "- 3",
     ["each argument must be a non-empty string, got 3"]),
    ("db1: {dhchap_secret_command: [pass, '']}", "db1:", ["each argument must be a non-empty"]),
    ("db1: {dhchap_secret_file: ''}", "db1:", ["dhchap_secret_file must be"]),
    ("db1: {dhchap_secret_file: [a.key]}", "db1:", ["dhchap_secret_file must be"]),
])
def test_bad_dhchap_secret_sources(tmp_path: Path, body: str, needle: str,
                                   words: list[str]) -> None:
    indented = "\n".join("        " + ln for ln in body.splitlines())
    path = write(tmp_path, f"""
    all:
      hosts:
        n1: {{address: 10.0.0.1}}
      initiators:
{indented}
    """)
    assert_error(load_error(path), path, line_of(path, needle), *words)


@pytest.mark.parametrize("key", ["dhchap_secret_file: n1.key",
                                 "dhchap_secret_command: [pass, show, n1]"])
def test_dhchap_secrets_are_refused_on_a_storage_node(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"""
    all:
      hosts:
        n1:
          address: 10.0.0.1
          {key}
    """)
    name = key.split(":")[0]
    assert_error(load_error(path), path, line_of(path, key), repr(name),
                 "initiator setting", "storage node 'n1'", "all: initiators:")


@pytest.mark.parametrize("group", ["all", "zone-a"])
@pytest.mark.parametrize("key", ["dhchap_secret_file: shared.key",
                                 "dhchap_secret_command: [pass, show, shared]"])
def test_dhchap_secrets_are_refused_in_group_vars(tmp_path: Path, group: str, key: str) -> None:
    vars_of = {"all": f"  vars:\n    {key}\n", "zone-a": ""}[group]
    zone_vars = f"      vars:\n        {key}\n" if group == "zone-a" else ""
    path = tmp_path / "fleet.yaml"
    path.write_text(f"all:\n{vars_of}  children:\n    zone-a:\n{zone_vars}"
                    "      hosts:\n        n1: {address: 10.0.0.1}\n"
                    "  initiators:\n    db1: {address: 10.0.9.1}\n")
    name = key.split(":")[0]
    assert_error(load_error(path), path, line_of(path, key), repr(name),
                 f"an initiator's own setting and cannot be set in vars of group {group!r}",
                 "set it on the initiator")
