"""Relay throughput: xfleet's relay vs a plain OpenSSH pipe (no timed assertions).

    .venv/bin/python benchmarks/bench_relay.py [--mib 256] [--rounds 3] [--workdir DIR]

Starts the test suite's loopback sshd (tests/sshd.py), writes a random file, and moves it
`--rounds` times each way, interleaved:

1. `ssh A cat FILE | ssh B 'cat >/dev/null'` with the OpenSSH client (its default cipher,
   chacha20-poly1305 on OpenSSH 9), the baseline of the issue (target: relay >= 0.9 of it);
2. the same pipe with `-c aes128-gcm@openssh.com`, the cipher xfleet's connections prefer;
3. `xfleet.remote.relay.relay` between two SSHTransports (two connections to the same sshd),
   unlimited, from `cat FILE` into `cat >/dev/null`;
4. the same relay between two LocalTransports (the relay's own ceiling on this machine).

Everything shares this machine's CPUs with sshd, so the figures say more about CPU per byte
than about a real network. Record them in docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sshd import SSHD

from xfleet.remote.local import LocalTransport
from xfleet.remote.relay import relay
from xfleet.remote.ssh import SSHTransport


def ssh_command(server: SSHD, known_hosts: Path, cipher: str | None) -> list[str]:
    return [
        "ssh", "-p", str(server.port), "-i", str(server.client_key),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        *(["-c", cipher] if cipher else []),
        f"{server.user}@127.0.0.1",
    ]


def openssh_pipe(server: SSHD, known_hosts: Path, path: Path, cipher: str | None) -> float:
    ssh = ssh_command(server, known_hosts, cipher)
    src = subprocess.Popen([*ssh, "cat", str(path)], stdout=subprocess.PIPE)
    start = time.perf_counter()
    dst = subprocess.run([*ssh, "cat >/dev/null"], stdin=src.stdout, check=True)
    assert src.stdout is not None
    src.stdout.close()
    src.wait()
    seconds = time.perf_counter() - start
    assert src.returncode == 0 and dst.returncode == 0
    return seconds


def xfleet_relay(server: SSHD | None, path: Path) -> float:
    if server is None:
        a: LocalTransport | SSHTransport = LocalTransport("a")
        b: LocalTransport | SSHTransport = LocalTransport("b")
    else:
        a, b = SSHTransport(server.host("a")), SSHTransport(server.host("b"))
    try:
        a.run(["true"])  # connect outside of the measured time, as the pipe's ssh do not
        b.run(["true"])
        result = relay(a, ["cat", str(path)], b, ["sh", "-c", "cat >/dev/null"])
        assert result.ok and result.bytes == path.stat().st_size, result
        return result.seconds
    finally:
        a.close()
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xfleet-bench-relay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "data.bin"
    with path.open("wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
    size = path.stat().st_size
    server = SSHD(Path(tempfile.mkdtemp(prefix="sshd-", dir=workdir))).start()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    cases: dict[str, Callable[[], float]] = {
        "openssh pipe (default cipher)": lambda: openssh_pipe(server, known_hosts, path, None),
        "openssh pipe (aes128-gcm)": lambda: openssh_pipe(
            server, known_hosts, path, "aes128-gcm@openssh.com"),
        "xfleet relay, ssh -> ssh": lambda: xfleet_relay(server, path),
        "xfleet relay, local -> local": lambda: xfleet_relay(None, path),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    handshakes: list[float] = []
    try:
        for _ in range(args.rounds):
            for name, case in cases.items():
                rates[name].append(size / case() / 1e6)
            start = time.perf_counter()
            subprocess.run([*ssh_command(server, known_hosts, None), "true"], check=True)
            handshakes.append(time.perf_counter() - start)
    finally:
        server.stop()
    print(f"{args.mib} MiB, {args.rounds} rounds, {platform.node()} "
          f"({os.cpu_count()} CPUs), python {platform.python_version()}")
    for name, values in rates.items():
        print(f"  {name:32s} median {statistics.median(values):6.0f} MB/s   "
              f"best {max(values):6.0f} MB/s")
    base = statistics.median(rates["openssh pipe (default cipher)"])
    same = statistics.median(rates["openssh pipe (aes128-gcm)"])
    ours = statistics.median(rates["xfleet relay, ssh -> ssh"])
    print(f"  relay / openssh pipe: {ours / base:.2f} (default cipher), "
          f"{ours / same:.2f} (same cipher)")
    # The pipe's time includes its two (parallel) ssh logins; the relay's connections were
    # made beforehand. Without one login the pipe would be this fast:
    login = statistics.median(handshakes)
    fair = size / max(size / (base * 1e6) - login, 1e-9) / 1e6
    print(f"  one `ssh true` login: {login * 1000:.0f} ms; pipe without it: {fair:.0f} MB/s "
          f"(default cipher) -> relay / pipe {ours / fair:.2f}")


if __name__ == "__main__":
    main()
