"""Write the allowed hosts of many zvols into their user property (xfleet/ops/access), run on a
node as `python3 -c`: the durable copy a target restart, a rollout or a move re-applies.

argv: PROPERTY (xfleet:hosts). stdin: one line per volume, VOLUME<TAB>VALUE (VALUE: host NQNs
comma-separated, or `none`: closed to every host). Volumes with the same value are set
together, `zfs set PROPERTY=VALUE VOLUME...` in chunks of at most 64 KiB of names; a chunk that
fails is retried volume by volume, so one volume destroyed meanwhile does not fail the others.

Prints `ERR<TAB>VOLUME<TAB>MESSAGE` per volume that could not be set, then `OK<TAB>N` (the
volumes set); exit status 0, or 2 on a malformed input line (nothing changed).
"""

import subprocess
import sys
from typing import Dict, List  # the node's python3 may be older than 3.9

prop = sys.argv[1]
groups: Dict[str, List[str]] = {}
for n, line in enumerate(sys.stdin.read().splitlines(), 1):
    if not line.strip():
        continue
    parts = line.split("\t")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        sys.stderr.write("line %d: expected VOLUME<TAB>VALUE, got %r\n" % (n, line))
        sys.exit(2)
    groups.setdefault(parts[1], []).append(parts[0])


def zfs_set(value: str, names: List[str]) -> str:
    p = subprocess.run(["zfs", "set", prop + "=" + value, *names], capture_output=True,
                       text=True)
    return "" if p.returncode == 0 else " ".join(p.stderr.split()) or "exit %d" % p.returncode


done = 0
for value, names in groups.items():
    chunk: List[str] = []
    size = 0
    for i, name in enumerate(names):
        chunk.append(name)
        size += len(name) + 1
        if size < 65536 and i < len(names) - 1:
            continue
        if not zfs_set(value, chunk):
            done += len(chunk)
        else:
            for one in chunk:
                err = zfs_set(value, [one])
                if err:
                    print("ERR", one, err, sep="\t")
                else:
                    done += 1
        chunk, size = [], 0
print("OK", done, sep="\t")
