"""The lab's boot watchdog (xfleet.lab.qemu.watch_boot) driven by a fake QEMU: a real process
that daemonizes and writes its pid file like QEMU, and prints to its serial console only from
a chosen boot on (or never). No VM; runs in every test run."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from xfleet.lab import LabError
from xfleet.lab.qemu import pid_of, start_qemu, watch_boot
from xfleet.lab.state import NodeInfo

# QEMU's interface as the lab uses it: -pidfile PATH -serial file:PATH -daemonize. The fake
# counts its boots in `boots` beside the pid file and writes a console line from boot
# `print_from` on (0: never), then idles like a running guest until it is killed.
FAKE_QEMU = textwrap.dedent('''
    import os, sys, time
    args = sys.argv[1:]
    pidfile = args[args.index("-pidfile") + 1]
    console = args[args.index("-serial") + 1].removeprefix("file:")
    print_from = int(args[args.index("--print-from") + 1])
    counter = os.path.join(os.path.dirname(pidfile), "boots")
    boots = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(boots))
    open(console, "w").close()
    child = os.fork()
    if child:  # like -daemonize: the pid file is written before the caller gets control back
        open(pidfile, "w").write(str(child))
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)  # like QEMU: no stdio held open for the caller
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if print_from and boots >= print_from:
        with open(console, "a") as fh:
            fh.write("[    0.000000] Linux version 6.1.0 (fake)\\n")
    while True:
        time.sleep(3600)
''')


def _node(name: str, index: int) -> NodeInfo:
    return NodeInfo(name=name, index=index, ssh_port=0, private_address=f"10.77.0.{index}",
                    host_key="ssh-ed25519 AAAA")


class FakeLab:
    def __init__(self, tmp: Path, print_from: dict[str, int]):
        self.sd = tmp
        self.script = tmp / "fake-qemu.py"
        self.script.write_text(FAKE_QEMU)
        self.print_from = print_from
        self.lines: list[str] = []

    def start(self, node: NodeInfo) -> None:
        ndir = node.dir(self.sd)
        ndir.mkdir(parents=True, exist_ok=True)
        start_qemu(node, ndir, [sys.executable, str(self.script),
                                "-pidfile", str(ndir / "qemu.pid"),
                                "-serial", f"file:{ndir / 'console.log'}", "-daemonize",
                                "--print-from", str(self.print_from[node.name])])

    def boots(self, node: NodeInfo) -> int:
        return int((node.dir(self.sd) / "boots").read_text())

    def progress(self, line: str) -> None:
        self.lines.append(line)

    def stop_all(self, nodes: list[NodeInfo]) -> None:
        for n in nodes:
            pid = pid_of(n.dir(self.sd))
            if pid is not None:
                os.kill(pid, 9)


def test_a_silent_guest_is_killed_and_booted_again(tmp_path: Path) -> None:
    lab = FakeLab(tmp_path, {"lab1": 1, "lab2": 2})  # lab2 hangs silently on its first boot
    nodes = [_node("lab1", 1), _node("lab2", 2)]
    for n in nodes:
        lab.start(n)
    first = pid_of(nodes[1].dir(tmp_path))
    try:
        watch_boot(nodes, tmp_path, lab.start, lab.progress, silent_timeout=1.0, poll=0.05)
        assert (lab.boots(nodes[0]), lab.boots(nodes[1])) == (1, 2), lab.lines
        assert (nodes[0].boot_attempt, nodes[1].boot_attempt) == (1, 2)
        assert nodes[0].boot_note is None
        assert nodes[1].boot_note and "no console output within 1s" in nodes[1].boot_note
        assert any("lab2: boot 1: no console output" in line and "attempt 2 of 3" in line
                   for line in lab.lines), lab.lines
        second = pid_of(nodes[1].dir(tmp_path))
        assert first is not None and second is not None and second != first
        assert not Path(f"/proc/{first}").exists() or b"zombie" in Path(
            f"/proc/{first}/status").read_bytes().lower(), "the hung QEMU is still running"
    finally:
        lab.stop_all(nodes)


def test_a_guest_silent_on_every_boot_fails_with_the_reason_and_is_not_left_running(
        tmp_path: Path) -> None:
    lab = FakeLab(tmp_path, {"lab1": 0})
    node = _node("lab1", 1)
    lab.start(node)
    try:
        with pytest.raises(LabError) as err:
            watch_boot([node], tmp_path, lab.start, lab.progress, silent_timeout=0.5,
                       attempts=3, poll=0.05)
        assert "hung in early boot 3 times" in err.value.message, err.value
        assert "boot 1: no console output" in str(err.value.hint), err.value
        assert "boot 3: no console output" in str(err.value.hint), err.value
        assert lab.boots(node) == 3
        assert pid_of(node.dir(tmp_path)) is None, "the last hung QEMU was left running"
    finally:
        lab.stop_all([node])


def test_restarting_the_hub_restarts_the_guests_linked_to_it(tmp_path: Path) -> None:
    # lab1 listens on the private links and the others connect to it once, at start: a
    # restarted hub would leave them without a link, so they are restarted with it
    lab = FakeLab(tmp_path, {"lab1": 2, "lab2": 1, "client1": 1})
    nodes = [_node("lab1", 1), _node("lab2", 2), _node("client1", 101)]
    nodes[2].role = "client"
    for n in nodes:
        lab.start(n)
    try:
        watch_boot(nodes, tmp_path, lab.start, lab.progress, silent_timeout=1.0, poll=0.05)
        assert [lab.boots(n) for n in nodes] == [2, 2, 2], lab.lines
        assert [n.boot_attempt for n in nodes] == [2, 2, 2]
        assert nodes[1].boot_note and "restarted with lab1" in nodes[1].boot_note
        assert all(pid_of(n.dir(tmp_path)) for n in nodes)
    finally:
        lab.stop_all(nodes)


def test_restored_guests_print_nothing_and_are_not_killed_for_it(tmp_path: Path) -> None:
    # a VM restored from its saved boot goes on where it was saved: its console stays empty.
    # lab2 is restored (never prints); client1 hangs on its first boot, and its restart is a
    # restore (restart returns True): the watchdog stops watching it then.
    lab = FakeLab(tmp_path, {"lab1": 1, "lab2": 0, "client1": 0})
    nodes = [_node("lab1", 1), _node("lab2", 2), _node("client1", 101)]
    nodes[2].role = "client"
    for n in nodes:
        lab.start(n)
    restored: list[str] = []

    def restart(node: NodeInfo) -> bool:
        lab.start(node)
        restored.append(node.name)
        return True

    try:
        watch_boot(nodes, tmp_path, restart, lab.progress, silent_timeout=1.0, poll=0.05,
                   alive={"lab2"})
        assert restored == ["client1"], lab.lines
        assert [lab.boots(n) for n in nodes] == [1, 1, 2], lab.lines
        assert [n.boot_attempt for n in nodes] == [1, 1, 2]
        assert all(pid_of(n.dir(tmp_path)) for n in nodes)
    finally:
        lab.stop_all(nodes)
