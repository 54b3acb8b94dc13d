"""The registry: every command the simulator answers is registered by name, once, and
SimTransport dispatches through it (a new handler needs no change anywhere else)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xfleet.remote import programs
from xfleet.sim import PROGRAMS, SimTransport
from xfleet.sim.registry import COMMANDS, PROGRAM, Context, command, handler, names

from .simkit import run, sim

# what a real OpenZFS 2.3 node answers (`zfs help`, `zpool help`) that the simulator supports
ZFS = ["bookmark", "clone", "create", "destroy", "get", "hold", "holds", "inherit", "list",
       "promote", "receive", "recv", "release", "rename", "send", "set", "snap", "snapshot",
       "version"]
ZPOOL = ["events", "get", "history", "list", "status", "version"]


def test_the_registry_lists_every_command_the_simulator_answers() -> None:
    assert names("zfs") == ZFS
    assert names("zpool") == ZPOOL
    assert names(PROGRAM) == sorted(PROGRAMS) == ["assign_uuids", "put_file", "replica_cursor",
                                                  "sample_blocks", "sample_hashes",
                                                  "wait_device", "zvol_hosts"]
    assert set(PROGRAMS) <= set(programs.names())
    assert handler("zfs", "snap") is handler("zfs", "snapshot")
    assert handler("zfs", "version") is handler("zpool", "version")
    assert handler("xfleet-sim-target") is not None and handler("sha256sum") is not None
    assert handler("zfs", "recv") is handler("zfs", "receive") is not None  # the data path


def test_every_registered_command_is_answered_and_others_are_not() -> None:
    t = sim(20)
    for family, subs in (("zfs", ZFS), ("zpool", ZPOOL)):
        for sub in subs:
            code, _, err = run(t, family, sub)
            assert "unrecognized command" not in err and code in (0, 1, 2), (family, sub, err)
        code, _, err = run(t, family, "frobnicate")
        assert code == 2 and err.startswith("unrecognized command 'frobnicate'\n")


def test_a_new_handler_is_dispatched_by_its_name_and_a_name_registers_once() -> None:
    def frobnicate(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
        return iter([f"{sim.node}: {' '.join(args)}"])

    command("zfs", "frobnicate")(frobnicate)
    try:
        assert run(sim(10), "zfs", "frobnicate", "a", "b") == (0, "n1: a b\n", "")
        with pytest.raises(RuntimeError, match="two handlers for zfs frobnicate"):
            command("zfs", "frobnicate")(frobnicate)
    finally:
        del COMMANDS[("zfs", "frobnicate")]
    assert run(sim(10), "zfs", "frobnicate")[0] == 2
