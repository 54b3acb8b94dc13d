"""xfleet's block sampler (xfleet/ops/estimate.py), run on a node as `python3 -c`.

argv: BLOCKSIZE WANT DEVICE OFFSET...: for each offset, prints `Z OFFSET` for an all-zero block
or `D OFFSET BASE64` for a data block, until WANT data blocks were printed. Exit 2 if DEVICE
cannot be opened. Runs on the node's python3 (3.7+), standard library only.
"""

import base64
import os
import sys

bs, want, dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
try:
    fd = os.open(dev, os.O_RDONLY)
except OSError as e:
    sys.stderr.write(f"cannot open {dev}: {e.strerror}\n")
    sys.exit(2)
z = bytes(bs)
n = 0
for o in sys.argv[4:]:
    b = os.pread(fd, bs, int(o))
    if b == z[: len(b)]:
        print("Z", o)
        continue
    print("D", o, base64.b64encode(b).decode())
    n += 1
    if n >= want:
        break
