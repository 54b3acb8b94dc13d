"""A whole `xfleet move --live` under I/O (issue #21 item 3), on real OpenZFS, the kernel target
of both lab nodes (the lab's target daemon) and client1's native NVMe multipath.

The volume, with its own UUID, is exported by lab1 under the identity derived from it and
attached to client1, which connects to it and runs the I/O probe (sequence-numbered,
CRC-checked O_DIRECT writes and reads) through the whole move. The move engine exports the
copy on lab2 under the same identity in an inaccessible ANA group, gives client1 the second
path over its SSH, holds the I/O around the final incremental by ANA, resumes it on lab2,
disconnects the old path and withdraws lab1's export.

Proven: zero I/O errors and zero mismatches (every slot read back through lab2 at the end),
the longest stall recorded; client1 sees the same NQN, namespace UUID and NGUID (one device)
before and after, its only path is to lab2; the move verified the content of both @final
snapshots; the attachment follows the volume to lab2, and lab1's retired copy is closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for

from xfleet.core.identity import UUID_PROPERTY, volume_identity, volume_nqn
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import probe, target_pkg
from xfleet.ops import initiator

from .labkit import Lab, figure, log

pytestmark = pytest.mark.lab

VOL = "tank/live/v"
VUUID = "7b0e3c1a-2f4d-4c6b-9a8e-1d2c3b4a5f60"
NQN = volume_nqn(str(NVMET_DEFAULTS["nqn_prefix"]), VUUID)
PORT = int(NVMET_DEFAULTS["port"])


def _inventory(lab: Lab, out: Path) -> Path:
    """The lab's inventory with the kernel target on both nodes."""
    data = yaml.safe_load(lab.inventory.read_text())
    for node in ("lab1", "lab2"):
        data["all"]["hosts"][node]["target"] = {"driver": "nvmet"}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _view(t: Any) -> dict[str, Any]:
    """client1's controllers of the volume: {address: state}, and the (device, uuid, nguid)
    of their namespaces."""
    ctrls = [c for c in initiator.controllers(t) if c.nqn == NQN]
    return {"paths": {c.address: c.state for c in ctrls},
            "namespaces": sorted({(n.device, n.uuid, n.nguid) for c in ctrls
                                  for n in c.namespaces})}


def test_io_rides_through_a_whole_live_move(lab: Lab, client: str, tmp_path: Path) -> None:
    a1, a2 = (lab.state.node(n).private_address for n in ("lab1", "lab2"))
    debs = target_pkg.build_all(tmp_path / "debs")
    inv_path = _inventory(lab, tmp_path / "fleet.yaml")
    mirror = tmp_path / "m.db"
    inv = inventory.load(inv_path)

    def x(*args: str, code: int = 0) -> Any:
        r = lab.xfleet(*args, "--json", inventory=inv_path, mirror=mirror, timeout=900)
        assert r.code == code, r.explain()
        return json.loads(r.out)

    p: probe.Probe | None = None
    try:
        lab.run("lab1", ["sh", "-c", 'zfs create -p -s -V 32M -o "$1" "$2" && udevadm settle '
                         '&& dd if=/dev/urandom of="/dev/zvol/$2" bs=1M count=8 oflag=direct '
                         'status=none && zfs snapshot "$2@s0"', "sh",
                         f"{UUID_PROPERTY}={VUUID}", VOL])
        for node in ("lab1", "lab2"):  # the daemon exports the volume under its own identity
            lab.install_target(node, {"1.0": debs["1.0"]})
        x("sync")
        assert x("initiators", "--read", client)["ok"] is True
        assert x("attach", VOL, client)["ok"] is True

        with Connections(inv.initiators, state_dir=inv.state_dir) as hosts:
            t = hosts.get(client)
            initiator.connect(t, a1, PORT, NQN, ctrl_loss_tmo=30, reconnect_delay=1)
            before = wait_for(lambda: (v := _view(t))["paths"] == {a1: "live"} and
                              v["namespaces"] and v, "client1's path to lab1", timeout=60,
                              interval=0.3)
            ((dev, ns_uuid, nguid),) = before["namespaces"]
            assert (ns_uuid, nguid) == volume_identity(VUUID)
            p = probe.start(lab.state, client, f"/dev/{dev}")
            p.wait_writes(50)

            moved = x("move", VOL, "--to", "lab2", "--live")
            assert moved["state"] == "done" and moved["verified"], moved
            p.wait_writes(50)  # through lab2's path
            result = p.stop()
            p = None
            after = _view(t)
        shown = lab.xfleet("moves", "show", str(moved["id"]), inventory=inv_path,
                           mirror=mirror)
        log(f"xfleet moves show {moved['id']}:\n{shown.out}")
        held = float(moved["options"]["live_state"]["held"])
        log(f"live move lab1 -> lab2: I/O held {held:.2f}s, probe {result}")
        figure(f"xfleet move --live (whole move, ANA): I/O held {held:.2f} s, longest probe "
               f"stall {result.longest_stall:.2f} s, {result.writes} writes, {result.errors} "
               f"errors, {result.mismatches} mismatches")
        assert result.clean and result.reads > 0, result
        assert after == {"paths": {a2: "live"}, "namespaces": before["namespaces"]}, after
        assert "hash(es) equal" in moved["verified"], moved
        guid = {n: lab.run(n, ["zfs", "get", "-Hp", "-o", "value", "guid",
                               f"{v}@{moved['snapshots'][-1]}"]).stdout.strip()
                for n, v in (("lab1", moved["retired_as"]), ("lab2", VOL))}
        assert guid["lab1"] == guid["lab2"] != "", guid
        # lab1 exports nothing of it any more; its retired copy is closed to every host
        subs = lab.run("lab1", ["ls", "/sys/kernel/config/nvmet/subsystems"]).stdout.split()
        assert NQN not in subs, subs
        assert lab.run("lab1", ["zfs", "get", "-H", "-o", "value", "xfleet:hosts",
                                moved["retired_as"]]).stdout.strip() == "none"
        rows = x("attachments")
        assert [(r["node"], r["volume"], r["initiator"]) for r in rows] == \
            [("lab2", VOL, client)], rows
        assert x("target", "audit", "--node", "lab2")["ok"] is True
    finally:
        if p is not None:
            p.request_stop()
        lab.run(client, probe.cleanup_argv(), check=False)
        lab.run(client, ["nvme", "disconnect-all"], check=False)
        for node in ("lab1", "lab2"):
            lab.remove_target(node)
