"""Give connected NVMe controllers of an initiator a new DH-CHAP secret
(xfleet/ops/access/auth.py), run as `python3 -c`.

argv: [--sysfs ROOT] CONTROLLER... (names like nvme3). stdin: the host's secret
(`DHHC-1:HH:BASE64:`), never on argv. For each controller, its
/sys/class/nvme/NAME/dhchap_secret is written when it differs: the kernel keeps the secret for
the controller's reconnects and re-authenticates the connection with it at once (in the
background: the connection stays up either way).

Prints one line per controller, `NAME<TAB>OK<TAB>changed|unchanged`, or `NAME<TAB>ERR<TAB>
MESSAGE` (a controller connected without a secret cannot be given one: it is reconnected with
the secret instead; a controller that went away). Never prints the secret. Exit status 0,
1 on bad arguments or a secret that is not DHHC-1.

Not on the simulator: it runs on initiators, which are lab VMs.
"""

import os
import re
import sys

args = sys.argv[1:]
root = "/sys"
if args[:1] == ["--sysfs"] and len(args) >= 2:
    root, args = args[1], args[2:]
if not args or any(not re.fullmatch(r"nvme\d+", a) for a in args):
    sys.exit("usage: [--sysfs ROOT] CONTROLLER... (names like nvme3); the secret on stdin")
secret = sys.stdin.read().strip()
if not secret.startswith("DHHC-1:") or any(c.isspace() for c in secret):
    sys.exit("the secret on stdin is not a DHHC-1 secret")
for name in args:
    path = os.path.join(root, "class", "nvme", name, "dhchap_secret")
    try:
        with open(path) as f:
            have = f.read().strip()
        if have in ("", "none"):
            print(name, "ERR", "connected without a DH-CHAP secret: the kernel cannot give it "
                  "one; reconnect it with the secret", sep="\t")
            continue
        if have == secret:
            print(name, "OK", "unchanged", sep="\t")
            continue
        with open(path, "w") as f:
            f.write(secret)
        print(name, "OK", "changed", sep="\t")
    except FileNotFoundError:
        print(name, "ERR", "no such controller, or a kernel without DH-CHAP", sep="\t")
    except OSError as exc:  # names the file, never the secret
        print(name, "ERR", " ".join(str(exc).split()), sep="\t")
