"""Compressibility estimates: local compression cost per algorithm, and how the estimate and
its interval tighten with the sample size (a known synthetic population, exact ratio known).

    .venv/bin/python benchmarks/bench_estimate.py

Prints figures; asserts nothing (docs/compression.md quotes them).
"""

from __future__ import annotations

import random
import time

from xfleet.ops import estimate
from xfleet.ops.estimate import Sample, estimate_sample, physical_size

BS = 16384


def text_block(r: random.Random) -> bytes:
    words = [f"w{i}" for i in range(500)]
    out = b""
    while len(out) < BS:
        out += (f'{{"id": {r.randint(1, 10**6)}, "user": "{r.choice(words)}", '
                f'"msg": "{" ".join(r.choice(words) for _ in range(8))}"}}\n').encode()
    return out[:BS]


def main() -> None:
    r = random.Random(1)
    blocks = [text_block(r) for _ in range(200)] + [r.randbytes(BS) for _ in range(100)]
    print("local compression of 300 blocks of 16 KiB (2/3 JSON text, 1/3 random):")
    for algo in ("lz4", "zstd-fast-5", "zstd-3", "zstd-9", "gzip-6"):
        fn = estimate.compressor(algo)
        assert fn is not None
        t = time.perf_counter()
        sizes = [fn(b) for b in blocks]
        dt = time.perf_counter() - t
        ratio = len(blocks) * BS / sum(physical_size(BS, s, 12) for s in sizes)
        print(f"  {algo:12s} {len(blocks) * BS / dt / 1e6:8.1f} MB/s  "
              f"{dt / len(blocks) * 1e3:6.2f} ms/block  ratio {ratio:.3f}")

    population = [text_block(r) if r.random() < 0.7 else r.randbytes(BS) for _ in range(4000)]
    zstd = estimate.compressor("zstd-3")
    assert zstd is not None
    exact = len(population) * BS / sum(physical_size(BS, zstd(b), 12) for b in population)
    print(f"\nsample size vs estimate (zstd-3, 4000-block population, exact ratio "
          f"{exact:.3f}; 50 draws each):")
    for n in (10, 20, 40, 80, 160, 320):
        hits, errs, widths = 0, [], []
        for seed in range(50):
            s = random.Random(seed).sample(population, n)
            e = estimate_sample("v", Sample(blocks=s), ["zstd"], blocksize=BS, ashift=12,
                                blocks_total=len(population))[0]
            assert e.ratio and e.ratio_low and e.ratio_high
            hits += e.ratio_low <= exact <= e.ratio_high
            errs.append(abs(e.ratio - exact) / exact)
            widths.append((e.ratio_high - e.ratio_low) / e.ratio)
        errs.sort()
        print(f"  n={n:4d} ({n / len(population):5.1%})  median error {errs[25]:6.2%}  "
              f"worst {errs[-1]:6.2%}  interval width {sum(widths) / 50:6.2%}  "
              f"coverage {hits / 50:5.0%}")


if __name__ == "__main__":
    main()
