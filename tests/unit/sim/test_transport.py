"""SimTransport: dispatch, errors as zfs prints them, throttling, boots and reboots."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from xfleet.core.errors import RemoteCommandError
from xfleet.core.zfs import zfs_list

from .simkit import (
    HISTORY_EVENT,
    REAL,
    history_events,
    history_records,
    listing,
    ok,
    parse_events,
    replayed_scenario,
    run,
    sim,
)


def test_errors_look_like_zfs() -> None:
    t = sim(50)
    with pytest.raises(RemoteCommandError) as exc:
        list(t.lines(zfs_list(["tank/missing"])))
    assert exc.value.exit_status == 1
    assert exc.value.stderr == "cannot open 'tank/missing': dataset does not exist\n"
    code, _, err = run(t, "zfs", "list", "-o", "name,bogus")
    assert code == 2 and err.startswith("bad property list: invalid property 'bogus'\nusage:")
    code, _, err = run(t, "zfs", "list", "-t", "thing")
    assert code == 2 and err.startswith("invalid type 'thing'")
    code, _, err = run(t, "zfs", "list", "-Q")
    assert code == 2 and err.startswith("invalid option 'Q'")
    code, _, err = run(t, "zfs", "frobnicate")
    assert code == 2 and "unrecognized command 'frobnicate'" in err
    code, _, err = run(t, "ls", "-l")
    assert code == 127 and "command not found" in err
    code, _, err = run(t, "zpool", "list", "nopool")
    assert code == 1 and err == "cannot open 'nopool': no such pool\n"
    code, _, err = run(t, "zfs", "get", "bogus", "tank")
    assert code == 2 and "invalid property 'bogus'" in err
    code, out, _ = run(t, "zfs", "list", "-H", "-o", "name", "tank", "tank/missing")
    assert code == 1 and out == "tank\n"  # what exists is still listed
    assert ok(t, "zfs", "version").startswith("zfs-2.3")


def test_replayed_errors_are_byte_identical_to_real_zfs() -> None:
    t, scenario = replayed_scenario()
    blocks = (REAL / "zfs_errors.txt").read_text().split("### ")[1:]
    assert len(blocks) == len(scenario["failing_commands"])
    for argv, block in zip(scenario["failing_commands"], blocks, strict=True):
        _, rest = block.split("\n", 1)
        status, stderr = rest.split("\n", 1)
        assert run(t, *argv) == (int(status.split("=")[1]), "", stderr), argv


def test_throttled_node_is_slower() -> None:
    t = sim(20, rows_per_second=2000)
    start = time.perf_counter()
    n = len(listing(t))
    assert time.perf_counter() - start >= (n - 256) / 2000 * 0.9


def test_a_new_node_has_booted_once() -> None:
    t = sim(10)
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert [e["eid"] for e in events] == [1, 2, 3, 4, 5]
    assert events[2]["class"] == "sysevent.fs.zfs.pool_import"
    assert ok(sim(10), "zpool", "list", "-Hp", "-o", "load_guid") == \
        ok(t, "zpool", "list", "-Hp", "-o", "load_guid")


def test_reboot_restarts_eids_changes_load_guids_and_logs_the_import(tmp_path: Path) -> None:
    t = sim(30, state_dir=tmp_path, pools=("tank", "fast"))
    other = sim(30, state_dir=tmp_path, pools=("tank", "fast"))
    argv = ["zpool", "list", "-Hp", "-o", "name,guid,load_guid"]
    pools = ok(t, *argv)
    listing = ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg")
    ok(t, "zfs", "create", "tank/x")
    txg = max(int(e["fields"]["history_txg"], 16) for e in history_events(t))
    other.reboot()
    after = ok(t, *argv)
    assert [r.split("\t")[:2] for r in after.splitlines()] == \
        [r.split("\t")[:2] for r in pools.splitlines()]
    assert all(a.split("\t")[2] != b.split("\t")[2]
               for a, b in zip(after.splitlines(), pools.splitlines(), strict=True))
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert [e["eid"] for e in events] == list(range(1, 11))
    names = [e["class"].rsplit(".", 1)[1] + (":" + e["fields"]["history_internal_name"]
                                              if e["class"] == HISTORY_EVENT else "")
             for e in events]
    one = ["history_event:open", "config_sync", "pool_import", "history_event:import",
           "config_sync"]
    assert names == one + one
    assert [e["fields"]["pool"] for e in events] == ["fast"] * 5 + ["tank"] * 5
    opened = events[5]["fields"]
    assert int(opened["history_txg"], 16) > txg
    assert opened["history_internal_str"].startswith("pool version 5000; software version ")
    assert "history_dsname" not in opened and events[6]["keys"] == [
        "version", "class", "pool", "pool_guid", "pool_state", "pool_context", "time", "eid"]
    hist = history_records(ok(t, "zpool", "history", "-il", "tank"))
    assert [r[:2] for r in hist[-3:]] == [("internal", "open"), ("internal", "import"),
                                          ("command", "zpool import -c /etc/zfs/zpool.cache "
                                           "-aN")]
    assert ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg") != listing
    ok(t, "zfs", "destroy", "tank/x")
    assert ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg") == listing
    assert parse_events(ok(t, "zpool", "events", "-H", "-v"))[-1]["eid"] == 11


def test_an_env_prefix_runs_the_command_and_paths_are_stripped() -> None:
    t = sim(10)
    assert ok(t, "env", "LC_ALL=C.UTF-8", "/usr/sbin/zfs", "version") == ok(t, "zfs", "version")
    assert run(t, "env", "LC_ALL=C") == (125, "", "env: missing command\n")
    code, _, err = run(t, "zfs")
    assert code == 2 and err.startswith("usage: zfs command args ...\n")
    assert run(t, "zpool") == (2, "", "usage: zpool command args ...\n")
