"""The simulated send stream (xfleet/sim/stream.py): its header decodes to what was sent, its
bytes are the same whether read in chunks, by a reader of any read size or as text lines, and
resume tokens have OpenZFS's format and refuse what libzfs refuses."""

from __future__ import annotations

import random

import pytest

from xfleet.sim.stream import (
    CHUNK,
    BadStream,
    BadToken,
    Incoming,
    Reader,
    Stream,
    Substream,
    decode,
    parse_token,
    stream_size,
    token,
    token_lines,
)


def _stream(*sizes: int) -> Stream:
    subs = [Substream(f"tank/v@s{i}", 100 + i, 99 + i if i else 0,
                      f"tank/v@s{i - 1}" if i else None, {"creation": 1, "content": f"c{i}"},
                      size) for i, size in enumerate(sizes)]
    return Stream(dataset="tank/v", type="volume", flags={"L": True, "c": True}, subs=subs,
                  volsize=1 << 30, volblocksize=16384, compression="zstd", node="n1")


def test_the_header_decodes_to_what_was_sent() -> None:
    s = _stream(stream_size(5000), 70)
    data = b"".join(s.chunks())
    assert len(data) == s.length == len(s.encode()) + s.subs[0].size + 70
    got = decode(Incoming.of(data))
    assert [(x.toname, x.toguid, x.fromguid, x.size, x.snap) for x in got.subs] == \
        [(x.toname, x.toguid, x.fromguid, x.size, x.snap) for x in s.subs]
    assert (got.volsize, got.compression, got.flags) == (1 << 30, "zstd", s.flags)
    assert got.bounds() == s.bounds() and got.bounds()[1][1] == len(data)
    rec = s.begin_record(s.subs[0])
    assert len(rec) == 312 and rec[8:16] == (0x2F5BACBAC).to_bytes(8, "little")


@pytest.mark.parametrize("sizes", [(1,), (63, 64, 65), (CHUNK + 7, 3 * CHUNK)])
def test_every_way_of_reading_gives_the_same_bytes(sizes: tuple[int, ...]) -> None:
    s = _stream(*sizes)
    whole = b"".join(s.chunks())
    assert whole.isascii() and whole.endswith(b"\n")
    text = "".join(line + "\n" for line in s.text_lines()).encode()
    assert text == whole
    r = Reader(s)
    pieces = []
    rnd = random.Random(7)
    while piece := r.read(rnd.choice([1, 100, 4096, CHUNK, 3 * CHUNK])):
        pieces.append(piece)
    assert b"".join(pieces) == whole and r.done == len(whole)
    assert max(len(p) for p in pieces) <= CHUNK


def test_what_is_not_a_stream_is_refused_with_zfs_words() -> None:
    s = _stream(10)
    data = b"".join(s.chunks())
    for cut in (0, 5, len(data.split(b"\n", 1)[0]) + 3):
        with pytest.raises(BadStream, match="^failed to read from stream$"):
            decode(Incoming.of(data[:cut]))
    with pytest.raises(BadStream, match="bad magic number"):
        decode(Incoming.of(b"\x00\x01 a real zfs stream\n..."))
    got = Incoming()
    for piece in s.chunks(3):
        got.feed(piece)
    assert got.count == len(data) and decode(got).subs[0].toname == "tank/v@s0"


def test_resume_tokens_round_trip_and_corrupt_ones_are_refused() -> None:
    fields = {"fromguid": 7, "object": 1, "offset": 100, "bytes": 100, "toguid": 9,
              "toname": "tank/v@s", "compressok": True}
    text = token(fields)
    version, checksum, length, payload = text.split("-", 3)
    assert version == "1" and int(checksum, 16) > 0 and int(length, 16) > 0
    assert payload.startswith("78")  # zlib, as the kernel's gzip-compressed nvlist
    assert parse_token(text) == fields
    assert token_lines(fields)[:2] == ["nvlist version: 0", "\tfromguid = 0x7"]
    assert "\tcompressok" in token_lines(fields)
    for bad, why in (("nonsense", "invalid format"), ("2-1-1-00", "invalid version 2"),
                     ("1-1-1-zz", "payload is not hex-encoded"),
                     (f"1-{checksum}-{length}-79{payload[2:]}", "incorrect checksum")):
        with pytest.raises(BadToken, match=why):
            parse_token(bad)
