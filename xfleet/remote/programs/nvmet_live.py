"""A move's live cutover on the kernel NVMe target (configfs; xfleet/ops/moves/live.py), run on
a node as `python3 -c`. One volume's subsystem is handled per call; it has its own ANA group
(ids 2-128, a group directory under each port it is linked to), so the state of one volume's
paths changes without touching the node's other exports (they stay in group 1).

argv: CONFIGFS OP NQN [ARGS...]; OP is one of

- `isolate NQN DEVICE`: the source's export gets its own ANA group, optimized (its namespace leaves
  group 1; the host sees no change of state), and its controller ids stay below 32768 when
  they started below (the copy's take the other half: a host refuses two controllers of one
  subsystem with the same id). Prints `group=G serial=S cntlid_min=N address=A port=P`.
  Exit 3 when the subsystem does not exist.
- `export NQN DEVICE NSUUID NGUID SERIAL CNTLID_MIN CNTLID_MAX ADDRESS PORT STATE`, stdin the
  allowed host NQNs (comma-separated): the copy exported under the same identity, restricted
  to those hosts, in a new ANA group in STATE, on the port at ADDRESS:PORT (made when there is
  none). An existing subsystem of DEVICE (a resumed move) is kept as it is. Prints
  `group=G port=P`.
- `ana NQN STATE`: the state of the subsystem's own group on every port it is linked to
  (refused for group 1: that would change every export of the node). Prints `group=G`.
- `settle NQN`: the namespace back in group 1 (optimized on the port) and its own group
  removed. Prints `group=1`.
- `withdraw NQN`: the export removed (port links, namespace, allowed hosts, subsystem, its own
  group). Prints `withdrawn` or `absent`.

Exit status 2 on bad arguments, 3 when the subsystem is not there, 4 when it exports another
device than DEVICE, 1 with a message on stderr when configfs refuses.

Not on the simulator: simulated nodes use the `command` target driver, and `--live` needs the
kernel target.
"""

import os
import subprocess
import sys

DEFAULT_GROUP = 1
MAX_GROUP = 128
HALF = 32768  # controller ids: one node of a cutover below, the other from here
CNTLID_MAX = 65519  # the kernel's largest
STATES = ("optimized", "non-optimized", "inaccessible")


def fail(message: str, status: int = 1) -> None:
    sys.stderr.write("nvmet_live: %s\n" % message)
    sys.exit(status)


if len(sys.argv) < 4:
    fail("usage: CONFIGFS OP NQN [ARGS...]", 2)
root, op, nqn = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
if not nqn.startswith("nqn.") or "/" in nqn:
    fail("not a subsystem NQN: %r" % nqn, 2)
sub = os.path.join(root, "subsystems", nqn)
ports = os.path.join(root, "ports")
ns = os.path.join(sub, "namespaces", "1")


def put(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def get(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def linked_ports() -> "list[str]":
    """The ports the subsystem is linked to."""
    out = []
    for p in sorted(os.listdir(ports)) if os.path.isdir(ports) else []:
        if os.path.islink(os.path.join(ports, p, "subsystems", nqn)):
            out.append(p)
    return out


def group_of() -> int:
    return int(get(os.path.join(ns, "ana_grpid"), str(DEFAULT_GROUP)) or DEFAULT_GROUP)


def new_group(on: "list[str]", state: str) -> int:
    """The lowest group id no port of the node has, made on each port of `on` in `state`
    (mkdir on the first port decides: a concurrent move gets another id)."""
    used: "set[int]" = set()
    for p in os.listdir(ports) if os.path.isdir(ports) else []:
        d = os.path.join(ports, p, "ana_groups")
        if os.path.isdir(d):
            used.update(int(g) for g in os.listdir(d) if g.isdigit())
    for g in range(DEFAULT_GROUP + 1, MAX_GROUP + 1):
        if g in used:
            continue
        try:
            os.makedirs(os.path.join(ports, on[0], "ana_groups"), exist_ok=True)
            os.mkdir(os.path.join(ports, on[0], "ana_groups", str(g)))
        except FileExistsError:
            continue
        for p in on:
            d = os.path.join(ports, p, "ana_groups", str(g))
            os.makedirs(d, exist_ok=True)
            put(os.path.join(d, "ana_state"), state)  # a new group starts inaccessible
        return g
    fail("no free ANA group id (2-%d) on this node: too many live cutovers at once" % MAX_GROUP)
    return 0


def drop_group(g: int) -> None:
    if g == DEFAULT_GROUP:
        return
    for p in os.listdir(ports) if os.path.isdir(ports) else []:
        d = os.path.join(ports, p, "ana_groups", str(g))
        if os.path.isdir(d):
            os.rmdir(d)


def port_at(address: str, port: str) -> str:
    """The port listening on address:port, made when there is none."""
    have = sorted(os.listdir(ports)) if os.path.isdir(ports) else []
    for p in have:
        d = os.path.join(ports, p)
        if get(os.path.join(d, "addr_traddr")) == address and \
                get(os.path.join(d, "addr_trsvcid")) == port:
            return p
    if root == "/sys/kernel/config/nvmet":  # the kernel's TCP transport, as the daemons load it
        subprocess.run(["modprobe", "nvmet-tcp"], check=False)
    p = str(max([int(x) for x in have if x.isdigit()] + [0]) + 1)
    d = os.path.join(ports, p)
    os.makedirs(d)
    os.makedirs(os.path.join(d, "subsystems"), exist_ok=True)  # configfs makes it with the port
    put(os.path.join(d, "addr_trtype"), "tcp")
    put(os.path.join(d, "addr_adrfam"), "ipv6" if ":" in address else "ipv4")
    put(os.path.join(d, "addr_traddr"), address)
    put(os.path.join(d, "addr_trsvcid"), port)
    return p


def same_device(device: str) -> None:
    """Refuse a subsystem of this NQN that exports another device (e.g. a retired copy of
    the volume, exported closed under the same identity)."""
    have = get(os.path.join(ns, "device_path"))
    if os.path.isdir(sub) and have and have != device:
        fail("%s already exports %s here, not %s" % (nqn, have, device), 4)


def isolate() -> None:
    if len(args) != 1:
        fail("isolate: expected DEVICE", 2)
    if not os.path.isdir(sub):
        fail("no subsystem %s on this node" % nqn, 3)
    same_device(args[0])
    on = linked_ports()
    if not on:
        fail("subsystem %s is not linked to any port" % nqn, 3)
    g = group_of()
    if g == DEFAULT_GROUP:
        g = new_group(on, "optimized")
        put(os.path.join(ns, "ana_grpid"), str(g))
    low = int(get(os.path.join(sub, "attr_cntlid_min"), "1") or 1)
    if low < HALF and int(get(os.path.join(sub, "attr_cntlid_max"), str(CNTLID_MAX))) >= HALF:
        put(os.path.join(sub, "attr_cntlid_max"), str(HALF - 1))
    d = os.path.join(ports, on[0])
    print("group=%d serial=%s cntlid_min=%d address=%s port=%s" % (
        g, get(os.path.join(sub, "attr_serial")) or "-", low,
        get(os.path.join(d, "addr_traddr")), get(os.path.join(d, "addr_trsvcid"))))


def export() -> None:
    if len(args) != 9:
        fail("export: expected DEVICE NSUUID NGUID SERIAL CNTLID_MIN CNTLID_MAX ADDRESS PORT "
             "STATE", 2)
    device, ns_uuid, nguid, serial, low, high, address, port, state = args
    if state not in STATES or not low.isdigit() or not high.isdigit() or not port.isdigit():
        fail("export: bad arguments %r" % (args,), 2)
    hosts = [h for h in sys.stdin.read().strip().split(",") if h]
    if any(not h.startswith("nqn.") or "/" in h for h in hosts):
        fail("export: not a host NQN in %r" % hosts, 2)
    p = port_at(address, port)
    same_device(device)
    if os.path.isdir(sub) and get(os.path.join(ns, "enable")) == "1":
        if not os.path.islink(os.path.join(ports, p, "subsystems", nqn)):
            os.symlink(sub, os.path.join(ports, p, "subsystems", nqn))
        print("group=%d port=%s" % (group_of(), p))
        return
    os.makedirs(sub, exist_ok=True)
    put(os.path.join(sub, "attr_allow_any_host"), "0")
    allowed = os.path.join(sub, "allowed_hosts")
    os.makedirs(allowed, exist_ok=True)
    for h in hosts:
        entry = os.path.join(root, "hosts", h)
        os.makedirs(entry, exist_ok=True)
        if not os.path.islink(os.path.join(allowed, h)):
            os.symlink(entry, os.path.join(allowed, h))
    put(os.path.join(sub, "attr_cntlid_min"), low)
    put(os.path.join(sub, "attr_cntlid_max"), high)
    if serial != "-":
        put(os.path.join(sub, "attr_serial"), serial)
    os.makedirs(ns, exist_ok=True)
    put(os.path.join(ns, "device_path"), device)
    put(os.path.join(ns, "device_uuid"), ns_uuid)
    put(os.path.join(ns, "device_nguid"), nguid)
    g = group_of()
    if g == DEFAULT_GROUP:
        g = new_group([p], state)
        put(os.path.join(ns, "ana_grpid"), str(g))
    put(os.path.join(ns, "enable"), "1")
    if not os.path.islink(os.path.join(ports, p, "subsystems", nqn)):
        os.symlink(sub, os.path.join(ports, p, "subsystems", nqn))
    print("group=%d port=%s" % (g, p))


def ana() -> None:
    if len(args) != 1 or args[0] not in STATES:
        fail("ana: expected STATE (%s)" % ", ".join(STATES), 2)
    if not os.path.isdir(sub):
        fail("no subsystem %s on this node" % nqn, 3)
    g = group_of()
    if g == DEFAULT_GROUP:
        fail("%s is in ANA group 1 (shared by the node's other exports): isolate it first" % nqn)
    for p in linked_ports():
        put(os.path.join(ports, p, "ana_groups", str(g), "ana_state"), args[0])
    print("group=%d" % g)


def settle() -> None:
    if not os.path.isdir(sub):
        fail("no subsystem %s on this node" % nqn, 3)
    g = group_of()
    if g != DEFAULT_GROUP:
        for p in linked_ports():
            state = get(os.path.join(ports, p, "ana_groups", str(DEFAULT_GROUP), "ana_state"),
                        "optimized")
            if state != "optimized":
                fail("group 1 is %s on port %s: not moving %s into it" % (state, p, nqn))
        put(os.path.join(ns, "ana_grpid"), str(DEFAULT_GROUP))
        drop_group(g)
    print("group=1")


def withdraw() -> None:
    if not os.path.isdir(sub):
        print("absent")
        return
    g = group_of()
    for p in linked_ports():
        os.unlink(os.path.join(ports, p, "subsystems", nqn))
    if os.path.isdir(ns):
        put(os.path.join(ns, "enable"), "0")
        os.rmdir(ns)
    allowed = os.path.join(sub, "allowed_hosts")
    for h in os.listdir(allowed) if os.path.isdir(allowed) else []:
        os.unlink(os.path.join(allowed, h))
    os.rmdir(sub)
    drop_group(g)
    print("withdrawn")


OPS = {"isolate": isolate, "export": export, "ana": ana, "settle": settle,
       "withdraw": withdraw}
if op not in OPS:
    fail("unknown operation %r (%s)" % (op, ", ".join(sorted(OPS))), 2)
try:
    OPS[op]()
except OSError as exc:
    fail("%s %s: %s" % (op, nqn, " ".join(str(exc).split())))
