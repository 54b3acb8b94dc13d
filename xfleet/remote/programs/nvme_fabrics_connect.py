"""`nvme connect` with options nvme-cli 2.3 lacks (xfleet/ops/initiator.py), run as `python3 -c`.

argv: OPTIONS ("transport=tcp,traddr=...,..."): the host's own hostnqn/hostid from /etc/nvme are
appended, the options written to the kernel's /dev/nvme-fabrics (what nvme-cli does), and the
kernel's answer (the new controller) printed.

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
fd = os.open("/dev/nvme-fabrics", os.O_RDWR)
os.write(fd, opts.encode())
print(os.read(fd, 4096).decode().strip())
