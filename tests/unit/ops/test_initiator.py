"""xfleet.ops.initiator: the parser on real sysfs listings captured from the lab client (client1,
Debian 12, Linux 6.1, nvme-cli 2.3; tests/lab/test_initiator_real.py makes the same checks
live), budget warnings, the listing program on a fake sysfs tree, the fixed argv of the nvme-cli
helpers and the one-command-per-initiator count."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from xfleet.core.errors import UsageError
from xfleet.core.identity import pinned_identity
from xfleet.ops import initiator
from xfleet.ops.initiator import (
    Controller,
    InitiatorError,
    Namespace,
    budget_warnings,
    connect_argv,
    parse_address,
    parse_controllers,
)
from xfleet.remote.transport import Transport

REAL = FIXTURES / "real"
LAB1 = "nqn.2026-01.io.xfleet:lab1:tank.db.lab1vol"
LAB2 = "nqn.2026-01.io.xfleet:lab2:tank.db.lab2vol"


class Canned(Transport):
    """Answers every command with one canned stdout; records the argv."""

    kind = "canned"

    def __init__(self, out: str = "", code: int = 0):
        super().__init__("client1")
        self.out, self.code = out, code
        self.seen: list[list[str]] = []

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Iterator[str]:
        self.seen.append(list(argv))
        yield from self.out.splitlines()
        status[0] = self.code
        err[0] = "" if self.code == 0 else "failed"


def test_live_controllers_from_the_lab_client() -> None:
    ctrls = parse_controllers((REAL / "nvme_host_live.txt").read_text())
    assert [c.name for c in ctrls] == ["nvme0", "nvme1"]
    a, b = ctrls
    assert (a.nqn, a.transport, a.address, a.port, a.state) == \
        (LAB1, "tcp", "10.77.0.11", 4420, "live")
    assert (b.nqn, b.address, b.port, b.state) == (LAB2, "10.77.0.12", 4420, "live")
    for c in ctrls:  # connected with -l -1 -c 1: never gives up, retries every second
        assert (c.ctrl_loss_tmo, c.reconnect_delay, c.fast_io_fail_tmo) == (None, 1.0, None)
        assert c.live
    assert a.namespaces == (Namespace("e4e70e6e-140c-568e-bc44-faec439b299f",
                                      "760f5cbe-cf74-5bce-ac5f-dc5e1f419227", "nvme0n1", 1),)
    assert b.namespaces[0].device == "nvme1n1"


def test_the_lab_identities_are_the_pinned_ones() -> None:
    """The uuid/nguid the client sees are the ones the lab target pins for each zvol's guid
    (`zfs get guid` on lab1 and lab2 in the capture session)."""
    ctrls = {c.nqn: c for c in parse_controllers((REAL / "nvme_host_live.txt").read_text())}
    for nqn, node, guid in ((LAB1, "lab1", 9884633768255014401),
                            (LAB2, "lab2", 4160437122819145290)):
        (ns,) = ctrls[nqn].namespaces
        assert (ns.uuid, ns.nguid) == pinned_identity(node, guid)


def test_reconnecting_while_the_target_is_stopped() -> None:
    ctrls = parse_controllers((REAL / "nvme_host_reconnecting.txt").read_text())
    states = {c.nqn: c.state for c in ctrls}
    assert states == {LAB1: "connecting", LAB2: "live"}
    down = next(c for c in ctrls if c.nqn == LAB1)
    # the namespace stays while the host reconnects (same identity as when live)
    live = {c.nqn: c for c in parse_controllers((REAL / "nvme_host_live.txt").read_text())}
    assert down.namespaces == live[LAB1].namespaces
    assert not down.live
    assert budget_warnings([down], expected_outage=1.0, initiator="client1") == [
        f"client1: nvme0 ({LAB1} at 10.77.0.11:4420): controller is connecting, not live, "
        "before the restart"]


def test_budget_from_a_short_timeout_connection() -> None:
    """Connected with ctrl_loss_tmo 5, reconnect_delay 2, fast_io_fail_tmo 3: the kernel rounds
    ctrl_loss_tmo up to whole reconnect attempts (6 s)."""
    ctrls = parse_controllers((REAL / "nvme_host_budget.txt").read_text())
    short = next(c for c in ctrls if c.name == "nvme2")
    assert (short.ctrl_loss_tmo, short.reconnect_delay, short.fast_io_fail_tmo) == (6.0, 2.0, 3.0)
    warnings = budget_warnings(ctrls, expected_outage=5, initiator="client1")
    assert len(warnings) == 2 and all("nvme2" in w for w in warnings)
    loss, fast = warnings
    assert "ctrl_loss_tmo=6s < 7s" in loss and "drops the namespace" in loss
    assert "nqn.2026-01.io.xfleet:lab2:tank.db.short" in loss and "client1: " in loss
    assert "fast_io_fail_tmo=3s < 7s" in fast and "I/O errors reach the application" in fast
    # a 0.5 s blip: 0.5 + 2 < 3 and < 6, nothing to say
    assert budget_warnings(ctrls, expected_outage=0.5) == []
    # never-give-up controllers ride out any outage
    live = parse_controllers((REAL / "nvme_host_live.txt").read_text())
    assert budget_warnings(live, expected_outage=3600) == []
    with pytest.raises(UsageError):
        budget_warnings(live, expected_outage=-1)


def _ctrl(ctrl_loss_tmo: float | None = None) -> Controller:
    return Controller(name="nvme3", nqn="nqn.x:y", transport="tcp", address="10.0.0.1",
                      port=4420, state="live", ctrl_loss_tmo=ctrl_loss_tmo,
                      reconnect_delay=None, fast_io_fail_tmo=None)


def test_budget_uses_the_kernel_default_reconnect_delay_when_unknown() -> None:
    # reconnect_delay unknown -> 10 s (Linux default): 5 + 10 > 12
    assert len(budget_warnings([_ctrl(ctrl_loss_tmo=12.0)], expected_outage=5)) == 1
    assert budget_warnings([_ctrl(ctrl_loss_tmo=16.0)], expected_outage=5) == []


def test_parse_values_and_bad_output() -> None:
    assert parse_address("traddr=10.77.0.12,trsvcid=4420,src_addr=10.77.0.101") == \
        ("10.77.0.12", 4420)
    assert parse_address(None) == (None, None)
    assert parse_controllers('{"controllers": []}') == []
    doc = ('{"controllers": [{"name": "nvme10", "ctrl_loss_tmo": "-1", "state": "deleting"},'
           ' {"name": "nvme2", "fast_io_fail_tmo": "0"}]}')
    c2, c10 = parse_controllers(doc)  # natural order
    assert (c2.name, c2.fast_io_fail_tmo, c2.state) == ("nvme2", 0.0, "unknown")
    assert (c10.name, c10.ctrl_loss_tmo, c10.namespaces) == ("nvme10", None, ())
    with pytest.raises(InitiatorError, match="unexpected controller listing"):
        parse_controllers("python3: not found\n")
    with pytest.raises(InitiatorError, match="ctrl_loss_tmo"):
        parse_controllers('{"controllers": [{"name": "nvme0", "ctrl_loss_tmo": "soon"}]}')


def test_controllers_is_one_remote_command() -> None:
    t = Canned((REAL / "nvme_host_live.txt").read_text())
    before = t.commands
    ctrls = initiator.controllers(t)
    assert t.commands == before + 1 and len(ctrls) == 2
    assert t.seen == [initiator.list_argv()]
    assert t.seen[0][:2] == ["python3", "-c"]


def test_list_program_on_a_fake_sysfs(tmp_path: Path) -> None:
    """The listing program itself, on a tree shaped like Linux 6.1's sysfs (native multipath:
    the namespace's head disk lives under its subsystem)."""
    root = tmp_path / "sys"
    ctrl = root / "devices/virtual/nvme-fabrics/ctl/nvme0"
    ctrl.mkdir(parents=True)
    for k, v in {"subsysnqn": LAB1, "transport": "tcp", "state": "connecting",
                 "address": "traddr=10.77.0.11,trsvcid=4420", "ctrl_loss_tmo": "off",
                 "reconnect_delay": "1", "fast_io_fail_tmo": "off"}.items():
        (ctrl / k).write_text(v + "\n")
    (ctrl / "nvme0c0n1").mkdir()  # the path device: no identity of its own
    sub = root / "devices/virtual/nvme-subsystem/nvme-subsys0"
    (sub / "nvme0n1").mkdir(parents=True)
    for k, v in {"uuid": "E4E70E6E-140C-568E-BC44-FAEC439B299F", "nguid": "aa-bb",
                 "nsid": "1"}.items():
        (sub / "nvme0n1" / k).write_text(v + "\n")
    os.symlink(ctrl, sub / "nvme0")
    (root / "class/nvme").mkdir(parents=True)
    (root / "class/nvme-subsystem").mkdir(parents=True)
    os.symlink(ctrl, root / "class/nvme/nvme0")
    os.symlink(sub, root / "class/nvme-subsystem/nvme-subsys0")
    out = subprocess.run([sys.executable, "-c", initiator.LIST_PROGRAM.text, str(root)],
                         capture_output=True, text=True, check=True).stdout
    (c,) = parse_controllers(out)
    assert (c.name, c.nqn, c.state, c.address, c.port) == \
        ("nvme0", LAB1, "connecting", "10.77.0.11", 4420)
    assert c.namespaces == (Namespace("e4e70e6e-140c-568e-bc44-faec439b299f", "aa-bb",
                                      "nvme0n1", 1),)
    empty = subprocess.run([sys.executable, "-c", initiator.LIST_PROGRAM.text, str(tmp_path / "x")],
                           capture_output=True, text=True, check=True).stdout
    assert parse_controllers(empty) == []


def test_connect_argv_is_fixed_and_validated() -> None:
    assert connect_argv("10.77.0.11", 4420, LAB1) == [
        "nvme", "connect", "-t", "tcp", "-a", "10.77.0.11", "-s", "4420", "-n", LAB1,
        "-l", "-1", "-c", "1"]
    argv = connect_argv("10.77.0.12", 4420, LAB2, ctrl_loss_tmo=5, reconnect_delay=2,
                        fast_io_fail_tmo=3)
    assert argv[:3] == ["python3", "-c", initiator.FABRICS_PROGRAM.text]
    assert argv[3] == (f"transport=tcp,traddr=10.77.0.12,trsvcid=4420,nqn={LAB2},"
                       "ctrl_loss_tmo=5,reconnect_delay=2,fast_io_fail_tmo=3")
    for bad in (dict(address="-h"), dict(address="10.0.0.1,nqn=x"), dict(port=0),
                dict(nqn="nqn.x,ctrl_loss_tmo=1"), dict(nqn="iqn.bad"), dict(nqn="nqn.a b"),
                dict(ctrl_loss_tmo=-5), dict(reconnect_delay=0)):
        kw: dict[str, Any] = dict(address="10.0.0.1", port=4420, nqn=LAB1)  # mixed kwargs
        kw.update(bad)
        with pytest.raises(UsageError):
            connect_argv(**kw)


def test_connect_and_disconnect_run_one_command_each() -> None:
    t = Canned()
    initiator.connect(t, "10.77.0.11", 4420, LAB1)
    initiator.disconnect(t, LAB1)
    initiator.disconnect_controller(t, "nvme12")
    initiator.disconnect_all(t)
    assert t.commands == 4
    assert t.seen[1:] == [["nvme", "disconnect", "-n", LAB1], ["nvme", "disconnect", "-d",
                                                               "nvme12"],
                          ["nvme", "disconnect-all"]]
    for bad in ("nvme", "nvme1n1", "-a", "nvme1 ", "../nvme1"):
        with pytest.raises(UsageError, match="not an NVMe controller name"):
            initiator.disconnect_controller(t, bad)
    assert t.commands == 4  # nothing run for a bad name
