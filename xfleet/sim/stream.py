"""The simulated send stream: what `zfs send` on a simulated node writes and `zfs receive`
reads. It carries the snapshot chain (names, guids, createtxg, creation, space figures and
the content identity of each snapshot), not the data: a header that describes the stream,
then filler bytes standing for the data, as many as real zfs would send, so a relay counts
and limits them and `zfs send -nP` estimates them exactly.

Layout (all ASCII, so a stream also survives a text transport line for line):

    XFLEET-SIM-SEND-STREAM 1 <header length>\\n
    <header: one line of JSON>\\n
    <substream 1 payload> <substream 2 payload> ...

Each substream (one snapshot: a full stream has one, `-I` one per snapshot) has a payload of
`size` bytes, lines of NUL bytes ending in a newline. A receive that gets fewer bytes than a
substream's end got that substream partly (a cut stream): `zfs receive -s` keeps it as a
partial receive with a resume token (`token`, `parse_token`), from which `zfs send -t`
makes a stream of the rest (`offset`).

Resume tokens have OpenZFS's format, `1-<fletcher4 of the payload>-<packed length>-<hex of the
zlib-compressed payload>`, with the nvlist's fields (fromguid, object, offset, bytes, toguid,
toname, largeblockok, embedok, compressok, rawok) packed as JSON instead of XDR.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAGIC = "XFLEET-SIM-SEND-STREAM"
VERSION = 1
HEAD_MAX = 1 << 20  # a header never gets near this (a snapshot's record is ~300 bytes)
LINE = 64  # the filler's line length (63 NULs and a newline)
CHUNK = 1 << 20  # filler handed out at once (a multiple of LINE)
_FILLER = (b"\0" * (LINE - 1) + b"\n") * (CHUNK // LINE + 1)  # CHUNK + LINE bytes
_FILLER_CHUNK = _FILLER[:CHUNK]
SUBSTREAM_OVERHEAD = 9_520  # BEGIN/OBJECT/END records and the zvol's metadata objects

# dmu_replay_record_t's BEGIN record: the feature flags a stream can carry (zfs_ioctl.h)
FEATURE_EMBED_DATA = 1 << 16
FEATURE_LZ4 = 1 << 17
FEATURE_LARGE_BLOCKS = 1 << 19
FEATURE_RESUMING = 1 << 20
FEATURE_COMPRESSED = 1 << 22
FEATURE_RAW = 1 << 24
FEATURE_ZSTD = 1 << 25
BACKUP_MAGIC = 0x2F5BACBAC
DRR_FLAG_FREERECORDS = 1 << 2
DRR_FLAG_SPILL_BLOCK = 1 << 3
OST_ZFS, OST_ZVOL = 2, 3


@dataclass
class Substream:
    """One snapshot's part of a stream: the snapshot (its record as the sender has it), the
    snapshot it is relative to (guid 0: a full stream), its size and, for a resumed stream,
    the payload bytes the receiver already has (`offset`)."""

    toname: str
    toguid: int
    fromguid: int
    fromname: str | None
    snap: dict[str, Any]  # creation, referenced, logicalreferenced, written, content, ...
    size: int  # payload bytes of the whole substream (a resumed one sends size - offset)
    offset: int = 0

    @property
    def sent(self) -> int:
        """Payload bytes this stream carries of the substream."""
        return self.size - self.offset


@dataclass
class Stream:
    """A stream's header: what `zfs send` put in it."""

    dataset: str  # the sent dataset (the source's name)
    type: str  # volume or filesystem
    flags: dict[str, bool]  # L, c, e, w, p: the send's options
    subs: list[Substream]
    volsize: int | None = None
    volblocksize: int | None = None
    compression: str = "off"  # the sender's, for the feature flags of its BEGIN records
    props: dict[str, str] | None = None  # with -p / -R: the sent dataset's local properties
    node: str = ""
    resuming: bool = False
    header: bytes = field(default=b"", repr=False)

    def encode(self) -> bytes:
        """The first bytes of the stream (its magic line and header), computed once."""
        if not self.header:
            body = json.dumps({
                "dataset": self.dataset, "type": self.type, "flags": self.flags,
                "volsize": self.volsize, "volblocksize": self.volblocksize,
                "compression": self.compression, "props": self.props, "node": self.node,
                "resuming": self.resuming,
                "subs": [{"toname": s.toname, "toguid": s.toguid, "fromguid": s.fromguid,
                          "fromname": s.fromname, "snap": s.snap, "size": s.size,
                          "offset": s.offset} for s in self.subs],
            }, separators=(",", ":"), sort_keys=False).encode()
            self.header = f"{MAGIC} {VERSION} {len(body) + 1}\n".encode() + body + b"\n"
        return self.header

    @property
    def length(self) -> int:
        """Every byte of the stream: what `zfs send -nP` estimates, what a relay counts."""
        return len(self.encode()) + sum(s.sent for s in self.subs)

    def bounds(self) -> list[tuple[int, int]]:
        """(first, end) byte of each substream's payload in the stream."""
        out = []
        pos = len(self.encode())
        for s in self.subs:
            out.append((pos, pos + s.sent))
            pos += s.sent
        return out

    def features(self, sub: Substream) -> int:
        """The feature flags of a substream's BEGIN record (dmu_send.c setup_featureflags,
        for a zvol or a filesystem on a pool where lz4_compress is active)."""
        f = 0
        if self.flags.get("L") and (self.volblocksize or 0) > 128 << 10:
            f |= FEATURE_LARGE_BLOCKS
        if self.flags.get("e"):
            f |= FEATURE_EMBED_DATA | FEATURE_LZ4
        if self.flags.get("c"):
            f |= FEATURE_COMPRESSED | FEATURE_LZ4
            if self.compression.startswith("zstd"):
                f |= FEATURE_ZSTD
        if self.flags.get("w"):
            f |= FEATURE_RAW
        if sub.offset or self.resuming:
            f |= FEATURE_RESUMING
        return f

    def begin_record(self, sub: Substream) -> bytes:
        """The substream's BEGIN record as the kernel gets it (dmu_replay_record_t, 312
        bytes): what `zpool history -i` shows of a resumable receive's ioctl."""
        versioninfo = 1 | self.features(sub) << 2  # DMU_SUBSTREAM
        payload = 96 if self.resuming else 0  # a resumed stream's nvlist (object, offset)
        return struct.pack("<IIQQQIIQQ256s", 0, payload, BACKUP_MAGIC, versioninfo,
                           int(sub.snap.get("creation", 0)),
                           OST_ZVOL if self.type == "volume" else OST_ZFS,
                           DRR_FLAG_FREERECORDS | DRR_FLAG_SPILL_BLOCK, sub.toguid,
                           sub.fromguid, sub.toname.encode()[:255])

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The stream's bytes, `size` at most at a time (the filler without copies)."""
        yield self.encode()
        for s in self.subs:
            yield from filler(s.sent, size)

    def text_lines(self) -> Iterator[str]:
        """The stream as lines (what a text transport reads: every line ends in a newline,
        so joining them back with newlines gives the same bytes)."""
        for chunk in self.chunks():
            text = chunk.decode("ascii")
            yield from text[:-1].split("\n")


def filler(n: int, size: int = CHUNK) -> Iterator[bytes]:
    """`n` bytes of filler: lines of NULs, the last one ending in a newline too."""
    pos = 0
    while pos < n:
        piece = _filler_at(pos, min(size, n - pos), n)
        yield piece
        pos += len(piece)


def _filler_at(pos: int, k: int, n: int) -> bytes:
    """`k` bytes of the filler of a payload of `n` bytes, from its byte `pos`: byte p is a
    newline when p % LINE == LINE - 1 or p == n - 1, else NUL."""
    start = pos % LINE
    # the usual case, a whole chunk at a line's start, is handed out without a copy
    piece = _FILLER_CHUNK if start == 0 and k == CHUNK else _FILLER[start:start + k]
    if pos + k == n and not piece.endswith(b"\n"):
        piece = piece[:-1] + b"\n"
    return piece


class Reader:
    """A stream's bytes for a reader that asks for `n` at a time (a relay)."""

    def __init__(self, stream: Stream):
        self.head = stream.encode()
        self.sizes = [s.sent for s in stream.subs if s.sent]
        self.pos = 0  # in the header, then in the current payload
        self.index = -1  # -1: the header; then the payload being read
        self.done = 0  # bytes handed out

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if self.index < 0:
            if self.pos < len(self.head):
                piece = self.head[self.pos:self.pos + n]
                self.pos += len(piece)
                self.done += len(piece)
                return piece
            self.index, self.pos = 0, 0
        while self.index < len(self.sizes) and self.pos >= self.sizes[self.index]:
            self.index, self.pos = self.index + 1, 0
        if self.index >= len(self.sizes):
            return b""
        size = self.sizes[self.index]
        piece = _filler_at(self.pos, min(n, CHUNK, size - self.pos), size)
        self.pos += len(piece)
        self.done += len(piece)
        return piece


def stream_size(data: int) -> int:
    """A substream's payload for `data` bytes of blocks: the data and its records."""
    return data + data // 128 + SUBSTREAM_OVERHEAD


class Incoming:
    """What a command read on its stdin, kept small: the first bytes (a stream's header) and
    how many bytes came in all."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.count = 0

    def feed(self, data: bytes | memoryview) -> None:
        room = HEAD_MAX - len(self.head)
        if room > 0:
            self.head += data[:room]
        self.count += len(data)

    @classmethod
    def of(cls, data: bytes) -> Incoming:
        got = cls()
        got.feed(data)
        return got


class BadStream(Exception):
    """Input that is not a (complete enough) simulated stream: `zfs receive`'s reason."""


def decode(incoming: Incoming) -> Stream:
    """The header of the stream in `incoming`; BadStream with zfs's words when there is
    none (no BEGIN record: `failed to read from stream`; another format: `bad magic`)."""
    head = bytes(incoming.head)
    first, sep, rest = head.partition(b"\n")
    if not sep:
        if not head or MAGIC.encode().startswith(head[:len(MAGIC)]):
            raise BadStream("failed to read from stream")
        raise BadStream("invalid stream (bad magic number)")
    parts = first.decode("ascii", "replace").split(" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[2].isdigit():
        raise BadStream("invalid stream (bad magic number)")
    if parts[1] != str(VERSION):
        raise BadStream(f"stream has unsupported feature, feature flags = {parts[1]}")
    need = int(parts[2])
    if len(rest) < need:
        raise BadStream("failed to read from stream")
    try:
        d = json.loads(rest[:need])
        s = Stream(dataset=d["dataset"], type=d["type"], flags=d["flags"],
                   subs=[Substream(x["toname"], int(x["toguid"]), int(x["fromguid"]),
                                   x["fromname"], x["snap"], int(x["size"]),
                                   int(x["offset"])) for x in d["subs"]],
                   volsize=d["volsize"], volblocksize=d["volblocksize"],
                   compression=d["compression"], props=d["props"], node=d["node"],
                   resuming=bool(d["resuming"]))
    except (ValueError, KeyError, TypeError):
        raise BadStream("invalid stream (bad magic number)") from None
    s.header = head[:len(first) + 1 + need]
    return s


# ---------------------------------------------------------------------------------------------
# resume tokens


def _fletcher4_word0(data: bytes) -> int:
    """zc_word[0] of fletcher_4_native_varsize: the sum of the little-endian 32-bit words
    (a trailing partial word is not counted)."""
    n = len(data) // 4
    words: tuple[int, ...] = struct.unpack(f"<{n}I", data[:n * 4])
    return sum(words) & 0xFFFFFFFFFFFFFFFF


def token(fields: dict[str, Any]) -> str:
    """A receive_resume_token holding `fields` (in the kernel's order)."""
    packed = json.dumps(fields, separators=(",", ":")).encode()
    compressed = zlib.compress(packed, 6)
    return f"1-{_fletcher4_word0(compressed):x}-{len(packed):x}-{compressed.hex()}"


class BadToken(Exception):
    """A token `zfs send -t` cannot use; the message is libzfs' reason."""


def parse_token(text: str) -> dict[str, Any]:
    """The fields of a resume token, or BadToken with libzfs' words."""
    parts = text.split("-", 3)
    try:
        version = int(parts[0])
        checksum = int(parts[1], 16)
        packed_len = int(parts[2], 16)
        hexed = parts[3]
    except (ValueError, IndexError):
        raise BadToken("resume token is corrupt (invalid format)") from None
    if version != 1:
        raise BadToken(f"resume token is corrupt (invalid version {version})")
    try:
        compressed = bytes.fromhex(hexed[:len(hexed) // 2 * 2])
    except ValueError:
        raise BadToken("resume token is corrupt (payload is not hex-encoded)") from None
    if _fletcher4_word0(compressed) != checksum:
        raise BadToken("resume token is corrupt (incorrect checksum)")
    try:
        packed = zlib.decompress(compressed)
    except zlib.error:
        raise BadToken("resume token is corrupt (decompression failed)") from None
    if len(packed) != packed_len:
        raise BadToken("resume token is corrupt (decompression failed)")
    try:
        got = json.loads(packed)
    except ValueError:
        raise BadToken("resume token is corrupt (nvlist_unpack failed)") from None
    if not isinstance(got, dict):
        raise BadToken("resume token is corrupt (nvlist_unpack failed)")
    return got


def token_lines(fields: dict[str, Any]) -> list[str]:
    """The token's fields as `zfs send -v -t` prints them (nvlist_print)."""
    out = ["nvlist version: 0"]
    for key, value in fields.items():
        if value is True:
            out.append(f"\t{key}")
        elif isinstance(value, int):
            out.append(f"\t{key} = 0x{value:x}")
        else:
            out.append(f"\t{key} = {value}")
    return out
