"""An I/O probe for lab tests: prove that a block device kept serving I/O through an event
(a target restart, an upgrade, a move's cutover).

The probe runs on a lab VM (usually a client) in the background: it writes sequence-numbered,
checksummed 4 KiB blocks with O_DIRECT over 256 slots of the device and reads each one back,
counting every error and mismatch and the longest stall (one write+read round); when told to
stop it reads every slot back once more and writes its result as JSON. Several probes can run
at once on one VM, one per device, each with its own state files under `/root/xfleet-probe/`
(`NAME.stop`, `NAME.json`, `NAME.log`, and `NAME.json.progress`: its write count, every 10
writes, which `Probe.wait_writes` waits on).

    p = probe.start(lab, "client1", "/dev/nvme0n1")
    ...                         # restart the target
    result = p.stop()
    assert result.clean, result
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field

from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.programs import program_text
from xfleet.lab.state import LabState

DIR = "/root/xfleet-probe"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9][A-Za-z0-9_./-]*$")

# the program: xfleet/lab/programs/io_probe.py (its docstring says its arguments and output)
PROGRAM = program_text("io_probe.py")  # xfleet/lab/programs/io_probe.py


# Named by its content and written by rename: a probe starting while another start rewrites the
# file must never read a half-written program (it would run an empty file and exit silently).
PROGRAM_PATH = f"{DIR}/probe-{hashlib.sha256(PROGRAM.encode()).hexdigest()[:12]}.py"


@dataclass(frozen=True)
class ProbeResult:
    writes: int
    reads: int
    errors: int
    mismatches: int
    longest_stall: float  # seconds, one write+read round
    messages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def clean(self) -> bool:
        """Wrote and read something, and saw no error and no mismatch."""
        return self.writes > 0 and self.errors == 0 and self.mismatches == 0


@dataclass
class Probe:
    """A probe started by `start` on lab VM `vm` against `device`."""

    lab: LabState
    vm: str
    device: str
    name: str

    def _path(self, ext: str) -> str:
        return f"{DIR}/{self.name}.{ext}"

    def _run(self, argv: list[str], *, check: bool = True) -> ssh.Result:
        return ssh.run(self.lab.endpoint(self.vm), argv, timeout=60, check=check)

    def running(self) -> bool:
        """True while the probe's process runs."""
        res = self._run(["pgrep", "-f", "--", f"{PROGRAM_PATH} {self.device} "], check=False)
        return res.exit_status == 0

    def writes(self) -> int:
        """Blocks written so far (as of the probe's last progress note, every 10 writes)."""
        res = self._run(["cat", self._path("json.progress")], check=False)
        return int(res.stdout) if res.exit_status == 0 and res.stdout.strip().isdigit() else 0

    def wait_writes(self, more: int = 20, *, timeout: float = 120.0) -> int:
        """Wait until the probe has written `more` blocks beyond what it had written when
        called (so a phase of a test is proven to have carried I/O, whatever the machine's
        speed); returns the count. Raises LabError if it does not get there in `timeout`."""
        want = self.writes() + more
        deadline = time.monotonic() + timeout
        while (n := self.writes()) < want:
            if time.monotonic() > deadline:
                log = self._run(["tail", "-n", "20", self._path("log")], check=False).stdout
                raise LabError(f"{self.vm}: probe {self.name} on {self.device} wrote {n} "
                               f"blocks, not {want}, within {timeout:.0f}s",
                               hint=f"running: {self.running()}; its log:\n{log}")
            time.sleep(0.2)
        return n

    def request_stop(self) -> None:
        """Tell the probe to stop: it reads every slot back once more and writes its result
        (`result` waits for it)."""
        self._run(["touch", self._path("stop")])

    def result(self, *, timeout: float = 120.0) -> ProbeResult:
        """Wait for the result of a probe told to stop (`request_stop`)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self._run(["cat", self._path("json")], check=False)
            if res.exit_status == 0 and res.stdout.strip():
                return parse_result(res.stdout)
            if time.monotonic() > deadline:
                log = self._run(["tail", "-n", "20", self._path("log")], check=False).stdout
                ps = self._run(["ps", "-o", "pid,stat,wchan:32,args", "-C", "python3"],
                               check=False).stdout
                raise LabError(f"{self.vm}: probe {self.name} on {self.device} gave no result "
                               f"within {timeout:.0f}s",
                               hint=f"its log:\n{log}\nprocesses (D = blocked in I/O):\n{ps}")
            time.sleep(0.2)

    def stop(self, *, timeout: float = 120.0) -> ProbeResult:
        """Tell the probe to stop, wait for its result (it reads every slot back first)."""
        self.request_stop()
        return self.result(timeout=timeout)


def stop_all(probes: list[Probe], *, timeout: float = 120.0) -> list[ProbeResult]:
    """Stop several probes at once (each finishes its final pass while the others do) and
    return their results in order."""
    for p in probes:
        p.request_stop()
    return [p.result(timeout=timeout) for p in probes]


# Test clean-up on a VM: kill every probe (waiting up to 10 s until they are gone), then drop
# every NVMe connection. The pattern is anchored at `python3` so it cannot match this shell,
# whose own argv holds it (`pkill -f PATH` would kill the shell before the disconnect).
CLEANUP_SCRIPT = program_text("probe_cleanup.sh")  # xfleet/lab/programs/probe_cleanup.sh


def cleanup_argv() -> list[str]:
    """The command that stops every probe on a VM and disconnects its NVMe controllers."""
    return ["sh", "-c", CLEANUP_SCRIPT, "sh", f"^python3 {PROGRAM_PATH}"]


def parse_result(text: str) -> ProbeResult:
    """The probe's JSON result -> ProbeResult."""
    try:
        d = json.loads(text)
        return ProbeResult(int(d["writes"]), int(d["reads"]), int(d["errors"]),
                           int(d["mismatches"]), float(d["longest_stall"]),
                           tuple(str(m) for m in d.get("messages", [])))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"unexpected probe result: {exc}: {text[:200]!r}") from None


def start(lab: LabState, vm: str, device: str, *, name: str | None = None) -> Probe:
    """Start a probe on `vm` against block device `device` (e.g. /dev/nvme0n1); returns at once.
    `name` (default: the device's base name) names its state files; a previous probe's files
    of that name are removed first. The probe overwrites the first 1 MiB of the device."""
    if not _DEVICE.match(device) or ".." in device:
        raise LabError(f"not a device path: {device!r}", hint="e.g. /dev/nvme0n1")
    name = name or device.rsplit("/", 1)[-1]
    if not _NAME.match(name):
        raise LabError(f"not a probe name: {name!r}", hint="letters, digits, '_', '.', '-'")
    p = Probe(lab, vm, device, name)
    ep = lab.endpoint(vm)
    ssh.run(ep, ["sh", "-c", 'mkdir -p "$1" && base64 -d > "$2.$$" && mv -f "$2.$$" "$2"',
                 "sh", DIR, PROGRAM_PATH], input=base64.b64encode(PROGRAM.encode()).decode())
    stop, out, log = p._path("stop"), p._path("json"), p._path("log")
    ssh.run(ep, ["rm", "-f", stop, out, out + ".tmp", log, out + ".progress"])
    ssh.run(ep, ["sh", "-c", 'setsid python3 "$1" "$2" "$3" "$4" > "$5" 2>&1 < /dev/null &',
                 "sh", PROGRAM_PATH, device, stop, out, log])
    return p
