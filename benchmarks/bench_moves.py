"""Volume move throughput on the lab (issue 6): xfleet vs a plain ssh pipe vs syncoid.

    .venv/bin/python benchmarks/bench_moves.py [--mib 500] [--state-dir /tmp/x5/benchlab]
        [--ssh-port 2221] [--link-port 12321] [--out /tmp/x5/bench_moves.out] [--no-gcm] [--keep]

Boots its own two-node lab (its own state dir and ports: never the developer's lab on 2201 or
the test suite's on 2211+), writes a ~500 MB volume of mixed data on lab1 (half urandom, half
text, lz4), snapshots it `@base`, and copies that snapshot to lab2, each copy into a fresh name
that is destroyed (and its space freed) before the next run:

1. the plain pipe through this host, the issue's baseline: `ssh lab1 zfs send -L -c SNAP |
   ssh lab2 zfs receive -s -u NAME` with the OpenSSH client (its default cipher), the lab's key
   and pinned host keys;
2. `xfleet.remote.relay.relay` called directly between two SSHTransports (the same argv);
3. `syncoid --no-sync-snap --compress=none --sendoptions=Lc` between the two nodes (both
   remote: the per-node port, key and pinned host key come from an ssh config file, put in
   front of syncoid by an `ssh` wrapper in PATH, since syncoid 2.1 has one --sshport only);
4. `xfleet move VOL --to lab2` (CLI): snapshot, base copy, catch-up, cutover, verify, rename;
   its base copy's relay figures come from the move's log ("received base: N bytes in S s");
5. the plain pipe again (from the retired source, same snapshot), to bracket the drift of a
   shared machine, and (unless --no-gcm) once more with aes128-gcm, xfleet's preferred cipher.

Measured per run: wall time; the stream's bytes (`zfs send | wc -c` on lab1, once: every run
sends the same snapshot with the same flags), cross-checked per run where it can be counted;
bytes on the wire (the lab1 -> host TCP connection: OpenSSH's own "Transferred:" figures with
LogLevel=VERBOSE, TCP_INFO for paramiko's socket); CPU (user+sys) of this machine's processes
for the copy (getrusage of this process and of its reaped children, which includes syncoid's
ssh ControlMasters: this process is their subreaper during the syncoid run); CPU of the two
lab VMs (their QEMU processes, /proc); the machine's load (busy CPUs from /proc/stat, load
average). Everything shares this machine's CPUs with the VMs (TCG), so the figures say more
about relative cost than about real disks and networks. Record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet import lab
from xfleet.fleet import inventory
from xfleet.lab.ssh import Endpoint
from xfleet.remote.relay import relay
from xfleet.remote.ssh import SSHTransport

VOL = "tank/bench/vol"
SNAP = f"{VOL}@base"
SEND = ["zfs", "send", "-L", "-c"]
RECV = ["zfs", "receive", "-s", "-u"]
GCM = "aes128-gcm@openssh.com"
CLK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")
RECEIVED = re.compile(r"received (\S+): ([\d,]+) bytes in ([\d.]+)s")

OUT: list[str] = []


def out(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def say(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# measuring


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def _proc_cpu(pid: int | None) -> float:
    """utime + stime of a process (all its threads), seconds; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _proc_io(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


@dataclass
class Probe:
    at: float
    self_cpu: float
    child_cpu: float
    vm_cpu: float
    busy: int
    total: int
    load: tuple[float, float, float]

    @classmethod
    def take(cls, qemu_pids: list[int]) -> Probe:
        s = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = _cpu_times()
        return cls(time.perf_counter(), s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime,
                   sum(_proc_cpu(p) for p in qemu_pids), busy, total, os.getloadavg())


@dataclass
class Row:
    name: str
    wall: float
    stream: int | None = None  # bytes of the zfs send stream (None: not counted in this run)
    wire: int | None = None  # bytes on the lab1 -> host connection
    local_cpu: float | None = None
    vm_cpu: float | None = None
    busy_cpus: float | None = None
    load: tuple[float, float, float] | None = None
    baseline: bool = False
    notes: list[str] = field(default_factory=list)

    def rate(self, size: int) -> float:
        return size / self.wall / 1e6


def measure(name: str, qemu_pids: list[int], fn: Callable[[], dict[str, Any]]) -> Row:
    a = Probe.take(qemu_pids)
    extra = fn()
    b = Probe.take(qemu_pids)
    jiffies = max(1, b.total - a.total)
    row = Row(name, b.at - a.at,
              local_cpu=(b.self_cpu - a.self_cpu) + (b.child_cpu - a.child_cpu),
              vm_cpu=b.vm_cpu - a.vm_cpu,
              busy_cpus=(b.busy - a.busy) / jiffies * (os.cpu_count() or 1),
              load=b.load)
    for k, v in extra.items():
        if k == "notes":
            row.notes.extend(v)
        else:
            setattr(row, k, v)
    return row


def wait_zombie(pid: int) -> tuple[dict[str, int], float]:
    """Wait for a child to exit without reaping it; its /proc io counters and CPU seconds."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return _proc_io(pid), _proc_cpu(pid)


def tcp_bytes(sock: Any) -> tuple[int, int]:
    """(bytes acked, bytes received) of a TCP connection (Linux TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked, received = struct.unpack_from("QQ", info, 120)
    return acked, received


def transferred(log: Path) -> tuple[int, int] | None:
    """OpenSSH's (sent, received) bytes for its connection, from a LogLevel=VERBOSE log."""
    m = TRANSFERRED.search(log.read_text(errors="replace")) if log.exists() else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def adopted_children() -> list[int]:
    me = os.getpid()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            pids.append(int(d.name))
    return pids


# ---------------------------------------------------------------------------------------------
# the lab


class Lab:
    def __init__(self, state_dir: Path):
        self.sd = state_dir
        self.state = lab.LabState.load(state_dir)
        self.inv_path = state_dir / "lab.yaml"

    def run(self, node: str, argv: list[str], timeout: float = 1800, check: bool = True) -> str:
        return lab.run(node, argv, state_dir=self.sd, timeout=timeout, check=check).stdout

    def sh(self, node: str, script: str, timeout: float = 1800) -> str:
        return self.run(node, ["sh", "-c", script], timeout=timeout)

    def ep(self, node: str) -> Endpoint:
        return self.state.endpoint(node)

    def qemu_pids(self) -> list[int]:
        pids = []
        for n in self.state.nodes:
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((n.dir(self.sd) / "qemu.pid").read_text().strip()))
        return pids

    def guid(self, node: str, snap: str) -> str:
        return self.run(node, ["zfs", "get", "-H", "-o", "value", "guid", snap]).strip()

    def clean(self, node: str, name: str) -> None:
        """Destroy `name` (if any) and wait until its space is freed: no background frees
        during the next run."""
        self.sh(node, f"zfs list {shlex.quote(name)} >/dev/null 2>&1 && "
                f"zfs destroy -r {shlex.quote(name)}; zpool wait -t free tank; zpool sync tank")


def ssh_argv(ep: Endpoint, log: Path, cipher: str | None) -> list[str]:
    """The plain OpenSSH client: the lab's key, its pinned host key, strict checking, no
    multiplexing; VERBOSE logging into `log` (for its "Transferred:" line)."""
    return [
        "ssh", "-p", str(ep.port), "-i", str(ep.identity_file),
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={ep.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={ep.name}", "-o", "BatchMode=yes",
        "-o", "ControlMaster=no", "-o", "ControlPath=none",
        "-o", "LogLevel=VERBOSE", "-E", str(log),
        *(["-c", cipher] if cipher else []),
        f"{ep.user}@{ep.address}",
    ]


# ---------------------------------------------------------------------------------------------
# the runs


def run_pipe(lb: Lab, snap: str, target: str, work: Path, cipher: str | None) -> dict[str, Any]:
    tag = target.rsplit("/", 1)[1]
    logs = [work / f"{tag}-src.log", work / f"{tag}-dst.log"]
    errs = [work / f"{tag}-src.err", work / f"{tag}-dst.err"]
    for p in (*logs, *errs):
        p.unlink(missing_ok=True)
    src_cmd = [*ssh_argv(lb.ep("lab1"), logs[0], cipher), "--", shlex.join([*SEND, snap])]
    dst_cmd = [*ssh_argv(lb.ep("lab2"), logs[1], cipher), "--", shlex.join([*RECV, target])]
    with errs[0].open("wb") as e0, errs[1].open("wb") as e1:
        src = subprocess.Popen(src_cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               stderr=e0)
        dst = subprocess.Popen(dst_cmd, stdin=src.stdout, stdout=subprocess.DEVNULL, stderr=e1)
        assert src.stdout is not None
        src.stdout.close()
        src_io, src_cpu = wait_zombie(src.pid)
        src.wait()
        _, dst_cpu = wait_zombie(dst.pid)
        dst.wait()
    if src.returncode or dst.returncode:
        raise SystemExit(f"pipe failed: send {src.returncode} ({errs[0].read_text()!r}), "
                         f"receive {dst.returncode} ({errs[1].read_text()!r})")
    a, b = transferred(logs[0]), transferred(logs[1])
    stream = None
    if a and src_io:
        # the sending side's ssh writes: the stream to its stdout, its own packets to the
        # socket, its log lines
        stream = src_io["wchar"] - a[0] - logs[0].stat().st_size
    return {"stream": stream, "wire": a[1] if a else None,
            "notes": [f"ssh from lab1 {src_cpu:.2f} s CPU, ssh to lab2 {dst_cpu:.2f} s CPU; "
                      f"wire: {num(a[1] if a else None)} B from lab1, "
                      f"{num(b[0] if b else None)} B to lab2 (OpenSSH's Transferred:); "
                      f"cipher {cipher or 'default (chacha20-poly1305 on OpenSSH 9)'}; stream "
                      "counted as the sending ssh's written bytes (/proc io) minus its packets "
                      "and log"]}


def run_relay(lb: Lab, target: str) -> dict[str, Any]:
    inv = inventory.load(lb.inv_path)
    t0 = time.perf_counter()
    a = SSHTransport(inv.hosts["lab1"], trust_store=inv.trust_store)
    b = SSHTransport(inv.hosts["lab2"], trust_store=inv.trust_store)
    try:
        a.run(["true"])
        b.run(["true"])
        connect_s = time.perf_counter() - t0
        sa = a.connect().get_transport().sock  # type: ignore[union-attr]
        sb = b.connect().get_transport().sock  # type: ignore[union-attr]
        a0, b0 = tcp_bytes(sa), tcp_bytes(sb)
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        res = relay(a, [*SEND, SNAP], b, [*RECV, target])
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        a1, b1 = tcp_bytes(sa), tcp_bytes(sb)
        cipher = a.connect().get_transport().remote_cipher  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()
    if not res.ok:
        raise SystemExit(f"relay failed: {res}")
    relay_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return {"stream": res.bytes, "wire": a1[1] - a0[1], "relay_seconds": res.seconds,
            "relay_cpu": relay_cpu,
            "notes": [f"2 connects + `true` {connect_s:.2f} s, relay() {res.seconds:.2f} s "
                      f"({relay_cpu:.2f} s CPU); wire: {a1[1] - a0[1]:,} B from lab1, "
                      f"{b1[0] - b0[0]:,} B to lab2 (TCP_INFO); paramiko cipher {cipher}; "
                      "stream = relay's byte count"]}


SSH_CONFIG = """\
Host {name}
    HostName 127.0.0.1
    Port {port}
    User root
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    HostKeyAlias {name}
    BatchMode yes
    LogLevel VERBOSE
"""


def run_syncoid(lb: Lab, work: Path, target: str) -> dict[str, Any]:
    bindir = work / "syncoid-bin"
    logdir = work / "syncoid-logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    bindir.mkdir(parents=True, exist_ok=True)
    config = work / "syncoid-ssh-config"
    config.write_text("".join(SSH_CONFIG.format(
        name=n, port=lb.ep(n).port, key=lb.ep(n).identity_file, known=lb.ep(n).known_hosts)
        for n in ("lab1", "lab2")))
    wrapper = bindir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} -E {logdir}/ssh-$$.log "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    argv = ["syncoid", "--debug", "--no-privilege-elevation", "--no-sync-snap",
            "--compress=none", "--sendoptions=Lc", "--recvoptions=u",
            f"root@lab1:{VOL}", f"root@lab2:{target}"]
    set_subreaper(True)
    masters: list[tuple[str, dict[str, int], float]] = []
    cmdlines: dict[int, str] = {}  # a zombie has no command line: note them while they run
    done = threading.Event()

    def note_cmdlines() -> None:
        while not done.wait(0.2):
            for pid in adopted_children():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    if cmd.strip():
                        cmdlines.setdefault(pid, cmd.decode(errors="replace").strip())

    watcher = threading.Thread(target=note_cmdlines, daemon=True)
    watcher.start()
    try:
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
        finally:
            done.set()
            watcher.join()
        # its ControlMasters were orphaned (ControlPersist) and adopted by us: wait for them
        # (syncoid ends them with -O exit), read their counters, reap them (-> RUSAGE_CHILDREN)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = adopted_children()
            if not kids:
                break
            for pid in kids:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    continue
                masters.append((cmdlines.get(pid, "?"), _proc_io(pid), _proc_cpu(pid)))
                os.waitpid(pid, 0)
            time.sleep(0.05)
        for pid in adopted_children():  # still running after 30 s: ours to end
            say(f"syncoid left process {pid} running; terminating it")
            os.kill(pid, 15)
            os.waitpid(pid, 0)
    finally:
        set_subreaper(False)
    (work / "syncoid.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"syncoid exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    wire_from, wire_to = 0, 0
    lab1_log: Path | None = None
    for log in logdir.glob("*.log"):
        text = log.read_text(errors="replace")
        t = transferred(log)
        if t is None:
            continue
        if f"]:{lb.ep('lab1').port})" in text:
            wire_from += t[1]
            lab1_log = log
        if f"]:{lb.ep('lab2').port})" in text:
            wire_to += t[0]
    stream = None
    for cmd, io, _ in masters:
        # the lab1 ControlMaster writes the stream into the pipe it was handed (mux); it
        # renames itself "ssh: /tmp/syncoid-root@lab1-TIME [mux]"
        if "root@lab1" in cmd and "[mux]" in cmd and io and lab1_log is not None:
            t = transferred(lab1_log)
            if t:
                stream = io["wchar"] - t[0] - lab1_log.stat().st_size
    synccmd = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
               if "zfs send" in line and "|" in line]
    notes = [f"{len(masters)} orphaned process(es) adopted and reaped: "
             + "; ".join(f"`{_short(c)}` {cpu:.2f} s CPU" for c, _, cpu in masters),
             "local pv, mbuffer, lzop: " + ", ".join(
                 f"{t} {'present' if shutil.which(t) else 'absent'}"
                 for t in ("pv", "mbuffer", "lzop")) + " (sanoid's Depends)",
             f"wire: {wire_from:,} B from lab1, {wire_to:,} B to lab2 (OpenSSH's Transferred:)"]
    if synccmd:
        notes.append("pipeline: " + synccmd[-1][:300])
    warns = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
             if line.startswith(("WARN", "CRITICAL"))]
    notes += warns
    return {"stream": stream, "wire": wire_from or None, "notes": notes}


def _short(cmd: str) -> str:
    """An ssh command line without the wrapper's -F and -E (and their values)."""
    words = cmd.split()
    out = [w for i, w in enumerate(words)
           if w not in ("-F", "-E") and (i == 0 or words[i - 1] not in ("-F", "-E"))]
    return " ".join(out)[:160]


def run_move(lb: Lab, mdb: Path, work: Path) -> tuple[Row, Row, dict[str, Any]]:
    cli = [sys.executable, "-m", "xfleet", "-i", str(lb.inv_path), "-m", str(mdb)]
    qp = lb.qemu_pids()
    sync_row = measure("xfleet sync (both nodes, before)", qp,
                       lambda: (_cli(cli + ["sync"]), {})[1])
    result: dict[str, Any] = {}

    def move() -> dict[str, Any]:
        proc = _cli(cli + ["move", VOL, "--to", "lab2", "--json"], check=False)
        result.update(json.loads(proc["stdout"]) if proc["stdout"].strip() else {})
        if result.get("state") != "done":
            raise SystemExit(f"move did not finish: {proc}")
        return {}

    row = measure("xfleet move (CLI, total)", qp, move)
    shown = json.loads(_cli(cli + ["moves", "show", str(result["id"]), "--json"])["stdout"])
    (work / "move.json").write_text(json.dumps(shown, indent=2))
    return sync_row, row, shown


def _cli(argv: list[str], check: bool = True) -> dict[str, Any]:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if check and proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv[2:])} failed ({proc.returncode}):\n{proc.stderr}")
    return {"stdout": proc.stdout, "stderr": proc.stderr, "status": proc.returncode}


# ---------------------------------------------------------------------------------------------


def make_volume(lb: Lab, mib: int) -> int:
    """The volume, written on lab1: half urandom, half text; returns the text corpus's size."""
    half = mib // 2
    lb.run("lab1", ["zfs", "create", "-p", "tank/bench"])
    lb.run("lab2", ["zfs", "create", "-p", "tank/bench"])
    lb.run("lab1", ["zfs", "create", "-s", "-V", "1G", "-o", "compression=lz4", VOL])
    dev = f"/dev/zvol/{VOL}"
    lb.sh("lab1", f'udevadm settle; i=0; while [ ! -e {dev} ] && [ $i -lt 200 ]; do '
          f'sleep 0.1; i=$((i+1)); done; test -e {dev}')
    lb.sh("lab1", f"dd if=/dev/urandom of={dev} bs=1M count={half} oflag=direct status=none")
    # text: the node's own source and documentation files, concatenated over and over
    corpus = lb.sh(
        "lab1", "find /usr/share /usr/lib/python3* /usr/share/perl* -type f "
        r"\( -name '*.py' -o -name '*.pm' -o -name '*.txt' -o -name copyright "
        r"-o -name '*.html' -o -name '*.pl' -o -name '*.h' \) -size -1024k 2>/dev/null "
        "| head -20000 | xargs cat > /root/corpus.txt 2>/dev/null; wc -c < /root/corpus.txt")
    if int(corpus.strip()) < 1 << 20:
        raise SystemExit(f"the text corpus on lab1 has only {corpus.strip()} bytes")
    lb.sh("lab1", "sh -c 'set -e; while :; do cat /root/corpus.txt; done' 2>/dev/null "
          f"| head -c {mib - half}M | dd of={dev} bs=1M seek={half} oflag=direct iflag=fullblock "
          "status=none; rm -f /root/corpus.txt")
    lb.run("lab1", ["zfs", "snapshot", SNAP])
    lb.run("lab1", ["zpool", "sync", "tank"])
    return int(corpus.strip())


def other_vms(ours: list[int]) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in ours:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-x86_64"):
            text = b" ".join(cmd).decode(errors="replace")
            m = re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)", text)
            name = re.search(r"-name (\S+)", text)
            found.append(f"{name.group(1) if name else '?'} (ssh {m.group(1) if m else '?'})")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=500, help="data written into the volume")
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/x5/benchlab"))
    ap.add_argument("--ssh-port", type=int, default=2221)
    ap.add_argument("--link-port", type=int, default=12321)
    ap.add_argument("--out", type=Path, default=Path("/tmp/x5/bench_moves.out"))
    ap.add_argument("--no-gcm", action="store_true", help="skip the aes128-gcm pipe")
    ap.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = ap.parse_args()
    if args.ssh_port in (2201, 2202) or 2211 <= args.ssh_port <= 2219:
        raise SystemExit(f"port {args.ssh_port} belongs to another lab")
    sd = args.state_dir.resolve()
    work = sd / "work"
    rows: list[Row] = []
    size = 0
    reported = False

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)  # still print what was measured, stop the lab
    try:
        if shutil.which("syncoid") is None:
            say("syncoid missing: apt-get install -y sanoid")
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "sanoid"],
                           check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                           stdout=subprocess.DEVNULL)
            out("note: installed syncoid (apt-get install -y sanoid)")
        t0 = time.perf_counter()
        lab.up(nodes=2, inventory_path=sd / "lab.yaml", state_dir=sd, ssh_port=args.ssh_port,
               link_port=args.link_port, progress=say)
        boot_s = time.perf_counter() - t0
        work.mkdir(parents=True, exist_ok=True)
        lb = Lab(sd)
        lab.reset(state_dir=sd, progress=say)  # the benchmark owns this lab: empty pools
        (work / "m.db").unlink(missing_ok=True)
        qp = lb.qemu_pids()
        out(f"bench_moves {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
            f"({os.cpu_count()} CPUs), python {platform.python_version()}, "
            f"{subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}, "
            f"syncoid {_version(['syncoid', '--version'])}")
        out(f"lab: 2 nodes ({lb.state.accel}), ssh {args.ssh_port}-{args.ssh_port + 1}, "
            f"up in {boot_s:.0f} s; zfs {lb.run('lab1', ['zfs', 'version']).split()[0]}")
        out(f"other VMs on this machine: {', '.join(other_vms(qp)) or 'none'}")
        out(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        t0 = time.perf_counter()
        corpus = make_volume(lb, args.mib)
        props = lb.run("lab1", ["zfs", "get", "-Hp", "-o", "property,value",
                                "used,referenced,logicalreferenced,compressratio,volblocksize",
                                SNAP.split("@")[0]])
        pv = dict(line.split("\t") for line in props.splitlines())
        estimate = int(lb.run("lab1", [*SEND[:2], "-nP", *SEND[2:], SNAP]).split()[-1])
        t1 = time.perf_counter()
        size = int(lb.sh("lab1", f"{shlex.join([*SEND, SNAP])} | wc -c").strip())
        warm_s = time.perf_counter() - t1
        out(f"volume {VOL}: {args.mib} MiB written ({args.mib // 2} urandom + "
            f"{args.mib - args.mib // 2} text: a {corpus / 1e6:.1f} MB corpus of the node's "
            f"source and doc files, repeated) in {t1 - t0:.0f} s; referenced "
            f"{int(pv['referenced']) / 1e6:.1f} MB, logical "
            f"{int(pv['logicalreferenced']) / 1e6:.1f} MB, compressratio "
            f"{pv['compressratio']}, volblocksize {pv['volblocksize']}")
        out(f"stream `zfs send -L -c {SNAP}`: {size:,} B ({size / 1e6:.1f} MB; -nP estimate "
            f"{estimate:,}); on lab1 into wc -c: {warm_s:.1f} s = {size / warm_s / 1e6:.1f} MB/s "
            "(also warms the ARC equally for every run)")
        src_guid = lb.guid("lab1", SNAP)


        def check(node_target: str, row: Row) -> None:
            got = lb.guid("lab2", f"{node_target}@base")
            if got != src_guid:
                raise SystemExit(f"{row.name}: guid {got} != {src_guid}")
            row.notes.append(f"received @base guid matches ({got})")

        def pipe(name: str, snap: str, target: str, cipher: str | None) -> None:
            lb.clean("lab2", target)
            say(name)
            row = measure(name, qp, lambda: run_pipe(lb, snap, target, work, cipher))
            row.baseline = cipher is None
            check(target, row)
            rows.append(row)
            lb.clean("lab2", target)

        pipe("plain ssh pipe #1", SNAP, "tank/bench/pipe1", None)

        say("xfleet relay")
        lb.clean("lab2", "tank/bench/relay")
        extra: dict[str, Any] = {}

        def relay_run() -> dict[str, Any]:
            d = run_relay(lb, "tank/bench/relay")
            extra["seconds"] = d.pop("relay_seconds")
            extra["cpu"] = d.pop("relay_cpu")
            return d

        r = measure("xfleet relay() incl. 2 connects", qp, relay_run)
        check("tank/bench/relay", r)
        rows.append(r)
        rows.append(Row("xfleet relay() call only", extra["seconds"], stream=r.stream,
                        wire=r.wire, local_cpu=extra["cpu"],
                        notes=["same run: relay()'s own seconds and this process's CPU during "
                               "the call (VM CPU not split)"]))
        lb.clean("lab2", "tank/bench/relay")

        say("syncoid")
        lb.clean("lab2", "tank/bench/syncoid")
        try:
            s = measure("syncoid", qp, lambda: run_syncoid(lb, work, "tank/bench/syncoid"))
            check("tank/bench/syncoid", s)
            rows.append(s)
        except SystemExit as exc:
            out(f"syncoid FAILED: {exc}")
        lb.clean("lab2", "tank/bench/syncoid")

        say("xfleet move")
        sync_row, move_row, shown = run_move(lb, work / "m.db", work)
        check(VOL, move_row)
        retired = shown["retired_as"]
        log = shown["log"]
        start = log[0]["at"]
        base = None
        for e in log:
            m = RECEIVED.search(e["message"])
            if m and m.group(1) == "base":
                base = (int(m.group(2).replace(",", "")), float(m.group(3)), e["at"])
        sending = next((e["at"] for e in log if e["message"].startswith("sending base")), None)
        move_row.stream = None
        move_row.notes.append(f"{sync_row.wall:.1f} s `xfleet sync` before it (not included)")
        move_row.notes += [f"log +{e['at'] - start:6.1f} s [{e['state']}] {e['message'][:110]}"
                           for e in log]
        rows.append(move_row)
        if base:
            base_row = Row("xfleet move: base copy (relay)", base[1], stream=base[0],
                           notes=[f"from the move's log: {base[0]:,} B in {base[1]:.1f} s"
                                  + (f" (log interval {base[2] - sending:.2f} s incl. one "
                                     "zfs list)" if sending else "")])
            rows.append(base_row)
        lb.clean("lab2", VOL)

        pipe("plain ssh pipe #2 (retired source)", f"{retired}@base", "tank/bench/pipe2", None)
        if not args.no_gcm:
            pipe(f"ssh pipe, -c {GCM}", f"{retired}@base", "tank/bench/pipe3", GCM)

        report(rows, size)
        reported = True
    except BaseException as exc:
        out(f"INTERRUPTED: {exc!r}")
        raise
    finally:
        if rows and not reported:
            out("(partial: the runs measured before the interruption)")
            report(rows, size)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(OUT) + "\n")
        if not args.keep:
            lab.down(state_dir=sd, progress=say)


def num(v: float | None, spec: str = ",") -> str:
    return "-" if v is None else format(v, spec)


def _version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(r"(\d+\.\d+\.\d+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


def report(rows: list[Row], size: int) -> None:
    pipes = [r for r in rows if r.baseline]
    base_rate = sum(r.rate(size) for r in pipes) / len(pipes)
    base_cpu = sum(r.local_cpu or 0 for r in pipes) / len(pipes)
    out()
    out(f"all runs copy the same stream of {size:,} B; MB/s = stream / wall; baseline = mean of "
        f"the {len(pipes)} default-cipher pipe runs: {base_rate:.1f} MB/s, {base_cpu:.2f} s CPU")
    out(f"{'run':36s} {'wall s':>7s} {'MB/s':>6s} {'x pipe':>6s} {'stream B':>13s} "
        f"{'wire B lab1->':>13s} {'CPU s':>6s} {'x pipe':>6s} {'VM CPU s':>8s} "
        f"{'busy':>5s} {'load1':>5s}")
    for r in rows:
        rate = r.rate(size)
        cpu = f"{r.local_cpu:6.2f}" if r.local_cpu is not None else f"{'-':>6s}"
        cpu_x = f"{r.local_cpu / base_cpu:6.2f}" if r.local_cpu is not None and base_cpu \
            else f"{'-':>6s}"
        out(f"{r.name:36s} {r.wall:7.2f} {rate:6.1f} {rate / base_rate:6.2f} "
            f"{num(r.stream):>13s} {num(r.wire):>13s} {cpu} {cpu_x} "
            f"{num(r.vm_cpu, '.1f'):>8s} {num(r.busy_cpus, '.2f'):>5s} "
            f"{num(r.load[0] if r.load else None, '.2f'):>5s}")
    out("(CPU s: user+sys of this machine's processes for the run: ssh clients, syncoid and its "
        "shells and ControlMasters, the xfleet CLI process or this process; VM CPU s: the two "
        "lab VMs' QEMU processes; busy: this machine's busy CPUs of "
        f"{os.cpu_count()} during the run; load1: 1-min load average at its end)")
    out()
    for r in rows:
        for n in r.notes:
            out(f"  {r.name}: {n}")
    out(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
