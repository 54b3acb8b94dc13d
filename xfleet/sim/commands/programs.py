"""xfleet's remote programs (xfleet/remote/programs/) that a simulated node answers, by name:
the block sampler of compression estimates, and what a move's verification runs on each side
(wait_device, sample_hashes: hashes of the volume's content identity, xfleet/sim/content.py);
put_file, which stages the simulated target daemon's packages, is in target.py."""

from __future__ import annotations

import base64
import builtins
import functools
import io
import json
import random
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from xfleet.remote.programs import program
from xfleet.sim.content import content_of, device_volume, slice_hash
from xfleet.sim.overlay import Rec
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


def device(sim: SimTransport, path: str) -> Rec | None:
    """The volume whose device node `path` is, if the node has that device: a volume that
    is not being received and whose volmode is not none."""
    name = device_volume(path)
    if name is None:
        return None
    view = View(sim, sim.current_overlay())
    rec = view.record(name)
    if rec is None or rec["type"] != "volume" or rec.get("inconsistent"):
        return None
    if view.effective(rec, "volmode")[0] == "none":
        return None
    return rec


@command(PROGRAM, "wait_device")
def wait_device(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """wait_device.sh DEVICE: exit 0 when the device node is there, else 1 (at once: a
    simulated node has no udev to wait for)."""
    if not args or device(sim, args[0]) is None:
        ctx.code = 1  # `test -e` fails, silently
    return iter(())


@command(PROGRAM, "sample_hashes")
def sample_hashes(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """sample_hashes.py DEVICE OFFSET...: `SHA256 OFFSET` per 1 MiB slice, derived from the
    volume's content identity (equal on two volumes exactly when one holds the other's sent
    data), of nothing past the end."""
    if not args:
        raise Fail("IndexError: list index out of range\n", 1)
    rec = device(sim, args[0])
    if rec is None:
        raise Fail(f"FileNotFoundError: [Errno 2] No such file or directory: '{args[0]}'\n",
                   1)
    content, volsize = content_of(rec), int(rec["volsize"])
    return iter([f"{slice_hash(content, volsize, int(o))} {o}" for o in args[1:]])



@command(PROGRAM, "replica_cursor")
def replica_cursor(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """replica_cursor.py TAG (VOLUME NEW OLD)...: the program's own text, run here with its
    `zfs` commands answered by this node's handlers (xfleet/remote/programs/replica_cursor.py:
    hold, bookmark, release, destroy)."""
    return run_python_program(sim, program("replica_cursor").text, args, ctx)


@command(PROGRAM, "assign_uuids")
def assign_uuids(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """assign_uuids.py PROPERTY < VOLUME GUID UUID lines: the program's own text, run here
    with its `zfs get`/`zfs set` answered by this node's handlers
    (xfleet/remote/programs/assign_uuids.py)."""
    return run_python_program(sim, program("assign_uuids").text, args, ctx)


class _Err:
    """The program's sys.stderr: what it writes is the command's stderr."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def write(self, text: str) -> int:
        self.ctx.err.append(text)
        return len(text)


def run_python_program(sim: SimTransport, text: str, args: list[str],
                       ctx: Context) -> Iterator[str]:
    """Run a remote Python program that drives `zfs` through `subprocess.run` (and only
    that): its subprocess calls go to this node's handlers, its prints are the output, its
    `sys.exit` the exit status."""
    out: list[str] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        sub = Context(argv=list(argv))
        lines: list[str] = []
        try:
            lines = list(sim.dispatch(list(argv), sub))
        except Fail as f:
            sub.fail(f.stderr, f.code)
        return subprocess.CompletedProcess(argv, sub.code, "".join(x + "\n" for x in lines),
                                           "".join(sub.err))

    def printed(*items: object, sep: str = " ", end: str = "\n") -> None:
        out.append(sep.join(str(i) for i in items))

    stdin = io.StringIO((ctx.stdin or b"").decode("utf-8", "replace"))
    fake_sys = types.SimpleNamespace(argv=["-c", *args], exit=sys.exit, stdin=stdin,
                                     stderr=_Err(ctx))
    fake_subprocess = types.SimpleNamespace(run=run)
    modules = {"sys": fake_sys, "subprocess": fake_subprocess}

    def importer(name: str, *a: Any, **k: Any) -> Any:
        return modules[name] if name in modules else __import__(name, *a, **k)

    env = {"__name__": "__main__", "print": printed,
           "__builtins__": {**vars(builtins), "__import__": importer, "print": printed}}
    try:
        exec(compile(text, "<remote program>", "exec"), env)  # noqa: S102 (xfleet's own file)
    except SystemExit as exc:
        ctx.code = exc.code if isinstance(exc.code, int) else 1
    return iter(out)
