"""xfleet's remote programs (xfleet/remote/programs/) that a simulated node answers, by name;
put_file, which stages the simulated target daemon's packages, is in target.py."""

from __future__ import annotations

import base64
import functools
import json
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from xfleet.sim.registry import PROGRAM, Context, Fail, command
from xfleet.sim.settings import mix
from xfleet.sim.view import View

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command(PROGRAM, "sample_blocks")
def sample_blocks(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """xfleet's block sampler (remote/programs/sample_blocks.py BS WANT /dev/zvol/NAME OFF...):
    deterministic synthetic blocks, a mix of holes, text-like and random bytes in shares
    seeded by the volume's name (docs/compression.md); any other python3 program is not
    found."""
    if len(args) < 3:
        raise Fail("usage: sample_blocks BS WANT DEVICE OFFSET...\n", 2)
    bs, want, dev = int(args[0]), int(args[1]), args[2]
    name = dev.removeprefix("/dev/zvol/")
    rec = View(sim, sim.current_overlay()).record(name) if dev.startswith("/dev/zvol/") \
        else None
    if rec is None or rec["type"] != "volume":
        raise Fail(f"cannot open {dev}: No such file or directory\n", 2)
    return _synthetic_blocks(name, bs, want, args[3:])


@functools.lru_cache(maxsize=1)
def _text_corpus() -> bytes:
    """256 KiB of JSON-ish text lines (compresses about 3-4x with lz4)."""
    r = random.Random(4242)
    words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9)))
             for _ in range(400)]
    out: list[str] = []
    size = 0
    while size < 256 << 10:
        line = json.dumps({"id": r.randint(1, 10**6), "user": r.choice(words),
                           "text": " ".join(r.choice(words) for _ in range(r.randint(3, 12))),
                           "ok": r.random() < 0.5})
        out.append(line)
        size += len(line) + 1
    return "\n".join(out).encode()


def _synthetic_blocks(name: str, bs: int, want: int, offsets: Sequence[str]) -> Iterator[str]:
    """The sampler's output for simulated data: per volume, a share of holes (10-60 %), of
    random blocks (0-50 %), and text blocks whose leading part (0-50 %) is random bytes."""

    v = mix("blocks", name)
    holes, noise, mixed = 0.1 + (v % 51) / 100, ((v >> 8) % 51) / 100, ((v >> 16) % 51) / 100
    corpus = _text_corpus()
    n = 0
    for o in offsets:
        r = random.Random(f"{name}:{o}")
        x = r.random()
        if x < holes:
            yield f"Z {o}"
            continue
        if x < holes + (1 - holes) * noise:
            block = r.randbytes(bs)
        else:
            start = r.randrange(0, len(corpus) - bs)
            cut = int(bs * mixed * r.random() * 2) // 2
            block = r.randbytes(cut) + corpus[start + cut:start + bs]
        yield f"D {o} {base64.b64encode(block).decode()}"
        n += 1
        if n >= want:
            return


