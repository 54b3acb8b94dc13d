"""A reproducible ZFS scenario: volumes, data, snapshots, clones, promote, rename, bookmark.

Each step is a plain dict (`op` plus its arguments) so that the simulator can replay the same
scenario; `step_argv` turns a step into the argument list run on a lab node. Data writes go
through the zvol's /dev/zdN device, found with `zvol_id` (which, like the /dev/zvol/ link,
shows a space in a dataset name as '+': `tank/vols/db 1` is `/dev/zvol/tank/vols/db+1`),
from one of three sources: `urandom` (incompressible), `zero` (becomes holes when compression
is on) and `text` (log-like lines; compressratio ~1.8 with lz4, ~2.0 with zstd/gzip-9).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xfleet.remote.transport import quote_command

Step = dict[str, Any]
MiB = 1024 * 1024

TENANT = "xfleet:tenant"
TEXT_FILE = "/root/xfleet-text.bin"
TEXT_MB = 32

# Writes `count` blocks of `bs` from a source file to the zvol named $1 at block `seek`.
_WRITE_SH = r"""set -eu
name="$1"; src="$2"; count="$3"; seek="$4"; bs="${5:-1M}"
# zvol_id (and so /dev/zvol/...) shows a space in a dataset name as '+'
want=$(printf '%s' "$name" | tr ' ' '+')
udevadm settle
for d in /dev/zd*; do
    case "$d" in *p[0-9]*) continue ;; esac
    if [ "$(/usr/lib/udev/zvol_id "$d" 2>/dev/null)" = "$want" ]; then
        dd if="$src" of="$d" bs="$bs" count="$count" seek="$seek" iflag=fullblock conv=fsync \
            status=none
        exit 0
    fi
done
echo "no zvol device for $name" >&2
exit 1
"""

# Builds the compressible text source once on the node (deterministic content).
_TEXT_PY = f"""
import random, sys
rnd = random.Random(7)
words = "select insert update delete from where tenant volume snapshot clone commit".split()
with open({TEXT_FILE!r}, "w") as f:
    n = 0
    while n < int(sys.argv[1]) * 1024 * 1024:
        line = "%08d %s %s %s id=%d\\n" % (n, rnd.choice(words), rnd.choice(words),
                                           rnd.choice(words), rnd.randrange(100000))
        f.write(line)
        n += len(line)
"""

SOURCES = {"urandom": "/dev/urandom", "zero": "/dev/zero", "text": TEXT_FILE}


def _vol(
    name: str,
    size: str,
    *,
    sparse: bool,
    blocksize: str | None = None,
    compression: str | None = None,
    tenant: str | None = None,
) -> Step:
    props: dict[str, str] = {}
    if blocksize:
        props["volblocksize"] = blocksize
    if compression:
        props["compression"] = compression
    if tenant:
        props[TENANT] = tenant
    return {"op": "create_volume", "name": name, "volsize": size, "sparse": sparse,
            "properties": props}


def _write(name: str, source: str, mb: int, at_mb: int = 0) -> Step:
    return {"op": "write", "name": name, "source": source, "size_mb": mb, "offset_mb": at_mb}


def scaled(steps: Sequence[Step], block_kib: int) -> list[Step]:
    """`steps` with every write's size and offset counted in blocks of `block_kib` KiB
    instead of MiB: the same datasets, snapshots and history with a fraction of the data
    (the sync test plays the fixtures' scenario at 256 KiB: a quarter of the writes, which
    are most of its time under TCG)."""
    return [{**s, "block_kib": block_kib} if s["op"] == "write" else dict(s) for s in steps]


def _write_bytes(step: Step) -> int:
    return int(step["size_mb"]) * int(step.get("block_kib", 1024)) * 1024


def _snap(name: str) -> Step:
    return {"op": "snapshot", "name": name}


def default_scenario(pool: str = "tank") -> list[Step]:
    """The scenario behind tests/fixtures/real: ~14 volumes, snapshots, clones, odd names."""
    v = f"{pool}/vols"
    return [
        {"op": "create_filesystem", "name": v, "properties": {TENANT: "platform"}},
        {"op": "create_filesystem", "name": f"{v}/archive", "properties": {}},
        # a thick 8K volume; data written before and after compression is turned on
        _vol(f"{v}/pg-main", "256M", sparse=False, blocksize="8K", compression="off",
             tenant="acme"),
        _write(f"{v}/pg-main", "urandom", 16),
        _snap(f"{v}/pg-main@s1"),
        {"op": "set", "name": f"{v}/pg-main", "properties": {"compression": "lz4"}},
        _write(f"{v}/pg-main", "text", 24, 16),
        _snap(f"{v}/pg-main@s2"),
        _write(f"{v}/pg-main", "text", 8, 4),
        _snap(f"{v}/pg-main@2026-11-24T06:00:00"),
        # thin volumes with each compression algorithm
        _vol(f"{v}/pg-thin", "1G", sparse=True, compression="zstd", tenant="acme"),
        _write(f"{v}/pg-thin", "text", 32),
        _snap(f"{v}/pg-thin@daily.1"),
        _write(f"{v}/pg-thin", "urandom", 8, 64),
        _snap(f"{v}/pg-thin@daily.2"),
        {"op": "bookmark", "name": f"{v}/pg-thin@daily.1", "bookmark": f"{v}/pg-thin#daily.1"},
        _vol(f"{v}/db 1", "512M", sparse=True, compression="gzip-9", tenant="globex corp"),
        _write(f"{v}/db 1", "text", 24),
        _snap(f"{v}/db 1@before upgrade"),
        _write(f"{v}/db 1", "zero", 8, 8),
        _vol(f"{v}/a:b.c-d_e", "128M", sparse=True, blocksize="64K", compression="off",
             tenant="initech"),
        _write(f"{v}/a:b.c-d_e", "urandom", 12),
        _snap(f"{v}/a:b.c-d_e@x:y.z-w_v"),
        _vol(f"{v}/zeros", "256M", sparse=True, compression="lz4", tenant="hooli"),
        _write(f"{v}/zeros", "zero", 32),
        _vol(f"{v}/zeros-uncompressed", "128M", sparse=False, compression="off",
             tenant="hooli"),
        _write(f"{v}/zeros-uncompressed", "zero", 16),
        _vol(f"{v}/big.thick", "512M", sparse=False, blocksize="64K", compression="zstd"),
        _write(f"{v}/big.thick", "urandom", 8),
        _write(f"{v}/big.thick", "text", 16, 8),
        _vol(f"{v}/empty_thin", "64M", sparse=True),
        _vol(f"{v}/old-name", "96M", sparse=True, compression="lz4", tenant="umbrella"),
        _write(f"{v}/old-name", "text", 8),
        _snap(f"{v}/old-name@r1"),
        {"op": "rename", "name": f"{v}/old-name", "new_name": f"{v}/renamed-vol"},
        _vol(f"{v}/archive/2025.q4", "64M", sparse=True, compression="gzip-9",
             tenant="acme"),
        _write(f"{v}/archive/2025.q4", "text", 16),
        _snap(f"{v}/archive/2025.q4@final"),
        # a template, branches of it, a branch of a branch
        _vol(f"{v}/tmpl", "256M", sparse=True, compression="lz4", tenant="platform"),
        _write(f"{v}/tmpl", "text", 24),
        _snap(f"{v}/tmpl@gold"),
        {"op": "clone", "snapshot": f"{v}/tmpl@gold", "name": f"{v}/branch-1",
         "properties": {TENANT: "acme"}},
        _write(f"{v}/branch-1", "urandom", 4, 2),
        _snap(f"{v}/branch-1@s1"),
        {"op": "clone", "snapshot": f"{v}/tmpl@gold", "name": f"{v}/branch 2",
         "properties": {TENANT: "globex corp"}},
        {"op": "clone", "snapshot": f"{v}/branch-1@s1", "name": f"{v}/branch-1.1",
         "properties": {}},
        _write(f"{v}/branch-1.1", "text", 2, 30),
        # a clone of pg-main that is then promoted (pg-main becomes its clone)
        {"op": "clone", "snapshot": f"{v}/pg-main@s2", "name": f"{v}/pg-main-next",
         "properties": {TENANT: "acme"}},
        _write(f"{v}/pg-main-next", "urandom", 4, 40),
        {"op": "promote", "name": f"{v}/pg-main-next"},
        _snap(f"{v}/pg-main-next@after-promote"),
    ]


def step_argv(step: Step) -> list[list[str]]:
    """The argument list(s) that perform one step on a node."""
    op = step["op"]
    props: dict[str, str] = step.get("properties", {})
    popts = [x for k, val in props.items() for x in ("-o", f"{k}={val}")]
    if op == "create_filesystem":
        return [["zfs", "create", *popts, step["name"]]]
    if op == "create_volume":
        sparse = ["-s"] if step["sparse"] else []
        return [["zfs", "create", *sparse, "-V", step["volsize"], *popts, step["name"]]]
    if op == "write":
        bs = [f"{step['block_kib']}K"] if "block_kib" in step else []
        return [["sh", "-c", _WRITE_SH, "xfleet-write", step["name"], SOURCES[step["source"]],
                 str(step["size_mb"]), str(step["offset_mb"]), *bs]]
    if op == "snapshot":
        return [["zfs", "snapshot", step["name"]]]
    if op == "set":
        return [["zfs", "set", *[f"{k}={val}" for k, val in props.items()], step["name"]]]
    if op == "clone":
        return [["zfs", "clone", *popts, step["snapshot"], step["name"]]]
    if op == "promote":
        return [["zfs", "promote", step["name"]]]
    if op == "rename":
        return [["zfs", "rename", step["name"], step["new_name"]]]
    if op == "bookmark":
        return [["zfs", "bookmark", step["name"], step["bookmark"]]]
    raise ValueError(f"unknown scenario op {op!r}")


def script_argv(steps: Sequence[Step], *, prepare: bool = True) -> list[str]:
    """One `sh` command that performs all `steps` in order (after `prepare_argv` when
    `prepare`), stopping at the first that fails and naming it on stderr: a whole scenario
    in one round trip instead of one per step (each costs ~0.5 s on a TCG lab node)."""
    text = [_write_bytes(s) for s in steps if s["op"] == "write" and s["source"] == "text"]
    first = [prepare_argv(-(-max(text) // MiB))] if prepare and text else []
    return commands_argv(first + [a for s in steps for a in step_argv(s)])


def commands_argv(argvs: Sequence[Sequence[str]]) -> list[str]:
    """One `sh` command that runs `argvs` in order, stopping at the first that fails and
    naming it on stderr."""
    lines = ["set -u"]
    for i, argv in enumerate(argvs, 1):
        cmd = quote_command(argv)  # the one place argument lists become shell words
        what = quote_command([f"xfleet scenario: command {i} of {len(argvs)} failed: "
                              f"{' '.join(argv[:2])} {argv[-1][:200]}"])
        lines.append(f"{cmd} || {{ echo {what} >&2; exit 1; }}")
    return ["sh", "-c", "\n".join(lines)]


def prepare_argv(mb: int = TEXT_MB) -> list[str]:
    """Create the compressible text source on the node: its first `mb` MiB (the same bytes
    whatever the size; python under TCG writes ~1 MiB/s of it)."""
    return ["python3", "-c", _TEXT_PY, str(mb)]


def failing_commands(pool: str = "tank") -> Sequence[list[str]]:
    """Commands that must fail, for zfs_errors.txt (run after the scenario)."""
    v = f"{pool}/vols"
    return [
        ["zfs", "destroy", f"{v}/tmpl"],
        ["zfs", "destroy", "-r", f"{v}/tmpl"],
        ["zfs", "destroy", f"{v}/tmpl@gold"],
        ["zfs", "list", "-H", "-p", f"{v}/missing"],
        ["zfs", "get", "-H", "-p", "all", f"{v}/missing"],
        ["zfs", "create", "-V", "64M", f"{v}/pg-thin"],
        ["zfs", "snapshot", f"{v}/missing@s1"],
        ["zfs", "snapshot", f"{v}/pg-thin@daily.1"],
        ["zfs", "clone", f"{v}/tmpl@missing", f"{v}/never"],
        ["zfs", "create", "-V", "64M", f"{v}/bad!name"],
        ["zfs", "rename", f"{v}/pg-thin", f"{pool}/other/pg-thin"],
        ["zpool", "list", "-H", "-p", "nopool"],
    ]
