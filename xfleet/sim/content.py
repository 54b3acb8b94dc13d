"""What a simulated volume holds: not bytes, an identity of its data.

Every volume and snapshot has a content identity (`content_of`): a base dataset's follows from
its guid; a snapshot takes its volume's at the moment it is taken; a received snapshot keeps
the sent one's, and a received volume holds what its newest snapshot holds; a write
(`write`) gives the volume a new one. The hashes the verification programs print
(`slice_hash`, `full_hash`) are derived from it, so two volumes hash alike exactly when one
holds data sent from the other and neither was written since.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from xfleet.sim.overlay import Rec
from xfleet.sim.registry import Fail
from xfleet.sim.settings import mix

if TYPE_CHECKING:
    from xfleet.sim.transaction import Transaction

MIB = 1 << 20
DEVICE_PREFIX = "/dev/zvol/"


def content_of(rec: Rec) -> str:
    """The content identity of a volume or snapshot record."""
    got = rec.get("content")
    return str(got) if got else f"{int(rec['guid']):016x}"


def slice_hash(content: str, volsize: int, offset: int) -> str:
    """The SHA-256 a read of the 1 MiB slice at MiB `offset` hashes: of nothing past the end
    (as sample_hashes.py reads nothing there)."""
    if offset < 0 or offset * MIB >= volsize:
        return hashlib.sha256(b"").hexdigest()
    return hashlib.sha256(f"{content}:{volsize}:{offset}".encode()).hexdigest()


def full_hash(content: str, volsize: int) -> str:
    """The SHA-256 of the whole device (`sha256sum /dev/zvol/...`)."""
    return hashlib.sha256(f"{content}:{volsize}:all".encode()).hexdigest()


def device_volume(device: str) -> str | None:
    """The volume behind a /dev/zvol path (udev writes a space in a name as '+', which no
    dataset name holds), or None for another path."""
    if not device.startswith(DEVICE_PREFIX):
        return None
    return device[len(DEVICE_PREFIX):].replace("+", " ")


# how much new data shrinks when stored, by compression algorithm (a typical mix of data)
_RATIO = {"off": 1.0, "zle": 1.1, "lzjb": 1.4, "lz4": 1.6, "on": 1.6}


def _ratio(compression: str) -> float:
    if compression.startswith("zstd"):
        return 2.0
    if compression.startswith("gzip"):
        return 2.2
    return _RATIO.get(compression, 1.5)


def write(txn: Transaction, name: str, nbytes: int) -> list[str]:
    """`nbytes` of new data written to the volume `name`: its content changes; `written`,
    `referenced` (stored, compressed as the volume's compression does) and
    `logicalreferenced` grow, up to its volsize. Real writes log no history and post no
    event."""
    rec = txn.get(name)
    if rec is None or rec["type"] != "volume":
        raise Fail(f"cannot open '{name}': dataset does not exist")
    logical = max(0, min(nbytes, int(rec["volsize"]) - int(rec["logicalreferenced"])))
    stored = int(logical / _ratio(txn.view.effective(rec, "compression")[0])) >> 9 << 9
    rec["referenced"] += stored
    rec["logicalreferenced"] += logical
    rec["ubd"] = rec["referenced"]
    rec["lused_own"] += logical
    rec["written"] = min(int(rec["referenced"]), int(rec["written"]) + stored)
    rec["content"] = f"{mix(content_of(rec), nbytes, txn.now, txn.ov.generation):016x}"
    txn.put(rec)
    return []
