"""The kernel NVMe target's exports (xfleet/ops/target.py), run on a node as `python3 -c`.

argv: CONFIGFS (/sys/kernel/config/nvmet): prints one line per namespace,
NQN<TAB>NSID<TAB>DEVICE<TAB>UUID<TAB>NGUID<TAB>ENABLE<TAB>ALLOW_ANY<TAB>HOSTS (empty fields
where unreadable): ALLOW_ANY is the subsystem's attr_allow_any_host (1: any host may connect),
HOSTS its allowed_hosts, comma-separated.

Not on the simulator: simulated nodes use the `command` target driver.
"""

import os
import sys

root = sys.argv[1]


def rd(p: str) -> str:
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return ""


base = os.path.join(root, "subsystems")
for nqn in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    nsd = os.path.join(base, nqn, "namespaces")
    allowed = os.path.join(base, nqn, "allowed_hosts")
    hosts = ",".join(sorted(os.listdir(allowed))) if os.path.isdir(allowed) else ""
    anyhost = rd(os.path.join(base, nqn, "attr_allow_any_host"))
    for nsid in sorted(os.listdir(nsd)) if os.path.isdir(nsd) else []:
        d = os.path.join(nsd, nsid)
        print(
            "\t".join(
                [
                    nqn,
                    nsid,
                    rd(d + "/device_path"),
                    rd(d + "/device_uuid"),
                    rd(d + "/device_nguid"),
                    rd(d + "/enable"),
                    anyhost,
                    hosts,
                ]
            )
        )
