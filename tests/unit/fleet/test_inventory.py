"""The inventory: loading, inheritance, selection, and errors that name file:line and key."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import ROOT, assert_error, line_of, load_error, write

from xfleet.core.errors import InventoryError
from xfleet.fleet import inventory
from xfleet.fleet.inventory import FLEET_KEYS, HOST_KEYS
from xfleet.remote.host import Host
from xfleet.remote.ssh_config import apply_ssh_config, ssh_config_for

PINNED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII1P3Q7wr7M2ucJNbmdYBNfN+k8ouuG3DYJPojornvei "
          "root@stor-b-r1-01")


FLEET = """
# a two-zone fleet
all:
  vars:
    mirror: state/fleet.db
    price_per_gb_month: 0.1
    parallel: 4
    tenant_property: acme:tenant
    user_properties: [acme:branch]
    environment: {name: staging, colour: yellow}
    user: xfleet                       # all
    connect_timeout: 7
    labels: {tier: nvme, os: debian}
  children:
    zone-a:
      vars:
        user: sre-a                    # zone overrides all
        port: 2200
        labels: {zone: a}
      children:
        rack-a1:
          vars:
            port: 2201                 # rack overrides zone
            labels: {rack: a1, os: debian13}
          hosts:
            a1-n1:
              address: 10.0.1.1
              pools: [nvme]
            a1-n2:
              address: 10.0.1.2
              port: 2299               # host overrides rack
              labels: {rack: a1-spare}
        rack-a2:
          hosts:
            a2-n1: {address: 10.0.2.1, max_streams: 5}
    zone-b:
      vars:
        labels: {zone: b}
      hosts:
        b-n1:
          host_key: PINNED
          identity_file: keys/b.key
          known_hosts: /etc/xfleet/known_hosts
          proxy_jump: ops@bastion-b:2222
  hosts:
    standalone: {kind: local, pools: [tank]}
""".replace("PINNED", PINNED)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    return write(tmp_path, FLEET)


def test_groups_nest_and_hosts_know_their_groups(fleet: Path) -> None:
    inv = inventory.load(fleet)
    assert list(inv.hosts) == ["standalone", "a1-n1", "a1-n2", "a2-n1", "b-n1"]
    assert inv.groups == {
        "zone-a": ["a1-n1", "a1-n2", "a2-n1"],
        "rack-a1": ["a1-n1", "a1-n2"],
        "rack-a2": ["a2-n1"],
        "zone-b": ["b-n1"],
    }
    assert inv.hosts["a1-n2"].groups == ("zone-a", "rack-a1")
    assert inv.hosts["standalone"].groups == ()


def test_vars_inherit_all_then_group_then_subgroup_then_host(fleet: Path) -> None:
    inv = inventory.load(fleet)
    n1, n2, a2, b = (inv.hosts[n] for n in ("a1-n1", "a1-n2", "a2-n1", "b-n1"))
    assert (b.user, b.port, b.connect_timeout) == ("xfleet", 22, 7.0)  # all.vars, default port
    assert (a2.user, a2.port) == ("sre-a", 2200)  # zone-a beats all
    assert n1.port == 2201  # rack-a1 beats zone-a
    assert n2.port == 2299  # the host beats rack-a1
    assert a2.max_streams == 5 and n1.max_streams == 2  # host setting vs default
    assert n1.connect_timeout == 7.0 and isinstance(n1.connect_timeout, float)


def test_labels_merge_along_the_way(fleet: Path) -> None:
    inv = inventory.load(fleet)
    assert inv.hosts["a1-n1"].labels == {"tier": "nvme", "os": "debian13", "zone": "a",
                                         "rack": "a1"}
    assert inv.hosts["a1-n2"].labels == {"tier": "nvme", "os": "debian13", "zone": "a",
                                         "rack": "a1-spare"}
    assert inv.hosts["b-n1"].labels == {"tier": "nvme", "os": "debian", "zone": "b"}
    # hosts do not share one labels dict
    inv.hosts["a1-n1"].labels["x"] = "y"
    assert "x" not in inv.hosts["a1-n2"].labels


def test_sources_name_file_and_line(fleet: Path) -> None:
    inv = inventory.load(fleet)
    f = str(fleet)
    n2 = inv.hosts["a1-n2"]
    assert n2.sources["port"] == f"{f}:{line_of(fleet, 'port: 2299')} (host)"
    assert n2.sources["user"] == f"{f}:{line_of(fleet, 'user: sre-a')} (group zone-a)"
    timeout_line = line_of(fleet, "connect_timeout: 7")
    assert n2.sources["connect_timeout"] == f"{f}:{timeout_line} (group all)"
    assert inv.hosts["a1-n1"].sources["port"] == (
        f"{f}:{line_of(fleet, 'port: 2201')} (group rack-a1)")
    assert n2.sources["labels"] == (
        f"{f}:{line_of(fleet, 'a1-spare')} (host) + {f}:{line_of(fleet, 'rack: a1,')} "
        f"(group rack-a1) + {f}:{line_of(fleet, 'zone: a}')} (group zone-a) + "
        f"{f}:{line_of(fleet, 'tier: nvme')} (group all)")
    assert "max_streams" not in n2.sources  # a default has no source
    assert inv.hosts["b-n1"].address == "b-n1"
    assert inv.hosts["b-n1"].sources["address"] == "host name (no 'address' set)"


def test_fleet_settings_and_paths(fleet: Path) -> None:
    inv = inventory.load(fleet)
    assert inv.mirror == fleet.parent / "state" / "fleet.db"  # relative to the inventory file
    assert inv.price_per_gb_month == 0.1 and inv.parallel == 4
    assert inv.currency == "USD"  # the default
    assert inv.tenant_property == "acme:tenant"
    # the tenant one is always in, and so are the identity and allowed hosts (docs/identity.md)
    assert inv.user_properties == ("acme:tenant", "acme:branch", "xfleet:uuid", "xfleet:hosts")
    assert inv.environment == {"name": "staging", "colour": "yellow"}
    b = inv.hosts["b-n1"]
    assert b.identity_file == str(fleet.parent / "keys" / "b.key")
    assert b.known_hosts == "/etc/xfleet/known_hosts"
    assert b.host_key == PINNED and b.proxy_jump == "ops@bastion-b:2222"
    assert inv.hosts["standalone"].kind == "local" and inv.hosts["standalone"].pools == ("tank",)


def test_select_hosts_and_groups(fleet: Path) -> None:
    inv = inventory.load(fleet)

    def names(*sel: str) -> list[str]:
        return [h.name for h in inv.select(list(sel))]

    assert names() == list(inv.hosts)
    assert names("rack-a1") == ["a1-n1", "a1-n2"]
    assert names("zone-a") == ["a1-n1", "a1-n2", "a2-n1"]
    assert names("b-n1", "rack-a2") == ["b-n1", "a2-n1"]
    assert names("zone-a", "rack-a1", "a1-n1") == ["a1-n1", "a1-n2", "a2-n1"]  # each once
    with pytest.raises(InventoryError) as exc:
        inv.select(["zone-c"])
    assert "no host or group named 'zone-c'" in exc.value.message
    assert exc.value.hint is not None and "zone-a" in exc.value.hint


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          children:
            rack-1:
              hosts:
                n1: &node {port: 2222, pools: [tank], user: zfs}
                n2:
                  <<: *node
                  port: 2223
        """)
    inv = inventory.load(path)
    assert (inv.hosts["n2"].port, inv.hosts["n2"].pools, inv.hosts["n2"].user) == (
        2223, ("tank",), "zfs")


def test_example_inventory_loads() -> None:
    inv = inventory.load(ROOT / "inventory" / "example.yaml")
    assert len(inv.hosts) == 6
    assert inv.groups["zone-a"] == ["stor-a-r1-01", "stor-a-r1-02", "stor-a-r2-01"]
    assert inv.hosts["stor-a-r2-01"].labels == {"tier": "nvme", "os": "debian12", "zone": "a",
                                                "rack": "a2", "state": "draining"}
    b1 = inv.hosts["stor-b-r1-01"]
    assert b1.port == 2222 and b1.host_key is not None and b1.proxy_jump is None
    assert inv.hosts["stor-a-r1-01"].proxy_jump == "sre@bastion-a.example.net:2222"
    assert inv.hosts["stor-a-r1-02"].pools == ("nvme", "nvme2")
    assert inv.hosts["this-node"].kind == "local"
    assert inv.parallel == 16 and inv.environment["name"] == "prod"


def test_docs_describe_every_key() -> None:
    doc = (ROOT / "docs" / "inventory.md").read_text()
    missing = [k for k in [*HOST_KEYS, *FLEET_KEYS] if f"`{k}`" not in doc]
    assert missing == []


# ---------------------------------------------------------------------------------------------
# invalid inventories: every error names file:LINE and the key, and says what is expected


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          hosts:
            n1:
              address: 10.0.0.1
             port: 22
        """)
    assert_error(load_error(path), path, 5, "YAML syntax error", "indentation")


def test_unclosed_quote_points_at_both_ends(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          hosts:
            n1:
              address: "10.0.0.1
              port: 22
        """)
    err = load_error(path)
    assert err.message.startswith("YAML syntax error")
    assert "started at line 4" in err.message


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_empty_inventory(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    assert_error(load_error(path), path, 1, "the inventory is empty", "all:")


def test_no_hosts_at_all(tmp_path: Path) -> None:
    path = write(tmp_path, """
        # vars but no hosts
        all:
          vars:
            parallel: 2
        """)
    assert_error(load_error(path), path, 2, "defines no hosts")


def test_missing_all(tmp_path: Path) -> None:
    path = write(tmp_path, """
        # hosts at the top level
        hosts:
          n1: {}
        """)
    assert_error(load_error(path), path, 2, "top-level 'all:'", "example.yaml")


def test_misspelt_all(tmp_path: Path) -> None:
    path = write(tmp_path, "al:\n  hosts:\n    n1: {}\n")
    assert_error(load_error(path), path, 1, "top-level 'all:'", "did you mean 'all'?")


def test_top_level_list(tmp_path: Path) -> None:
    path = write(tmp_path, "- n1\n- n2\n")
    assert_error(load_error(path), path, 1, "must be a mapping", "not a list")


def test_extra_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1: {}\nungrouped:\n  hosts: {}\n")
    assert_error(load_error(path), path, 4, "unknown top-level key 'ungrouped'")


@pytest.mark.parametrize(
    ("snippet", "needle", "words"),
    [
        ("n1: {adress: 10.0.0.1}", "adress", ["unknown setting 'adress' for host 'n1'",
                                               "did you mean 'address'?"]),
        ("n1:\n      identityfile: ~/.ssh/k", "identityfile",
         ["unknown setting 'identityfile'", "did you mean 'identity_file'?"]),
        ("n1:\n      max_stream: 3", "max_stream", ["did you mean 'max_streams'?"]),
    ],
)
def test_unknown_host_key(tmp_path: Path, snippet: str, needle: str, words: list[str]) -> None:
    path = write(tmp_path, f"all:\n  hosts:\n    {snippet}\n")
    assert_error(load_error(path), path, line_of(path, needle), *words)


@pytest.mark.parametrize("name", ['""', '"a\\nb"', '" stor-a1"', '"stor a1"', '"-n1"'])
def test_a_host_name_that_cannot_be_a_node_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"all:\n  hosts:\n    ok1: {{}}\n    {name}: {{}}\n")
    assert_error(load_error(path), path, 4, "host name", "is not valid", "'address'")


def test_unknown_key_in_group_vars(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          children:
            zone-a:
              vars:
                pool: [tank]
              hosts:
                n1: {}
        """)
    assert_error(load_error(path), path, 5, "unknown setting 'pool' in vars of group 'zone-a'",
                 "did you mean 'pools'?")


def test_unknown_group_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          children:
            zone-a:
              host:
                n1: {}
        """)
    # the key's own line, not the line where its value starts
    assert_error(load_error(path), path, 4, "unknown key 'host' in group 'zone-a'",
                 "did you mean 'hosts'?")


def test_setting_directly_under_a_group(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  children:\n    zone-a:\n      port: 22\n")
    assert_error(load_error(path), path, 4, "unknown key 'port' in group 'zone-a'",
                 "settings go under 'zone-a: vars:'")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("port: ssh", ["port must be a TCP port number (1-65535), got 'ssh'"]),
        ("port: 70000", ["port must be a TCP port number (1-65535), got 70000"]),
        ("port: 0", ["port must be"]),
        ("port: true", ["port must be", "got True"]),
        ("port: '22'", ["port must be", "got '22'"]),
        ("pools: tank", ["pools must be a non-empty list of pool names, got 'tank'"]),
        ("pools: []", ["pools must be a non-empty list of pool names, got a list"]),
        ("pools: {tank: 1}", ["pools must be a non-empty list", "got a mapping"]),
        ("max_streams: 0", ["max_streams must be an integer from 1 to 1000", "got 0"]),
        ("max_streams: 2.5", ["max_streams must be an integer from 1 to 1000", "got 2.5"]),
        ("max_streams: many", ["max_streams must be an integer from 1 to 1000", "got 'many'"]),
        ("connect_timeout: -1", ["connect_timeout must be a positive number of seconds"]),
        ("command_timeout: soon", ["command_timeout must be a positive number of seconds"]),
        ("connect_retries: 0", ["connect_retries must be an integer from 1 to 1000"]),
        ("kind: vm", ["kind must be one of ssh, local, sim, got 'vm'"]),
        ("address: 10", ["address must be a host name or IP address, got 10"]),
        ("address: 'two words'", ["address must be a host name or IP address"]),
        ("user: ''", ["user must be a user name, got ''"]),
        ("labels: [a, b]", ["labels must be a mapping, got a list"]),
        ("labels: {zone: {a: 1}}", ["label 'zone' must be a plain value, got a mapping"]),
        ("host_key: not-a-key", ["host_key: pinned host_key", "is not 'KEYTYPE BASE64'"]),
        ("host_key: ssh-ed25519 AAAA!!", ["host_key: pinned host_key cannot be read"]),
        ("proxy_jump: 'a@b:port'", ["proxy_jump 'a@b:port' is not valid", "[user@]host[:port]"]),
        ("proxy_jump: 'j1,j2'", ["several jump hosts"]),
        ("sim: 3", ["sim must be a mapping, got 3"]),
    ],
)
def test_wrong_value_types(tmp_path: Path, value: str, words: list[str]) -> None:
    path = write(tmp_path, f"all:\n  hosts:\n    n1:\n      address: 10.0.0.1\n      {value}\n")
    if value.startswith("address"):
        path.write_text(f"all:\n  hosts:\n    n1:\n      pools: [tank]\n      {value}\n")
    assert_error(load_error(path), path, 5, *words)


def test_bad_pool_name_points_at_the_item(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          hosts:
            n1:
              pools:
                - tank
                - 1fast
        """)
    assert_error(load_error(path), path, 6, "pools: invalid ZFS name '1fast'",
                 "must start with a letter")


@pytest.mark.parametrize(("pools", "words"), [
    ("[tank, 'ta;nk']", ["pools: invalid ZFS name 'ta;nk'", "';'"]),
    ("[mirror]", ["reserved pool name"]),
    ("[tank, tank]", ["'tank' is listed twice"]),
    ("[7]", ["pool name 7 is not a string"]),
])
def test_bad_pools(tmp_path: Path, pools: str, words: list[str]) -> None:
    path = write(tmp_path, f"all:\n  hosts:\n    n1:\n      pools: {pools}\n")
    assert_error(load_error(path), path, 4, *words)


def test_duplicate_host_in_two_groups(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          children:
            zone-a:
              hosts:
                n1: {address: 10.0.0.1}
            zone-b:
              hosts:
                n2: {}
                n1:
                  address: 10.0.0.9
        """)
    assert_error(load_error(path), path, 9, "host 'n1' is defined twice (first at line 5)",
                 "labels")


def test_duplicate_key_in_one_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          hosts:
            n1:
              port: 22
              port: 2222
        """)
    assert_error(load_error(path), path, 5, "duplicate key 'port' (first at line 4)")


def test_duplicate_group(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          children:
            zone-a:
              children:
                rack-1: {hosts: {n1: {}}}
            zone-b:
              children:
                rack-1: {hosts: {n2: {}}}
        """)
    assert_error(load_error(path), path, 8, "group 'rack-1' is defined twice (first at line 5)")


def test_group_and_host_with_one_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        all:
          hosts:
            edge: {}
          children:
            edge:
              hosts:
                n2: {}
        """)
    assert_error(load_error(path), path, 5, "'edge' is both a group and a host (host at line 3)")


@pytest.mark.parametrize("key", ["parallel: 4", "mirror: x.db", "price_per_gb_month: 0.1"])
def test_fleet_key_in_a_group(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"""
        all:
          children:
            zone-a:
              vars:
                {key}
              hosts:
                n1: {{}}
        """)
    name = key.split(":")[0]
    assert_error(load_error(path), path, 5,
                 f"'{name}' is a fleet-level setting and cannot be set in group 'zone-a'",
                 "all: vars:")


def test_fleet_key_on_a_host(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1:\n      parallel: 4\n")
    assert_error(load_error(path), path, 4, "'parallel' is a fleet-level setting", "host 'n1'")


@pytest.mark.parametrize(
    ("var", "words"),
    [
        ("parallel: 0", ["parallel must be an integer from 1 to 1024 (nodes worked on at once)",
                         "got 0"]),
        ("price_per_gb_month: cheap", ["price_per_gb_month must be", "got 'cheap'"]),
        ("currency: usd", ["currency must be the currency of price_per_gb_month: an ISO 4217 "
                           "code of three capital letters, e.g. USD, EUR", "got 'usd'"]),
        ("currency: 978", ["currency must be", "got 978"]),
        ("mirror: [a]", ["mirror must be a path", "got a list"]),
        ("user_properties: xfleet:tenant",
         ["user_properties must be a list", "got 'xfleet:tenant'"]),
        ("user_properties: [Tenant]", ["user_properties: invalid user property name 'Tenant'"]),
        ("tenant_property: 5", ["tenant_property: 5 is not a user property name"]),
        ("environment: {name: prod, color: red, owner: me}",
         ["unknown key 'owner' in environment"]),
        ("environment: prod", ["environment must be a mapping, got 'prod'"]),
    ],
)
def test_bad_fleet_settings(tmp_path: Path, var: str, words: list[str]) -> None:
    path = write(tmp_path, f"all:\n  vars:\n    {var}\n  hosts:\n    n1: {{}}\n")
    assert_error(load_error(path), path, 3, *words)


def test_currency_and_a_simulated_fleet_whose_now_is_today(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  vars:\n    currency: EUR\n  hosts:\n"
                 "    s1: {kind: sim, sim: {seed: 1, now: today}}\n"
                 "    s2: {kind: sim, sim: {now: 1777593600}}\n")
    before = time.time()
    inv = inventory.load(path)
    assert inv.currency == "EUR"
    now = inv.hosts["s1"].sim["now"]
    assert isinstance(now, int) and now % 86400 == 0 and before - 86400 < now <= time.time()
    assert inv.hosts["s1"].sim["seed"] == 1 and inv.hosts["s2"].sim["now"] == 1777593600


def test_non_string_host_name(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1: {}\n    42: {}\n")
    assert_error(load_error(path), path, 4, "mapping key 42 is not a string")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert err.where == str(path)
    assert "does not exist" in err.message and "--inventory" in (err.hint or "")


# ---------------------------------------------------------------------------------------------
# ~/.ssh/config


SSH_CONFIG = """
Host stor-*
  User admin
  IdentityFile ~/.ssh/fleet_key
  ProxyJump bastion.example.net

Host stor-1
  HostName 10.9.9.1
  Port 2022

Host *
  User fallback
"""


def test_ssh_config_for_reports_only_what_the_config_says(tmp_path: Path) -> None:
    cfg = write(tmp_path, SSH_CONFIG, "ssh_config")
    got = ssh_config_for(Host("stor-1", address="stor-1"), cfg)
    assert {k: v for k, (v, _) in got.items()} == {
        "address": "10.9.9.1", "port": "2022", "user": "admin",
        "identity_file": str(Path("~/.ssh/fleet_key").expanduser()),
        "proxy_jump": "bastion.example.net"}
    assert all(src == f"{cfg} (Host matching stor-1)" for _, src in got.values())
    # no HostName in the config: the name looked up is not reported as if configured
    assert "address" not in ssh_config_for(Host("db-1", address="db-1"), cfg)
    assert ssh_config_for(Host("x"), tmp_path / "no-such-config") == {}


def test_apply_ssh_config_fills_only_unset_settings(tmp_path: Path) -> None:
    cfg = write(tmp_path, SSH_CONFIG, "ssh_config")
    inv_path = write(tmp_path, """
        all:
          hosts:
            stor-1:
              port: 2222
              proxy_jump: ops@jump-1
            stor-2:
              address: 10.0.0.2
        """)
    inv = inventory.load(inv_path)
    s1 = apply_ssh_config(inv.hosts["stor-1"], cfg)
    assert s1.address == "10.9.9.1"  # the address only defaulted to the name: config wins
    assert s1.port == 2222 and s1.proxy_jump == "ops@jump-1"  # the inventory wins
    assert s1.user == "admin"
    assert s1.identity_file == str(Path("~/.ssh/fleet_key").expanduser())
    assert s1.sources["port"] == f"{inv_path}:4 (host)"
    assert s1.sources["user"] == f"{cfg} (Host matching stor-1)"
    assert s1.sources["address"] == f"{cfg} (Host matching stor-1)"

    s2 = apply_ssh_config(inv.hosts["stor-2"], cfg)  # matched by its address: only `Host *`
    assert (s2.address, s2.user, s2.port) == ("10.0.0.2", "fallback", 22)
    assert s2.sources["user"] == f"{cfg} (Host matching 10.0.0.2)"


def test_bad_port_in_ssh_config(tmp_path: Path) -> None:
    cfg = write(tmp_path, "Host n1\n  Port ssh\n", "ssh_config")
    with pytest.raises(InventoryError, match=re.escape("Port 'ssh' is not a TCP port number")):
        apply_ssh_config(Host("n1", address="n1"), cfg)


def test_hooks_are_argument_lists_with_file_line_errors(tmp_path: Path) -> None:
    p = write(tmp_path, """
        all:
          hosts:
            n1:
              hooks:
                pre_cutover: [nvmet-ctl, unexport, "{volume}"]
                post_cutover: [[nvmet-ctl, export, "{target_volume}"], [logger, moved]]
        """)
    h = inventory.load(p).hosts["n1"]
    assert h.hooks == {"pre_cutover": (("nvmet-ctl", "unexport", "{volume}"),),
                       "post_cutover": (("nvmet-ctl", "export", "{target_volume}"),
                                        ("logger", "moved"))}
    for bad, msg in (('{pre: [x]}', "unknown hook 'pre'"),
                     ('{pre_cutover: "rm -rf /"}', "hook pre_cutover must be"),
                     ('{pre_cutover: [[]]}', "non-empty list of strings")):
        p = write(tmp_path, f"""
            all:
              hosts:
                n1:
                  hooks: {bad}
            """, name="bad.yaml")
        with pytest.raises(InventoryError) as exc:
            inventory.load(p)
        assert msg in str(exc.value) and "bad.yaml:4" in str(exc.value)


def test_the_inventory_knows_every_node_kind_the_connections_open() -> None:
    from xfleet.fleet.connections import NODE_KINDS

    assert set(inventory.KINDS) == set(NODE_KINDS)
