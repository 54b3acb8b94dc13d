"""The lab client (client1, an NVMe/TCP initiator VM) against the lab target 1.0 on lab1 and
lab2: xfleet.ops.initiator reads both controllers in one command, with the pinned identities; a
stopped target shows as a reconnecting controller while the other stays live, and comes back
live without an I/O error (probes run on both devices throughout); a connection with short
timeouts is flagged by budget_warnings.

With XFLEET_LAB_CAPTURE=DIR the raw listings are written there as the fixtures
tests/fixtures/real/nvme_host_{live,reconnecting,budget}.txt."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from xfleet.core.identity import nqn_for, pinned_identity
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import probe, target_pkg
from xfleet.ops import initiator
from xfleet.remote.transport import Transport

from .labkit import Lab, log

pytestmark = pytest.mark.lab

NODES = ("lab1", "lab2")
VOLUME = "tank/db/v1"  # the same name on both nodes: two subsystems, two identities
SHORT = "tank/db/short"
PORT = int(NVMET_DEFAULTS["port"])
PREFIX = str(NVMET_DEFAULTS["nqn_prefix"])


def _capture(name: str, text: str) -> None:
    out = os.environ.get("XFLEET_LAB_CAPTURE")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"nvme_host_{name}.txt").write_text(text)


def _wait_state(t: Transport, nqn: str, want_live: bool,
                timeout: float = 60) -> list[initiator.Controller]:
    deadline = time.monotonic() + timeout
    while True:
        ctrls = initiator.controllers(t)
        mine = [c for c in ctrls if c.nqn == nqn]
        if mine and all(c.live == want_live for c in mine):
            return ctrls
        assert time.monotonic() < deadline, \
            f"{nqn}: still {[c.state for c in mine]} after {timeout:.0f}s"
        time.sleep(0.5)


def _wait_namespaces(t: Transport, nqns: list[str], timeout: float = 60) -> None:
    """Until every controller of `nqns` is live with its namespace."""
    deadline = time.monotonic() + timeout
    while True:
        by = initiator.by_nqn(initiator.controllers(t))
        if all(n in by and by[n][0].live and by[n][0].namespaces for n in nqns):
            return
        assert time.monotonic() < deadline, f"namespaces not seen within {timeout:.0f}s: {by}"
        time.sleep(0.2)


def test_client_follows_target_stop_and_start(lab: Lab, client: str, tmp_path: Path) -> None:
    pkgs = target_pkg.build_all(tmp_path / "debs")
    guids: dict[str, str] = {}
    for node in NODES:
        lab.run(node, ["zfs", "create", "-p", "-V", "32M", VOLUME])
        guids[node] = lab.run(node, ["zfs", "get", "-Hp", "-o", "value", "guid", VOLUME]
                              ).stdout.strip()
    nqns = {node: nqn_for(PREFIX, node, VOLUME) for node in NODES}
    inv = inventory.load(lab.inventory)
    assert list(inv.initiators) == [client] and client not in inv.hosts
    assert inv.initiators[client].pools == ()
    probes: list[probe.Probe] = []
    with Connections(inv.initiators, state_dir=inv.state_dir) as conns:
        t = conns.get(client)
        try:
            for node in NODES:
                lab.install_target(node, pkgs, "1.0")
            for node in NODES:
                initiator.connect(t, lab.state.node(node).private_address, PORT, nqns[node],
                                  ctrl_loss_tmo=-1, reconnect_delay=1)
            # the kernel scans a new controller's namespaces after `nvme connect` returns
            _wait_namespaces(t, list(nqns.values()))

            before = t.commands
            raw = t.run(initiator.list_argv()).stdout
            ctrls = initiator.parse_controllers(raw)
            assert t.commands == before + 1  # one command reads every controller
            _capture("live", raw)
            by = {c.nqn: c for c in ctrls}
            assert sorted(by) == sorted(nqns.values())
            for node in NODES:
                c = by[nqns[node]]
                assert c.live and c.transport == "tcp"
                assert (c.address, c.port) == (lab.state.node(node).private_address, PORT)
                assert (c.ctrl_loss_tmo, c.reconnect_delay, c.fast_io_fail_tmo) == \
                    (None, 1.0, None)
                (ns,) = c.namespaces
                assert (ns.uuid, ns.nguid) == pinned_identity(node, guids[node])
            devices = {node: "/dev/" + by[nqns[node]].namespaces[0].device for node in NODES}
            assert initiator.budget_warnings(ctrls, expected_outage=60) == []

            probes = [probe.start(lab.state, client, devices[node]) for node in NODES]
            assert len({p.name for p in probes}) == 2  # own state files per device
            for p in probes:  # I/O flows on both devices before the target goes
                p.wait_writes()

            # lab1's target goes away: its controller reconnects, lab2's stays live
            target_pkg.stop_service(lab.state, "lab1")
            ctrls = _wait_state(t, nqns["lab1"], want_live=False)
            states = {c.nqn: c.state for c in ctrls}
            log(f"target on lab1 stopped: {states}")
            assert states[nqns["lab1"]] in ("connecting", "resetting")
            assert states[nqns["lab2"]] == "live"
            raw = t.run(initiator.list_argv()).stdout
            _capture("reconnecting", raw)
            down = next(c for c in initiator.parse_controllers(raw) if c.nqn == nqns["lab1"])
            assert down.namespaces == by[nqns["lab1"]].namespaces  # the namespace stays
            warned = initiator.budget_warnings([down], expected_outage=5, initiator=client)
            assert warned and "not live" in warned[0] and nqns["lab1"] in warned[0]
            live = next(p for p in probes if p.device == devices["lab2"])
            live.wait_writes()  # lab2's device serves I/O while lab1's target is down

            target_pkg.start_service(lab.state, "lab1")
            ctrls = _wait_state(t, nqns["lab1"], want_live=True)
            assert all(c.live for c in ctrls)
            assert {c.nqn: c.namespaces for c in ctrls} == \
                {c.nqn: c.namespaces for c in by.values()}
            for p in probes:  # and both carry I/O again once it is back
                p.wait_writes()

            results = dict(zip([p.device for p in probes], probe.stop_all(probes),
                               strict=True))
            probes = []
            log(f"probes through a stop/start of lab1's target: {results}")
            for dev, res in results.items():
                assert res.clean, (dev, res)

            # a connection with short timeouts is flagged; the others are not
            lab.run("lab2", ["zfs", "create", "-p", "-V", "32M", SHORT])
            lab.run("lab2", [target_pkg.SCRIPT_PATH, "export", SHORT])
            short_nqn = nqn_for(PREFIX, "lab2", SHORT)
            initiator.connect(t, lab.state.node("lab2").private_address, PORT, short_nqn,
                              ctrl_loss_tmo=5, reconnect_delay=2, fast_io_fail_tmo=3)
            raw = t.run(initiator.list_argv()).stdout
            _capture("budget", raw)
            ctrls = initiator.parse_controllers(raw)
            short = next(c for c in ctrls if c.nqn == short_nqn)
            assert (short.ctrl_loss_tmo, short.reconnect_delay, short.fast_io_fail_tmo) == \
                (6.0, 2.0, 3.0)  # the kernel rounds up to whole reconnect attempts
            warnings = initiator.budget_warnings(ctrls, expected_outage=30, initiator=client)
            assert len(warnings) == 2, warnings
            assert all(short_nqn in w and short.name in w and w.startswith(f"{client}: ")
                       for w in warnings)
            assert "ctrl_loss_tmo=6s" in warnings[0] and "fast_io_fail_tmo=3s" in warnings[1]

            initiator.disconnect_all(t)
            assert initiator.controllers(t) == []
        finally:
            lab.run(client, probe.cleanup_argv(), check=False)
            for node in NODES:
                lab.remove_target(node)
