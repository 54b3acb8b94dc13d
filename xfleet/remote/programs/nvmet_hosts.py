"""Set the allowed hosts of many kernel NVMe target subsystems at once (xfleet/ops/target.py),
run on a node as `python3 -c`.

argv: CONFIGFS (/sys/kernel/config/nvmet). stdin: one line per subsystem,
NQN<TAB>HOSTS, HOSTS the host NQNs allowed to connect, comma-separated (empty: no host may).
For each subsystem, in this order (the kernel refuses allowed hosts on a subsystem that allows
any host, and refuses to open one that has allowed hosts):

1. `attr_allow_any_host` 0;
2. a `hosts/HOSTNQN` entry for each host (made once, shared by every subsystem; never removed
   here: an unused entry grants nothing);
3. the `allowed_hosts/HOSTNQN` links of the new hosts made, the links of hosts no longer
   allowed removed;
4. when a host was removed, the subsystem's links on its ports are re-made: the kernel keeps a
   removed host's controllers connected otherwise. Every controller of the subsystem
   reconnects (a stall of one reconnect_delay for the hosts still allowed); the removed host
   is refused.

Prints one line per subsystem, `NQN<TAB>OK|ERR<TAB>MESSAGE` (MESSAGE: `+N -M` hosts added and
removed, or the error); exit status 0 (a subsystem's error is its line's), 2 on a malformed
input line (nothing changed).

Not on the simulator: simulated nodes use the `command` target driver (its set_hosts).
"""

import os
import sys

root = sys.argv[1]
subs = os.path.join(root, "subsystems")
jobs = []
for n, line in enumerate(sys.stdin.read().splitlines(), 1):
    if not line.strip():
        continue
    parts = line.split("\t")
    if len(parts) != 2 or not parts[0].startswith("nqn.") or "/" in parts[0]:
        sys.stderr.write("line %d: expected NQN<TAB>HOSTS, got %r\n" % (n, line))
        sys.exit(2)
    hosts = [h for h in parts[1].split(",") if h]
    if any(not h.startswith("nqn.") or "/" in h for h in hosts):
        sys.stderr.write("line %d: not a host NQN in %r\n" % (n, parts[1]))
        sys.exit(2)
    jobs.append((parts[0], hosts))


def put(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def relink(nqn: str) -> None:
    ports = os.path.join(root, "ports")
    for port in sorted(os.listdir(ports)) if os.path.isdir(ports) else []:
        link = os.path.join(ports, port, "subsystems", nqn)
        if os.path.islink(link):
            os.unlink(link)
            os.symlink(os.path.join(subs, nqn), link)


for nqn, hosts in jobs:
    sub = os.path.join(subs, nqn)
    try:
        if not os.path.isdir(sub):
            raise OSError("no such subsystem")
        put(os.path.join(sub, "attr_allow_any_host"), "0")
        allowed = os.path.join(sub, "allowed_hosts")
        have = set(os.listdir(allowed))
        added = removed = 0
        for h in hosts:
            entry = os.path.join(root, "hosts", h)
            if not os.path.isdir(entry):
                os.mkdir(entry)
            if h not in have:
                os.symlink(entry, os.path.join(allowed, h))
                added += 1
        for h in sorted(have - set(hosts)):
            os.unlink(os.path.join(allowed, h))
            removed += 1
        if removed:
            relink(nqn)
        print(nqn, "OK", "+%d -%d" % (added, removed), sep="\t")
    except OSError as exc:
        print(nqn, "ERR", " ".join(str(exc).split()), sep="\t")
