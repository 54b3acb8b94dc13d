"""Give hosts their DH-CHAP secrets on a node's kernel NVMe target (xfleet/ops/access/auth.py),
run as `python3 -c`.

argv: MODE CONFIGFS AUTH_DIR. MODE `set` or `check`; CONFIGFS the nvmet root
(/sys/kernel/config/nvmet); AUTH_DIR where the node keeps each host's secret (a directory of
mode 0700, a file HOSTNQN of mode 0600 each), so the target service gives the hosts their
secrets again after a reboot, before it exports anything.

stdin: one line per host, HOSTNQN<TAB>SECRET (`DHHC-1:HH:BASE64:`). The secrets come on
stdin, never argv (a node's process list is readable by every user), and are never printed.

- `set`: the `hosts/HOSTNQN` entry is made when missing; its `dhchap_key` is written when it
  differs (the kernel then authenticates that host's new connections with it; connections
  already made keep theirs until the host re-authenticates), then AUTH_DIR/HOSTNQN (through a
  temporary file and a rename).
- `check`: nothing is changed.

Prints one line per host, `HOSTNQN<TAB>OK<TAB>STATE` with STATE `changed` or `unchanged`
(set), `match`, `differs` or `none` (check; `none`: the target has no secret for the host),
or `HOSTNQN<TAB>ERR<TAB>MESSAGE`. Exit status 0 (a host's error is its line's), 2 on a
malformed input line (nothing changed), 3 when the kernel has no DH-CHAP (its hosts' entries
have no `dhchap_key`: a kernel built without CONFIG_NVME_TARGET_AUTH), 4 when the kernel target
is not loaded (no CONFIGFS/hosts).

Not on the simulator: simulated nodes use the `command` target driver, which has no DH-CHAP.
"""

import os
import sys
from typing import Optional  # the node's python3 may be older than 3.10

mode, root, keys = sys.argv[1], sys.argv[2], sys.argv[3]
if mode not in ("set", "check"):
    sys.stderr.write("mode must be set or check, got %r\n" % mode)
    sys.exit(2)
jobs = []
for n, line in enumerate(sys.stdin.read().splitlines(), 1):
    if not line.strip():
        continue
    parts = line.split("\t")
    if len(parts) != 2 or not parts[0].startswith("nqn.") or "/" in parts[0] \
            or parts[0] in (".", ".."):
        sys.stderr.write("line %d: expected HOSTNQN<TAB>SECRET\n" % n)
        sys.exit(2)
    if not parts[1].startswith("DHHC-1:") or any(c.isspace() for c in parts[1]):
        sys.stderr.write("line %d: %s: the secret is not a DHHC-1 secret\n" % (n, parts[0]))
        sys.exit(2)
    jobs.append((parts[0], parts[1]))


def read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def keep(host: str, secret: str) -> None:
    """AUTH_DIR/HOST holds the secret, readable by root alone."""
    os.makedirs(keys, mode=0o700, exist_ok=True)
    os.chmod(keys, 0o700)
    path = os.path.join(keys, host)
    part = path + ".part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)


hosts = os.path.join(root, "hosts")
if jobs and not os.path.isdir(hosts):
    sys.stderr.write("the kernel NVMe target is not loaded here (no %s)\n" % hosts)
    sys.exit(4)
if jobs:
    probe = [h for h in os.listdir(hosts) if os.path.isdir(os.path.join(hosts, h))]
    if probe and not os.path.exists(os.path.join(hosts, probe[0], "dhchap_key")):
        sys.stderr.write("this kernel's NVMe target has no DH-CHAP (built without "
                         "CONFIG_NVME_TARGET_AUTH)\n")
        sys.exit(3)
for host, secret in jobs:
    entry = os.path.join(hosts, host)
    try:
        key = os.path.join(entry, "dhchap_key")
        if mode == "check":
            have = read(key) if os.path.isdir(entry) else None
            state = "none" if not have or have == "none" else \
                "match" if have == secret else "differs"
            print(host, "OK", state, sep="\t")
            continue
        if not os.path.isdir(entry):
            os.mkdir(entry)
        if not os.path.exists(key):
            os.rmdir(entry)  # made here, of no use: the kernel cannot authenticate
            sys.stderr.write("this kernel's NVMe target has no DH-CHAP (built without "
                             "CONFIG_NVME_TARGET_AUTH)\n")
            sys.exit(3)
        changed = read(key) != secret
        if changed:
            with open(key, "w") as f:
                f.write(secret)
        if changed or read(os.path.join(keys, host)) != secret:
            keep(host, secret)
        print(host, "OK", "changed" if changed else "unchanged", sep="\t")
    except OSError as exc:  # the message names the file, never the secret
        print(host, "ERR", " ".join(str(exc).split()), sep="\t")
