"""`nvme connect` with options nvme-cli 2.3 lacks (xfleet/ops/initiator.py), run as `python3 -c`.

argv: OPTIONS ("transport=tcp,traddr=...,...") [--secret-stdin]: the host's own hostnqn/hostid
from /etc/nvme are appended, and with --secret-stdin the host's DH-CHAP secret read from stdin
(`dhchap_secret=`: never on argv, where every user of the host could read it); the options are
written to the kernel's /dev/nvme-fabrics (what nvme-cli does), and the kernel's answer (the new
controller) printed.

Not on the simulator: it runs on initiators, which are lab VMs.
"""

import os
import sys

opts = sys.argv[1]
for key, path in (("hostnqn", "/etc/nvme/hostnqn"), ("hostid", "/etc/nvme/hostid")):
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError:
        value = ""
    if value and "," not in value:
        opts += f",{key}={value}"
if sys.argv[2:] == ["--secret-stdin"]:
    secret = sys.stdin.read().strip()
    if not secret.startswith("DHHC-1:") or "," in secret or any(c.isspace() for c in secret):
        sys.exit("the secret on stdin is not a DHHC-1 secret")
    opts += ",dhchap_secret=" + secret
elif sys.argv[2:]:
    sys.exit("usage: OPTIONS [--secret-stdin]")
fd = os.open("/dev/nvme-fabrics", os.O_RDWR)
os.write(fd, opts.encode())
print(os.read(fd, 4096).decode().strip())
