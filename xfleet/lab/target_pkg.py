"""The lab's NVMe/TCP target service: versioned Debian packages `xfleet-lab-target`.

Built on the host with `dpkg-deb` (no network): a small python3 daemon script that exports
every zvol of the node's pools over NVMe/TCP through the kernel target (configfs) under the
volume's own identity when it has an `xfleet:uuid` (docs/identity.md), else the pinned
(node, guid) one (xfleet.core.identity), each to the hosts of its `xfleet:hosts` property
(absent: any host, the legacy open export), and a systemd unit. 1.0 and 1.1 work; 1.2 is
deliberately broken: it exports but its readiness never comes. docs/upgrades.md.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from xfleet.core.access import CLOSED
from xfleet.core.identity import HOSTS_PROPERTY, PIN_NAMESPACE, UUID_PROPERTY
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.state import LabState

PACKAGE = "xfleet-lab-target"
VERSIONS = ("1.0", "1.1", "1.2")
BROKEN = ("1.2",)
CONF = "/etc/xfleet-lab-target.conf"  # address=, port=, nqn_prefix=, pools= (key=value lines)
SCRIPT_PATH = "/usr/sbin/xfleet-lab-target"

DAEMON = r'''#!/usr/bin/python3
"""xfleet-lab-target VERSION: exports the node's zvols over NVMe/TCP (kernel nvmet, configfs),
each to the hosts in its @HOSTS@ property (absent: any host).

usage: xfleet-lab-target start|stop|status|export VOLUME|unexport VOLUME"""
import os, re, socket, subprocess, sys, uuid

VERSION = "@VERSION@"
BROKEN = @BROKEN@
PIN = uuid.UUID("@PIN@")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROOT = "/sys/kernel/config/nvmet"
READY = "@READY@"
AUTH_DIR = "@AUTH_DIR@"
PORT_DIR = ROOT + "/ports/1"


def conf():
    c = {"port": "4420", "nqn_prefix": "@PREFIX@", "address": "", "pools": ""}
    try:
        with open("@CONF@") as f:
            for line in f:
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    c[k.strip()] = v.strip()
    except FileNotFoundError:
        pass
    if not c["address"]:
        sys.exit("xfleet-lab-target: no address in @CONF@")
    return c


def put(path, value):
    with open(path, "w") as f:
        f.write(value)


def out(argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def identity(node, guid, vuuid=None):
    """(namespace uuid, nguid): the volume's own from its UUID (the same on any node), else
    pinned from (node, guid)."""
    if vuuid:
        return vuuid, str(uuid.uuid5(PIN, vuuid + "/nguid"))
    key = "%s/%d" % (node, int(guid))
    return str(uuid.uuid5(PIN, key)), str(uuid.uuid5(PIN, key + "/nguid"))


def nqn(c, volume, vuuid=None):
    """PREFIX:vol:UUID for a volume with its own UUID, else PREFIX:HOST:POOL.PATH."""
    if vuuid:
        return "%s:vol:%s" % (c["nqn_prefix"], vuuid)
    return "%s:%s:%s" % (c["nqn_prefix"], socket.gethostname(), volume.replace("/", "."))


def own_uuid(value, source):
    """The volume's own @UUID@ (set on it or received with it; an inherited one is none)."""
    if source.split(" ")[0] not in ("local", "received"):
        return None
    return value if UUID_RE.match(value) else None


def props(names, recursive=False):
    """{volume: (guid, hosts value, own uuid)} from one zfs get."""
    argv = ["zfs", "get", "-Hp", "-o", "name,property,value,source"]
    if recursive:
        argv += ["-r", "-t", "volume"]
    got = {}
    for line in out(argv + ["guid,@HOSTS@,@UUID@"] + list(names)).splitlines():
        f = line.split("\t")
        if len(f) != 4:
            continue
        row = got.setdefault(f[0], {"guid": None, "hosts": "-", "uuid": None})
        if f[1] == "guid":
            row["guid"] = f[2]
        elif f[1] == "@HOSTS@":
            row["hosts"] = f[2]
        elif f[1] == "@UUID@":
            row["uuid"] = own_uuid(f[2], f[3])
    return {k: (v["guid"], v["hosts"], v["uuid"]) for k, v in got.items() if v["guid"]}


def ensure_port(c):
    subprocess.run(["modprobe", "nvmet-tcp"], check=True)
    if not os.path.isdir(PORT_DIR):
        os.mkdir(PORT_DIR)
        put(PORT_DIR + "/addr_trtype", "tcp")
        put(PORT_DIR + "/addr_adrfam", "ipv4")
        put(PORT_DIR + "/addr_traddr", c["address"])
        put(PORT_DIR + "/addr_trsvcid", c["port"])


def allowed(value):
    """The `@HOSTS@` property's value -> the allowed host NQNs, or None: any host (absent,
    "-" or empty: a volume xfleet never restricted; "@CLOSED@": no host)."""
    value = value.strip()
    if value in ("", "-"):
        return None
    return [] if value == "@CLOSED@" else [h for h in value.split(",") if h]


def set_hosts(sub, hosts):
    """The subsystem's access: any host (None), or exactly `hosts` (the kernel refuses
    allowed hosts on an open subsystem and opening one that has allowed hosts)."""
    links = sub + "/allowed_hosts"
    if hosts is None:
        for h in os.listdir(links):
            os.unlink(links + "/" + h)
        put(sub + "/attr_allow_any_host", "1")
        return
    put(sub + "/attr_allow_any_host", "0")
    have = set(os.listdir(links))
    for h in hosts:
        entry = ROOT + "/hosts/" + h
        if not os.path.isdir(entry):
            os.mkdir(entry)
        if h not in have:
            os.symlink(entry, links + "/" + h)
    for h in have - set(hosts):
        os.unlink(links + "/" + h)


def export(c, volume, guid=None, hosts="-", vuuid=None):
    if guid is None:
        guid, hosts, vuuid = props([volume])[volume]
    u, g = identity(socket.gethostname(), guid, vuuid)
    name = nqn(c, volume, vuuid)
    sub = ROOT + "/subsystems/" + name
    if not os.path.isdir(sub):
        os.mkdir(sub)
    set_hosts(sub, allowed(hosts))
    ns = sub + "/namespaces/1"
    if not os.path.isdir(ns):
        os.mkdir(ns)
    dev = "/dev/zvol/" + volume
    subprocess.run(["udevadm", "settle", "-t", "30"], check=False)
    if open(ns + "/enable").read().strip() != "1":
        put(ns + "/device_path", dev)
        put(ns + "/device_uuid", u)   # pinned before enabling: the kernel would pick a fresh one
        put(ns + "/device_nguid", g)
        put(ns + "/enable", "1")
    link = PORT_DIR + "/subsystems/" + name
    if not os.path.islink(link):
        os.symlink(sub, link)


def unexport(c, volume):
    _guid, _hosts, vuuid = props([volume])[volume]
    _remove(nqn(c, volume, vuuid))


def _remove(name):
    link = PORT_DIR + "/subsystems/" + name
    if os.path.islink(link):
        os.unlink(link)
    sub = ROOT + "/subsystems/" + name
    ns = sub + "/namespaces/1"
    if os.path.isdir(ns):
        put(ns + "/enable", "0")
        os.rmdir(ns)
    links = sub + "/allowed_hosts"
    for h in os.listdir(links) if os.path.isdir(links) else []:
        os.unlink(links + "/" + h)  # configfs keeps a subsystem that still has them
    if os.path.isdir(sub):
        os.rmdir(sub)


def volumes(c):
    pools = c["pools"].split() or out(["zpool", "list", "-H", "-o", "name"]).split()
    rows = []
    for pool in pools:
        for name, (guid, hosts, vuuid) in sorted(props([pool], recursive=True).items()):
            rows.append((name, guid, hosts, vuuid))
    return rows


def restore_keys():
    """The hosts' DH-CHAP secrets kept in @AUTH_DIR@ (xfleet's nvmet_auth program writes them
    there and to configfs) go back into configfs before anything is exported: after a reboot
    a host with a secret is never let in without it."""
    for h in sorted(os.listdir(AUTH_DIR)) if os.path.isdir(AUTH_DIR) else []:
        if not h.startswith("nqn.") or h.endswith(".part"):
            continue
        entry = ROOT + "/hosts/" + h
        if not os.path.isdir(entry):
            os.mkdir(entry)
        if not os.path.exists(entry + "/dhchap_key"):
            sys.exit("xfleet-lab-target: %s has a DH-CHAP secret but this kernel has no "
                     "DH-CHAP; exporting nothing" % h)
        with open(AUTH_DIR + "/" + h) as f:
            secret = f.read().strip()
        if open(entry + "/dhchap_key").read().strip() != secret:
            put(entry + "/dhchap_key", secret)


def start(c):
    ensure_port(c)
    restore_keys()
    n = 0
    for volume, guid, hosts, vuuid in volumes(c):
        export(c, volume, guid, hosts, vuuid)
        n += 1
    os.makedirs(os.path.dirname(READY), exist_ok=True)
    if BROKEN:
        print("xfleet-lab-target %s: self-check hangs; not ready" % VERSION)
        return
    put(READY + ".tmp", "version=%s\nexports=%d\n" % (VERSION, n))
    os.replace(READY + ".tmp", READY)
    print("xfleet-lab-target %s: %d export(s), ready" % (VERSION, n))


def stop(c):
    if os.path.exists(READY):
        os.unlink(READY)
    prefix = c["nqn_prefix"] + ":"
    base = ROOT + "/subsystems"
    failed = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if name.startswith(prefix):
            try:  # one that cannot go must not keep the others exported
                _remove(name)
            except OSError as exc:
                failed.append("%s: %s" % (name, exc))
    if os.path.isdir(PORT_DIR) and not os.listdir(PORT_DIR + "/subsystems"):
        os.rmdir(PORT_DIR)
    if failed:
        sys.exit("xfleet-lab-target: not removed: " + "; ".join(failed))


def main(argv):
    if len(argv) == 2 and argv[1] in ("start", "stop"):
        (start if argv[1] == "start" else stop)(conf())
    elif len(argv) == 2 and argv[1] == "status":
        sys.stdout.write(open(READY).read() if os.path.exists(READY) else "not ready\n")
    elif len(argv) == 3 and argv[1] in ("export", "unexport"):
        c = conf()
        if argv[1] == "export":
            ensure_port(c)
            export(c, argv[2])
        else:
            unexport(c, argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
'''

UNIT = """[Unit]
Description=xfleet lab NVMe/TCP target %(version)s (exports the node's zvols)
After=zfs-import.target network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%(script)s start
ExecStop=%(script)s stop
TimeoutStartSec=120

[Install]
WantedBy=multi-user.target
"""

CONTROL = """Package: %(package)s
Version: %(version)s
Architecture: all
Maintainer: xfleet lab <lab@xfleet.invalid>
Depends: python3
Section: admin
Priority: optional
Description: xfleet lab NVMe/TCP target (%(version)s%(broken)s)
 Exports the node's zvols over NVMe/TCP through the kernel target with pinned identities.
"""


@dataclass(frozen=True)
class Package:
    version: str
    path: Path
    sha256: str

    @property
    def remote_path(self) -> str:
        return f"/var/lib/xfleet/target/{self.path.name}"


def daemon_script(version: str) -> str:
    return (DAEMON.replace("@VERSION@", version)
            .replace("@BROKEN@", "True" if version in BROKEN else "False")
            .replace("@PIN@", str(PIN_NAMESPACE))
            .replace("@READY@", str(NVMET_DEFAULTS["ready_file"]))
            .replace("@AUTH_DIR@", str(NVMET_DEFAULTS["auth_dir"]))
            .replace("@PREFIX@", str(NVMET_DEFAULTS["nqn_prefix"]))
            .replace("@CONF@", CONF)
            .replace("@HOSTS@", HOSTS_PROPERTY)
            .replace("@UUID@", UUID_PROPERTY)
            .replace("@CLOSED@", CLOSED))


def build(version: str, out_dir: Path) -> Package:
    """`xfleet-lab-target_VERSION_all.deb` in `out_dir` (dpkg-deb, no network)."""
    if version not in VERSIONS:
        raise LabError(f"no lab target version {version}", hint=f"versions: {', '.join(VERSIONS)}")
    root = out_dir / f"{PACKAGE}-{version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "lib/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN/control").write_text(CONTROL % {
        "package": PACKAGE, "version": version,
        "broken": ", broken: never ready" if version in BROKEN else ""})
    script = root / SCRIPT_PATH.lstrip("/")
    script.write_text(daemon_script(version))
    script.chmod(0o755)
    (root / f"lib/systemd/system/{PACKAGE}.service").write_text(
        UNIT % {"version": version, "script": SCRIPT_PATH})
    deb = out_dir / f"{PACKAGE}_{version}_all.deb"
    res = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root),
                          str(deb)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise LabError(f"dpkg-deb failed for {PACKAGE} {version}: {res.stderr.strip()}",
                       hint="dpkg-deb comes with dpkg (Debian)")
    return Package(version, deb, hashlib.sha256(deb.read_bytes()).hexdigest())


def build_all(out_dir: Path) -> dict[str, Package]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {v: build(v, out_dir) for v in VERSIONS}


# ---------------------------------------------------------------------------------------------
# lab helpers (tests and lab tooling): put the packages on a lab node and run one version


def copy_file(lab: LabState, node: str, src: Path, dst: str) -> None:
    """Copy a host file to `dst` on a lab VM (base64 over the SSH connection)."""
    ssh.run(lab.endpoint(node),
            ["sh", "-c", 'mkdir -p "$(dirname "$1")" && base64 -d > "$1"', "sh", dst],
            input=base64.b64encode(src.read_bytes()).decode())


def prepare_node(lab: LabState, node: str, packages: dict[str, Package]) -> None:
    """Copy every package to its `remote_path` on `node` and write the target's conf file
    (address = the node's private address, so the lab clients and nodes reach it)."""
    for p in packages.values():
        copy_file(lab, node, p.path, p.remote_path)
    ssh.run(lab.endpoint(node), ["sh", "-c", 'printf "address=%s\\n" "$1" > "$2"', "sh",
                                 lab.node(node).private_address, CONF])


def install(lab: LabState, node: str, packages: dict[str, Package], version: str = "1.0",
            *, timeout: float = 120.0) -> None:
    """prepare_node, then install and (re)start `version` on `node` and wait until it is
    ready (exports every zvol of the node's pools). Raises LabError if it is not ready in
    `timeout` seconds."""
    if version not in packages:
        raise LabError(f"no package for lab target version {version}",
                       hint=f"built: {', '.join(packages)}")
    prepare_node(lab, node, packages)
    ep = lab.endpoint(node)
    ssh.run(ep, ["dpkg", "-i", "--", packages[version].remote_path])
    ssh.run(ep, ["systemctl", "restart", str(NVMET_DEFAULTS["service"])])
    ready = str(NVMET_DEFAULTS["ready_file"])
    deadline = time.monotonic() + timeout
    while True:
        res = ssh.run(ep, ["cat", "--", ready], check=False)
        if res.exit_status == 0 and f"version={version}" in res.stdout:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{node}: lab target {version} not ready within {timeout:.0f}s",
                           hint=f"{ready}: {res.stdout.strip() or res.stderr.strip()}")
        time.sleep(1)


def stop_service(lab: LabState, node: str) -> None:
    """`systemctl stop` the target on `node`: every export disappears (the initiators start
    reconnecting)."""
    ssh.run(lab.endpoint(node), ["systemctl", "stop", str(NVMET_DEFAULTS["service"])])


def start_service(lab: LabState, node: str) -> None:
    ssh.run(lab.endpoint(node), ["systemctl", "start", str(NVMET_DEFAULTS["service"])])


def uninstall(lab: LabState, node: str) -> None:
    """Stop and purge the target on `node` (best effort: for test clean-up)."""
    ssh.run(lab.endpoint(node), ["sh", "-c", 'systemctl stop "$1"; dpkg -P "$2"', "sh",
                                 str(NVMET_DEFAULTS["service"]), PACKAGE], check=False)
