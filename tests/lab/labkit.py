"""Helpers for the lab tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet.core import zfs
from xfleet.lab import LabError, kill_node, target_pkg, up
from xfleet.lab import ssh as labssh
from xfleet.lab.state import SILENT_TIMEOUT, LabState

ROOT = Path(__file__).resolve().parents[2]
TENANT = "xfleet:tenant"
SSH_PORT = int(os.environ.get("XFLEET_LAB_TEST_SSH_PORT", "2211"))
LINK_PORT = int(os.environ.get("XFLEET_LAB_TEST_LINK_PORT", "12311"))
NODES = 2  # storage nodes of the session lab
CLIENT = "client1"  # the NVMe/TCP initiator VM, booted on first use (Lab.ensure_client)
# the session boots it through the boot watchdog (its first boot stalled): long enough for a
# normal client boot to have printed on its console (the kernel decompressor prints within
# seconds of the start, even on a loaded machine); its second boot is usually a restore
CLIENT_SILENT_TIMEOUT = 12.0


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# Figures a test measured (e.g. a latency with a target), printed at the end of the lab run
# (conftest.py's terminal summary): timing targets are reported, not asserted.
FIGURES: list[str] = []


def figure(text: str) -> None:
    """Record a measured figure for the run's summary (and log it now)."""
    FIGURES.append(text)
    log(text)


# What the current test ran through xfleet (argv, exit status, outputs), for its failure
# bundle (conftest.py writes it under .xfleet/test-artifacts/<test>/ when the test fails).
COMMANDS: list[dict[str, Any]] = []


def consoles(state: LabState | None, lines: int = 12) -> str:
    """The last console lines of every lab VM, for assertion messages."""
    if state is None:
        return ""
    return "".join(f"\n--- {n.name} console (last {lines} lines):\n"
                   f"{labssh.console_tail(state.endpoint(n), lines)}" for n in state.nodes)


@dataclass
class CLIResult:
    code: int
    out: str
    err: str
    seconds: float
    argv: list[str] = field(default_factory=list)
    state: LabState | None = field(default=None, repr=False)

    def explain(self) -> str:
        """The command, its exit status, its outputs' tails and the VMs' last console lines:
        the message of an assertion about this result."""
        return (f"command: {' '.join(self.argv)}\nexit status: {self.code} after "
                f"{self.seconds:.1f}s\nstdout (tail): {self.out[-2000:]}\n"
                f"stderr (tail): {self.err[-3000:]}{consoles(self.state)}")

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON:\n{self.explain()}") from exc


@dataclass
class Lab:
    """The running test lab and helpers to drive it as a user would."""

    state: LabState
    inventory: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.state.state_dir

    def run(self, node: str, argv: Sequence[str], *, check: bool = True,
            input: str | bytes | None = None, timeout: float = 600) -> labssh.Result:
        return labssh.run(self.state.endpoint(node), argv, check=check, input=input,
                          timeout=timeout)

    def xfleet(self, *args: str, inventory: Path | None = None, mirror: Path | str,
               timeout: float = 600) -> CLIResult:
        """`python -m xfleet --inventory INV --mirror DB ARGS...` in a subprocess."""
        argv = [sys.executable, "-m", "xfleet", "--inventory", str(inventory or self.inventory),
                "--mirror", str(mirror), *args]
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("XFLEET_INVENTORY", None)
        env.pop("XFLEET_MIRROR", None)
        t = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                               timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            COMMANDS.append({"argv": argv, "exit": None, "timeout": timeout,
                             "stdout": _text(exc.stdout), "stderr": _text(exc.stderr)})
            raise AssertionError(
                f"command: {' '.join(argv)}\ndid not finish within {timeout:.0f}s\n"
                f"stderr (tail): {_text(exc.stderr)[-3000:]}{consoles(self.state)}") from exc
        COMMANDS.append({"argv": argv, "exit": p.returncode, "seconds": time.monotonic() - t,
                         "stdout": p.stdout, "stderr": p.stderr})
        return CLIResult(p.returncode, p.stdout, p.stderr, time.monotonic() - t, argv,
                         self.state)

    def popen_xfleet(self, *args: str, mirror: Path,
                     inventory: Path | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "xfleet", "--inventory", str(inventory or self.inventory),
                "--mirror", str(mirror), *args]
        env = {**os.environ, "COLUMNS": "200"}
        COMMANDS.append({"argv": argv, "background": True})
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=env)

    @contextmanager
    def running_xfleet(self, *args: str, mirror: Path,
                       inventory: Path | None = None) -> Iterator[subprocess.Popen[str]]:
        """`popen_xfleet` for a `with` block: the process is killed on the way out if it is
        still running (an assertion that fails mid-test leaves no xfleet behind)."""
        proc = self.popen_xfleet(*args, mirror=mirror, inventory=inventory)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reaps it and closes the pipes (harmless if done already)

    def write_random(self, node: str, volume: str, mb: int, *, seek_mb: int = 0) -> None:
        """Write `mb` MiB of random data into zvol `volume` at `seek_mb` (direct I/O)."""
        self.run(node, ["sh", "-c", 'dd if=/dev/urandom of="/dev/zvol/$1" bs=1M count="$2" '
                        'seek="$3" oflag=direct conv=notrunc status=none', "sh", volume,
                        str(mb), str(seek_mb)])

    def zfs_list(self, node: str) -> list[tuple[Any, ...]]:
        """What the node itself reports: `zfs list -Hp -t all -o COLUMNS,xfleet:tenant`,
        typed by xfleet's own parser, as sorted (COLUMNS..., tenant) tuples."""
        out = self.run(node, zfs.zfs_list(user_properties=[TENANT])).stdout
        rows = [zfs.parse_dataset_line(line, zfs.DATASET_COLUMNS, [TENANT])
                for line in out.splitlines() if line.strip()]
        return sorted(rows, key=lambda r: str(r[0]))

    def power_cycle(self, node: str) -> None:
        """Cut `node`'s power and bring it back: its QEMU is SIGKILLed (what ZFS had not
        synced is lost, as on real hardware) and it is restored from its saved boot (taken
        before any pool was imported) with its own data disk, whose pool is imported (or, with
        no saved boot, booted from the image with that disk). Seconds where a reboot takes
        ~30-150 s under TCG; what xfleet sees is a reboot: its connections drop, the node
        answers from a new boot (nothing under /run survives), with the event queue of that
        boot and its pool imported again (a new load_guid)."""
        t = time.monotonic()
        marker = "/run/xfleet-lab-before-power-cycle"
        self.run(node, ["touch", marker])
        assert kill_node(node, state_dir=self.state_dir, keep_data=True), f"{node} not running"
        self.ensure_up()  # restores it with its own data disk and imports its pool
        res = self.run(node, ["test", "-e", marker], check=False)
        assert res.exit_status == 1, f"{node} answers from the same boot: {res}"
        self.timings.setdefault("power_cycle", 0.0)
        self.timings["power_cycle"] += time.monotonic() - t

    def ensure_up(self) -> None:
        """Restart nodes that were killed (by a fault test) or stopped by a kernel oops; no-op
        when all are running. A client the session started is brought back too (a running
        one stays, and is kept in the inventory: `up` never drops one)."""
        t = time.monotonic()
        self.state = up(NODES, self.inventory, state_dir=self.state_dir, ssh_port=SSH_PORT,
                        link_port=LINK_PORT, clients=len(self.state.clients), progress=log)
        self.timings.setdefault("ensure_up", 0.0)
        self.timings["ensure_up"] += time.monotonic() - t

    def ensure_client(self, *, stall_first_boot: bool = False) -> str:
        """Boot the client VM `client1` (an NVMe/TCP initiator, no pool) if it is not running,
        without touching the storage nodes (lab1 keeps a spare private link for it); it is
        written into the inventory under `all: initiators:`. Returns its name.

        `stall_first_boot`: its first boot is started with its CPUs stopped (a QEMU that never
        prints), so the boot watchdog must kill it after CLIENT_SILENT_TIMEOUT and boot it
        again: the watchdog's proof in the lab, for the price of that timeout."""
        t = time.monotonic()
        self.state = up(NODES, self.inventory, state_dir=self.state_dir, ssh_port=SSH_PORT,
                        link_port=LINK_PORT, clients=1, progress=log,
                        stall_first_boot=[CLIENT] if stall_first_boot else [],
                        silent_timeout=CLIENT_SILENT_TIMEOUT if stall_first_boot else
                        SILENT_TIMEOUT)
        self.timings.setdefault("client_up", 0.0)
        self.timings["client_up"] += time.monotonic() - t
        return CLIENT

    def install_target(self, node: str, packages: dict[str, target_pkg.Package],
                       version: str = "1.0") -> None:
        """Copy the lab target packages to `node`, install `version` and wait until it is
        ready (xfleet.lab.target_pkg.install)."""
        target_pkg.install(self.state, node, packages, version)

    def remove_target(self, node: str) -> None:
        """Stop and purge the lab target on `node` (best effort, for clean-up)."""
        target_pkg.uninstall(self.state, node)


def write_bundle(root: Path, nodeid: str, when: str, report: str,
                 state_dir: Path | None) -> Path:
    """Write `root`/<test>/ (.xfleet/test-artifacts/<test>/ in the suite): the failure
    report, the xfleet command lines and outputs of the test, every VM's serial console, and
    from each VM that answers the tail of `zpool events -v`, `dmesg`, `zpool status` and the
    processes. Returns the directory."""
    out = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "report.txt").write_text(f"{nodeid} failed in {when}\n\n{report}\n")
    (out / "commands.json").write_text(json.dumps(COMMANDS, indent=1, default=str))
    (out / "commands.txt").write_text("".join(
        f"$ {' '.join(map(str, c['argv']))}\n"
        + ("(started in the background)\n" if c.get("background") else
           f"exit status: {c.get('exit')}\n--- stdout\n{c.get('stdout', '')}\n"
           f"--- stderr\n{c.get('stderr', '')}\n")
        + "\n" for c in COMMANDS))
    if state_dir is None:
        return out
    for console in sorted((state_dir / "nodes").glob("*/console.log")):
        shutil.copy(console, out / f"{console.parent.name}-console.log")
    try:
        lab = LabState.load(state_dir)
    except LabError:
        return out
    probes = {
        "zpool-events": "zpool events -v 2>&1 | tail -n 400",
        "dmesg": "dmesg 2>&1 | tail -n 200",
        "zpool-status": "zpool status -v 2>&1; zpool list -v 2>&1",
        "ps": "ps -eo pid,ppid,stat,etime,args 2>&1",
    }
    for n in lab.nodes:
        for name, script in probes.items():
            if n.is_client and name.startswith("zpool"):
                continue
            try:
                res = labssh.run(lab.endpoint(n), ["sh", "-c", script], check=False,
                                 timeout=30, connect_timeout=5)
                text = res.stdout + (f"\n(stderr: {res.stderr})" if res.stderr else "")
            except LabError as exc:
                text = f"(not reachable: {exc})"
            (out / f"{n.name}-{name}.txt").write_text(text)
    return out


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def mirror_rows(db: Path, node: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            f"SELECT {', '.join(zfs.DATASET_COLUMNS)}, tenant FROM datasets WHERE node = ?",
            (node,),
        ).fetchall()
    finally:
        conn.close()
    return sorted(rows, key=lambda r: str(r[0]))
