"""A move's live cutover (xfleet/ops/moves/live.py): what is refused before anything starts
(no remote command), and its pure parts. The cutover itself needs the kernel target and a
host's multipath: the lab runs a whole `xfleet move --live` under the I/O probe
(tests/lab/test_live_cutover_real.py); the remote program is pinned in
tests/unit/remote/test_programs.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from xfleet import mirror, sim
from xfleet.core.errors import UsageError
from xfleet.core.identity import UUID_PROPERTY
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Connection
from xfleet.ops import moves
from xfleet.ops.moves import live
from xfleet.ops.moves.journal import Move, MoveError
from xfleet.ops.sync import sync

VOL = "tank/t0000/vol-000021"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000001-0000-4000-8000-000000000001"


def _fleet(tmp_path: Path, target: str, prefix2: str | None = None) -> Inventory:
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 30},
                                                         "n2": {"seed": 2, "volumes": 20}},
                               extra=f"    target: {target}")
    text = path.read_text()
    if prefix2:
        text = text.replace("    n2:\n", f"    n2:\n      target: {{driver: nvmet, nqn_prefix: "
                            f"{prefix2}}}\n")
    path.write_text(text + "  initiators:\n    db1: {kind: local}\n")
    inv = inventory.load(path)
    assert sync(inv).ok
    return inv


def _attach(conn: Connection, initiator: str = "db1") -> None:
    conn.execute("INSERT INTO attachments (node, volume, initiator, hostnqn, shared, state, "
                 "batch, created_at, updated_at) VALUES ('n1', ?, ?, ?, 0, 'attached', 'b1', "
                 "?, ?)", (VOL, initiator, HOSTNQN, time.time(), time.time()))


def test_a_live_move_needs_the_kernel_target_on_both_nodes(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, json.dumps(sim.TARGET))  # the simulated daemon: command driver
    conn = mirror.connect(inv.mirror)
    try:
        with pytest.raises(MoveError, match=r"--live needs the kernel target .* on n1; it has "
                           r"the command driver") as e:
            moves.plan_move(inv, conn, VOL, "n2", options={"live": True})
        assert "move without --live" in (e.value.hint or "")
        plan = moves.plan_move(inv, conn, VOL, "n2")  # without --live: the usual move
        assert not any("--live" in n for n in plan.notes)
    finally:
        conn.close()


def test_a_live_move_needs_attached_hosts_known_to_the_inventory(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, "{driver: nvmet}")
    conn = mirror.connect(inv.mirror)
    try:
        with pytest.raises(MoveError, match="attached to no host"):
            moves.plan_move(inv, conn, VOL, "n2", options={"live": True})
        _attach(conn, "db9")
        with pytest.raises(MoveError, match=r"attached to db9, not in the inventory"):
            moves.plan_move(inv, conn, VOL, "n2", options={"live": True})
        _attach(conn, "db1")
        conn.execute("DELETE FROM attachments WHERE initiator = 'db9'")
        plan = moves.plan_move(inv, conn, VOL, "n2", options={"live": True})
        assert any(n.startswith("--live: n2 exports the copy") for n in plan.notes), plan.notes
    finally:
        conn.close()


def test_a_live_move_needs_one_nqn_prefix(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, "{driver: nvmet}", prefix2="nqn.2026-02.com.example")
    conn = mirror.connect(inv.mirror)
    try:
        _attach(conn)
        with pytest.raises(MoveError, match="one NQN prefix on both nodes: n1 has "
                           "nqn.2026-01.io.xfleet, n2 nqn.2026-02.com.example"):
            moves.plan_move(inv, conn, VOL, "n2", options={"live": True})
    finally:
        conn.close()


def test_a_volume_without_uuid_or_encrypted_is_refused_before_any_change(
        tmp_path: Path) -> None:
    inv = _fleet(tmp_path, "{driver: nvmet}")
    m = Move(id=7, volume=VOL, source_node="n1", target_node="n2", target_volume=VOL,
             state="cutover", send_flags=["-L", "-w"], receive_properties={}, verify="sampled",
             options={"live": True})
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        said: list[str] = []
        cut = live.Cutover(inv, conns, m, said.append)
        with pytest.raises(MoveError, match=f"has no {UUID_PROPERTY}"):
            _ = cut.nqn
        conn = mirror.connect(inv.mirror)
        try:
            with pytest.raises(MoveError, match="is encrypted"):
                cut.prepare(conn, "default")
        finally:
            conn.close()
        assert said == [] and m.options.get("live_state", {}) == {}
        m.options["live_state"] = {"switched": True}
        with pytest.raises(MoveError, match="has switched the hosts to the copy"):
            cut.undo()


def test_pure_parts() -> None:
    assert live.parse_fields("group=3 serial=ab cntlid_min=1 junk\n") == {
        "group": "3", "serial": "ab", "cntlid_min": "1"}
    assert live.cntlid_range(1) == (32768, 65519)
    assert live.cntlid_range(32768) == (1, 32767)
    argv = live.live_argv("ana", "nqn.2026-01.io.xfleet:vol:x", "optimized")
    assert argv[0] == "python3" and argv[3:] == ["/sys/kernel/config/nvmet", "ana",
                                                 "nqn.2026-01.io.xfleet:vol:x", "optimized"]
    with pytest.raises(UsageError, match="not an NVMe qualified name"):
        live.live_argv("ana", "bad nqn", "optimized")
    assert live.device_of("tank/a/b") == "/dev/zvol/tank/a/b"
