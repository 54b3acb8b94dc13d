"""The I/O probe (xfleet/lab/probe.py), run on a lab client with python3.

argv: DEVICE STOPFILE OUTFILE. Writes sequence-numbered, CRC-checked 4 KiB blocks with
O_DIRECT over 256 slots of DEVICE and reads each back, until STOPFILE exists; then reads every
slot once more and writes its counts (writes, reads, errors, mismatches, the longest stall) to
OUTFILE as JSON. Never raises before writing OUTFILE once STOPFILE exists.
"""

import json
import mmap
import os
import sys
import time
import zlib
from typing import Any, Dict, Optional  # the client's python3 may be older than 3.9

dev, stop, out = sys.argv[1:4]
BS, SLOTS = 4096, 256
st: Dict[str, Any] = {
    "writes": 0,
    "reads": 0,
    "errors": 0,
    "mismatches": 0,
    "longest_stall": 0.0,
    "messages": [],
}


def note(msg: str) -> None:
    st["errors"] += 1
    if len(st["messages"]) < 50:
        st["messages"].append(msg)


def block(seq: int) -> bytes:
    body = seq.to_bytes(8, "little") * (BS // 8 - 1)
    return seq.to_bytes(8, "little")[:4] + zlib.crc32(body).to_bytes(4, "little") + body


fd: Optional[int]
try:
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
except OSError as exc:
    fd = None
    note(f"open {dev}: {exc}")
wbuf, rbuf = mmap.mmap(-1, BS), mmap.mmap(-1, BS)
last: Dict[int, int] = {}
seq = 0
while fd is not None and not os.path.exists(stop):
    seq += 1
    slot = seq % SLOTS
    t = time.monotonic()
    try:
        wbuf.seek(0)
        wbuf.write(block(seq))
        os.pwritev(fd, [wbuf], slot * BS)
        st["writes"] += 1
        last[slot] = seq
        os.preadv(fd, [rbuf], slot * BS)
        st["reads"] += 1
        if bytes(rbuf) != block(seq):
            st["mismatches"] += 1
        if st["writes"] % 10 == 0:  # progress, for tests to wait on I/O instead of on time
            with open(out + ".progress.tmp", "w") as f:
                f.write(f"{st['writes']}\n")
            os.replace(out + ".progress.tmp", out + ".progress")
    except OSError as exc:
        note(str(exc))
        time.sleep(0.2)
    st["longest_stall"] = max(st["longest_stall"], time.monotonic() - t)
    time.sleep(0.01)
while fd is None and not os.path.exists(stop):
    time.sleep(0.2)
# the final pass: every slot in one read (one I/O, not SLOTS of them: over NVMe/TCP to a
# TCG node each I/O costs ~80 ms, so 256 reads took ~20 s)
if fd is not None:
    span = mmap.mmap(-1, SLOTS * BS)
    try:
        n = os.preadv(fd, [span], 0)
        if n != SLOTS * BS:
            note(f"final read: {n} bytes of {SLOTS * BS}")
        else:
            for slot, s in sorted(last.items()):
                if span[slot * BS : (slot + 1) * BS] != block(s):
                    st["mismatches"] += 1
    except OSError as exc:
        note(f"final read: {exc}")
with open(out + ".tmp", "w") as f:
    json.dump(st, f)
os.replace(out + ".tmp", out)
