"""Compressibility estimates: sample a zvol's blocks, compress them here, apply ZFS's rules.

How (docs/compression.md):

1. Pick block offsets at random (volblocksize-aligned, without replacement, seeded by the
   volume name so a rerun reads the same blocks) and ask the node for them with ONE command:
   `python3 -c sample_blocks.py BLOCKSIZE WANT /dev/zvol/NAME OFFSET...` (a fixed program; every
   variable part is an argument). It reads the offsets in the given (random) order, reports
   all-zero blocks as `Z offset` and returns data blocks as `D offset base64` until WANT data
   blocks were found: a thin volume's unwritten space is skipped without returning it, and the
   bytes returned are bounded by WANT x BLOCKSIZE.
2. Compress each data block locally with every candidate algorithm (python `lz4`, `zstandard`,
   `zlib`), with ZFS's own headers (lz4: 4 bytes, zstd: 8 bytes).
3. Apply ZFS's rules (zio_write_compress): a block is kept compressed only if the compressed
   size is at most lsize - lsize/8 (saves >= 12.5 %) and, rounded up to a sector (2^ashift),
   still smaller than lsize; otherwise it is stored as is. All-zero blocks become holes (with
   any compression but off) and count neither in logical nor in physical bytes.
4. The ratio (what `refcompressratio` reports: logical / physical bytes of the stored blocks)
   is sum(lsize) / sum(psize) over the sampled data blocks; its 95 % interval comes from the
   standard error of the mean psize (finite population corrected, Student t).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import random
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet import mirror
from xfleet.core.errors import TransportError, UsageError
from xfleet.core.names import validate_dataset
from xfleet.mirror.backend import Connection
from xfleet.ops.compression import canonical, validate_compression
from xfleet.remote.programs import program

if TYPE_CHECKING:
    from xfleet.fleet.connections import Connections
    from xfleet.remote.transport import Transport

DEFAULT_ASHIFT = 12
DEFAULT_BLOCKS = 256  # data blocks per volume
DEFAULT_MAX_BYTES = 8 << 20  # bytes of data returned per volume at most
MAX_CANDIDATES = 4096  # offsets passed on one command line
CANDIDATE_FACTOR = 8  # offsets offered per wanted data block (unwritten space is skipped)

# The program run on the node: xfleet/remote/programs/sample_blocks.py (the block size, the
# number of data blocks wanted, the device and the offsets are its arguments).
SAMPLER = program("sample_blocks")


def device_path(volume: str) -> str:
    return "/dev/zvol/" + validate_dataset(volume, allow_snapshot=False)


def sample_argv(volume: str, blocksize: int, want: int, offsets: Sequence[int]) -> list[str]:
    if blocksize <= 0 or want <= 0 or not offsets:
        raise UsageError("nothing to sample", where=volume)
    return SAMPLER.argv(str(blocksize), str(want), device_path(volume),
                        *(str(o) for o in offsets))


@dataclass
class Sample:
    """What the node returned: the data blocks and how many offsets were all zeros."""

    blocks: list[bytes] = field(default_factory=list)
    zeros: int = 0

    @property
    def read(self) -> int:
        return len(self.blocks) + self.zeros


def parse_sample(lines: Iterable[str], blocksize: int) -> Sample:
    """Parse the sampler's output (pure; tested on captured output)."""
    out = Sample()
    for line in lines:
        if not line:
            continue
        if line.startswith("Z "):
            out.zeros += 1
            continue
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != "D":
            raise TransportError(f"unexpected sampler output: {line[:60]!r}")
        try:
            block = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise TransportError("sampler output is not base64") from None
        if len(block) != blocksize:
            raise TransportError(f"sampled block of {len(block)} bytes, expected {blocksize}")
        out.blocks.append(block)
    return out


def choose_offsets(volsize: int, blocksize: int, count: int, seed: int | str) -> list[int]:
    """`count` distinct block-aligned offsets in random order (all blocks if fewer)."""
    total = volsize // blocksize
    rng = random.Random(str(seed))
    picks = rng.sample(range(total), min(count, total))
    return [p * blocksize for p in picks]


# ---------------------------------------------------------------------------------------------
# compression as ZFS does it


def _lz4(data: bytes) -> int:
    import lz4.block  # lazy: only estimates compress

    return 4 + len(lz4.block.compress(data, mode="default", store_size=False))


def _zstd(level: int) -> Callable[[bytes], int]:
    import zstandard  # lazy: only estimates compress

    c = zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False,
                                 write_dict_id=False)
    return lambda data: 8 + len(c.compress(data))


def _gzip(level: int) -> Callable[[bytes], int]:
    return lambda data: len(zlib.compress(data, level))


def compressor(algorithm: str) -> Callable[[bytes], int] | None:
    """The function giving a block's compressed size (with ZFS's header) for a setting;
    None for off."""
    algo = canonical(validate_compression(algorithm))
    if algo == "off":
        return None
    if algo == "lz4":
        return _lz4
    if algo.startswith("zstd-fast-"):
        return _zstd(-int(algo.rsplit("-", 1)[1]))
    if algo.startswith("zstd-"):
        return _zstd(int(algo.rsplit("-", 1)[1]))
    return _gzip(int(algo.rsplit("-", 1)[1]))


def physical_size(lsize: int, csize: int, ashift: int) -> int:
    """ZFS's stored size of a block of `lsize` bytes that compresses to `csize`: compressed
    only if it saves >= 12.5 % and at least one 2^ashift sector, rounded up to a sector."""
    sector = 1 << ashift
    if csize > lsize - (lsize >> 3):
        return lsize
    rounded = -(-csize // sector) * sector
    if rounded >= lsize:
        return lsize
    return rounded


def _t95(df: int) -> float:
    """Student t quantile 0.975 (approximation, within 0.5 % for df >= 5)."""
    if df <= 0:
        return math.inf
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}
    return table.get(df, 1.96 + 2.5 / df)


@dataclass
class Estimate:
    volume: str
    algorithm: str
    ratio: float | None  # logical / physical of the stored (non-hole) blocks
    ratio_low: float | None
    ratio_high: float | None
    zero_fraction: float  # of the offsets read, all-zero (holes)
    blocks: int  # data blocks compressed
    blocks_read: int  # offsets read (data + zeros)
    blocks_total: int  # blocks in the volume (volsize / volblocksize)
    bytes_read: int
    volblocksize: int
    ashift: int
    ashift_assumed: bool
    node: str = ""
    method: str = "sampled"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def estimate_sample(volume: str, sample: Sample, algorithms: Sequence[str], *,
                    blocksize: int, ashift: int, blocks_total: int,
                    ashift_assumed: bool = False, node: str = "") -> list[Estimate]:
    """Estimates for each algorithm from a sample (pure)."""
    out = []
    n = len(sample.blocks)
    zero_fraction = sample.zeros / sample.read if sample.read else 0.0
    population = max(n, round(blocks_total * (1 - zero_fraction)))
    for algo in dict.fromkeys(canonical(a) for a in algorithms):
        fn = compressor(algo)
        psizes = [blocksize if fn is None else physical_size(blocksize, fn(b), ashift)
                  for b in sample.blocks]
        ratio = low = high = None
        if n:
            mean = sum(psizes) / n
            ratio = blocksize / mean
            if n > 1:
                var = sum((p - mean) ** 2 for p in psizes) / (n - 1)
                fpc = max(0.0, 1 - n / population) if population else 0.0
                half = _t95(n - 1) * math.sqrt(var / n * fpc)
                low = blocksize / (mean + half)
                high = blocksize / max(mean - half, float(1 << ashift))
                high = min(high, blocksize / (1 << ashift))
            else:
                low, high = 1.0, blocksize / (1 << ashift)
        out.append(Estimate(volume, algo, ratio, low, high, zero_fraction, n, sample.read,
                            blocks_total, n * blocksize, blocksize, ashift, ashift_assumed,
                            node))
    return out


# ---------------------------------------------------------------------------------------------
# over the fleet


@dataclass
class Target:
    node: str
    name: str
    volsize: int
    volblocksize: int
    ashift: int | None
    compression: str | None = None  # current setting (estimated too, as the baseline)


def targets(conn: Connection, where: str, params: Sequence[Any], *,
            limit: int) -> list[Target]:
    """Volumes to estimate (from the mirror), largest logical data first, at most `limit`."""
    rows = conn.execute(
        "SELECT d.node, d.name, d.volsize, d.volblocksize, p.ashift, d.compression FROM (SELECT "
        "node, name, pool, volsize, volblocksize, logicalreferenced, compression FROM datasets "
        f"WHERE type = 'volume' AND ({where}) "
        "ORDER BY logicalreferenced DESC NULLS LAST, node, name "  # SQLite's DESC order
        "LIMIT ?) d LEFT JOIN pools p ON p.node = d.node AND p.name = d.pool "
        "ORDER BY d.logicalreferenced DESC NULLS LAST, d.node, d.name", (*params, limit)).fetchall()
    return [Target(r[0], r[1], r[2] or 0, r[3] or 16384, r[4], r[5]) for r in rows]


def plan_sample(t: Target, *, blocks: int = DEFAULT_BLOCKS,
                max_bytes: int = DEFAULT_MAX_BYTES, seed: str | None = None
                ) -> tuple[int, list[int]]:
    """(data blocks wanted, candidate offsets) for a volume."""
    total = t.volsize // t.volblocksize
    want = max(1, min(blocks, max_bytes // t.volblocksize, total))
    count = min(total, want * CANDIDATE_FACTOR, MAX_CANDIDATES)
    return want, choose_offsets(t.volsize, t.volblocksize, count, seed or f"{t.node}:{t.name}")


def sample_volume(tr: Transport, t: Target, algorithms: Sequence[str], *,
                  blocks: int = DEFAULT_BLOCKS, max_bytes: int = DEFAULT_MAX_BYTES,
                  seed: str | None = None) -> list[Estimate]:
    """One remote command: read the sample, estimate every algorithm."""
    if t.volsize < t.volblocksize:
        raise UsageError(f"{t.name} is smaller than one block", where=t.node)
    want, offsets = plan_sample(t, blocks=blocks, max_bytes=max_bytes, seed=seed)
    lines = tr.lines(sample_argv(t.name, t.volblocksize, want, offsets))
    sample = parse_sample(lines, t.volblocksize)
    ashift = t.ashift if t.ashift else DEFAULT_ASHIFT
    algos = list(algorithms)
    if t.compression:
        with contextlib.suppress(UsageError):  # a legacy setting (zle, lzjb): no baseline
            algos.append(validate_compression(t.compression))
    return estimate_sample(t.name, sample, algos, blocksize=t.volblocksize, ashift=ashift,
                           blocks_total=t.volsize // t.volblocksize,
                           ashift_assumed=not t.ashift, node=t.node)


@dataclass
class Failure:
    node: str
    name: str
    error: str


def estimate_fleet(conn: Connection, connections: Connections, items: list[Target],
                   algorithms: Sequence[str], *, blocks: int = DEFAULT_BLOCKS,
                   max_bytes: int = DEFAULT_MAX_BYTES, parallel: int = 8,
                   progress: Callable[[Estimate | Failure], None] | None = None,
                   ) -> tuple[list[Estimate], list[Failure]]:
    """Estimate every target (one command each, nodes in parallel), store the results in
    `compression_estimates`."""
    by_node: dict[str, list[Target]] = {}
    for t in items:
        by_node.setdefault(t.node, []).append(t)

    def one(node: str, tr: Transport) -> tuple[list[Estimate], list[Failure]]:
        got: list[Estimate] = []
        bad: list[Failure] = []
        for t in by_node[node]:
            try:
                ests = sample_volume(tr, t, algorithms, blocks=blocks, max_bytes=max_bytes)
            except (TransportError, UsageError) as exc:
                f = Failure(node, t.name, str(exc).splitlines()[0])
                bad.append(f)
                if progress:
                    progress(f)
                continue
            got.extend(ests)
            if progress:
                for e in ests:
                    progress(e)
        return got, bad

    estimates: list[Estimate] = []
    failures: list[Failure] = []
    for r in connections.each(list(by_node), one, parallel=parallel):
        if r.value is not None:
            estimates.extend(r.value[0])
            failures.extend(r.value[1])
        else:
            failures.extend(Failure(r.node, t.name, str(r.error)) for t in by_node[r.node])
    store(conn, estimates)
    return estimates, failures


# the columns an estimate replaces (its key: node, name, algorithm)
_ESTIMATE_COLUMNS = ("ratio", "ratio_low", "ratio_high", "zero_fraction", "blocks", "blocks_read",
                     "blocks_total", "bytes_read", "volblocksize", "ashift", "ashift_assumed",
                     "method", "estimated_at")


def store(conn: Connection, estimates: Sequence[Estimate]) -> None:
    now = time.time()
    mirror.begin(conn, "compression estimates")
    try:
        conn.executemany(
            "INSERT INTO compression_estimates (node, name, algorithm, ratio, "
            "ratio_low, ratio_high, zero_fraction, blocks, blocks_read, blocks_total, "
            "bytes_read, volblocksize, ashift, ashift_assumed, method, estimated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (node, name, algorithm) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in _ESTIMATE_COLUMNS),
            [(e.node, e.volume, e.algorithm, e.ratio, e.ratio_low, e.ratio_high,
              e.zero_fraction, e.blocks, e.blocks_read, e.blocks_total, e.bytes_read,
              e.volblocksize, e.ashift, int(e.ashift_assumed), e.method, now)
             for e in estimates])
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
