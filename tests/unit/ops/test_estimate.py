"""Compressibility estimates: ZFS's keep-compressed rules, the compressors, the interval, the
sampler program (run for real on a file), its parser, and sampling over a simulated fleet
(one command per volume, bounded bytes)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import NameError_, TransportError, UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import estimate
from xfleet.ops.estimate import Sample, estimate_sample, parse_sample, physical_size
from xfleet.ops.sync import sync

BS = 16384


def text_block(seed: int, n: int = BS) -> bytes:
    r = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "tenant", "volume", "zfs", "pool", "json"]
    out = b""
    while len(out) < n:
        out += f'{{"id": {r.randint(1, 99999)}, "w": "{r.choice(words)}"}}\n'.encode()
    return out[:n]


# -- ZFS's rules ----------------------------------------------------------------------------


def test_a_block_is_kept_compressed_only_if_it_saves_an_eighth_and_a_sector() -> None:
    # 16K on 4K sectors: must fit in 12K (3 sectors) -> needs >= 25 %
    assert physical_size(16384, 12288, 12) == 12288
    assert physical_size(16384, 12289, 12) == 16384  # rounds up to 16K: no sector saved
    assert physical_size(16384, 5000, 12) == 8192  # rounded up to whole sectors
    # 512-byte sectors: the 12.5 % rule decides (14336 = 16384 - 16384/8)
    assert physical_size(16384, 14336, 9) == 14336
    assert physical_size(16384, 14337, 9) == 16384
    assert physical_size(131072, 100, 12) == 4096


def test_compressors_include_zfs_headers_and_follow_levels() -> None:
    block = text_block(1)
    lz4 = estimate.compressor("lz4")
    zstd = estimate.compressor("zstd")
    assert lz4 is not None and zstd is not None
    assert estimate.compressor("off") is None
    assert 4 < lz4(block) < BS // 2 and 8 < zstd(block) < lz4(block)
    zstd3 = estimate.compressor("zstd-3")
    assert zstd3 is not None and zstd3(block) == zstd(block)
    fast = estimate.compressor("zstd-fast-10")
    assert fast is not None and fast(block) > zstd(block)
    gz1, gz9 = estimate.compressor("gzip-1"), estimate.compressor("gzip-9")
    assert gz1 is not None and gz9 is not None and gz9(block) <= gz1(block)
    with pytest.raises(UsageError):
        estimate.compressor("zstd-25")


def test_ratio_and_interval_on_a_known_population() -> None:
    """Sample 3 % of a population of text and random blocks: the exact ratio (all blocks) lies
    in the interval and the estimate is close."""
    r = random.Random(5)
    population = [text_block(i) if r.random() < 0.6 else r.randbytes(BS) for i in range(1500)]
    zstd = estimate.compressor("zstd")
    assert zstd is not None
    exact = len(population) * BS / sum(physical_size(BS, zstd(b), 12) for b in population)
    sample = Sample(blocks=r.sample(population, 45), zeros=5)
    est = estimate_sample("tank/v", sample, ["zstd", "off"], blocksize=BS, ashift=12,
                          blocks_total=1667)
    z = est[0]
    assert z.algorithm == "zstd-3" and z.blocks == 45 and z.blocks_read == 50
    assert z.zero_fraction == pytest.approx(0.1)
    assert z.ratio is not None and z.ratio_low is not None and z.ratio_high is not None
    assert z.ratio_low < exact < z.ratio_high
    assert abs(z.ratio - exact) / exact < 0.15
    off = est[1]
    assert off.algorithm == "off" and off.ratio == 1.0 == off.ratio_low == off.ratio_high


def test_incompressible_data_and_an_empty_sample() -> None:
    r = random.Random(1)
    est = estimate_sample("tank/v", Sample(blocks=[r.randbytes(BS) for _ in range(20)]),
                          ["lz4"], blocksize=BS, ashift=12, blocks_total=1000)[0]
    assert est.ratio == 1.0 and est.ratio_low == 1.0 and est.ratio_high == 1.0
    empty = estimate_sample("tank/v", Sample(zeros=30), ["lz4"], blocksize=BS, ashift=12,
                            blocks_total=1000)[0]
    assert empty.ratio is None and empty.zero_fraction == 1.0 and empty.blocks == 0


# -- the sampler program and its parser -------------------------------------------------------


def test_the_sampler_program_reads_given_offsets_skips_zeros_and_stops_at_want(
        tmp_path: Path) -> None:
    """The sampler run for real (python3 on a file standing for /dev/zvol/...); its output is
    what the parser reads."""
    dev = tmp_path / "vol"
    blocks = [bytes(BS), text_block(2), os.urandom(BS), bytes(BS), text_block(3)]
    dev.write_bytes(b"".join(blocks))
    offsets = [3 * BS, 1 * BS, 0, 2 * BS, 4 * BS]
    argv = [sys.executable, "-c", estimate.SAMPLER.text, str(BS), "2", str(dev),
            *map(str, offsets)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert [line[:1] for line in lines] == ["Z", "D", "Z", "D"]  # stopped after 2 data blocks
    sample = parse_sample(lines, BS)
    assert sample.zeros == 2 and sample.blocks == [blocks[1], blocks[2]] and sample.read == 4
    bad = subprocess.run([sys.executable, "-c", estimate.SAMPLER.text, str(BS), "1",
                          str(tmp_path / "missing"), "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot open" in bad.stderr and "Traceback" not in bad.stderr


def test_parser_on_captured_output_and_its_refusals() -> None:
    """fixtures/sample_blocks.txt: the sampler's stdout on a lab node (OpenZFS 2.3 VM), on a
    16K-block zvol written as [zeros, json, random, zeros, json, json], asked for 3 data
    blocks at offsets 3, 1, 0, 2, 4, 5, 40 (x 16K)."""
    text = (FIXTURES / "sample_blocks.txt").read_text()
    sample = parse_sample(text.splitlines(), BS)
    assert sample.zeros == 2 and len(sample.blocks) == 3 and sample.read == 5
    assert sample.blocks[0].startswith(b'{"id": ') and sample.blocks[2].startswith(b'{"id": ')
    est = estimate_sample("tank/fixture", sample, ["lz4", "off"], blocksize=BS, ashift=12,
                          blocks_total=64)
    assert est[0].ratio is not None and 1.2 < est[0].ratio < 3  # 2 text blocks, 1 random
    assert est[1].ratio == 1.0
    with pytest.raises(TransportError):
        parse_sample(["X 0 abc"], BS)
    with pytest.raises(TransportError):
        parse_sample(["D 0 !!!notbase64"], BS)
    with pytest.raises(TransportError):
        parse_sample(["D 0 AAAA"], BS)  # 3 bytes, not a block


def test_sample_argv_is_a_fixed_program_with_validated_arguments() -> None:
    argv = estimate.sample_argv("tank/t1/vol-1", BS, 4, [0, BS])
    assert argv[:3] == ["python3", "-c", estimate.SAMPLER.text]
    assert argv[3:] == [str(BS), "4", "/dev/zvol/tank/t1/vol-1", "0", str(BS)]
    for bad in ("tank/x;rm -rf /", "-o/x", "tank/v@snap", "../etc"):
        with pytest.raises(NameError_):
            estimate.sample_argv(bad, BS, 1, [0])


def test_offsets_are_aligned_distinct_seeded_and_bounded() -> None:
    a = estimate.choose_offsets(1 << 30, BS, 300, "n1:tank/v")
    assert a == estimate.choose_offsets(1 << 30, BS, 300, "n1:tank/v")
    assert a != estimate.choose_offsets(1 << 30, BS, 300, "n1:tank/w")
    assert len(set(a)) == 300 and all(o % BS == 0 and 0 <= o < 1 << 30 for o in a)
    assert sorted(estimate.choose_offsets(4 * BS, BS, 10, 1)) == [0, BS, 2 * BS, 3 * BS]
    t = estimate.Target("n1", "tank/v", 1 << 40, BS, 12)
    want, offs = estimate.plan_sample(t, blocks=4096, max_bytes=1 << 20)
    assert want == 64 and len(offs) == 64 * estimate.CANDIDATE_FACTOR  # 1 MiB of data at most


# -- over a simulated fleet -----------------------------------------------------------------


def make_fleet(tmp_path: Path, mirror_at: str | None = None) -> inventory.Inventory:
    """n1 (60 volumes) and n2 (40), synced into the mirror at `mirror_at` (an SQLite path or
    a PostgreSQL URL; default mirror.db beside the inventory)."""
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 3, "volumes": 60},
                                                          "n2": {"seed": 4, "volumes": 40}})
    if mirror_at is not None:
        text = path.read_text()
        assert "mirror: mirror.db\n" in text, text
        path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    inv = inventory.load(path)
    assert sync(inv).ok
    return inv


@pytest.fixture
def fleet(tmp_path: Path) -> inventory.Inventory:
    return make_fleet(tmp_path)


def test_fleet_estimate_costs_one_command_per_volume_and_is_stored(
        tmp_path: Path, mirror_at: str) -> None:
    """On both engines: the estimates are stored, and estimating again replaces them."""
    fleet = make_fleet(tmp_path, mirror_at)
    conn = mirror.connect(fleet.mirror)
    items = estimate.targets(conn, "TRUE", [], limit=12)
    assert len(items) == 12 and all(t.ashift == 12 for t in items)
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        ests, fails = estimate.estimate_fleet(conn, cs, items, ["lz4", "zstd"], blocks=32)
        per_node = {n: cs.commands(n) for n in ("n1", "n2")}
        hist = [h for n in ("n1", "n2") for h in cs.get(n).history]
    assert fails == []
    assert sum(per_node.values()) == 12  # one sampling command per volume, nothing else
    assert all(h[:2] == ["python3", "-c"] for h in hist)
    for h in hist:  # bounded: at most 32 data blocks asked for, a bounded list of offsets
        assert int(h[4]) == 32 and len(h) - 6 <= 32 * estimate.CANDIDATE_FACTOR
    stored = conn.execute("SELECT count(*), count(DISTINCT name), min(blocks), max(blocks), "
                          "max(bytes_read) FROM compression_estimates").fetchone()
    assert stored[1] == 12 and stored[0] >= 24 and stored[2] == stored[3] == 32
    assert stored[4] <= 32 * 65536
    zstd = {e.volume: e for e in ests if e.algorithm == "zstd-3"}
    lz4 = {e.volume: e for e in ests if e.algorithm == "lz4"}
    ratios = {v: (zstd[v].ratio, lz4[v].ratio) for v in zstd}
    assert all(z is not None and lz is not None and z >= lz * 0.98 for z, lz in ratios.values())
    again, _ = estimate.estimate_fleet(conn, Connections(fleet.hosts), items[:1], ["lz4"],
                                       blocks=32)
    assert again[0].ratio == lz4[items[0].name].ratio  # deterministic: same blocks
    assert conn.execute("SELECT count(*) FROM compression_estimates").fetchone()[0] == \
        stored[0]  # replaced, not added


def test_a_missing_volume_is_reported_and_others_go_on(fleet: inventory.Inventory) -> None:
    conn = mirror.connect(fleet.mirror)
    items = estimate.targets(conn, "node = 'n1'", [], limit=2)
    gone = estimate.Target("n1", "tank/nope/vol", 1 << 30, BS, 12)
    with Connections(fleet.hosts) as cs:
        ests, fails = estimate.estimate_fleet(conn, cs, [gone, *items], ["lz4"], blocks=8)
    assert [f.name for f in fails] == ["tank/nope/vol"] and "cannot open" in fails[0].error
    assert {e.volume for e in ests} == {t.name for t in items}
