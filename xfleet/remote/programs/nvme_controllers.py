"""Every NVMe controller of an initiator (xfleet/ops/initiator.py), run as `python3 -c`.

argv: [SYSFS_ROOT] (default /sys). Prints one JSON document: the controllers with their raw
sysfs strings (null where an attribute is missing or unreadable, e.g. while the controller is
being deleted), and `dhchap` ("set" when it was connected with a DH-CHAP secret, "none", or
null on a kernel without DH-CHAP; never the secret); xfleet.ops.initiator.parse_controllers
interprets them.

Not on the simulator: it runs on initiators, which are lab VMs.
"""

import json
import os
import re
import sys
from typing import Any, Dict, List, Optional  # the node's python3 may be older than 3.9

root = sys.argv[1] if len(sys.argv) > 1 else "/sys"
CTRL = (
    "subsysnqn",
    "transport",
    "address",
    "state",
    "ctrl_loss_tmo",
    "reconnect_delay",
    "fast_io_fail_tmo",
    "cntlid",
    "hostnqn",
)
NS = ("uuid", "nguid", "nsid")


def read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def namespaces(d: str, pattern: str) -> List[Dict[str, Optional[str]]]:
    out: List[Dict[str, Optional[str]]] = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return out
    for n in names:
        if re.fullmatch(pattern, n):
            ns = {k: read(os.path.join(d, n, k)) for k in NS}
            ns["device"] = n
            out.append(ns)
    return out


subsys = {}
sroot = os.path.join(root, "class", "nvme-subsystem")
for s in sorted(os.listdir(sroot)) if os.path.isdir(sroot) else []:
    for e in os.listdir(os.path.join(sroot, s)):
        if re.fullmatch(r"nvme\d+", e):
            subsys[e] = os.path.join(sroot, s)
out = []
croot = os.path.join(root, "class", "nvme")
for c in sorted(os.listdir(croot)) if os.path.isdir(croot) else []:
    d = os.path.join(croot, c)
    row: Dict[str, Any] = {k: read(os.path.join(d, k)) for k in CTRL}
    # whether the connection was made with a DH-CHAP secret: "none" or "set", never the
    # secret itself (null: a kernel without DH-CHAP)
    secret = read(os.path.join(d, "dhchap_secret"))
    row["dhchap"] = None if secret is None else "none" if secret in ("", "none") else "set"
    row["name"] = c
    row["subsystem"] = os.path.basename(subsys[c]) if c in subsys else None
    ns = namespaces(subsys[c], r"nvme\d+n\d+") if c in subsys else []
    row["namespaces"] = ns or namespaces(d, r"nvme\d+n\d+")
    out.append(row)
json.dump({"controllers": out}, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
