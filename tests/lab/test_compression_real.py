"""Compression on real OpenZFS: the sampled estimate against what ZFS really stores after a
rewrite, for three kinds of data (the files of a real PostgreSQL database initialised with
`pgbench -i` on the host, JSON text, random bytes), then the policy applied and the report.

Accuracy: each volume (compression=off, fully written) is estimated from <= 1 % of its
blocks; then rewritten by `zfs send VOL@s | zfs receive -o compression=ALGO NEW` (no -c, so
the receiver compresses) and ZFS's own refcompressratio of the new volume (logical / physical
bytes of its blocks) must be within +-10 % (relative) of the estimate."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .labkit import Lab, log

pytestmark = pytest.mark.lab

NODE = "lab1"
MIB = 1 << 20
BLOCK = 16384


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pgbench_data(size: int) -> bytes:
    """The data files of a PostgreSQL database after `pgbench -i` (run as `postgres`)."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert bindirs, "PostgreSQL is not installed (scripts/test-deps.sh installs it)"
    bindir = bindirs[-1]
    work = Path(tempfile.mkdtemp(prefix="xfleet-pg-", dir="/tmp"))
    try:
        os.chmod(work, 0o777)
        data, sock = work / "data", work / "sock"
        sock.mkdir()
        os.chmod(sock, 0o777)
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        port = str(_free_port())

        def run(*argv: str) -> None:
            p = subprocess.run([*as_pg, *argv], capture_output=True, text=True, timeout=900,
                               check=False)
            assert p.returncode == 0, f"{argv[0]}: {p.stdout[-2000:]} {p.stderr[-2000:]}"

        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(work / "log"), "-o",
            f"-k {sock} -p {port} -c listen_addresses= -c fsync=off", "start")
        try:
            run(str(bindir / "pgbench"), "-i", "-q", "-s", "10", "-h", str(sock), "-p", port,
                "-U", "postgres", "postgres")
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop")
        out = bytearray()
        for f in sorted((data / "base").rglob("*")):
            if f.is_file():
                out += f.read_bytes()
                if len(out) >= size:
                    break
        assert len(out) >= size, f"pgbench data is only {len(out)} bytes"
        return bytes(out[:size])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def json_text(size: int) -> bytes:
    r = random.Random(7)
    words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(3, 10)))
             for _ in range(3000)]
    levels = ["debug", "info", "info", "info", "warn", "error"]
    out = []
    total = 0
    t = 1_790_000_000.0
    while total < size:
        t += r.expovariate(50)
        line = json.dumps({"ts": round(t, 3), "level": r.choice(levels),
                           "user": r.choice(words), "request_id": f"{r.getrandbits(64):016x}",
                           "latency_ms": round(r.lognormvariate(2, 1), 2),
                           "msg": " ".join(r.choice(words) for _ in range(r.randint(4, 16)))})
        out.append(line)
        total += len(line) + 1
    return ("\n".join(out)).encode()[:size]


def write_volume(lab: Lab, name: str, data: bytes) -> None:
    lab.run(NODE, ["zfs", "create", "-V", f"{len(data) // MIB}M", "-o", "compression=off",
                   "-o", f"volblocksize={BLOCK}", name])
    lab.run(NODE, ["udevadm", "settle"])
    # sent gzipped and unpacked in the guest: the guest's SSH decrypts ~3 MiB/s under TCG,
    # gunzip many times that, and the pgbench and JSON data shrink 3-5x
    lab.run(NODE, ["sh", "-c", 'gzip -dc | dd of="$1" bs=1M iflag=fullblock oflag=direct '
                   "status=none", "sh", f"/dev/zvol/{name}"], input=gzip.compress(data, 1),
            timeout=1200)


def zget(lab: Lab, name: str, *props: str) -> dict[str, str]:
    out = lab.run(NODE, ["zfs", "get", "-Hp", "-o", "property,value", ",".join(props),
                         name]).stdout
    text = out.decode() if isinstance(out, bytes) else out
    return dict(line.split("\t") for line in text.splitlines() if line)


def cli_json(lab: Lab, db: Path, *args: str) -> Any:
    res = lab.xfleet(*args, "--json", mirror=db)
    assert res.code == 0, res.explain()
    return res.json()


def test_estimates_match_what_zfs_stores_after_a_rewrite_and_policy_applies(
        lab: Lab, tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    lab.run(NODE, ["zfs", "create", "-p", "tank/ctest"])
    kinds = {  # name: (data, setting to estimate and rewrite with)
        "pg": (pgbench_data(128 * MIB), "zstd"),
        # JSON lines and random bytes are uniform: fewer blocks estimate them as well (the
        # suite pays ~1 s per MiB written and rewritten under TCG)
        "json": (json_text(64 * MIB), "lz4"),
        "random": (os.urandom(16 * MIB), "zstd"),
    }
    for kind, (data, _) in kinds.items():
        log(f"writing {len(data) // MIB} MiB of {kind} data")
        write_volume(lab, f"tank/ctest/{kind}", data)
    cli_json(lab, db, "sync")

    results = {}
    for kind, (data, algo) in kinds.items():
        vol = f"tank/ctest/{kind}"
        total = len(data) // BLOCK
        want = total // 100  # <= 1 % of the blocks
        got = cli_json(lab, db, "compression", "estimate", vol, "-a", algo,
                       "--blocks", str(want))
        assert got["failed"] == []
        est = next(e for e in got["estimates"]
                   if e["algorithm"] == {"zstd": "zstd-3"}.get(algo, algo))
        assert est["blocks"] == want and est["of"] == total
        assert est["blocks"] <= total / 100
        assert est["ashift"] == 12 and not est["ashift_assumed"]
        # the rewrite: a send without -c, received with the setting (the receiver compresses)
        lab.run(NODE, ["zfs", "snapshot", f"{vol}@r"])
        lab.run(NODE, ["sh", "-c", 'zfs send "$1" | zfs receive -o compression="$2" "$3"',
                       "sh", f"{vol}@r", algo, f"{vol}-{algo}"], timeout=1800)
        real = zget(lab, f"{vol}-{algo}", "refcompressratio", "logicalreferenced",
                    "referenced")
        actual = float(real["refcompressratio"])
        by_bytes = int(real["logicalreferenced"]) / int(real["referenced"])
        results[kind] = (est["ratio"], est["ratio_low"], est["ratio_high"], actual, by_bytes)
        log(f"{kind} {algo}: estimate {est['ratio']:.3f} ({est['ratio_low']:.3f}.."
            f"{est['ratio_high']:.3f}) from {est['blocks']} of {total} blocks; ZFS: "
            f"refcompressratio {actual:.2f}, logicalreferenced/referenced {by_bytes:.3f}")
    for kind, (ratio, _low, _high, actual, _) in results.items():
        assert abs(ratio - actual) / actual <= 0.10, (kind, results[kind])
    assert results["pg"][3] > 2 and results["json"][3] > 1.25  # compressible data
    assert results["random"][3] < 1.05  # stored as is

    # the policy: plan, apply in batches (one zfs set per node and setting), audit, idempotent
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n"
                      "  - name: logs\n    match: {name: 'tank/ctest/json*'}\n"
                      "    compression: gzip-6\n"
                      "  - name: rest\n    match: {name: 'tank/ctest/*'}\n"
                      "    compression: zstd\n")
    cli_json(lab, db, "sync")
    plan = cli_json(lab, db, "compression", "plan", "--policy", str(policy))
    assert plan["volumes"] >= 3 and plan["commands"] == len(
        {(g["node"], g["new"]) for g in plan["groups"]})
    applied = cli_json(lab, db, "compression", "apply", "--policy", str(policy), "--yes")
    assert applied["run"]["state"] == "done" and applied["run"]["failed"] == 0
    assert applied["run"]["commands"] == plan["commands"]
    assert zget(lab, "tank/ctest/json", "compression")["compression"] == "gzip"  # = gzip-6
    assert zget(lab, "tank/ctest/pg", "compression")["compression"] in ("zstd", "zstd-3")
    cli_json(lab, db, "sync")
    assert cli_json(lab, db, "compression", "plan", "--policy", str(policy))["volumes"] == 0
    audit = cli_json(lab, db, "compression", "audit", "--run", str(applied["run"]["id"]))
    assert {a["name"] for a in audit} >= {"tank/ctest/json", "tank/ctest/pg"}
    assert all(a["state"] == "done" and a["operator"] for a in audit)

    # the report: the rewritten volumes show their savings; the changed ones need a rewrite
    html = tmp_path / "report.html"
    rep = lab.xfleet("report", "compression", "--by", "volume", "--policy", str(policy),
                     "--html", str(html), "--json", mirror=db)
    assert rep.code == 0, rep.explain()
    data = json.loads(rep.out)
    by = {r["group"]: r for r in data["rows"]}
    assert by[f"{NODE}:tank/ctest/pg-zstd"]["ratio"] > 1.5
    assert by[f"{NODE}:tank/ctest/json"]["rewrite_volumes"] == 1
    assert "<svg" in html.read_text()
