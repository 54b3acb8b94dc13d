"""Sampled verification of a move (xfleet/ops/moves/runner.py), run on a node as `python3 -c`.

argv: DEVICE OFFSET...: prints `SHA256 OFFSET` for the 1 MiB slice at each MiB offset, read with
O_DIRECT where the device allows it (what is on disk, not a cached page). A slice past the end
hashes what was read: nothing, or the short tail.

On the simulator: hashes of the volume's content identity (xfleet/sim/content.py), equal on
two volumes exactly when one holds data sent from the other.
"""

import hashlib
import mmap
import os
import sys

dev = sys.argv[1]
try:
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
except OSError:
    fd = os.open(dev, os.O_RDONLY)
buf = mmap.mmap(-1, 1 << 20)
for o in sys.argv[2:]:
    n = os.preadv(fd, [buf], int(o) << 20)
    print(hashlib.sha256(buf[:n]).hexdigest(), o)
