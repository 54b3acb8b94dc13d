"""Give volumes their fleet-wide UUID (xfleet/ops/identity.py), run on a node as `python3 -c`.

argv: PROPERTY (xfleet:uuid). stdin: one line per volume, VOLUME<TAB>GUID<TAB>UUID: the
volume as the mirror saw it (its ZFS guid) and the UUID xfleet chose for it.

The volumes' current guid and PROPERTY are read with one `zfs get` per 500 volumes. A volume
gets its UUID (`zfs set PROPERTY=UUID VOLUME`) only if it still has the guid the mirror saw (a
volume destroyed and re-created under the same name is a new volume: it never inherits the
identity chosen for the old one) and has no local value of PROPERTY yet (an inherited value
is never an identity: it would be shared).

Prints one line per volume, `VOLUME<TAB>STATE<TAB>VALUE`: `set` (VALUE: the UUID given),
`had` (VALUE: the local UUID it already had), `gone` (no such volume, or another guid), `err`
(VALUE: the error). Exit status 0, or 2 on a malformed input line (nothing changed).
"""

import subprocess
import sys
from typing import Dict, List, Optional, Tuple  # the node's python3 may be older than 3.9

prop = sys.argv[1]
todo: List[List[str]] = []
for n, line in enumerate(sys.stdin, 1):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0]:
        sys.stderr.write("assign_uuids: malformed line %d: %r\n" % (n, line))
        sys.exit(2)
    todo.append(parts)


def now_state(names: List[str]) -> Dict[str, Tuple[Optional[str], Optional[str]]]:
    """{volume: (guid, local value or None)} of the volumes that exist."""
    p = subprocess.run(["zfs", "get", "-H", "-p", "-o", "name,property,value,source",
                        "guid," + prop, *names], capture_output=True, text=True)
    out: Dict[str, Tuple[Optional[str], Optional[str]]] = {}
    for row in p.stdout.splitlines():
        f = row.split("\t")
        if len(f) != 4:
            continue
        guid, local = out.get(f[0], (None, None))
        if f[1] == "guid":
            guid = f[2]
        elif f[1] == prop and f[3] == "local":
            local = f[2]
        out[f[0]] = (guid, local)
    return out


for i in range(0, len(todo), 500):
    chunk = todo[i:i + 500]
    state = now_state([v for v, _, _ in chunk])
    for vol, guid, new in chunk:
        have_guid, local = state.get(vol, (None, None))
        if have_guid != guid:
            print(vol, "gone", "", sep="\t")
        elif local:
            print(vol, "had", local, sep="\t")
        else:
            p = subprocess.run(["zfs", "set", prop + "=" + new, vol], capture_output=True,
                               text=True)
            if p.returncode == 0:
                print(vol, "set", new, sep="\t")
            else:
                print(vol, "err", " ".join(p.stderr.split()), sep="\t")
