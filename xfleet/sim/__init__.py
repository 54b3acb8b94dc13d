"""A simulated ZFS storage node (`kind: sim`): the zfs/zpool commands xfleet sends, answered
from a deterministic fleet of tenants, zvols, snapshots and clones, plus an overlay of changes.

The base fleet is a pure function of (seed, node, tenant index): nothing of it is stored. A
tenant (`POOL/tNNNN`, a filesystem) holds a contiguous, zero-padded range of volumes
(`POOL/tNNNN/vol-NNNNNN`), so generating tenants in index order yields rows in `zfs list` order.
Rows are produced one tenant at a time by a generator compiled for the requested columns (a
template turned into Python source once per column set): it formats finished lines with one
f-string per row, which is what keeps a 300k-row listing near or above 300k lines/s.

Mutations (create, snapshot, clone, destroy, set, inherit, rename, promote, bookmark) live in
an overlay: full records for created or changed datasets and a list of hidden base names. It is
kept in `state_dir/sim-NODE.sqlite` when a state directory is given (so separate processes see
each other's changes) and in memory otherwise. A tenant touched by the overlay is rendered on a
slow path (records with derived space figures); every other tenant stays on the fast path.

Every mutation is also logged as OpenZFS logs it: internal records in `zpool history -il` (one
per sync task, in its txg, with the dataset's id) plus the ioctl and command records, and one
sysevent.fs.zfs.history_event per internal record in the kernel's bounded event queue
(`zpool events [-f]`, eids). The history starts with the pool's creation records (the base
fleet's own past is not enumerated, as if older records had rotated out). `reboot()` empties the
queue, restarts eids at 1 and imports the pools again (new load_guid).

Output follows OpenZFS 2.3 `-H -p` conventions; see docs/sim.md for settings and limits.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import difflib
import functools
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import CommandTimeout, TransportError, UsageError
from xfleet.core.identity import pinned_identity
from xfleet.remote.programs import identify
from xfleet.remote.transport import Transport

if TYPE_CHECKING:
    from xfleet.remote.host import Host

Row = tuple[Any, ...]
Rec = dict[str, Any]

# the remote programs (xfleet/remote/programs/) a simulated node answers; the others say why not
PROGRAMS = frozenset({"sample_blocks", "put_file"})
ZFS_VERSION = "zfs-2.3.2-1"  # what the lab's real nodes run (tests/fixtures/real)
ZFS_KMOD_VERSION = "zfs-kmod-2.3.2-1"
DEFAULT_NOW = 1777593600  # 2026-05-01 00:00:00 UTC: the base fleet's "now"
_TXG_SECONDS = 5
_FS_REF = 98304  # an empty filesystem references 96K ...
_FS_LREF = 43008  # ... of which 42K logical (OpenZFS 2.3)
_ZVOL_MIN_REF = 57344  # an empty zvol references 56K ...
_ZVOL_MIN_LREF = 28672  # ... 28K logical
_CLONE_REF = 8192  # a fresh clone has written 8K of its own (4K logical)
_ASHIFT = 12
_MAX_SNAPSHOTS = 100
_DAY = 86400

SETTINGS_DOC: dict[str, str] = {
    "seed": "integer; default derived from the node name",
    "volumes": "volumes (zvols, clones included) per node; default 1000",
    "tenants": "tenant filesystems per node; default volumes // 25 (at least 1)",
    "snapshots": "mean snapshots per volume; default 2.0",
    "max_snapshots": "most snapshots on one volume; default 5",
    "clone_fraction": "fraction of snapshots with a clone (branch); default 0.05",
    "thick_fraction": "fraction of non-clone volumes that are thick; default 0.10",
    "now": "unix time of the base fleet's 'now'; default 1777593600 (2026-05-01)",
    "pool_size": "pool size in bytes or with a unit (e.g. 500T); default derived from usage",
    "vdev": "'mirror' (default) or 'single': the vdev layout shown by zpool status",
    "tenant_property": "user property naming a volume's tenant; default xfleet:tenant",
    "rows_per_second": "throttle listings to this rate (0 = unthrottled, the default)",
    "zevent_len_max": "events the kernel queue keeps (`zpool events`; oldest dropped); "
                      "default 512",
    "history_len_max": "records `zpool history` keeps per pool after its creation records "
                       "(oldest dropped, like the on-disk ring buffer); default 100000",
}


# ---------------------------------------------------------------------------------------------
# small helpers


def _mix(*parts: object) -> int:
    """A stable 64-bit hash of `parts` (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _ratio(logical: int, physical: int) -> str:
    """A compression ratio as `zfs get -p` prints it: truncated to two decimals, at least 1.00."""
    if physical <= 0:
        return "1.00"
    v = logical * 100 // physical
    if v < 100:
        v = 100
    return f"{v // 100}.{v % 100:02d}"


def _reservation(volsize: int, volblocksize: int, copies: int = 1) -> int:
    """The refreservation of a thick zvol (libzfs zvol_volsize_to_reservation, no raidz)."""
    nblocks = volsize // volblocksize
    numdb = 7
    while nblocks > 1:
        nblocks += 1023
        nblocks //= 1024
        numdb += nblocks
    numdb *= min(3, copies + 1)
    return volsize * copies + numdb * 131072


_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([BKMGTPEZ]?)(?:B|iB)?$", re.IGNORECASE)


def _parse_size(text: str) -> int | None:
    """zfs_nicestrtonum: '10G', '1.5t', '4096', '16K' -> bytes; None when invalid."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    number, unit = m.groups()
    shift = "BKMGTPEZ".index(unit.upper()) * 10 if unit else 0
    if "." in number:
        return int(float(number) * (1 << shift))
    return int(number) << shift


def _nicenum(n: int) -> str:
    """zfs_nicebytes: 0B, 512B, 96K, 1.50G, 12.3T (exact multiples without decimals)."""
    if n < 1024:
        return f"{n}B"
    index = 0
    v = n
    while v >= 1024 and index < 6:
        v //= 1024
        index += 1
    unit = " KMGTPE"[index]
    if n % (1 << (10 * index)) == 0:
        return f"{v}{unit}"
    value = n / (1 << (10 * index))
    for digits in (2, 1, 0):
        text = f"{value:.{digits}f}{unit}"
        if len(text) <= 5:
            return text
    return text


def _ctime(t: int) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t))


def _ds(name: str) -> str:
    """The dataset part of a snapshot (`@`) or bookmark (`#`) name."""
    for sep in "@#":
        at = name.find(sep)
        if at >= 0:
            return name[:at]
    return name


def _pool_of(name: str) -> str:
    return _ds(name).split("/", 1)[0]


def _key(name: str, txg: int) -> tuple[str, int, int]:
    """`zfs list` order: datasets by strcmp of the name, each one's snapshots (by createtxg)
    right after it."""
    at = name.find("@")
    if at < 0:
        return (name, 0, 0)
    return (name[:at], 1, txg)


def _parent(name: str) -> str | None:
    if "@" in name or "#" in name:
        return _ds(name)
    if "/" in name:
        return name.rsplit("/", 1)[0]
    return None


def _in_subtree(name: str, root: str) -> bool:
    return name == root or name.startswith((root + "/", root + "@", root + "#"))


def _depth_below(name: str, root: str) -> int:
    rel = name[len(root):]
    return rel.count("/") + (1 if "@" in rel or "#" in rel else 0)


class _Fail(Exception):
    """A command failure: what real zfs would print on stderr, and its exit status."""

    def __init__(self, stderr: str, code: int = 1):
        super().__init__(stderr)
        self.stderr = stderr if stderr.endswith("\n") else stderr + "\n"
        self.code = code


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class SimSettings:
    """The settings of one simulated node (inventory `sim:` mapping), with defaults applied."""

    seed: int
    volumes: int = 1000
    tenants: int = 40
    snapshots: float = 2.0
    max_snapshots: int = 5
    clone_fraction: float = 0.05
    thick_fraction: float = 0.10
    now: int = DEFAULT_NOW
    pool_size: int | None = None
    vdev: str = "mirror"
    tenant_property: str = "xfleet:tenant"
    rows_per_second: float = 0.0
    zevent_len_max: int = 512
    history_len_max: int = 100_000

    @classmethod
    def from_mapping(cls, node: str, raw: dict[str, Any] | None) -> SimSettings:
        raw = dict(raw or {})
        unknown = [k for k in raw if k not in SETTINGS_DOC]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(SETTINGS_DOC), n=1)
            raise UsageError(
                f"unknown sim setting {unknown[0]!r}",
                where=node,
                hint=f"did you mean {close[0]!r}?" if close
                else f"known settings: {', '.join(SETTINGS_DOC)}",
            )

        def num(key: str, default: float, lo: float, hi: float, integer: bool) -> Any:
            if key not in raw or raw[key] is None:
                return default
            v = raw[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if integer and ok and isinstance(v, float):
                ok = v.is_integer()
            if not ok or not lo <= v <= hi:
                kind = "an integer" if integer else "a number"
                raise UsageError(f"sim setting {key}={v!r} is not valid", where=node,
                                 hint=f"expected {kind} from {lo:g} to {hi:g}: {SETTINGS_DOC[key]}")
            return int(v) if integer else float(v)

        seed = num("seed", _mix("xfleet-sim", node) & 0xFFFFFFFF, -(2**63), 2**63, True)
        volumes = num("volumes", 1000, 0, 50_000_000, True)
        tenants = num("tenants", max(1, volumes // 25), 1, 50_000_000, True)
        tenants = max(1, min(tenants, volumes)) if volumes else 1
        max_snaps = num("max_snapshots", 5, 0, _MAX_SNAPSHOTS, True)
        snaps = num("snapshots", min(2.0, float(max_snaps)), 0, max_snaps, False)
        pool_size: int | None = None
        if raw.get("pool_size") is not None:
            ps = raw["pool_size"]
            size = _parse_size(ps) if isinstance(ps, str) else ps
            if not isinstance(size, int) or isinstance(size, bool) or size < (1 << 30):
                raise UsageError(f"sim setting pool_size={ps!r} is not valid", where=node,
                                 hint="a size of at least 1G, e.g. 500T or 549755813888000")
            pool_size = size
        vdev = raw.get("vdev", "mirror")
        if vdev not in ("mirror", "single"):
            raise UsageError(f"sim setting vdev={vdev!r} is not valid", where=node,
                             hint="expected 'mirror' or 'single'")
        tprop = raw.get("tenant_property", "xfleet:tenant")
        if not isinstance(tprop, str) or not re.match(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]+\Z", tprop):
            raise UsageError(f"sim setting tenant_property={tprop!r} is not valid", where=node,
                             hint="a user property name such as xfleet:tenant")
        return cls(
            seed=seed,
            volumes=volumes,
            tenants=tenants,
            snapshots=snaps,
            max_snapshots=max_snaps,
            clone_fraction=num("clone_fraction", 0.05, 0, 1, False),
            thick_fraction=num("thick_fraction", 0.10, 0, 1, False),
            now=num("now", DEFAULT_NOW, 946684800, 4102444800, True),
            pool_size=pool_size,
            vdev=vdev,
            tenant_property=tprop,
            rows_per_second=num("rows_per_second", 0, 0, 1e9, False),
            zevent_len_max=num("zevent_len_max", 512, 1, 10_000_000, True),
            history_len_max=num("history_len_max", 100_000, 1, 1_000_000_000, True),
        )

    def fingerprint(self, node: str, pools: Sequence[str]) -> str:
        return f"v1:{_mix(node, tuple(pools), self.seed, self.volumes, self.tenants, self.snapshots, self.max_snapshots, self.clone_fraction, self.thick_fraction, self.now):016x}"  # noqa: E501


# ---------------------------------------------------------------------------------------------
# the per-tenant generator template
#
# One function per (columns, row kinds, space) variant is compiled from this source by _compile.
# Placeholders:
#   if SPACE:          True when space figures are needed (they use a second random stream)
#   if NAMES:          False for the totals-only variant (no names are built)
#   FS_ROW             the tenant filesystem's row: an f-string, a tuple, or None
#   EMIT_VOL           rows.append(<volume row>) or pass
#   EMIT_SNAP_S        srows.append(<snapshot row>) or pass (a volume's snapshots follow it)
#   EMIT_SNAPS_FLUSH   rows.extend(srows) or pass
# Identity (names, guids, txgs, clone choices) uses one random stream and space figures another,
# so every variant sees the same datasets with the same guids. A clone is decided when its
# origin snapshot is made (a "slot" that a later volume of the tenant takes), so a snapshot's
# numclones is known when its row is written.

_TEMPLATE = '''
def gen(self, k, pool, env):
    A = env.A
    COMP = env.COMP
    RO = env.RO
    VM = env.VM
    U = env.U
    seed = self.tenant_seed(k)
    r = Random(seed)
    rnd = r.random
    bits = r.getrandbits
    if SPACE:
        q = Random(seed ^ 0x5EED5EED5EED).random
        thick = self.thick_fraction
    starts = self.starts
    v0 = starts[k]
    n = starts[k + 1] - v0
    tenant = self.tenant_label(k)
    tname = pool + "/" + tenant
    MP = env.MP
    tmount = MP if MP[:1] != "/" else MP.rstrip("/") + "/" + tenant
    pc = self.pool_created[pool]
    now = self.now
    ka, kb = self.pool_range[pool]
    tc = pc + 86400 + int((k - ka + rnd()) / (kb - ka) * (now - 30 * 86400 - pc - 86400))
    tguid = bits(64) | 1
    ttxg = 1 + (tc - pc) // 5
    lo = tc + 60
    span = now - 7200 - lo
    ctimes = sorted([lo + int(rnd() * span) for _ in range(n)])
    KS = self.snap_table
    cf24 = int(self.clone_fraction * 16777216)
    CHURN = self.churn
    pc5 = pc - 5
    young = now - 7800
    days = self.days
    d0 = self.day0
    vw = self.vw
    vpre = tname + "/vol-%0" + str(vw) + "d"
    pending = []
    rows = [None]
    su = 0
    sl = 0
    sph = 0
    for i in range(n):
        if NAMES:
            vname = vpre % (v0 + i)
        guid = bits(64) | 1
        p = len(pending)
        if p and (p >= n - i or rnd() < 2 * p / (n - i)):
            slot = pending.pop(int(rnd() * p))
            t0 = slot[0]
            c = t0 + 60 + int(rnd() * (now - 7260 - t0))
            oname = slot[1]
        else:
            slot = None
            c = ctimes[i]
            oname = "-"
        vtxg = (c - pc5) // 5
        ks = KS[bits(12)]
        sp = now - c
        if sp < 7200:
            ks = 0
        if SPACE:
            if slot is None:
                u = q()
                x = q()
                if u < 0.89:
                    gib = 1 + int(x * x * 20)
                elif u < 0.99:
                    gib = 20 + int(x * x * 236)
                else:
                    gib = 256 + int(x * x * 1793)
                volsize = gib << 30
                u = q()
                vbs = 16384 if u < 0.85 else (8192 if u < 0.95 else 65536)
                u = q()
                if u < 0.65:
                    comp = "lz4"
                    K = 4300 + int(4500 * q()) & -512
                elif u < 0.83:
                    comp = "zstd"
                    K = 5120 + int(7000 * q()) & -512
                elif u < 0.93:
                    comp = "off"
                    K = 4096
                else:
                    comp = "gzip-9"
                    K = 5120 + int(8000 * q()) & -512
                rs = RS[K]
                x = q()
                P = int(volsize * (0.005 + 0.6 * x * x * x) * 4096 / K) + 4095 & -4096
                if P < 57344:
                    P = 57344
                Pb = 0
                cprev = 0.0
                ubd = P
                refres = reservation(volsize, vbs) if q() < thick else 0
                vs = str(volsize)
            else:
                volsize = slot[2]
                vs = str(volsize)
                vbs = slot[3]
                comp = slot[4]
                K = slot[5]
                rs = slot[6]
                Pb = slot[7]
                x = q()
                nf = 0.01 + 0.4 * x * x
                cprev = nf * q()
                ubd = int(Pb * nf) + 4095 & -4096
                P = Pb - (int(Pb * cprev) & -4096) + ubd
                refres = 0
            compd = COMP if comp == "lz4" else comp
            Pp = Pb
            ubs = 0
        if ks:
            srows = []
            iv = sp // (ks + 1)
            if iv > 86400:
                iv = 86400
            last = now - 60 - int(rnd() * (iv - 120))
            if SPACE:
                g0 = 0.5 + 0.45 * q()
                step = (P - Pb) * (1 - g0) / (ks + 1)
                acc = Pb + (P - Pb) * g0
            if NAMES:
                spre = vname + "@auto-"
            t = (last - ks * iv) // 60 * 60
            for s in range(ks):
                g = bits(64) | 1
                t += iv
                t = t // 60 * 60 + g % 5
                if NAMES:
                    sname = spre + days[t // 86400 - d0] + HM[t % 86400 // 60]
                else:
                    sname = None
                stxg = (t - pc5) // 5
                nc = 0
                if t < young and (g >> 32 & 16777215) < cf24:
                    room = n - 1 - i - len(pending)
                    if room > 0:
                        nc = 2 if room > 1 and rnd() < 0.1 else 1
                if SPACE:
                    acc += step
                    Pj = int(acc) + 4095 & -4096
                    if Pj < 57344:
                        Pj = 57344
                    Wj = Pj - Pp
                    if Wj < 0:
                        Wj = 0
                    Wj += int(Pp * cprev) & -4096
                    if Wj > Pj:
                        Wj = Pj
                    cprev = CHURN[g >> 56]
                    Uj = int(Pj * cprev * 0.6) & -4096
                    ubs += Uj
                    LJ = (Pj >> 12) * K
                    Pp = Pj
                    if nc:
                        pending.append((t, sname, volsize, vbs, comp, K, rs, Pj))
                        if nc > 1:
                            pending.append((t, sname, volsize, vbs, comp, K, rs, Pj))
                elif nc:
                    pending.append((t, sname))
                    if nc > 1:
                        pending.append((t, sname))
                EMIT_SNAP_S
            schg = t
            if SPACE:
                if ks >= 2:
                    ubs += int(P * 0.01 * q()) & -4096
                W = P - Pp
                if W < 0:
                    W = 0
                W += int(Pp * cprev) & -4096
                if W > P:
                    W = P
        else:
            srows = ()
            schg = "-"
            if SPACE:
                W = ubd
        if SPACE:
            ubr = refres - W if refres > W else 0
            phys = ubd + ubs
            lu = (phys >> 12) * K
            L = (P >> 12) * K
            used = phys + ubr
            cl = comp != "lz4"
            su += used
            sl += lu
            sph += phys
        EMIT_VOL
        EMIT_SNAPS_FLUSH
    if SPACE:
        fused = 98304 + su
        flu = 43008 + sl
        fphys = 98304 + sph
        fratio = ratio(flu, fphys)
    rows[0] = FS_ROW
    if SPACE:
        return rows, fused, flu, fphys
    return rows, 0, 0, 0
'''

_HM = [f"-{m // 60:02d}{m % 60:02d}" for m in range(1440)]
_RS = {k: _ratio(k, 4096) for k in range(4096, 16384, 512)}  # ratio text per K (see template)


@functools.lru_cache(maxsize=4096)
def _cached_reservation(volsize: int, volblocksize: int) -> int:
    return _reservation(volsize, volblocksize)

# Internal field order of a base row tuple (the slow path turns it into a record).
FIELDS: tuple[str, ...] = (
    "name", "type", "guid", "createtxg", "origin", "creation", "volsize", "volblocksize", "used",
    "referenced", "logicalused", "logicalreferenced", "usedbysnapshots", "usedbyrefreservation",
    "refreservation", "written", "compression", "compressratio", "refcompressratio",
    "usedbydataset", "usedbychildren", "numclones", "mountpoint", "snapshots_changed", "tenant",
    "avx", "phys", "lused_own", "comp_local",
)
_F = {name: i for i, name in enumerate(FIELDS)}

# Per row kind, each property as ("e", python expression) or ("c", constant text).
_E, _C = "e", "c"
_SPEC: dict[str, dict[str, tuple[str, str]]] = {
    "fs": {
        "name": (_E, "tname"), "type": (_C, "filesystem"), "guid": (_E, "tguid"),
        "createtxg": (_E, "ttxg"), "origin": (_C, "-"), "creation": (_E, "tc"),
        "volsize": (_C, "-"), "volblocksize": (_C, "-"), "used": (_E, "fused"),
        "referenced": (_E, "98304"), "logicalused": (_E, "flu"),
        "logicalreferenced": (_E, "43008"), "usedbysnapshots": (_E, "0"),
        "usedbyrefreservation": (_E, "0"), "refreservation": (_E, "0"), "written": (_E, "98304"),
        "compression": (_E, "COMP"), "compressratio": (_E, "fratio"),
        "refcompressratio": (_C, "1.00"), "usedbydataset": (_E, "98304"),
        "usedbychildren": (_E, "su"), "numclones": (_C, "-"), "mountpoint": (_E, "tmount"),
        "snapshots_changed": (_C, "-"), "tenant": (_E, "tenant"), "avx": (_E, "0"),
        "phys": (_E, "fphys"), "lused_own": (_E, "43008"), "comp_local": (_E, "False"),
        "available": (_E, "A"), "readonly": (_E, "RO"), "volmode": (_E, "VM"),
    },
    "vol": {
        "name": (_E, "vname"), "type": (_C, "volume"), "guid": (_E, "guid"),
        "createtxg": (_E, "vtxg"), "origin": (_E, "oname"), "creation": (_E, "c"),
        "volsize": (_E, "vs"), "volblocksize": (_E, "vbs"), "used": (_E, "used"),
        "referenced": (_E, "P"), "logicalused": (_E, "lu"), "logicalreferenced": (_E, "L"),
        "usedbysnapshots": (_E, "ubs"), "usedbyrefreservation": (_E, "ubr"),
        "refreservation": (_E, "refres"), "written": (_E, "W"), "compression": (_E, "compd"),
        "compressratio": (_E, "rs"), "refcompressratio": (_E, "rs"),
        "usedbydataset": (_E, "ubd"), "usedbychildren": (_E, "0"), "numclones": (_C, "-"),
        "mountpoint": (_C, "-"), "snapshots_changed": (_E, "schg"), "tenant": (_E, "tenant"),
        "avx": (_E, "ubr"), "phys": (_E, "phys"), "lused_own": (_E, "lu"),
        "comp_local": (_E, "cl"), "available": (_E, "A + ubr"), "readonly": (_E, "RO"),
        "volmode": (_E, "VM"),
    },
    "snap": {
        "name": (_E, "sname"), "type": (_C, "snapshot"), "guid": (_E, "g"),
        "createtxg": (_E, "stxg"), "origin": (_C, "-"), "creation": (_E, "t"),
        "volsize": (_E, "vs"), "volblocksize": (_C, "-"), "used": (_E, "Uj"),
        "referenced": (_E, "Pj"), "logicalused": (_C, "-"), "logicalreferenced": (_E, "LJ"),
        "usedbysnapshots": (_C, "-"), "usedbyrefreservation": (_C, "-"),
        "refreservation": (_C, "-"), "written": (_E, "Wj"), "compression": (_C, "-"),
        "compressratio": (_E, "rs"), "refcompressratio": (_E, "rs"), "usedbydataset": (_C, "-"),
        "usedbychildren": (_C, "-"), "numclones": (_E, "nc"), "mountpoint": (_C, "-"),
        "snapshots_changed": (_C, "-"), "tenant": (_E, "tenant"), "avx": (_E, "None"),
        "phys": (_E, "Pj"), "lused_own": (_E, "0"), "comp_local": (_E, "False"),
        "available": (_C, "-"), "readonly": (_C, "-"), "volmode": (_C, "-"),
    },
}
# Columns that need no space figures (the identity stream alone answers them).
_IDENTITY = frozenset({"name", "type", "guid", "createtxg", "origin", "creation", "numclones",
                       "mountpoint", "snapshots_changed", "readonly", "volmode", "tenant"})
# Columns the compiled fast path can print (any user property can be printed too).
FAST_COLUMNS = frozenset(k for k in _SPEC["vol"] if k not in
                         ("tenant", "avx", "phys", "lused_own", "comp_local"))


@dataclass(frozen=True)
class _Env:
    """Per-listing constants of a compiled generator."""

    A: int = 0  # the pool's available bytes
    COMP: str = "lz4"  # compression inherited from the pool root
    RO: str = "off"
    VM: str = "default"
    MP: str = "none"  # the pool root's mountpoint
    U: tuple[str, ...] = ()  # values of user property columns inherited from the pool root


def _fstring_part(kind: str, col: str, uprops: dict[str, int], tenant_prop: str) -> str:
    if col == tenant_prop:
        return "{tenant}"
    if col in uprops:
        return f"{{U[{uprops[col]}]}}"
    how, what = _SPEC[kind][col]
    if how == _C:
        return what.replace("{", "{{").replace("}", "}}")
    return f"{{{what}}}"


_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}
_COMPILE_LOCK = threading.Lock()


def _compile(cols: tuple[str, ...] | None, kinds: frozenset[str], space: bool,
             tenant_prop: str, names: bool = True) -> Callable[..., Any]:
    """A per-tenant generator. `cols` None: tuple rows in FIELDS order; () : totals only."""
    key = (cols, kinds, space, tenant_prop, names)
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    uprops: dict[str, int] = {}
    if cols:
        for c in cols:
            if ":" in c and c != tenant_prop and c not in uprops:
                uprops[c] = len(uprops)

    def expr(kind: str) -> str:
        if cols is None:
            parts = []
            for f in FIELDS:
                how, what = _SPEC[kind][f]
                if what == "vs":
                    what = "volsize"  # records keep numbers as numbers
                parts.append(repr(what) if how == _C else what)
            return "(" + ", ".join(parts) + ")"
        body = "\\t".join(_fstring_part(kind, c, uprops, tenant_prop) for c in cols)
        return 'f"' + body + '"'

    def emit(kind: str, target: str = "rows") -> str:
        if cols == () or (kind not in kinds):
            return "pass"
        return f"{target}.append({expr(kind)})"

    src = _TEMPLATE
    fs_row = expr("fs") if cols != () and "fs" in kinds else "None"
    src = src.replace("FS_ROW", fs_row)
    src = src.replace("EMIT_SNAPS_FLUSH", "rows.extend(srows)" if "snap" in kinds and cols != ()
                      else "pass")
    src = src.replace("EMIT_SNAP_S", emit("snap", "srows"))
    src = src.replace("EMIT_SNAP", emit("snap"))
    src = src.replace("EMIT_VOL", emit("vol"))
    src = src.replace("if SPACE:", f"if {space}:")
    src = src.replace("if NAMES:", f"if {names}:")
    ns: dict[str, Any] = {"Random": random.Random, "HM": _HM, "ratio": _ratio,
                          "reservation": _cached_reservation, "RS": _RS}
    exec(compile(src, "<xfleet.sim tenant generator>", "exec"), ns)  # noqa: S102
    fn = ns["gen"]
    with _COMPILE_LOCK:
        _COMPILED[key] = fn
    return fn  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# the base fleet


_TOTALS_CACHE: dict[tuple[str, str], tuple[int, int, int]] = {}


class _Base:
    """The deterministic base fleet of one node: tenants, volumes, snapshots and clones."""

    def __init__(self, node: str, pools: Sequence[str], st: SimSettings):
        self.node = node
        self.st = st
        self.pools = tuple(sorted(pools))  # zfs list sorts by name across pools too
        self.now = st.now
        self.thick_fraction = st.thick_fraction
        self.fingerprint = st.fingerprint(node, self.pools)
        T = st.tenants if st.volumes else 0
        self.tenants = T
        rng = random.Random(_mix(st.seed, node, "tenants"))
        weights = [rng.lognormvariate(0.0, 0.9) for _ in range(T)]
        total = sum(weights) or 1.0
        starts: list[int] = []
        acc = 0.0
        for k in range(T):
            starts.append(k + int(round(acc / total * (st.volumes - T))))
            acc += weights[k]
        starts.append(st.volumes)
        self.starts = starts
        self.tw = max(4, len(str(max(T - 1, 0))))
        self.vw = max(6, len(str(max(st.volumes - 1, 0))))
        npools = len(self.pools)
        self.pool_range: dict[str, tuple[int, int]] = {}
        self.pool_created: dict[str, int] = {}
        self.pool_guid: dict[str, int] = {}
        self.root_guid: dict[str, int] = {}
        for p, pool in enumerate(self.pools):
            self.pool_range[pool] = (p * T // npools, (p + 1) * T // npools)
            h = _mix(st.seed, node, "pool", pool)
            self.pool_created[pool] = st.now - 700 * _DAY - (h % (30 * _DAY))
            self.pool_guid[pool] = _mix(st.seed, node, "pool-guid", pool) | 1
            self.root_guid[pool] = _mix(st.seed, node, "root-guid", pool) | 1
        self.range_starts = [self.pool_range[p][0] for p in self.pools]
        first_day = min(self.pool_created.values()) // _DAY
        self.day0 = first_day
        self.days = [time.strftime("%Y%m%d", time.gmtime(d * _DAY))
                     for d in range(first_day, st.now // _DAY + 2)]
        ms = st.max_snapshots
        prob = st.snapshots / ms if ms else 0.0
        cdf: list[float] = []
        cum = 0.0
        for i in range(ms + 1):
            cum += math.comb(ms, i) * prob**i * (1 - prob) ** (ms - i)
            cdf.append(cum)
        cdf[-1] = 1.0
        self.snap_cdf = cdf
        self.snap_table = [bisect.bisect_left(cdf, (i + 0.5) / 4096) for i in range(4096)]
        self.clone_fraction = st.clone_fraction
        # per-snapshot churn (fraction of its blocks overwritten later), from guid bits
        self.churn = [0.02 + 0.2 * (i + 0.5) / 256 for i in range(256)]
        self._seed_base = _mix(st.seed, node, "tenant")
        self._tenant_re = re.compile(rf"^t(\d{{{self.tw}}})$")

    # -- structure ---------------------------------------------------------------------------
    def tenant_seed(self, k: int) -> int:
        return self._seed_base ^ (k * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)

    def tenant_label(self, k: int) -> str:
        return f"t{k:0{self.tw}d}"

    def tenant_name(self, k: int) -> str:
        return f"{self.pool_of_tenant(k)}/{self.tenant_label(k)}"

    def pool_of_tenant(self, k: int) -> str:
        return self.pools[bisect.bisect_right(self.range_starts, k) - 1]

    def last_dataset(self, k: int) -> str:
        """The name of the last dataset (not snapshot) of tenant k."""
        return f"{self.tenant_name(k)}/vol-{self.starts[k + 1] - 1:0{self.vw}d}"

    def group_of(self, name: str) -> int | None:
        """The tenant whose base subtree holds `name` (by name only), or None."""
        ds = _ds(name)
        parts = ds.split("/")
        if len(parts) < 2 or parts[0] not in self.pool_range:
            return None
        m = self._tenant_re.match(parts[1])
        if not m:
            return None
        k = int(m.group(1))
        a, b = self.pool_range[parts[0]]
        if not a <= k < b:
            return None
        return k

    def tenant_rows(self, k: int, env: _Env) -> list[Row]:
        """Base rows of tenant k as tuples in FIELDS order (slow path and lookups)."""
        gen = _compile(None, frozenset({"fs", "vol", "snap"}), True, self.st.tenant_property)
        rows: list[Row] = gen(self, k, self.pool_of_tenant(k), env)[0]
        return rows

    def totals(self, pool: str, store: _Store | None) -> tuple[int, int, int]:
        """(used, logicalused, physical) summed over the pool's base tenants (cached)."""
        key = (self.fingerprint, pool)
        got = _TOTALS_CACHE.get(key)
        if got is None and store is not None:
            got = store.load_totals(self.fingerprint, pool)
        if got is None:
            gen = _compile((), frozenset(), True, self.st.tenant_property, names=False)
            env = _Env()
            u = lu = ph = 0
            a, b = self.pool_range[pool]
            for k in range(a, b):
                _, fu, flu, fph = gen(self, k, pool, env)
                u += fu
                lu += flu
                ph += fph
            got = (u, lu, ph)
        self.remember_totals(pool, got, store)
        return got

    def remember_totals(self, pool: str, got: tuple[int, int, int], store: _Store | None) -> None:
        _TOTALS_CACHE[(self.fingerprint, pool)] = got
        if store is not None:
            store.save_totals(self.fingerprint, pool, got)

    def cached_totals(self, pool: str, store: _Store | None) -> tuple[int, int, int] | None:
        got = _TOTALS_CACHE.get((self.fingerprint, pool))
        if got is None and store is not None:
            got = store.load_totals(self.fingerprint, pool)
            if got is not None:
                _TOTALS_CACHE[(self.fingerprint, pool)] = got
        return got

    def root_record(self, pool: str) -> Rec:
        return {
            "name": pool, "type": "filesystem", "guid": self.root_guid[pool], "createtxg": 1,
            "creation": self.pool_created[pool], "origin": None, "volsize": None,
            "volblocksize": None, "referenced": _FS_REF, "logicalreferenced": _FS_LREF,
            "written": _FS_REF, "ubd": _FS_REF, "ubs": 0, "refreservation": 0,
            "lused_own": _FS_LREF, "snapshots_changed": 0,
            "local": {"compression": "lz4", "mountpoint": "none", "canmount": "off"},
        }

    def pool_size(self, pool: str, store: _Store | None) -> int:
        if self.st.pool_size:
            return self.st.pool_size
        used, _, _ = self.totals(pool, store)
        fill = 0.35 + 0.3 * ((_mix(self.st.seed, self.node, "fill", pool) % 1000) / 1000)
        unit = 1 << 34
        return max(unit * 4, -(-int(used / fill) // unit) * unit)


def _rec_from_row(t: Row, tenant_prop: str) -> Rec:
    """A base row (tuple in FIELDS order) as an overlay record."""
    typ = t[1]
    rec: Rec = {"name": t[0], "type": typ, "guid": t[2], "createtxg": t[3], "creation": t[5],
                "referenced": t[9], "logicalreferenced": t[11], "written": t[15], "local": {}}
    if typ == "snapshot":
        rec["unique"] = t[8]
        rec["volsize"] = t[6] if t[6] != "-" else None
        rec["clones"] = []
        return rec
    rec.update(origin=None if t[4] == "-" else t[4],
               volsize=t[6] if t[6] != "-" else None,
               volblocksize=t[7] if t[7] != "-" else None,
               ubd=t[19], ubs=t[12], refreservation=t[14], lused_own=t[27],
               snapshots_changed=0 if t[23] == "-" else t[23])
    if t[28]:
        rec["local"]["compression"] = t[16]
    if typ == "filesystem":
        rec["local"][tenant_prop] = t[24]
    return rec


# ---------------------------------------------------------------------------------------------
# the change feed: pool history (`zpool history`) and the kernel event queue (`zpool events`)
#
# Both live in SQLite next to the overlay (the store's connection, or a private in-memory one),
# so every transport of a node, in any process, sees the same history and queue. A mutation
# appends its records and events in the transaction that saves its overlay changes: O(records)
# work, whatever the size of the node. Each pool's history is numbered (seq) so trimming it to
# history_len_max is a range delete; the queue is trimmed to zevent_len_max the same way.

_JOURNAL_SCHEMA = """
    CREATE TABLE IF NOT EXISTS zstate (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS zevents (eid INTEGER PRIMARY KEY, pool TEXT, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS zhistory (pool TEXT NOT NULL, seq INTEGER NOT NULL,
        data TEXT NOT NULL, PRIMARY KEY (pool, seq)) WITHOUT ROWID;
"""

# The kernel and the software the simulated nodes claim to run (history "uts" strings).
_UTS = "6.1.0-28-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22) x86_64"
_POOL_VERSION_TEXT = "pool version 5000; software version " + ZFS_VERSION
# What `zpool create` enables on an OpenZFS 2.3 pool, in the order it logs them.
_FEATURES = (
    "async_destroy", "empty_bpobj", "lz4_compress", "multi_vdev_crash_dump",
    "spacemap_histogram", "enabled_txg", "hole_birth", "extensible_dataset", "embedded_data",
    "bookmarks", "filesystem_limits", "large_blocks", "large_dnode", "sha512", "skein", "edonr",
    "userobj_accounting", "encryption", "project_quota", "device_removal", "obsolete_counts",
    "zpool_checkpoint", "spacemap_v2", "allocation_classes", "resilver_defer", "bookmark_v2",
    "redaction_bookmarks", "redacted_datasets", "bookmark_written", "log_spacemap", "livelist",
    "device_rebuild", "zstd_compress", "draid", "zilsaxattr", "head_errlog", "blake3",
    "block_cloning", "vdev_zaps_v2", "redaction_list_spill", "raidz_expansion", "fast_dedup",
    "longname", "large_microzap",
)
_HISTORY_EVENT = "sysevent.fs.zfs.history_event"


def _dsid(guid: int) -> int:
    """history_dsid: the dataset's object number in the MOS, stable for the dataset's life
    (renames and promotions keep it). Derived from its guid, which the simulator keeps too."""
    return 256 + (guid >> 8) % (1 << 40)


class _Journal:
    """The pool histories and the event queue of one node, in SQLite (see above). The caller
    holds `lock` and runs writes inside a transaction on `conn`."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self.conn = conn
        self.lock = lock

    @classmethod
    def in_memory(cls) -> _Journal:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_JOURNAL_SCHEMA)
        return cls(conn, threading.RLock())

    def get(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM zstate WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    def put(self, key: str, value: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO zstate (key, value) VALUES (?, ?)",
                          (key, value))

    def append(self, txn: _Txn) -> None:
        """Add what `txn` logged: events get the next eids (the queue keeps the newest
        zevent_len_max), records the next seqs of their pool (each keeps history_len_max)."""
        c = self.conn
        st = txn.sim.settings
        dump = functools.partial(json.dumps, separators=(",", ":"))
        if txn.posted:
            last = self.get("eid") or 0
            end = last + txn.posted
            first = end - len(txn.events) + 1
            c.executemany("INSERT OR REPLACE INTO zevents (eid, pool, data) VALUES (?, ?, ?)",
                          [(first + i, e["pool"], dump(e)) for i, e in enumerate(txn.events)])
            self.put("eid", end)
            self.put("etime", txn.event_ns)
            c.execute("DELETE FROM zevents WHERE eid <= ?", (end - st.zevent_len_max,))
        for pool, recs in txn.history.items():
            end = (self.get(f"hseq:{pool}") or 0) + txn.logged[pool]
            first = end - len(recs) + 1
            c.executemany("INSERT INTO zhistory (pool, seq, data) VALUES (?, ?, ?)",
                          [(pool, first + i, dump(h)) for i, h in enumerate(recs)])
            self.put(f"hseq:{pool}", end)
            if end > st.history_len_max:
                c.execute("DELETE FROM zhistory WHERE pool=? AND seq <= ?",
                          (pool, end - st.history_len_max))

    def clear_events(self) -> int:
        n = int(self.conn.execute("SELECT count(*) FROM zevents").fetchone()[0])
        self.conn.execute("DELETE FROM zevents")
        return n

    def events(self, after: int = 0) -> list[tuple[int, Rec]]:
        return [(int(eid), json.loads(data)) for eid, data in self.conn.execute(
            "SELECT eid, data FROM zevents WHERE eid > ? ORDER BY eid", (after,))]

    def has_event(self, eid: int) -> bool:
        return self.conn.execute("SELECT 1 FROM zevents WHERE eid=?", (eid,)).fetchone() \
            is not None

    def history(self, pool: str, after: int, limit: int) -> list[tuple[int, Rec]]:
        return [(int(seq), json.loads(data)) for seq, data in self.conn.execute(
            "SELECT seq, data FROM zhistory WHERE pool=? AND seq > ? ORDER BY seq LIMIT ?",
            (pool, after, limit))]


def _event_lines(eid: int, ev: Rec, scripted: bool, verbose: bool) -> list[str]:
    """One event as `zpool events [-H] [-v]` prints it (zpool_do_events_short/_nvprint)."""
    sec, nsec = ev["time"]
    when = time.strftime("%b %e %Y %H:%M:%S", time.localtime(sec)) + f".{nsec:09d}"
    sep = "\t" if scripted else " "
    out = [f"{when}{sep}{ev['class']}"]
    if verbose:
        for key, value in ev["fields"]:
            shown = f"0x{value:x}" if isinstance(value, int) else f'"{value}"'
            out.append(f"        {key} = {shown}")
        out.append(f"        time = 0x{sec:x} 0x{nsec:x} ")
        out.append(f"        eid = 0x{eid:x}")
        out.append("")
    return out


def _history_lines(h: Rec, internal: bool, longfmt: bool) -> list[str]:
    """One record as `zpool history [-i] [-l]` prints it (print_history_records)."""
    kind = h["kind"]
    if kind != "cmd" and not internal:
        return []
    when = time.strftime("%Y-%m-%d.%H:%M:%S", time.localtime(h["time"]))
    if kind == "cmd":
        line = f"{when} {h['cmd']}"
        return [line + f" [user 0 (root) on {h['host']}:linux]" if longfmt else line]
    if kind == "ioctl":
        out = [f"{when} ({h['ms']}ms) ioctl {h['ioctl']}", "    input:", *h["input"]]
        out.append(f" [user 0 (root) on {h['host']}:linux]" if longfmt else "")
        return out
    line = f"{when} [txg:{h['txg']}] {h['op']}"
    if h.get("ds") is not None:
        line += f" {h['ds']} ({h['dsid']})"
    line += f" {h['str']}"
    return [line + f" [on {h['host']}]" if longfmt else line]


def _nvlist_lines(items: Sequence[tuple[str, Any]], indent: int) -> list[str]:
    """An nvlist as libnvpair's dump_nvlist prints it: booleans by name, strings quoted,
    numbers plain, nested lists (a list value) indented by 4."""
    pad = " " * indent
    out: list[str] = []
    for key, value in items:
        if value is True:
            out.append(f"{pad}{key}")
        elif isinstance(value, list):
            out.append(f"{pad}{key}:")
            out.extend(_nvlist_lines(value, indent + 4))
        elif isinstance(value, int):
            out.append(f"{pad}{key}: {value}")
        else:
            out.append(f"{pad}{key}: '{value}'")
    return out


# ---------------------------------------------------------------------------------------------
# the overlay: created and changed records, hidden base names, persisted in SQLite


class _Store:
    """`state_dir/sim-NODE.sqlite`: the overlay of one node, shared by processes."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS records (name TEXT PRIMARY KEY, data TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS hidden (name TEXT PRIMARY KEY, subtree INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS totals (fingerprint TEXT NOT NULL, pool TEXT NOT NULL,
            used INTEGER NOT NULL, lused INTEGER NOT NULL, phys INTEGER NOT NULL,
            PRIMARY KEY (fingerprint, pool));
    """ + "\n" + _JOURNAL_SCHEMA

    def __init__(self, path: Path, node: str):
        self.path = path
        self.lock = threading.RLock()  # one connection, used by the transport's threads
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=60, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(self.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise TransportError(
                f"cannot open the simulator state {path}: {exc}", where=node,
                hint="check 'state_dir' in the inventory (it must be a writable directory)",
            ) from None

    def generation(self) -> str:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return str(row[0]) if row else "0"

    def load(self, ov: _Overlay) -> None:
        with self.lock:
            self._load(ov)

    def _load(self, ov: _Overlay) -> None:
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        ov.meta = {k: v for k, v in meta.items() if k != "generation"}
        ov.records = {n: json.loads(d) for n, d in
                      self.conn.execute("SELECT name, data FROM records")}
        ov.hidden_exact = set()
        ov.hidden_sub = set()
        for name, sub in self.conn.execute("SELECT name, subtree FROM hidden"):
            (ov.hidden_sub if sub else ov.hidden_exact).add(name)
        ov.generation = meta.get("generation", "0")

    def save(self, ov: _Overlay, changed: set[str]) -> None:
        c = self.conn
        for name in changed:
            rec = ov.records.get(name)
            if rec is None:
                c.execute("DELETE FROM records WHERE name=?", (name,))
            else:
                c.execute("INSERT OR REPLACE INTO records (name, data) VALUES (?, ?)",
                          (name, json.dumps(rec, separators=(",", ":"))))
            if name in ov.hidden_exact or name in ov.hidden_sub:
                c.execute("INSERT OR REPLACE INTO hidden (name, subtree) VALUES (?, ?)",
                          (name, 1 if name in ov.hidden_sub else 0))
        for k, v in ov.meta.items():
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        gen = str(int(ov.generation or "0") + 1)
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (gen,))
        ov.generation = gen

    def reset(self) -> None:
        self.conn.execute("DELETE FROM records")
        self.conn.execute("DELETE FROM hidden")
        self.conn.execute("DELETE FROM meta WHERE key != 'generation'")
        self.conn.execute("DELETE FROM zstate")
        self.conn.execute("DELETE FROM zevents")
        self.conn.execute("DELETE FROM zhistory")

    def load_totals(self, fingerprint: str, pool: str) -> tuple[int, int, int] | None:
        try:
            with self.lock:
                row = self.conn.execute(
                    "SELECT used, lused, phys FROM totals WHERE fingerprint=? AND pool=?",
                    (fingerprint, pool)).fetchone()
        except sqlite3.Error:
            return None
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    def save_totals(self, fingerprint: str, pool: str, got: tuple[int, int, int]) -> None:
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.conn.execute(
                "INSERT OR REPLACE INTO totals (fingerprint, pool, used, lused, phys) "
                "VALUES (?, ?, ?, ?, ?)", (fingerprint, pool, *got))

    def close(self) -> None:
        with self.lock:
            self.conn.close()


@dataclass
class _Overlay:
    records: dict[str, Rec] = field(default_factory=dict)
    hidden_exact: set[str] = field(default_factory=set)
    hidden_sub: set[str] = field(default_factory=set)
    meta: dict[str, str] = field(default_factory=dict)
    generation: str = "0"

    def copy(self) -> _Overlay:
        return _Overlay(
            records={k: json.loads(json.dumps(v)) for k, v in self.records.items()},
            hidden_exact=set(self.hidden_exact), hidden_sub=set(self.hidden_sub),
            meta=dict(self.meta), generation=self.generation,
        )

    def hides(self, name: str) -> bool:
        if name in self.hidden_exact:
            return True
        if not self.hidden_sub:
            return False
        ds = _ds(name)
        if ds in self.hidden_sub:
            return True
        while "/" in ds:
            ds = ds.rsplit("/", 1)[0]
            if ds in self.hidden_sub:
                return True
        return False


# ---------------------------------------------------------------------------------------------
# properties: what `zfs get/list` know, where they apply, their defaults

# ZFS enum order (zfs_prop_t), which is the order of `zfs get all`. Types: f(ilesystem),
# v(olume), s(napshot). Defaults are what `-p` prints for a dataset that never set them.
_PROP_ORDER: tuple[tuple[str, str], ...] = (
    ("type", "fvsb"), ("creation", "fvsb"), ("used", "fvs"), ("available", "fv"),
    ("referenced", "fvsb"), ("compressratio", "fvs"), ("mounted", "f"), ("origin", "fv"),
    ("quota", "f"), ("reservation", "fv"), ("volsize", "vs"), ("volblocksize", "v"),
    ("recordsize", "f"), ("mountpoint", "f"), ("sharenfs", "f"), ("checksum", "fv"),
    ("compression", "fv"), ("atime", "f"), ("devices", "fs"), ("exec", "fs"), ("setuid", "fs"),
    ("readonly", "fv"), ("zoned", "f"), ("snapdir", "f"), ("aclmode", "f"),
    ("aclinherit", "f"), ("createtxg", "fvsb"), ("canmount", "f"), ("xattr", "fs"),
    ("copies", "fv"), ("version", "fs"), ("utf8only", "fs"), ("normalization", "fs"),
    ("casesensitivity", "fs"), ("vscan", "f"), ("nbmand", "fs"), ("sharesmb", "f"),
    ("refquota", "f"), ("refreservation", "fv"), ("guid", "fvsb"), ("primarycache", "fvs"),
    ("secondarycache", "fvs"), ("usedbysnapshots", "fv"), ("usedbydataset", "fv"),
    ("usedbychildren", "fv"), ("usedbyrefreservation", "fv"), ("defer_destroy", "s"),
    ("userrefs", "s"), ("logbias", "fv"), ("objsetid", "fvs"), ("dedup", "fv"),
    ("mlslabel", "fvs"), ("sync", "fv"), ("dnodesize", "f"), ("refcompressratio", "fvs"),
    ("written", "fvs"), ("clones", "s"), ("logicalused", "fv"), ("logicalreferenced", "fvsb"),
    ("volmode", "fv"), ("filesystem_limit", "f"), ("snapshot_limit", "fv"),
    ("filesystem_count", "f"), ("snapshot_count", "fv"), ("snapdev", "fv"), ("acltype", "fs"),
    ("context", "fvs"), ("fscontext", "fvs"), ("defcontext", "fvs"), ("rootcontext", "fvs"),
    ("relatime", "f"), ("redundant_metadata", "fv"), ("overlay", "f"), ("encryption", "fvs"),
    ("keylocation", "fv"), ("keyformat", "fv"), ("pbkdf2iters", "fv"),
    ("special_small_blocks", "f"), ("snapshots_changed", "fv"), ("prefetch", "fvs"),
    ("volthreading", "v"), ("direct", "f"), ("longname", "f"),
)
_PROP_TYPES = dict(_PROP_ORDER)
_HIDDEN_PROPS = {"name": "fvsb", "numclones": "s", "inconsistent": "fvs", "redacted": "fvs",
                 "unique": "fvs"}
_ALL_PROPS = {**_PROP_TYPES, **_HIDDEN_PROPS}
_ALIASES = {
    "avail": "available", "refer": "referenced", "ratio": "compressratio",
    "refratio": "refcompressratio", "compress": "compression", "reserv": "reservation",
    "refreserv": "refreservation", "volblock": "volblocksize", "recsize": "recordsize",
    "usedsnap": "usedbysnapshots", "usedds": "usedbydataset", "usedchild": "usedbychildren",
    "usedrefreserv": "usedbyrefreservation", "lused": "logicalused",
    "lrefer": "logicalreferenced", "rdonly": "readonly", "dnsize": "dnodesize",
}
_SPACE_COLS = ("name", "available", "used", "usedbysnapshots", "usedbydataset",
               "usedbyrefreservation", "usedbychildren")
# States of pool features (`zpool get feature@NAME`) on a fresh OpenZFS 2.3 pool, for those a
# move's preflight asks about (tests/fixtures/real/zpool_get_features.txt); the others of
# _FEATURES show "enabled".
_FEATURE_STATES: dict[str, str] = {"large_blocks": "enabled", "zstd_compress": "enabled",
                             "encryption": "enabled", "lz4_compress": "active"}
# Values of properties the simulator does not model (static defaults), as `-p` prints them.
_STATIC: dict[str, str] = {
    "mounted": "yes", "quota": "0", "reservation": "0", "recordsize": "131072",
    "sharenfs": "off", "checksum": "on", "atime": "on", "devices": "on", "exec": "on",
    "setuid": "on", "zoned": "off", "snapdir": "hidden", "aclmode": "discard",
    "aclinherit": "restricted", "canmount": "on", "xattr": "on", "copies": "1", "version": "5",
    "utf8only": "off", "normalization": "none", "casesensitivity": "sensitive", "vscan": "off",
    "nbmand": "off", "sharesmb": "off", "refquota": "0", "primarycache": "all",
    "secondarycache": "all", "defer_destroy": "off", "userrefs": "0", "logbias": "latency",
    "dedup": "off", "mlslabel": "none", "sync": "standard", "dnodesize": "legacy",
    "filesystem_limit": "none", "snapshot_limit": "none", "filesystem_count": "none",
    "snapshot_count": "none", "snapdev": "hidden", "acltype": "off", "context": "none",
    "fscontext": "none", "defcontext": "none", "rootcontext": "none", "relatime": "on",
    "redundant_metadata": "all", "overlay": "on", "encryption": "off", "keylocation": "none",
    "keyformat": "none", "pbkdf2iters": "0", "special_small_blocks": "0", "prefetch": "all",
    "volthreading": "on", "direct": "standard", "inconsistent": "0", "redacted": "0",
    "compression": "on", "readonly": "off", "volmode": "default", "longname": "off",
}
# Inheritable properties (a child without a local value shows its parent's).
_INHERIT = frozenset({
    "compression", "readonly", "volmode", "checksum", "sync", "logbias", "primarycache",
    "secondarycache", "snapdev", "dedup", "copies", "atime", "relatime", "devices", "exec",
    "setuid", "mountpoint", "recordsize", "redundant_metadata", "snapdir", "xattr", "aclmode",
    "aclinherit", "acltype", "dnodesize", "sharenfs", "sharesmb", "prefetch", "direct",
    "volthreading", "special_small_blocks", "zoned", "vscan", "nbmand", "overlay", "context",
    "fscontext", "defcontext", "rootcontext", "mlslabel",
})
# Read-only statistics: their source is '-'.
_READONLY = frozenset({
    "type", "creation", "used", "available", "referenced", "compressratio", "mounted",
    "origin", "createtxg", "guid", "usedbysnapshots", "usedbydataset", "usedbychildren",
    "usedbyrefreservation", "userrefs", "objsetid", "refcompressratio", "written", "clones",
    "logicalused", "logicalreferenced", "defer_destroy",
    "snapshots_changed", "name", "numclones", "inconsistent", "redacted", "unique",
    "version", "utf8only", "normalization", "casesensitivity", "volblocksize",
})
_ONOFF = ("on", "off")
_COMPRESS_VALUES = frozenset(
    ["on", "off", "lzjb", "gzip", "zle", "lz4", "zstd", "zstd-fast"]
    + [f"gzip-{i}" for i in range(1, 10)] + [f"zstd-{i}" for i in range(1, 20)]
    + [f"zstd-fast-{i}" for i in (*range(1, 11), 20, 30, 40, 50, 60, 70, 80, 90, 100, 500,
                                  1000)]
)
_SETTABLE: dict[str, tuple[str, tuple[str, ...] | None]] = {
    # prop: (types, allowed values or None for sizes/paths)
    "compression": ("fv", None), "readonly": ("fv", _ONOFF),
    "volmode": ("fv", ("default", "full", "geom", "dev", "none")),
    "sync": ("fv", ("standard", "always", "disabled")),
    "logbias": ("fv", ("latency", "throughput")),
    "primarycache": ("fv", ("all", "none", "metadata")),
    "secondarycache": ("fv", ("all", "none", "metadata")),
    "snapdev": ("fv", ("hidden", "visible")),
    "checksum": ("fv", ("on", "off", "fletcher2", "fletcher4", "sha256", "sha512", "skein",
                        "edonr", "blake3")),
    "dedup": ("fv", ("on", "off", "verify", "sha256", "sha256,verify", "sha512",
                     "sha512,verify", "skein", "skein,verify", "edonr,verify", "blake3",
                     "blake3,verify")),
    "copies": ("fv", ("1", "2", "3")),
    "redundant_metadata": ("fv", ("all", "most", "some", "none")),
    "atime": ("f", _ONOFF), "relatime": ("f", _ONOFF), "devices": ("f", _ONOFF),
    "exec": ("f", _ONOFF), "setuid": ("f", _ONOFF),
    "canmount": ("f", ("on", "off", "noauto")), "mountpoint": ("f", None),
    "recordsize": ("f", None), "quota": ("f", None), "refquota": ("f", None),
    "reservation": ("fv", None), "refreservation": ("fv", None), "volsize": ("v", None),
    "prefetch": ("fv", ("none", "metadata", "all")),
}
# How the kernel logs a property value in history ("set X prop=value"): index properties by
# their number (zfs_prop.c tables), sizes in bytes, strings as they are.
_BOOL_NUM = {"off": 0, "on": 1}
_INDEX_NUM: dict[str, dict[str, int]] = {
    **{p: _BOOL_NUM for p in ("readonly", "atime", "relatime", "devices", "exec", "setuid")},
    "canmount": {"off": 0, "on": 1, "noauto": 2},
    "volmode": {"default": 0, "geom": 1, "full": 1, "dev": 2, "none": 3},
    "sync": {"standard": 0, "always": 1, "disabled": 2},
    "logbias": {"latency": 0, "throughput": 1},
    "primarycache": {"none": 0, "metadata": 1, "all": 2},
    "secondarycache": {"none": 0, "metadata": 1, "all": 2},
    "snapdev": {"hidden": 0, "visible": 1},
    "checksum": {"on": 1, "off": 2, "fletcher2": 6, "fletcher4": 7, "sha256": 8, "sha512": 11,
                 "skein": 12, "edonr": 13, "blake3": 14},
    "dedup": {"on": 1, "off": 2, "verify": 257, "sha256": 8, "sha256,verify": 264,
              "sha512": 11, "sha512,verify": 267, "skein": 12, "skein,verify": 268,
              "edonr,verify": 269, "blake3": 14, "blake3,verify": 270},
    "copies": {"1": 1, "2": 2, "3": 3},
    "redundant_metadata": {"all": 0, "most": 1, "some": 2, "none": 3},
    "prefetch": {"none": 0, "metadata": 1, "all": 2},
}
_COMPRESS_NUM = {"on": 1, "off": 2, "lzjb": 3, "gzip": 10, "zle": 14, "lz4": 15, "zstd": 16,
                 **{f"gzip-{i}": 4 + i for i in range(1, 10)}}
_ZSTD_FAST_LEVEL = {**{n: 102 + n for n in range(1, 11)},
                    **{n: 103 + n // 10 for n in range(20, 101, 10)}, 500: 122, 1000: 123}
# Properties zfs_ioc_set_prop handles one by one, each in its own sync task (txg), before the
# others, which are set together in one; volsize is not logged at all.
_SPECIAL_PROPS = ("quota", "reservation", "refquota", "refreservation")


def _compress_number(value: str) -> int:
    got = _COMPRESS_NUM.get(value)
    if got is not None:
        return got
    if value == "zstd-fast":
        level = _ZSTD_FAST_LEVEL[1]
    elif value.startswith("zstd-fast-"):
        level = _ZSTD_FAST_LEVEL[int(value[10:])]
    else:
        level = int(value[5:])
    return 16 | level << 7  # ZIO_COMPLEVEL_ZSTD: the level above SPA_COMPRESSBITS


def _prop_number(prop: str, value: str) -> str:
    """`value` of `prop` as the kernel logs it in history."""
    if ":" in prop:
        return value
    if prop == "compression":
        return str(_compress_number(value))
    table = _INDEX_NUM.get(prop)
    if table is not None and value in table:
        return str(table[value])
    return value


_COMPRESS_HELP = ("on | off | lzjb | gzip | gzip-[1-9] | zle | lz4 | zstd | zstd-[1-19] | "
                  "zstd-fast | zstd-fast-[1-10,20,30,40,50,60,70,80,90,100,500,1000]")
_TYPE_LETTER = {"filesystem": "f", "volume": "v", "snapshot": "s", "bookmark": "b"}
_TYPE_WORDS = {"filesystem": "filesystem", "fs": "filesystem", "volume": "volume",
               "vol": "volume", "snapshot": "snapshot", "snap": "snapshot",
               "bookmark": "bookmark"}
_KIND_OF = {"filesystem": "fs", "volume": "vol", "snapshot": "snap", "bookmark": "bm"}
_ALL_KINDS = frozenset({"fs", "vol", "snap", "bm"})
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_\-:. ]+\Z")


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\b": "\\b", "\f": "\\f"}


def _zfs_json_string(text: str) -> str | None:
    """`text` as OpenZFS 2.3's JSON printer writes it (nvlist_print_json_string, UTF-8
    locale): control characters and the rest of the Basic Multilingual Plane as \\uXXXX,
    ASCII (DEL included) as is, characters beyond U+FFFF dropped. None when `text` holds a
    byte that is not UTF-8 (a surrogate escape, as from os.fsdecode): there ZFS stops."""
    out = ['"']
    for ch in text:
        c = ord(ch)
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif 0xD800 <= c <= 0xDFFF:
            return None
        elif c < 0x20 or 0x80 <= c <= 0xFFFF:
            out.append(f"\\u{c:04x}")
        elif c < 0x80:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _zfs_json_string_until_bad(text: str) -> str:
    """What ZFS prints of a value with a byte that is not UTF-8: the part before it (then
    the line ends, and nothing more is printed)."""
    for i, ch in enumerate(text):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return (_zfs_json_string(text[:i]) or '""')[:-1]
    return _zfs_json_string(text) or '""'


def _as_received(value: str) -> str:
    """A value as it reaches xfleet over SSH: bytes that are not UTF-8 read as U+FFFD. (Its
    lone surrogates are the escapes of such bytes; any other, which no byte string gives, is
    sent as its UTF-8-like encoding rather than failing the node's listing.)"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return value


def _is_user_prop(prop: str) -> bool:
    return ":" in prop and bool(re.match(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]*\Z", prop)) \
        and len(prop) <= 256


def _canon_prop(prop: str) -> str | None:
    """The canonical name of a native or user property, or None if zfs would not know it."""
    if _is_user_prop(prop):
        return prop
    prop = _ALIASES.get(prop, prop)
    return prop if prop in _ALL_PROPS else None


def _name_problem(name: str, *, snapshot: bool | None, bookmark: bool = False) -> str | None:
    """libzfs' reason why `name` is not a valid dataset name (snapshot: required/forbidden;
    bookmark: a `#` name is expected)."""
    if not name:
        return "empty component or misplaced '@' or '#' delimiter in name"
    if len(name) > 255:
        return "name is too long"
    if name.startswith("/"):
        return "leading slash in name"
    if name.endswith("/"):
        return "trailing slash in name"
    if name.count("@") + name.count("#") > 1:
        return "multiple '@' and/or '#' delimiters in name"
    if "#" in name and not bookmark and snapshot is not None:
        return "invalid character '#' in name"
    if bookmark and "#" not in name:
        return "missing '#' delimiter in bookmark name"
    if "@" in name and snapshot is False:
        return "snapshot delimiter '@' is not expected here"
    if "@" not in name and snapshot is True:
        return "missing '@' delimiter in snapshot name"
    sep = "#" if "#" in name else "@"
    ds, _, snap = name.partition(sep)
    comps = ds.split("/")
    for comp in comps + ([snap] if sep in name else []):
        if comp == "":
            return "empty component or misplaced '@' or '#' delimiter in name"
        if not _NAME_CHARS.match(comp):
            bad = next(c for c in comp if not _NAME_CHARS.match(c))
            return f"invalid character '{bad}' in name"
        if comp in (".", ".."):
            return "self reference, '.' is found in name"
    if not comps[0][0].isalpha():
        return "pool doesn't begin with a letter"
    if " " in comps[0]:
        return "invalid character ' ' in pool name"
    return None


# ---------------------------------------------------------------------------------------------
# one consistent view of a node (base + overlay) for one command


def _source_and_target(cmd: str, rest: list[str]) -> tuple[str, str]:
    """The SOURCE TARGET arguments of `zfs clone` / `zfs rename`, or zfs's usage error."""
    if len(rest) != 2:
        raise _usage(cmd, "missing source dataset argument" if not rest
                     else "missing target dataset argument" if len(rest) == 1
                     else "too many arguments")
    return rest[0], rest[1]


def _cannot_open(view: _View, name: str, *, snapshot: bool | None) -> str | None:
    """What zfs prints when it cannot open `name`, or None when it can."""
    problem = _name_problem(name, snapshot=snapshot)
    if problem is not None:
        return f"cannot open '{name}': {problem}"
    if not view.exists(name):
        return f"cannot open '{name}': dataset does not exist"
    return None


def _roots(view: _View, names: Sequence[str], ctx: _Ctx) -> list[str]:
    """The names a `zfs list`/`zfs get` can open (each once, in order); the others are
    reported on stderr as ZFS does."""
    roots: list[str] = []
    for n in names:
        err = _cannot_open(view, n, snapshot=None)
        if err is not None:
            ctx.fail(err)
        elif n not in roots:
            roots.append(n)
    return roots


def _by_pool(pools: Sequence[str], roots: list[str]
             ) -> Iterator[tuple[str, list[str] | None]]:
    """(pool, the roots in it) for the pools holding a root; every pool (None: all of it)
    when there are no roots."""
    for pool in pools:
        if not roots:
            yield pool, None
            continue
        mine = [r for r in roots if _pool_of(r) == pool]
        if mine:
            yield pool, mine


def _open(view: _View, name: str, *, snapshot: bool | None) -> Rec:
    """The record zfs would open for `name`, or the failure it would print."""
    err = _cannot_open(view, name, snapshot=snapshot)
    if err is not None:
        raise _Fail(err)
    rec = view.record(name)
    assert rec is not None
    return rec


class _View:
    def __init__(self, sim: SimTransport, ov: _Overlay):
        self.sim = sim
        self.base = sim.base
        self.st = sim.settings
        self.ov = ov
        self.tprop = self.st.tenant_property
        b = self.base
        self.group_names: dict[int, list[str]] = {}
        self.loose: dict[str, list[str]] = {p: [] for p in b.pools}
        for name in ov.records:
            k = b.group_of(name)
            if k is not None:
                self.group_names.setdefault(k, []).append(name)
            else:
                pool = _pool_of(name)
                if pool in self.loose and name != pool:
                    self.loose[pool].append(name)
        self.affected: set[int] = set(self.group_names)
        for name in (*ov.hidden_exact, *ov.hidden_sub):
            k = b.group_of(name)
            if k is not None:
                self.affected.add(k)
        self._group_recs: dict[int, dict[str, Rec]] = {}
        self._last_group: tuple[int, dict[str, Rec]] | None = None
        self._root_rec: dict[str, Rec] = {}
        self._group_basefs: dict[int, tuple[int, int, int]] = {}
        self._slow: dict[int, list[Rec]] = {}
        self._loose_derived: dict[str, list[Rec]] = {}
        self._root: dict[str, Rec] = {}
        self._avail: dict[str, int] = {}

    # -- records -------------------------------------------------------------------------------
    def group_records(self, k: int, keep: bool = True) -> dict[str, Rec]:
        """Visible records of tenant k's subtree: base rows not hidden, plus overlay records.
        Kept for the rest of the command unless `keep` is False (big iterations)."""
        got = self._group_recs.get(k)
        if got is None and self._last_group is not None and self._last_group[0] == k:
            got = self._last_group[1]
        if got is not None:
            return got
        rows = self.base.tenant_rows(k, _Env())
        fs = rows[0]
        self._group_basefs[k] = (fs[_F["used"]], fs[_F["logicalused"]], fs[_F["phys"]])
        ov = self.ov
        recs: dict[str, Rec] = {}
        clones: dict[str, list[str]] = {}
        for t in rows:
            name = t[0]
            if name in ov.records or ov.hides(name):
                continue
            recs[name] = _rec_from_row(t, self.tprop)
            if t[4] != "-":
                clones.setdefault(t[4], []).append(name)
        for name, rec in recs.items():
            if rec["type"] == "snapshot":
                rec["clones"] = clones.get(name, [])
        for name in self.group_names.get(k, ()):
            recs[name] = ov.records[name]
        if keep:
            self._group_recs[k] = recs
        self._last_group = (k, recs)
        return recs

    def record(self, name: str) -> Rec | None:
        """The current record of `name` (not derived), or None if it does not exist."""
        rec = self.ov.records.get(name)
        if rec is not None:
            return rec
        if name in self.base.pool_range:
            got = self._root_rec.get(name)
            if got is None:
                got = self._root_rec[name] = self.base.root_record(name)
            return got
        k = self.base.group_of(name)
        if k is None:
            return None
        return self.group_records(k).get(name)

    def exists(self, name: str) -> bool:
        return self.record(name) is not None

    def is_base(self, name: str) -> bool:
        """Whether `name` is a base dataset that is still visible under its base name."""
        if name in self.base.pool_range:
            return True
        k = self.base.group_of(name)
        if k is None or name in self.ov.records or self.ov.hides(name):
            return False
        self.group_records(k)
        return name in self._group_recs[k] and name not in self.ov.records

    # -- inheritance -------------------------------------------------------------------------
    def effective(self, rec: Rec, prop: str) -> tuple[str, str]:
        """(value, source) of an inheritable or user property, following parents."""
        cur: Rec | None = rec
        first = True
        while cur is not None:
            local = cur.get("local") or {}
            if prop in local:
                value = local[prop]
                if first:
                    return value, "local"
                if prop == "mountpoint" and value.startswith("/"):
                    rel = _ds(rec["name"])[len(cur["name"]):]
                    value = value.rstrip("/") + rel if value != "/" else rel
                return value, f"inherited from {cur['name']}"
            first = False
            parent = _parent(cur["name"])
            cur = self.record(parent) if parent else None
        if prop == "mountpoint":
            return "/" + _ds(rec["name"]), "default"
        if ":" in prop:
            return "-", "-"
        return _STATIC.get(prop, "-"), "default"

    # -- derived figures -----------------------------------------------------------------------
    def _derive(self, recs: Iterable[Rec]) -> list[Rec]:
        """Copies of `recs` (sorted) with used, logicalused, ratios... filled in; descendants of
        a filesystem must all be in `recs` for its sums to be right."""
        out = sorted((dict(r) for r in recs), key=lambda r: _key(r["name"], r["createtxg"]))
        sums: dict[str, list[int]] = {}
        for d in reversed(out):
            name = d["name"]
            if d["type"] == "bookmark":
                continue
            if d["type"] == "snapshot":
                d["used"] = d["unique"]
                d["compressratio"] = d["refcompressratio"] = _ratio(d["logicalreferenced"],
                                                                      d["referenced"])
                d["numclones"] = len(d.get("clones") or ())
                continue
            uchild, lchild, pchild = sums.pop(name, (0, 0, 0))
            written = d["written"]
            refres = d["refreservation"]
            ubr = refres - written if refres > written else 0
            phys = d["ubd"] + d["ubs"] + pchild
            d["ubr"] = ubr
            d["uchild"] = uchild
            d["used"] = d["ubd"] + d["ubs"] + ubr + uchild
            d["lused"] = d["lused_own"] + lchild
            d["phys"] = phys
            d["compressratio"] = _ratio(d["lused"], phys)
            d["refcompressratio"] = _ratio(d["logicalreferenced"], d["referenced"])
            parent = _parent(name)
            if parent is not None:
                acc = sums.setdefault(parent, [0, 0, 0])
                acc[0] += d["used"]
                acc[1] += d["lused"]
                acc[2] += phys
        return out

    def slow_group(self, k: int, keep: bool = True) -> list[Rec]:
        got = self._slow.get(k)
        if got is None:
            got = self._derive(self.group_records(k, keep).values())
            if keep:
                self._slow[k] = got
        return got

    def base_fs_totals(self, k: int) -> tuple[int, int, int]:
        if k not in self._group_basefs:
            self.group_records(k, keep=False)
        return self._group_basefs[k]

    def loose_derived(self, pool: str) -> list[Rec]:
        got = self._loose_derived.get(pool)
        if got is None:
            got = self._derive(self.ov.records[n] for n in self.loose[pool])
            self._loose_derived[pool] = got
        return got

    def root(self, pool: str, totals: tuple[int, int, int] | None) -> Rec:
        """The derived pool root. `totals` are the base tenants' sums (None: space unknown)."""
        got = self._root.get(pool)
        if got is not None:
            return got
        rec = dict(self.ov.records.get(pool) or self.base.root_record(pool))
        rec["numclones"] = 0
        u, lu, ph = totals if totals is not None else (0, 0, 0)
        for k in sorted(self.affected):
            if self.base.pool_of_tenant(k) != pool:
                continue
            bu, blu, bph = self.base_fs_totals(k)
            u, lu, ph = u - bu, lu - blu, ph - bph
            for d in self.slow_group(k):
                if _parent(d["name"]) == pool and d["type"] != "snapshot":
                    u, lu, ph = u + d["used"], lu + d["lused"], ph + d["phys"]
        for d in self.loose_derived(pool):
            if _parent(d["name"]) == pool and d["type"] != "snapshot":
                u, lu, ph = u + d["used"], lu + d["lused"], ph + d["phys"]
        written = rec["written"]
        refres = rec["refreservation"]
        ubr = refres - written if refres > written else 0
        rec["ubr"] = ubr
        rec["uchild"] = u
        rec["used"] = rec["ubd"] + rec["ubs"] + ubr + u
        rec["lused"] = rec["lused_own"] + lu
        rec["phys"] = rec["ubd"] + rec["ubs"] + ph
        rec["compressratio"] = _ratio(rec["lused"], rec["phys"])
        rec["refcompressratio"] = _ratio(rec["logicalreferenced"], rec["referenced"])
        if totals is not None:
            self._root[pool] = rec
        return rec

    def totals(self, pool: str) -> tuple[int, int, int]:
        return self.base.totals(pool, self.sim.store)

    def pool_figures(self, pool: str) -> tuple[int, int, int]:
        """(size, allocated, root available) of a pool."""
        root = self.root(pool, self.totals(pool))
        size = self.base.pool_size(pool, self.sim.store)
        slop = min(max(size >> 5, 128 << 20), 128 << 30)
        alloc = root["phys"] + (root["phys"] >> 9)
        avail = max(0, size - slop - root["used"])
        return size, min(alloc, size), avail

    def avail(self, pool: str) -> int:
        got = self._avail.get(pool)
        if got is None:
            got = self._avail[pool] = self.pool_figures(pool)[2]
        return got

    def derived(self, name: str) -> Rec | None:
        """The derived record of one dataset."""
        b = self.base
        if name in b.pool_range:
            return self.root(name, self.totals(name))
        k = b.group_of(name)
        if k is not None:
            for d in self.slow_group(k):
                if d["name"] == name:
                    return d
            return None
        pool = _pool_of(name)
        if pool not in self.loose:
            return None
        for d in self.loose_derived(pool):
            if d["name"] == name:
                return d
        return None

    # -- rendering -----------------------------------------------------------------------------
    def value(self, d: Rec, prop: str) -> tuple[str, str] | None:
        """(value, source) of a property of a derived record as `-p` prints it; None when the
        property does not apply to this type."""
        typ = d["type"]
        letter = _TYPE_LETTER[typ]
        if typ == "bookmark":
            if prop in ("name", "type", "guid", "createtxg", "creation", "referenced",
                        "logicalreferenced"):
                return str(d[prop]) if prop != "type" else typ, "-"
            return None
        if ":" in prop:
            return self.effective(d, prop)
        types = _ALL_PROPS.get(prop)
        if types is None or letter not in types:
            return None
        snap = typ == "snapshot"
        if snap and types != "s" and ("v" if d.get("volsize") is not None else "f") not in types:
            return None  # e.g. 'exec' on a snapshot of a volume
        if prop == "volsize" and d.get("volsize") is None:
            return None
        simple: dict[str, Callable[[], Any]] = {
            "name": lambda: d["name"], "type": lambda: typ, "guid": lambda: d["guid"],
            "createtxg": lambda: d["createtxg"], "creation": lambda: d["creation"],
            "used": lambda: d["used"], "referenced": lambda: d["referenced"],
            "logicalreferenced": lambda: d["logicalreferenced"],
            "written": lambda: d["written"], "compressratio": lambda: d["compressratio"],
            "refcompressratio": lambda: d["refcompressratio"],
            "objsetid": lambda: 256 + d["guid"] % 1000003,
        }
        if prop in simple:
            return str(simple[prop]()), "-"
        if snap:
            if prop == "volsize":
                return str(d["volsize"]), "local"
            if prop == "numclones":
                return str(d["numclones"]), "-"
            if prop == "clones":
                return (",".join(d["clones"]), "-") if d.get("clones") else None
            if prop in _INHERIT:
                return self.effective(d, prop)
            return _STATIC.get(prop, "-"), "-" if prop in _READONLY else "default"
        pool = d["name"].split("/", 1)[0]
        figures: dict[str, Callable[[], Any]] = {
            "available": lambda: self.avail(pool) + d["ubr"],
            "logicalused": lambda: d["lused"], "usedbysnapshots": lambda: d["ubs"],
            "usedbydataset": lambda: d["ubd"], "usedbychildren": lambda: d["uchild"],
            "usedbyrefreservation": lambda: d["ubr"],
        }
        if prop in figures:
            return str(figures[prop]()), "-"
        if prop == "origin":
            return (d["origin"], "-") if d.get("origin") else None
        if prop == "volsize":
            return str(d["volsize"]), "local"
        if prop == "volblocksize":
            return str(d["volblocksize"]), "-"
        if prop == "refreservation":
            return str(d["refreservation"]), "local" if d["refreservation"] else "default"
        if prop == "snapshots_changed":
            return (str(d["snapshots_changed"]), "-") if d.get("snapshots_changed") else None
        if prop == "mounted":
            mounted = self.effective(d, "canmount")[0] != "off" and \
                self.effective(d, "mountpoint")[0].startswith("/")
            return ("yes" if mounted else "no"), "-"
        local = d.get("local") or {}
        if prop in local:
            return local[prop], "local"
        if prop in _INHERIT:
            return self.effective(d, prop)
        return _STATIC.get(prop, "-"), "-" if prop in _READONLY else "default"

    def line(self, d: Rec, cols: Sequence[str]) -> str:
        out = []
        for c in cols:
            v = self.value(d, c)
            out.append("-" if v is None or v[0] is None else v[0])
        return "\t".join(out)

    def env(self, pool: str, cols: Sequence[str], need_avail: bool) -> _Env:
        root = self.ov.records.get(pool) or self.base.root_record(pool)
        uvals = []
        seen: set[str] = set()
        for c in cols:
            if ":" in c and c != self.tprop and c not in seen:
                seen.add(c)
                uvals.append(self.effective(root, c)[0])
        return _Env(
            A=self.avail(pool) if need_avail else 0,
            COMP=self.effective(root, "compression")[0],
            RO=self.effective(root, "readonly")[0],
            VM=self.effective(root, "volmode")[0],
            MP=self.effective(root, "mountpoint")[0],
            U=tuple(uvals),
        )

    # -- iteration in `zfs list` order -----------------------------------------------------------
    def items(self, pool: str, roots: Sequence[str] | None, depth: int | None,
              kinds: frozenset[str], fast: Callable[[int], list[Any]] | None,
              keep: bool = True) -> Iterator[Any]:
        """Rows of `pool` after its root, in zfs list order: derived records, or (for untouched
        tenants, when `fast` is given) whatever fast(k) returns (a list of formatted lines)."""
        b = self.base

        def selected(name: str) -> bool:
            if roots is None:
                return depth is None or _depth_below(name, pool) <= depth
            for r in roots:
                if _in_subtree(name, r) and (depth is None or _depth_below(name, r) <= depth):
                    return True
            return False

        def wanted(d: Rec) -> bool:
            return _KIND_OF[d["type"]] in kinds and selected(d["name"])

        loose = self.loose_derived(pool)
        li = 0
        a, z = b.pool_range[pool]
        whole = roots is None or pool in roots
        # Tenants are the pool's direct children: with roots below the pool, only the tenants
        # holding a root are visited (named datasets are looked up, not searched for).
        ks: Iterable[int] = range(a, z) if whole else sorted(
            {k for r in roots or () if (k := b.group_of(r)) is not None and a <= k < z})
        for k in ks:
            tname = b.tenant_name(k)
            if whole:
                full, touched = True, True
            else:
                assert roots is not None
                full = any(_in_subtree(tname, r) for r in roots)
                touched = full or any(_in_subtree(r, tname) for r in roots)
            if not touched:
                continue
            first = (tname, 0, 0)
            while li < len(loose) and _key(loose[li]["name"], loose[li]["createtxg"]) < first:
                if wanted(loose[li]):
                    yield loose[li]
                li += 1
            last = (b.last_dataset(k), 2, 0)
            inside = []
            while li < len(loose) and _key(loose[li]["name"], loose[li]["createtxg"]) < last:
                inside.append(loose[li])
                li += 1
            if fast is not None and full and depth is None and k not in self.affected \
                    and not inside:
                yield fast(k)
                continue
            recs = self.slow_group(k, keep)
            if inside:
                recs = sorted([*recs, *inside], key=lambda r: _key(r["name"], r["createtxg"]))
            for d in recs:
                if wanted(d):
                    yield d
        while li < len(loose):
            if wanted(loose[li]):
                yield loose[li]
            li += 1


# ---------------------------------------------------------------------------------------------
# command-line parsing like getopt (GNU: options may follow operands)

_USAGE = {
    "list": "\tlist [-Hp] [-r|-d max] [-o property[,...]] [-s property]...\n"
            "\t    [-S property]... [-t type[,...]] [filesystem|volume|snapshot] ...",
    "get": "\tget [-rHp] [-d max] [-o \"all\" | field[,...]]\n"
           "\t    [-t type[,...]] [-s source[,...]]\n"
           "\t    <\"all\" | property[,...]> [filesystem|volume|snapshot|bookmark] ...",
    "create": "\tcreate [-Pnpuv] [-o property=value] ... <filesystem>\n"
              "\tcreate [-Pnpsv] [-b blocksize] [-o property=value] ... -V <size> <volume>",
    "snapshot": "\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...",
    "clone": "\tclone [-p] [-o property=value] ... <snapshot> <filesystem|volume>",
    "destroy": "\tdestroy [-fnpRrv] <filesystem|volume>\n"
               "\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%<snap>][,...]",
    "set": "\tset [-u] <property=value> ... <filesystem|volume|snapshot> ...",
    "inherit": "\tinherit [-rS] <property> <filesystem|volume|snapshot> ...",
    "rename": "\trename [-f] <filesystem|volume|snapshot> <filesystem|volume|snapshot>\n"
              "\trename -p [-f] <filesystem|volume> <filesystem|volume>\n"
              "\trename -r <snapshot> <snapshot>",
    "promote": "\tpromote <clone-filesystem>",
    "bookmark": "\tbookmark <snapshot|bookmark> <newbookmark>",
    "zpool list": "\tlist [-gHLpPv] [-o property[,...]] [-T d|u] [pool] ... [interval [count]]",
    "zpool status": "\tstatus [-DegiLpPstvx] [-T d|u] [-c script1[,script2,...]] ...\n"
                    "\t    [--power] [-j [--json-int, --json-flat-vdevs, ...\n"
                    "\t    --json-pool-key-guid]] [pool] ... [interval [count]]",
    "zpool get": "\tget [-Hp] [-o \"all\" | field[,...]] <\"all\" | property[,...]> <pool> ...",
    "zpool events": "\tevents [-vHf [pool] | -c]",
    "zpool history": "\thistory [-il] [<pool>] ...",
}


_ZFS_TRAILER = ("\nFor the property list, run: zfs set|get\n\n"
                "For the delegated permission list, run: zfs allow|unallow\n\n"
                "For further help on a command or topic, run: zfs help [<topic>]\n")


def _usage(cmd: str, msg: str = "") -> _Fail:
    head = msg + "\n" if msg else ""
    trailer = "" if cmd.startswith("zpool") else _ZFS_TRAILER
    return _Fail(f"{head}usage:\n{_USAGE[cmd]}\n{trailer}", 2)


def _getopt(cmd: str, args: Sequence[str], flags: str, with_arg: str,
            ) -> tuple[list[tuple[str, str]], list[str]]:
    opts: list[tuple[str, str]] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch in with_arg:
                    val = a[j + 1:]
                    if not val:
                        i += 1
                        if i >= len(args):
                            raise _usage(cmd, f"missing argument for '{ch}' option")
                        val = args[i]
                    opts.append((ch, val))
                    break
                if ch in flags:
                    opts.append((ch, ""))
                    j += 1
                    continue
                raise _usage(cmd, f"invalid option '{ch}'")
        else:
            rest.append(a)
        i += 1
    return opts, rest


def _parse_types(cmd: str, text: str) -> frozenset[str]:
    kinds: set[str] = set()
    for word in text.split(","):
        if word == "all":
            kinds |= _ALL_KINDS
            continue
        full = _TYPE_WORDS.get(word)
        if full is None:
            raise _usage(cmd, f"invalid type '{word}'")
        kinds.add(_KIND_OF[full])
    return frozenset(kinds)


def _parse_columns(cmd: str, text: str) -> list[str]:
    cols: list[str] = []
    for word in text.split(","):
        if word == "space" and cmd == "list":
            cols.extend(_SPACE_COLS)
            continue
        canon = _canon_prop(word)
        if canon is None:
            raise _usage(cmd, f"bad property list: invalid property '{word}'")
        cols.append(canon)
    return cols


@dataclass
class _Ctx:
    """What a running command reports besides stdout."""

    err: list[str] = field(default_factory=list)
    code: int = 0
    argv: list[str] = field(default_factory=list)
    timeout: float = 300.0
    stdin: bytes | None = None

    def fail(self, text: str, code: int = 1) -> None:
        self.err.append(text if text.endswith("\n") else text + "\n")
        self.code = code


_HEADERS = {"name": "NAME", "used": "USED", "available": "AVAIL", "referenced": "REFER",
            "mountpoint": "MOUNTPOINT", "compressratio": "RATIO",
            "refcompressratio": "REFRATIO", "compression": "COMPRESS",
            "usedbysnapshots": "USEDSNAP", "usedbydataset": "USEDDS",
            "usedbychildren": "USEDCHILD", "usedbyrefreservation": "USEDREFRESERV",
            "logicalused": "LUSED", "logicalreferenced": "LREFER",
            "refreservation": "REFRESERV", "volblocksize": "VOLBLOCK"}
_SIZE_PROPS = frozenset({"used", "available", "referenced", "logicalused", "logicalreferenced",
                         "usedbysnapshots", "usedbydataset", "usedbychildren",
                         "usedbyrefreservation", "refreservation", "reservation", "quota",
                         "refquota", "volsize", "volblocksize", "written", "recordsize",
                         "size", "allocated", "free", "freeing", "leaked"})


def _human(prop: str, value: str) -> str:
    """What zfs prints without -p."""
    if value == "-" or not value:
        return value
    if prop in ("creation", "snapshots_changed"):
        return time.strftime("%a %b %e %k:%M %Y", time.localtime(int(value)))
    if prop in ("compressratio", "refcompressratio", "dedupratio"):
        return value + "x"
    if prop in ("refreservation", "reservation", "quota", "refquota") and value == "0":
        return "none"
    if prop in ("capacity", "fragmentation"):
        return value + "%"
    if prop in _SIZE_PROPS and value.isdigit():
        return _nicenum(int(value))
    return value


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> Iterator[str]:
    widths = [len(h) for h in header]
    for row in rows:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))

    def fmt(row: list[str]) -> str:
        cells = []
        for i, v in enumerate(row):
            last = i == len(row) - 1
            if i in right:
                cells.append(v.rjust(widths[i]))
            else:
                cells.append(v if last else v.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    yield fmt(header)
    for row in rows:
        yield fmt(row)


# ---------------------------------------------------------------------------------------------
# mutations: a working copy of the overlay, committed at the end of a command


class _Fast:
    """The fast path for one pool: formatted lines of an untouched tenant, with the tenant's
    space totals added up on the way (for the pool root when it is spooled)."""

    def __init__(self, base: _Base, gen: Callable[..., Any], pool: str, env: _Env):
        self.base = base
        self.gen = gen
        self.pool = pool
        self.env = env
        self.sums = [0, 0, 0]
        self.done: set[int] = set()

    def __call__(self, k: int) -> list[str]:
        rows, fu, flu, fph = self.gen(self.base, k, self.pool, self.env)
        sums = self.sums
        sums[0] += fu
        sums[1] += flu
        sums[2] += fph
        self.done.add(k)
        if rows[0] is None:
            del rows[0]
        out: list[str] = rows
        return out


class _Txn:
    def __init__(self, sim: SimTransport, ov: _Overlay):
        self.sim = sim
        self.ov = ov
        self.view = _View(sim, ov)
        self.changed: set[str] = set()
        last = int(ov.meta.get("clock", "0"))
        wall = time.time_ns()
        self.now = max(wall // 1_000_000_000, sim.settings.now + 60, last)
        ov.meta["clock"] = str(self.now)
        self._txg: dict[str, int] = {}
        self._stamped: set[str] = set()
        # event times: the wall clock when it is the clock in use, never before the node's
        # last event (events of one txg share their time, as the kernel posts them together)
        self._real_clock = wall // 1_000_000_000 == self.now
        self.event_ns = sim.journal.get("etime") or 0
        self._ns_txg: tuple[str, int] | None = None
        # history records (per pool) and events to append when this commits: at most what
        # the history and the queue keep (a `zfs destroy -r` of a big pool logs a lot)
        st = sim.settings
        self.history: dict[str, deque[Rec]] = {}
        self.logged: dict[str, int] = {}
        self.last_pool: str | None = None
        self.events: deque[Rec] = deque(maxlen=st.zevent_len_max)
        self.posted = 0

    def txg(self, pool: str) -> int:
        """The pool's current txg in this transaction (the first one it uses if none yet)."""
        got = self._txg.get(pool)
        if got is None:
            pc = self.sim.base.pool_created[pool]
            last = int(self.ov.meta.get(f"txg:{pool}", "0"))
            got = max(last + 1, 1 + (self.now - pc) // _TXG_SECONDS)
            self._txg[pool] = got
            self.ov.meta[f"txg:{pool}"] = str(got)
        return got

    def stamp(self, pool: str) -> int:
        """The txg of the next sync task in `pool`: the first one is txg(pool), each further
        one the txg after (as zfs waits for each task's txg to sync before the next)."""
        if pool not in self._stamped:
            self._stamped.add(pool)
            return self.txg(pool)
        got = self.txg(pool) + 1
        self._txg[pool] = got
        self.ov.meta[f"txg:{pool}"] = str(got)
        return got

    # -- history and events ----------------------------------------------------------------
    def internal(self, pool: str, op: str, text: str, txg: int, *, ds: str | None = None,
                 guid: int | None = None) -> None:
        """An internal history record (spa_history_log_internal[_ds]) and the
        sysevent.fs.zfs.history_event the kernel posts for it."""
        host = self.sim.node
        rec: Rec = {"pool": pool, "kind": "int", "time": self.now, "txg": txg, "op": op,
                    "str": text, "host": host}
        fields: list[tuple[str, Any]] = [("history_hostname", host)]
        if ds is not None:
            assert guid is not None
            rec.update(ds=ds, dsid=_dsid(guid))
            fields.append(("history_dsname", ds))
        fields += [("history_internal_str", text), ("history_internal_name", op)]
        if ds is not None:
            fields.append(("history_dsid", rec["dsid"]))
        fields += [("history_txg", txg), ("history_time", self.now)]
        self._log(rec)
        self.post(pool, _HISTORY_EVENT, fields, txg)

    def _log(self, rec: Rec) -> None:
        pool = rec["pool"]
        got = self.history.get(pool)
        if got is None:
            got = self.history[pool] = deque(maxlen=self.sim.settings.history_len_max)
        got.append(rec)
        self.logged[pool] = self.logged.get(pool, 0) + 1
        self.last_pool = pool

    def post(self, pool: str, cls: str, extra: list[tuple[str, Any]], txg: int,
             context: int = 0) -> None:
        """A kernel event (spa_event_notify) about `pool`."""
        if self._ns_txg != (pool, txg):
            wall = time.time_ns()
            now = wall if self._real_clock else self.now * 1_000_000_000 + wall % 1_000_000
            self.event_ns = max(now, self.event_ns + 1000)
            self._ns_txg = (pool, txg)
        sec, nsec = divmod(self.event_ns, 1_000_000_000)
        fields: list[tuple[str, Any]] = [
            ("version", 0), ("class", cls), ("pool", pool),
            ("pool_guid", self.sim.base.pool_guid[pool]), ("pool_state", 0),
            ("pool_context", context), *extra]
        self.events.append({"pool": pool, "class": cls, "fields": fields,
                            "time": [sec, nsec]})
        self.posted += 1

    def ioctl(self, pool: str, name: str, args: Sequence[tuple[str, Any]]) -> None:
        """The record a new-style ioctl logs (zpool history -i shows its input nvlist)."""
        ms = 20 + _mix(self.sim.node, name, self.now, self.logged.get(pool, 0)) % 130
        self._log({"pool": pool, "kind": "ioctl", "time": self.now, "ioctl": name, "ms": ms,
                   "input": _nvlist_lines(args, 8), "host": self.sim.node})

    def touch(self, pool: str) -> None:
        """A legacy ioctl that logs no record of its own ran (its command still gets one)."""
        self.last_pool = pool

    def command(self, argv: Sequence[str]) -> None:
        """The command line, logged (zpool_log_history) once the command succeeded, to the
        pool of the last ioctl that logged."""
        assert self.last_pool is not None
        words = [argv[0].rsplit("/", 1)[-1], *argv[1:]]
        self._log({"pool": self.last_pool, "kind": "cmd", "time": self.now,
                   "cmd": " ".join(words), "host": self.sim.node})

    def log_props(self, rec: Rec, props: Sequence[str], *, op: str = "set") -> None:
        """History of `zfs set`-like property changes on `rec` (already applied): special
        properties one sync task each, then the others in one (dsl_props_set)."""
        name = rec["name"]
        pool = _pool_of(name)
        special = [p for p in _SPECIAL_PROPS if p in props]
        special.sort(key=props.index)
        for p in special:
            value = rec.get(p, 0) if p == "refreservation" else \
                (rec.get("local") or {}).get(p, "0")
            self.internal(pool, op, f"{p}={value}", self.stamp(pool), ds=name, guid=rec["guid"])
        generic = [p for p in props if p not in _SPECIAL_PROPS and p != "volsize"]
        if generic:
            txg = self.stamp(pool)
            for p in generic:
                value = _prop_number(p, (rec.get("local") or {}).get(p, ""))
                self.internal(pool, op, f"{p}={value}", txg, ds=name, guid=rec["guid"])

    def guid(self, name: str) -> int:
        return _mix(self.sim.settings.seed, self.sim.node, "guid", name, self.now,
                    self.ov.generation, len(self.changed)) | 1

    def get(self, name: str) -> Rec | None:
        """A private copy of the current record of `name`, to modify and put()."""
        rec = self.view.record(name)
        if rec is None:
            return None
        copy: Rec = json.loads(json.dumps(rec))
        return copy

    def put(self, rec: Rec) -> None:
        self.ov.records[rec["name"]] = rec
        self.changed.add(rec["name"])

    def drop(self, name: str, *, base: bool, subtree: bool) -> None:
        if name in self.ov.records:
            del self.ov.records[name]
            self.changed.add(name)
        if base:
            (self.ov.hidden_sub if subtree else self.ov.hidden_exact).add(name)
            self.changed.add(name)

    def subtree(self, name: str, kinds: frozenset[str] = frozenset({"fs", "vol", "snap"}),
                ) -> list[Rec]:
        """Derived records of `name` and everything below it, in zfs list order (bookmarks
        only when asked for: they never block a destroy)."""
        pool = _pool_of(name)
        v = self.view
        out: list[Rec] = []
        if name == pool and "fs" in kinds:
            out.append(v.root(pool, None))
        out.extend(v.items(pool, [name], None, kinds, None))
        return out


def _snapshot_names(view: _View, ds: str) -> list[Rec]:
    """Derived snapshots of one dataset, oldest first."""
    pool = ds.split("/", 1)[0]
    if ds == pool:
        out = [d for d in view.loose_derived(pool) if d["name"].startswith(ds + "@")]
    else:
        out = [d for d in view.items(pool, [ds], 1, frozenset({"snap"}), None)
               if d["name"].startswith(ds + "@")]
    return out


@functools.lru_cache(maxsize=1)
def _text_corpus() -> bytes:
    """256 KiB of JSON-ish text lines (compresses about 3-4x with lz4)."""
    r = random.Random(4242)
    words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9)))
             for _ in range(400)]
    out: list[str] = []
    size = 0
    while size < 256 << 10:
        line = json.dumps({"id": r.randint(1, 10**6), "user": r.choice(words),
                           "text": " ".join(r.choice(words) for _ in range(r.randint(3, 12))),
                           "ok": r.random() < 0.5})
        out.append(line)
        size += len(line) + 1
    return "\n".join(out).encode()


def _synthetic_blocks(name: str, bs: int, want: int, offsets: Sequence[str]) -> Iterator[str]:
    """The sampler's output for simulated data: per volume, a share of holes (10-60 %), of
    random blocks (0-50 %), and text blocks whose leading part (0-50 %) is random bytes."""

    v = _mix("blocks", name)
    holes, noise, mixed = 0.1 + (v % 51) / 100, ((v >> 8) % 51) / 100, ((v >> 16) % 51) / 100
    corpus = _text_corpus()
    n = 0
    for o in offsets:
        r = random.Random(f"{name}:{o}")
        x = r.random()
        if x < holes:
            yield f"Z {o}"
            continue
        if x < holes + (1 - holes) * noise:
            block = r.randbytes(bs)
        else:
            start = r.randrange(0, len(corpus) - bs)
            cut = int(bs * mixed * r.random() * 2) // 2
            block = r.randbytes(cut) + corpus[start + cut:start + bs]
        yield f"D {o} {base64.b64encode(block).decode()}"
        n += 1
        if n >= want:
            return


# The inventory's `target` for simulated nodes: the simulated target daemon behind the
# `command` driver (docs/sim.md; inventory/demo.yaml spells out the same)
TARGET: dict[str, Any] = {
    "driver": "command",
    "installed_version": ["xfleet-sim-target", "installed"],
    "running_version": ["xfleet-sim-target", "running"],
    "ready": ["xfleet-sim-target", "ready"],
    "exports": ["xfleet-sim-target", "exports"],
    "stage": ["xfleet-sim-target", "stage", "{path}", "{sha256}"],
    "restart": ["xfleet-sim-target", "restart", "{path}", "{version}"],
    "rollback": ["xfleet-sim-target", "restart", "{path}", "{version}"],
}


class SimTransport(Transport):
    """A simulated storage node: answers zfs/zpool argv like OpenZFS 2.3 on a real node."""

    kind = "sim"

    def __init__(self, host: Host, *, state_dir: Path | None = None):
        super().__init__(host.name, command_timeout=host.command_timeout)
        self.host = host
        self.settings = SimSettings.from_mapping(host.name, host.sim)
        pools = tuple(host.pools) or ("tank",)
        self.base = _Base(host.name, pools, self.settings)
        self.state_dir = state_dir
        self._lock = threading.RLock()
        self.store: _Store | None = None
        self.overlay = _Overlay()
        self._epoch = 0  # bumped by close(): `zpool events -f` streams end like a lost link
        if state_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", host.name)
            if safe != host.name:
                safe += f"-{_mix(host.name) & 0xFFFFFFFF:08x}"
            self.store = _Store(Path(state_dir) / f"sim-{safe}.sqlite", host.name)
            self.journal = _Journal(self.store.conn, self.store.lock)
            self._open_store()
        else:
            self.journal = _Journal.in_memory()
        self._boot(first=True)

    def _open_store(self) -> None:
        assert self.store is not None
        with self.store.lock:
            self._check_fingerprint(self.store)
        self.store.load(self.overlay)

    def _check_fingerprint(self, store: _Store) -> None:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            if row is None or row[0] != self.base.fingerprint:
                store.reset()
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES "
                             "('fingerprint', ?)", (self.base.fingerprint,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._epoch += 1
            if self.store is not None:
                # like the overlay, the node stays usable in memory (same boot, eids going on)
                memory = _Journal.in_memory()
                with self.store.lock:
                    state = self.journal.conn.execute("SELECT key, value FROM zstate").fetchall()
                memory.conn.executemany("INSERT INTO zstate (key, value) VALUES (?, ?)", state)
                self.store.close()
                self.store = None
                self.journal = memory

    @property
    def state_path(self) -> Path | None:
        return self.store.path if self.store else None

    # -- plumbing ------------------------------------------------------------------------------
    def _current(self) -> _Overlay:
        with self._lock:
            if self.store is not None and self.store.generation() != self.overlay.generation:
                ov = _Overlay()
                self.store.load(ov)
                self.overlay = ov
            return self.overlay

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Iterator[str]:
        ctx = _Ctx(argv=argv, timeout=timeout, stdin=stdin)
        epoch = self._epoch
        try:
            out = self._dispatch(argv, ctx)
            rate = self.settings.rows_per_second
            if rate > 0:
                out = _throttle(out, rate, lambda: self._epoch != epoch)
            for line in out:
                if self._epoch != epoch:  # closed meanwhile: like a dropped SSH connection
                    raise TransportError("the connection was closed while the command ran",
                                         where=self.node)
                if line.isascii() and "\n" not in line:
                    yield line
                else:  # as a transport reads bytes: lines end at every newline (a value's too)
                    yield from _as_received(line).split("\n")
        except _Fail as f:
            ctx.fail(f.stderr, f.code)
        status[0] = ctx.code
        err[0] = "".join(ctx.err)

    def _dispatch(self, argv: list[str], ctx: _Ctx) -> Iterator[str]:
        if argv[0] == "env":  # `env NAME=VALUE... COMMAND`: the locale of zfs_get_user_properties
            i = 1
            while i < len(argv) and "=" in argv[i]:
                i += 1
            if i == len(argv):
                raise _Fail("env: missing command\n", 125)
            argv = argv[i:]
        prog = argv[0].rsplit("/", 1)[-1]
        args = argv[1:]
        if prog == "zfs":
            if not args:
                raise _Fail("usage: zfs command args ...\nwhere 'command' is one of the "
                            "following:\n\n" + "\n".join(_USAGE[c] for c in (
                                "create", "destroy", "snapshot", "rename", "clone", "promote",
                                "list", "set", "get", "inherit")) + "\n", 2)
            sub, rest = args[0], args[1:]
            handler = {
                "list": self._zfs_list, "get": self._zfs_get, "create": self._zfs_create,
                "snapshot": self._zfs_snapshot, "snap": self._zfs_snapshot,
                "clone": self._zfs_clone, "destroy": self._zfs_destroy, "set": self._zfs_set,
                "inherit": self._zfs_inherit, "rename": self._zfs_rename,
                "promote": self._zfs_promote, "bookmark": self._zfs_bookmark,
                "version": self._version,
            }.get(sub)
            if handler is None:
                raise _Fail(f"unrecognized command '{sub}'\nusage: zfs command args ...\n", 2)
            return handler(rest, ctx)
        if prog == "zpool":
            if not args:
                raise _Fail("usage: zpool command args ...\n", 2)
            sub, rest = args[0], args[1:]
            handler = {"list": self._zpool_list, "status": self._zpool_status,
                       "get": self._zpool_get, "version": self._version,
                       "events": self._zpool_events, "history": self._zpool_history,
                       }.get(sub)
            if handler is None:
                raise _Fail(f"unrecognized command '{sub}'\nusage: zpool command args ...\n", 2)
            return handler(rest, ctx)
        known = identify(argv)
        if known is not None and known[0].name == "sample_blocks":
            return self._sample_blocks(known[1], ctx)
        if known is not None and known[0].name == "put_file":
            return self._target("put_file", known[1], ctx)
        if prog == "python3":
            raise _Fail("sim: python3: only xfleet's block sampler is simulated\n", 127)
        if prog in ("xfleet-sim-target", "sha256sum"):
            return self._target(prog, args, ctx)
        raise _Fail(f"sim: {prog}: command not found (simulated nodes answer zfs and zpool "
                    f"commands, and xfleet-sim-target)\n", 127)

    # -- the simulated NVMe-oF target daemon (TARGET: its `target` inventory setting) ---------
    # `xfleet-sim-target installed|running|ready|exports|restart PATH VERSION|stage PATH SHA`
    # behind the `command` driver (docs/sim.md). It exports every volume of the node with
    # pinned identities, in the nvmet listing's format; a version ending in "-broken" never
    # gets ready. Packages are files put with put_file.sh (only their digest is kept).
    def _target_path(self) -> Path | None:
        return self.store.path.with_suffix(".target.json") if self.store else None

    def _target_state(self) -> dict[str, Any]:
        path = self._target_path()
        if path is not None and path.exists():
            return dict(json.loads(path.read_text()))
        mem = getattr(self, "_target_mem", None)
        return dict(mem) if mem else {"installed": "1.0", "running": "1.0", "files": {}}

    def _target_save(self, st: dict[str, Any]) -> None:
        path = self._target_path()
        if path is None:
            self._target_mem = st
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, path)

    def _target(self, prog: str, args: list[str], ctx: _Ctx) -> Iterator[str]:

        with self._lock:
            st = self._target_state()
            if prog == "put_file":  # put_file.sh PATH, the package on stdin
                st["files"][args[0]] = hashlib.sha256(ctx.stdin or b"").hexdigest()
                self._target_save(st)
                return iter(())
            if prog == "sha256sum":
                path = args[-1]
                if path not in st["files"]:
                    raise _Fail(f"sha256sum: {path}: No such file or directory\n", 1)
                return iter([f"{st['files'][path]}  {path}"])
            op, rest = (args[0], args[1:]) if args else ("", [])
            if op in ("installed", "running", "ready"):
                v = st["installed"] if op == "installed" else st["running"]
                if op == "ready" and not v:
                    raise _Fail("not ready\n", 1)
                return iter([v] if v else [])
            if op == "stage" and len(rest) == 2:
                if st["files"].get(rest[0]) != rest[1]:
                    raise _Fail(f"stage: {rest[0]}: digest mismatch\n", 1)
                return iter(())
            if op == "restart" and len(rest) == 2:
                path, version = rest
                if path and path not in st["files"]:
                    raise _Fail(f"dpkg: error: cannot access archive '{path}'\n", 2)
                st["installed"] = version or st["installed"]
                st["running"] = None if st["installed"].endswith("-broken") else st["installed"]
                self._target_save(st)
                return iter(())
            if op == "exports":
                if not st["running"] and not st["installed"].endswith("-broken"):
                    return iter(())
                lines = self._dispatch(["zfs", "list", "-Hp", "-t", "volume", "-o", "name,guid"],
                                       _Ctx(argv=["zfs", "list"]))
                node = self.host.name

                def rows() -> Iterator[str]:
                    for line in lines:
                        name, guid = line.split("\t")
                        u, g = pinned_identity(node, guid)
                        yield (f"nqn.2026-01.io.xfleet.sim:{node}:{name.replace('/', '.')}\t1\t"
                               f"/dev/zvol/{name}\t{u}\t{g}\t1")
                return rows()
        raise _Fail("usage: xfleet-sim-target installed|running|ready|exports|"
                    "restart PATH VERSION|stage PATH SHA256\n", 2)

    def _sample_blocks(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        """xfleet's block sampler (remote/programs/sample_blocks.py BS WANT /dev/zvol/NAME OFF...):
        deterministic synthetic blocks, a mix of holes, text-like and random bytes in shares
        seeded by the volume's name (docs/compression.md); any other python3 program is not
        found."""
        if len(args) < 3:
            raise _Fail("usage: sample_blocks BS WANT DEVICE OFFSET...\n", 2)
        bs, want, dev = int(args[0]), int(args[1]), args[2]
        name = dev.removeprefix("/dev/zvol/")
        rec = _View(self, self._current()).record(name) if dev.startswith("/dev/zvol/") \
            else None
        if rec is None or rec["type"] != "volume":
            raise _Fail(f"cannot open {dev}: No such file or directory\n", 2)
        return _synthetic_blocks(name, bs, want, args[3:])

    def _version(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        return iter([ZFS_VERSION, ZFS_KMOD_VERSION])

    def _mutate(self, fn: Callable[[_Txn], list[str]], ctx: _Ctx | None = None,
                ) -> Iterator[str]:
        """Run a mutation atomically: on a copy of the latest overlay, persisted on success
        with the history records and events it logged (and, when `ctx` ends without error,
        the command line, as zfs logs it)."""
        store = self.store
        journal = self.journal
        with self._lock, journal.lock:
            journal.conn.execute("BEGIN IMMEDIATE")
            try:
                if store is not None and store.generation() != self.overlay.generation:
                    fresh = _Overlay()
                    store.load(fresh)
                    self.overlay = fresh
                txn = _Txn(self, self.overlay.copy())
                out = fn(txn)
                if txn.last_pool is not None and ctx is not None and ctx.code == 0 \
                        and ctx.argv:
                    txn.command(ctx.argv)
                if txn.changed or txn.last_pool is not None or txn.posted:
                    if store is not None:
                        store.save(txn.ov, txn.changed)
                    else:
                        txn.ov.generation = str(int(txn.ov.generation) + 1)
                    self.overlay = txn.ov
                    journal.append(txn)
                journal.conn.execute("COMMIT")
            except BaseException:
                journal.conn.execute("ROLLBACK")
                raise
        return iter(out)

    # -- boot, events, history -----------------------------------------------------------------
    def _boot(self, *, first: bool = False) -> None:
        """Import the pools as a booting node does: the event queue restarts (eids from 1)
        with open, config_sync, pool_import, import, config_sync per pool; history gets the
        open and import records and the import command; every pool gets a new load_guid.
        `first`: only if the node never booted (a new state)."""

        def op(txn: _Txn) -> list[str]:
            j = self.journal
            boot = j.get("boot")
            if first and boot is not None:
                return []
            j.clear_events()
            j.put("eid", 0)
            j.put("boot", (boot or 0) + 1)
            uts = f"{_POOL_VERSION_TEXT}; uts {self.node} {_UTS}"
            for pool in self.base.pools:
                txg = txn.stamp(pool)
                txn.internal(pool, "open", uts, txg)
                txn.post(pool, "sysevent.fs.zfs.config_sync", [], txg)
                txn.post(pool, "sysevent.fs.zfs.pool_import", [], txg)
                txn.stamp(pool)
                txg = txn.stamp(pool)
                txn.internal(pool, "import", uts, txg)
                txn.post(pool, "sysevent.fs.zfs.config_sync", [], txg)
            txn.command(["zpool", "import", "-c", "/etc/zfs/zpool.cache", "-aN"])
            return []

        if first:
            with self.journal.lock:
                if self.journal.get("boot") is not None:
                    return
        list(self._mutate(op))

    def reboot(self) -> None:
        """Simulate a reboot of this node (for every transport of it, in any process): the
        kernel's event queue is emptied and its eids restart at 1, every pool is imported
        again (new load_guid; the import's events and history records), datasets unchanged.
        Open `zpool events -f` streams of the node end as if the connection dropped."""
        self._boot()

    def load_guid(self, pool: str) -> int:
        """The pool's current load_guid (changes at every import, i.e. every reboot)."""
        with self.journal.lock:
            boot = self.journal.get("boot") or 0
        return _mix(self.node, pool, "load", boot) | 1

    # -- zfs list --------------------------------------------------------------------------------
    def _zfs_list(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, names = _getopt("list", args, "Hpr", "odtsS")
        scripted = parsable = recursive = False
        cols = ["name", "used", "available", "referenced", "mountpoint"]
        kinds: frozenset[str] | None = None
        depth: int | None = None
        for o, v in opts:
            if o == "H":
                scripted = True
            elif o == "p":
                parsable = True
            elif o == "r":
                recursive = True
            elif o == "o":
                cols = _parse_columns("list", v)
            elif o == "t":
                kinds = _parse_types("list", v)
            elif o == "d":
                if not v.isdigit():
                    raise _usage("list", f"invalid depth '{v}'")
                depth = int(v)
                recursive = True
            else:
                raise _Fail(f"sim: 'zfs list -{o}' (sorting) is not simulated; rows come in the "
                            "default name order\n", 2)
        if kinds is None:
            kinds = frozenset({"fs", "vol"} | {"snap" for n in names if "@" in n}
                              | {"bm" for n in names if "#" in n})
        if names and not recursive and kinds == frozenset({"snap"}):
            recursive, depth = True, 1
        view = _View(self, self._current())
        lines = chain.from_iterable(self._list_chunks(view, cols, kinds, names, recursive,
                                                      depth, ctx))
        if scripted and parsable:
            return lines
        return self._present(lines, cols, scripted, parsable)

    def _present(self, lines: Iterable[str], cols: list[str], scripted: bool,
                 parsable: bool) -> Iterator[str]:
        rows = []
        for line in lines:
            vals = line.split("\t")
            if not parsable:
                vals = [_human(c, v) for c, v in zip(cols, vals, strict=True)]
            if scripted:
                yield "\t".join(vals)
            else:
                rows.append(vals)
        if not scripted and rows:
            header = [_HEADERS.get(c, c.upper()) for c in cols]
            right = {i for i, c in enumerate(cols) if c in _SIZE_PROPS
                     or c in ("compressratio", "refcompressratio", "createtxg", "guid")}
            yield from _table(header, rows, right)

    def _list_chunks(self, view: _View, cols: list[str], kinds: frozenset[str],
                     names: list[str], recursive: bool, depth: int | None,
                     ctx: _Ctx) -> Iterator[list[str]]:
        """`zfs list` output as lists of lines (one list per tenant on the fast path, so the
        per-line work stays in C: chain.from_iterable flattens them)."""
        b = self.base
        need_space = any(not (c in _IDENTITY or ":" in c) for c in cols)
        need_avail = "available" in cols
        roots = _roots(view, names, ctx)
        if names and not roots:
            return
        if names and not recursive:
            found = []
            for n in roots:
                d = self._derived_for(view, n, need_space)
                assert d is not None
                if _KIND_OF[d["type"]] not in kinds:
                    ctx.fail(f"cannot open '{n}': operation not applicable to datasets of "
                             "this type")
                    continue
                found.append(d)
            found.sort(key=lambda d: _key(d["name"], d["createtxg"]))
            yield [view.line(d, cols) for d in found]
            return
        fast_ok = all(c in FAST_COLUMNS or ":" in c for c in cols)
        for pool, pool_roots in _by_pool(b.pools, roots):
            whole = pool_roots is None or pool in pool_roots
            root_row = whole and "fs" in kinds
            totals: tuple[int, int, int] | None = None
            spool = False
            if need_space:
                totals = b.cached_totals(pool, self.store)
                if totals is None and (need_avail or (root_row and depth is not None)):
                    totals = view.totals(pool)
                elif totals is None and root_row:
                    spool = True
            fast: _Fast | None = None
            if fast_ok:
                gen = _compile(tuple(cols), kinds, need_space, self.settings.tenant_property)
                fast = _Fast(b, gen, pool, view.env(pool, cols, need_avail))
            if not spool:
                if root_row:
                    yield [view.line(view.root(pool, totals), cols)]
                line = view.line
                for it in view.items(pool, pool_roots, depth, kinds, fast, fast is not None):
                    if type(it) is list:
                        yield it
                    else:
                        yield [line(it, cols)]
                continue
            with tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n") as tmp:
                write = tmp.write
                line = view.line
                for it in view.items(pool, pool_roots, depth, kinds, fast, fast is not None):
                    if type(it) is list:
                        if it:
                            write("\n".join(it))
                            write("\n")
                    else:
                        write(line(it, cols) + "\n")
                a, z = b.pool_range[pool]
                u, lu, ph = fast.sums if fast is not None else (0, 0, 0)
                done = fast.done if fast is not None else set()
                for k in range(a, z):
                    if k not in done:
                        bu, blu, bph = view.base_fs_totals(k)
                        u, lu, ph = u + bu, lu + blu, ph + bph
                totals = (u, lu, ph)
                b.remember_totals(pool, totals, self.store)
                yield [view.line(view.root(pool, totals), cols)]
                tmp.seek(0)
                pending = ""
                while True:
                    data = tmp.read(1 << 20)
                    if not data:
                        break
                    parts = (pending + data).split("\n")
                    pending = parts.pop()
                    yield parts
                if pending:
                    yield [pending]

    def _derived_for(self, view: _View, name: str, need_space: bool) -> Rec | None:
        if name in self.base.pool_range:
            return view.root(name, view.totals(name) if need_space else None)
        return view.derived(name)

    # -- zfs get -------------------------------------------------------------------------------
    def _zfs_get(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("get", args, "rHpj", "dots")
        recursive = scripted = parsable = as_json = False
        depth: int | None = None
        fields = ["name", "property", "value", "source"]
        kinds: frozenset[str] | None = None
        sources: set[str] | None = None
        for o, v in opts:
            if o == "r":
                recursive = True
            elif o == "H":
                scripted = True
            elif o == "p":
                parsable = True
            elif o == "j":
                as_json = True
            elif o == "d":
                if not v.isdigit():
                    raise _usage("get", f"invalid depth '{v}'")
                depth, recursive = int(v), True
            elif o == "o":
                fields = []
                for f in v.split(","):
                    if f == "all":
                        fields.extend(["name", "property", "value", "received", "source"])
                    elif f in ("name", "property", "value", "received", "source"):
                        fields.append(f)
                    else:
                        raise _usage("get", f"invalid column name '{f}'")
            elif o == "t":
                kinds = _parse_types("get", v)
            elif o == "s":
                sources = set()
                for word in v.split(","):
                    if word not in ("local", "default", "inherited", "temporary", "received",
                                    "none"):
                        raise _usage("get", f"invalid source '{word}'")
                    sources.add(word)
        if not rest:
            raise _usage("get", "missing property argument")
        spec, names = rest[0], rest[1:]
        props: list[str] | None = None
        if spec != "all":
            props = []
            for word in spec.split(","):
                canon = _canon_prop(word)
                if canon is None:
                    raise _usage("get", f"bad property list: invalid property '{word}'")
                props.append(canon)
        if kinds is None:
            kinds = _ALL_KINDS
        if names and not recursive and kinds == frozenset({"snap"}):
            recursive, depth = True, 1
        need_space = props is None or any(not (p in _IDENTITY or ":" in p) for p in props)
        view = _View(self, self._current())
        if as_json:
            return self._get_json(view, props, sources, kinds, names, recursive, depth,
                                  need_space, ctx)
        out = self._get_lines(view, props, fields, sources, kinds, names, recursive, depth,
                              need_space, parsable, ctx)
        if scripted:
            return out
        return self._get_table(out, fields)

    def _get_table(self, lines: Iterable[str], fields: list[str]) -> Iterator[str]:
        rows = [line.split("\t") for line in lines]
        yield from _table([f.upper() for f in fields], rows, set())

    def _records(self, view: _View, kinds: frozenset[str], names: list[str], recursive: bool,
                 depth: int | None, need_space: bool, ctx: _Ctx) -> Iterator[Rec]:
        """Derived records selected like `zfs get`/`zfs list` select them."""
        roots = _roots(view, names, ctx)
        if names and not roots:
            return
        if names and not recursive:
            found = []
            for n in roots:
                d = self._derived_for(view, n, need_space)
                if d is not None and _KIND_OF[d["type"]] in kinds:
                    found.append(d)
            found.sort(key=lambda d: _key(d["name"], d["createtxg"]))
            yield from found
            return
        for pool, pool_roots in _by_pool(self.base.pools, roots):
            if (pool_roots is None or pool in pool_roots) and "fs" in kinds:
                yield view.root(pool, view.totals(pool) if need_space else None)
            yield from view.items(pool, pool_roots, depth, kinds, None, keep=False)

    def _get_lines(self, view: _View, props: list[str] | None, fields: list[str],
                   sources: set[str] | None, kinds: frozenset[str], names: list[str],
                   recursive: bool, depth: int | None, need_space: bool, parsable: bool,
                   ctx: _Ctx) -> Iterator[str]:
        records = self._records(view, kinds, names, recursive, depth, need_space, ctx)
        for d, pairs in self._get_pairs(view, records, props, sources):
            for prop, value, source in pairs:
                shown = value if parsable else _human(prop, value)
                cells = {"name": d["name"], "property": prop, "value": shown,
                         "received": "-", "source": source}
                yield "\t".join(cells[f] for f in fields)

    def _get_json(self, view: _View, props: list[str] | None, sources: set[str] | None,
                  kinds: frozenset[str], names: list[str], recursive: bool, depth: int | None,
                  need_space: bool, ctx: _Ctx) -> Iterator[str]:
        """`zfs get -j -p`: one line of JSON, printed the way OpenZFS 2.3 prints it (see
        _zfs_json_string), nothing at all when a name cannot be opened, and cut short (exit
        0) at a value that is not UTF-8."""
        tprop = self.settings.tenant_property
        fast = recursive and depth is None and props is not None and sources is not None \
            and all(":" in p for p in props) and sources <= {"local", "received"}
        records: Iterable[Any] = self._set_values_fast(view, kinds, names, ctx) if fast else \
            self._records(view, kinds, names, recursive, depth, need_space, ctx)
        head = '{"output_version":{"command":"zfs get","vers_major":0,"vers_minor":1},' \
            '"datasets":{'
        out = [head]
        first = True
        cut = False

        def tenants(items: Iterable[Any]) -> Iterator[Any]:
            for it in items:
                if type(it) is tuple:  # (name, createtxg) of an untouched tenant filesystem
                    name, txg = it
                    yield ({"name": name, "type": "filesystem", "createtxg": txg},
                           [(tprop, name.rsplit("/", 1)[1], "local")] if props is not None
                           and tprop in props else [])
                else:
                    yield from self._get_pairs(view, [it], props, sources)

        for d, pairs in tenants(records):
            if not pairs:
                continue
            name = d["name"]
            entry = [_zfs_json_string(name) or "", ":{\"name\":", _zfs_json_string(name) or "",
                     ",\"type\":\"", d["type"].upper(), "\",\"pool\":\"", _pool_of(name),
                     "\",\"createtxg\":\"", str(d["createtxg"]), "\""]
            if "@" in name:
                ds, snap = name.split("@", 1)
                entry += [",\"dataset\":", _zfs_json_string(ds) or "",
                          ",\"snapshot_name\":", _zfs_json_string(snap) or ""]
            entry.append(",\"properties\":{")
            for i, (prop, value, source) in enumerate(pairs):
                kind, _, data = source.partition(" from ")
                entry += ["," if i else "", _zfs_json_string(prop) or "", ":{\"value\":"]
                shown = _zfs_json_string(value)
                if shown is None:  # ZFS's printer stops at the first byte that is not UTF-8
                    entry.append(_zfs_json_string_until_bad(value))
                    cut = True
                    break
                entry += [shown, ",\"source\":{\"type\":\"",
                          "NONE" if kind == "-" else kind.upper(), "\",\"data\":",
                          _zfs_json_string(data or "-") or "", "}}"]
            out.append(("" if first else ",") + "".join(entry))
            first = False
            if cut:
                break
            out.append("}}")
        if ctx.code != 0:
            return  # like ZFS: a name it could not open, and it prints no JSON at all
        yield "".join(out) + ("" if cut else "}}")

    def _set_values_fast(self, view: _View, kinds: frozenset[str], names: list[str],
                         ctx: _Ctx) -> Iterator[Any]:
        """What `zfs get -r -s local,received USERPROPS` looks at: derived records where the
        overlay touched something, and for each untouched tenant only its filesystem, the one
        dataset of the tenant with a user property of its own (name, createtxg)."""
        b = self.base
        roots = _roots(view, names, ctx)
        if names and not roots:
            return
        gen = _compile(("name", "createtxg"), frozenset({"fs"}), False,
                       self.settings.tenant_property)
        for pool, pool_roots in _by_pool(b.pools, roots):
            if (pool_roots is None or pool in pool_roots) and "fs" in kinds:
                yield view.root(pool, None)
            fast = _Fast(b, gen, pool, view.env(pool, (), False))
            for it in view.items(pool, pool_roots, None, kinds, fast, False):
                if type(it) is list:
                    for line in it:
                        name, txg = line.split("\t")
                        yield (name, txg)
                else:
                    yield it

    def _get_pairs(self, view: _View, records: Iterable[Rec], props: list[str] | None,
                   sources: set[str] | None) -> Iterator[tuple[Rec, list[tuple[str, str, str]]]]:
        for d in records:
            letter = _TYPE_LETTER[d["type"]]
            pairs: list[tuple[str, str, str]] = []
            if props is None:
                for prop, types in _PROP_ORDER:
                    if letter not in types:
                        continue
                    got = view.value(d, prop)
                    if got is None or got[0] is None:
                        continue
                    pairs.append((prop, got[0], got[1]))
                for prop in self._user_props(view, d):
                    value, source = view.effective(d, prop)
                    pairs.append((prop, value, source))
            else:
                for prop in props:
                    got = view.value(d, prop)
                    if got is None or got[0] is None:
                        pairs.append((prop, "-", "-"))
                    else:
                        pairs.append((prop, got[0], got[1]))
            if sources is not None:
                pairs = [(prop, value, source) for prop, value, source in pairs
                         if ("none" if source == "-" else source.split(" ", 1)[0]) in sources]
            yield d, pairs

    def _user_props(self, view: _View, d: Rec) -> list[str]:
        found: set[str] = set()
        if d["type"] == "bookmark":
            return []
        cur: Rec | None = d
        while cur is not None:
            found.update(k for k in (cur.get("local") or {}) if ":" in k)
            parent = _parent(cur["name"])
            cur = view.record(parent) if parent else None
        return sorted(found)

    # -- zpool -----------------------------------------------------------------------------------
    _POOL_PROPS = ("name", "size", "allocated", "free", "checkpoint", "expandsize",
                   "fragmentation", "capacity", "dedupratio", "health", "altroot", "guid",
                   "ashift", "version", "bcloneratio", "bcloneused", "bclonesaved", "readonly",
                   "autotrim", "autoexpand", "autoreplace", "failmode", "listsnapshots",
                   "comment", "freeing", "leaked", "load_guid", "cachefile", "bootfs",
                   "delegation", "multihost")
    _POOL_ALIASES = {"alloc": "allocated", "cap": "capacity", "frag": "fragmentation",
                     "dedup": "dedupratio", "expandsz": "expandsize", "ckpoint": "checkpoint"}

    def _pool_values(self, view: _View, pool: str) -> dict[str, tuple[str, str]]:
        features = {f"feature@{f}": (_FEATURE_STATES.get(f, "enabled"), "local")
                    for f in _FEATURES}
        return {**self._pool_figures(view, pool), **features}

    def _pool_figures(self, view: _View, pool: str) -> dict[str, tuple[str, str]]:
        size, alloc, _ = view.pool_figures(pool)
        h = _mix(self.settings.seed, self.node, "frag", pool)
        cap = alloc * 100 // size if size else 0
        frag = min(80, 2 + h % 12 + cap // 4)
        ro, df = "-", "default"
        return {
            "name": (pool, ro), "size": (str(size), ro), "allocated": (str(alloc), ro),
            "free": (str(size - alloc), ro), "checkpoint": ("-", ro), "expandsize": ("-", ro),
            "fragmentation": (str(frag), ro), "capacity": (str(cap), ro),
            "dedupratio": ("1.00", ro), "health": ("ONLINE", ro), "altroot": ("-", df),
            "guid": (str(self.base.pool_guid[pool]), ro), "ashift": (str(_ASHIFT), "local"),
            "version": ("-", df), "bcloneratio": ("1.00", ro), "bcloneused": ("0", ro),
            "bclonesaved": ("0", ro), "readonly": ("off", ro), "autotrim": ("off", df),
            "autoexpand": ("off", df), "autoreplace": ("off", df), "failmode": ("wait", df),
            "listsnapshots": ("off", df), "comment": ("-", df), "freeing": ("0", ro),
            "leaked": ("0", ro), "load_guid": (str(self.load_guid(pool)), ro),
            "cachefile": ("-", df), "bootfs": ("-", df), "delegation": ("on", df),
            "multihost": ("off", df),
        }

    def _pool_args(self, pools: list[str], ctx: _Ctx) -> list[str]:
        if not pools:
            return list(self.base.pools)
        out = []
        for p in pools:
            if p in self.base.pool_range:
                out.append(p)
            else:
                ctx.fail(f"cannot open '{p}': no such pool")
        return out

    def _zpool_list(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, pools = _getopt("zpool list", args, "gHLpPv", "oT")
        scripted = parsable = False
        cols = ["name", "size", "allocated", "free", "checkpoint", "expandsize",
                "fragmentation", "capacity", "dedupratio", "health", "altroot"]
        for o, v in opts:
            if o == "H":
                scripted = True
            elif o == "p":
                parsable = True
            elif o == "o":
                cols = []
                for word in v.split(","):
                    prop = self._POOL_ALIASES.get(word, word)
                    if prop not in self._POOL_PROPS:
                        raise _usage("zpool list", f"property '{word}' is not a valid pool "
                                     "or vdev property")
                    cols.append(prop)
        view = _View(self, self._current())
        rows = []
        for pool in self._pool_args(pools, ctx):
            vals = self._pool_values(view, pool)
            rows.append([vals[c][0] if parsable else _human(c, vals[c][0]) for c in cols])
        if scripted:
            return iter(["\t".join(r) for r in rows])
        header = [{"allocated": "ALLOC", "fragmentation": "FRAG", "capacity": "CAP",
                   "dedupratio": "DEDUP", "checkpoint": "CKPOINT",
                   "expandsize": "EXPANDSZ"}.get(c, c.upper()) for c in cols]
        return _table(header, rows, {i for i, c in enumerate(cols) if c in _SIZE_PROPS})

    def _zpool_get(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("zpool get", args, "Hp", "o")
        scripted = parsable = False
        fields = ["name", "property", "value", "source"]
        for o, v in opts:
            if o == "H":
                scripted = True
            elif o == "p":
                parsable = True
            else:
                fields = v.split(",")
                for f in fields:
                    if f not in ("name", "property", "value", "source"):
                        raise _usage("zpool get", f"invalid column name '{f}'")
        if not rest:
            raise _usage("zpool get", "missing property argument")
        spec, pools = rest[0], rest[1:]
        if spec == "all":
            props = list(self._POOL_PROPS)
        else:
            props = [self._POOL_ALIASES.get(w, w) for w in spec.split(",")]
            for p in props:
                if p not in self._POOL_PROPS and not p.startswith("feature@"):
                    raise _usage("zpool get", f"bad property list: invalid property '{p}'")
            # a feature this ZFS does not know is left out silently, as real zpool does
            props = [p for p in props if not p.startswith("feature@")
                     or p[len("feature@"):] in _FEATURES]
        view = _View(self, self._current())
        out = []
        for pool in self._pool_args(pools, ctx):
            vals = self._pool_values(view, pool)
            for p in props:
                value, source = vals[p]
                cells = {"name": pool, "property": p,
                         "value": value if parsable else _human(p, value), "source": source}
                out.append([cells[f] for f in fields])
        if scripted:
            return iter(["\t".join(r) for r in out])
        return _table([f.upper() for f in fields], out, set())

    def _zpool_events(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("zpool events", args, "vHfc", "")
        flags = {o for o, _ in opts}
        if len(rest) > 1:
            raise _usage("zpool events", "too many arguments")
        pool = rest[0] if rest else None
        if pool is not None and _name_problem(pool, snapshot=False) is not None:
            raise _usage("zpool events", f"invalid pool name '{pool}'")
        if "c" in flags and (pool is not None or flags & {"v", "H", "f"}):
            raise _usage("zpool events", "invalid options combined with -c")
        if "c" in flags:
            with self._lock, self.journal.lock:
                self.journal.conn.execute("BEGIN IMMEDIATE")
                try:
                    n = self.journal.clear_events()
                    self.journal.conn.execute("COMMIT")
                except BaseException:
                    self.journal.conn.execute("ROLLBACK")
                    raise
            return iter([f"cleared {n} events"])
        scripted, verbose = "H" in flags, "v" in flags
        if "f" in flags:
            return self._follow_events(pool, scripted, verbose, ctx.timeout)
        with self.journal.lock:
            queued = self.journal.events()
        out = [] if scripted else [f"{'TIME':<30} CLASS"]
        for eid, ev in queued:
            if pool is None or ev.get("pool") == pool:
                out += _event_lines(eid, ev, scripted, verbose)
        return iter(out)

    def _follow_events(self, pool: str | None, scripted: bool, verbose: bool,
                       timeout: float) -> Iterator[str]:
        """`zpool events -f`: the queued events, then new ones as any transport of this node
        posts them (polled every 50 ms), until the consumer closes the stream. Like the
        kernel's cursor, a reader whose last event was dropped from the queue (overflow or
        `zpool events -c`) is told "dropped 1 events" and goes on from the oldest event left.
        A reboot of the node or close() of this transport ends the stream like a lost
        connection; `timeout` seconds without an event end it like an SSH command timeout."""
        epoch = self._epoch
        journal = self.journal
        with journal.lock:
            boot = journal.get("boot")
        cursor: int | None = None
        pending_drop = False  # like the kernel cursor's ze_dropped, told with the next event
        if not scripted:
            yield f"{'TIME':<30} CLASS"
        last_output = time.monotonic()
        first = True
        while True:
            if not first:
                time.sleep(0.05)
            first = False
            with self._lock:
                if self._epoch != epoch:
                    raise TransportError("connection lost while running zpool; it may or may "
                                         "not have completed", where=self.node)
                with journal.lock:
                    if journal.get("boot") != boot:
                        raise TransportError("connection lost while running zpool; it may or "
                                             "may not have completed", where=self.node)
                    dropped = cursor is not None and not journal.has_event(cursor)
                    new = journal.events(0 if dropped or cursor is None else cursor)
            if dropped:
                cursor = None
                pending_drop = True
            lines: list[str] = []
            for eid, ev in new:
                if pending_drop:
                    lines.append("dropped 1 events")
                    pending_drop = False
                cursor = eid
                if pool is None or ev.get("pool") == pool:
                    lines += _event_lines(eid, ev, scripted, verbose)
            if lines:
                last_output = time.monotonic()
                yield from lines
            elif time.monotonic() - last_output > timeout:
                raise CommandTimeout(f"no output from zpool for {timeout:g}s; command "
                                     "abandoned", where=self.node)

    def _zpool_history(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, pools = _getopt("zpool history", args, "li", "")
        flags = {o for o, _ in opts}
        internal, longfmt = "i" in flags, "l" in flags
        for pool in self._pool_args(pools, ctx):
            yield f"History for '{pool}':"
            for h in self._creation_history(pool):
                yield from _history_lines(h, internal, longfmt)
            after = 0
            while True:
                with self.journal.lock:
                    page = self.journal.history(pool, after, 5000)
                if not page:
                    break
                for seq, h in page:
                    after = seq
                    yield from _history_lines(h, internal, longfmt)
            yield ""

    def _creation_history(self, pool: str) -> list[Rec]:
        """The records `zpool create` logged (kept at the head of the history for ever)."""
        b = self.base
        t, host = b.pool_created[pool], self.node

        def internal(txg: int, op: str, text: str, ds: bool = False) -> Rec:
            rec: Rec = {"kind": "int", "time": t, "txg": txg, "op": op, "str": text,
                        "host": host}
            if ds:
                rec.update(ds=pool, dsid=_dsid(b.root_guid[pool]))
            return rec

        out = [internal(4, "create", f"{_POOL_VERSION_TEXT}; uts {host} {_UTS}"),
               internal(4, "set", f"ashift={_ASHIFT}")]
        out += [internal(4, "set", f"feature@{f}=enabled") for f in _FEATURES]
        local = b.root_record(pool)["local"]
        out += [internal(5, "set", f"{p}={_prop_number(p, v)}", ds=True)
                for p, v in local.items()]
        i = b.pools.index(pool)
        disks = ["mirror", f"nvme{2 * i}n1", f"nvme{2 * i + 1}n1"] \
            if self.settings.vdev == "mirror" else [f"nvme{i}n1"]
        cmd = ["zpool", "create", "-o", f"ashift={_ASHIFT}",
               *(w for p, v in local.items() for w in ("-O", f"{p}={v}")), pool, *disks]
        out.append({"kind": "cmd", "time": t, "cmd": " ".join(cmd), "host": host})
        return out

    def _zpool_status(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, pools = _getopt("zpool status", args, "DegiLpPstvx", "Tc")
        flags = {o for o, _ in opts}
        chosen = self._pool_args(pools, ctx)
        if "x" in flags:
            return iter(["all pools are healthy"] if chosen else [])
        out: list[str] = []
        disk = 0
        for n, pool in enumerate(chosen):
            if n:
                out.append("")
            h = _mix(self.settings.seed, self.node, "scrub", pool)
            end = self.settings.now - (h % (20 * _DAY)) - 3 * _DAY
            took = 600 + h % 5000
            out += [f"  pool: {pool}", " state: ONLINE",
                    f"  scan: scrub repaired 0B in {took // 3600:02d}:{took // 60 % 60:02d}:"
                    f"{took % 60:02d} with 0 errors on {_ctime(end)}", "config:", ""]
            tree: list[tuple[int, str]] = [(0, pool)]
            if self.settings.vdev == "mirror":
                tree.append((2, "mirror-0"))
                tree += [(4, f"nvme{disk}n1"), (4, f"nvme{disk + 1}n1")]
                disk += 2
            else:
                tree.append((2, f"nvme{disk}n1"))
                disk += 1
            width = max(10, max(len(name) + depth for depth, name in tree))
            out.append(f"\t{'NAME':<{width}}  {'STATE':<8} {'READ':>5} {'WRITE':>5} "
                       f"{'CKSUM':>5}")
            for depth, name in tree:
                out.append(f"\t{' ' * depth}{name:<{width - depth}}  {'ONLINE':<8} "
                           f"{'0':>5} {'0':>5} {'0':>5}")
            out += ["", "errors: No known data errors"]
        return iter(out)

    # -- property assignment ---------------------------------------------------------------------
    def _assign(self, rec: Rec, prop_text: str, value: str, prefix: str,
                creating: bool = False) -> None:
        """Validate `prop=value` for `rec` (a private copy) and apply it; raise _Fail."""
        prop = _canon_prop(prop_text)
        typ = rec["type"]
        if prop is None:
            raise _Fail(f"{prefix}: invalid property '{prop_text}'")
        if ":" in prop:
            if len(value) > 8191:
                raise _Fail(f"{prefix}: property value too long")
            rec.setdefault("local", {})[prop] = value
            return
        if typ == "snapshot":
            raise _Fail(f"{prefix}: this property can not be modified for snapshots")
        if prop == "volblocksize" and creating:
            return  # handled by create
        if prop not in _SETTABLE:
            if prop in _READONLY or prop in _ALL_PROPS:
                raise _Fail(f"{prefix}: '{prop}' is readonly")
            raise _Fail(f"{prefix}: invalid property '{prop_text}'")
        types, choices = _SETTABLE[prop]
        if _TYPE_LETTER[typ] not in types:
            raise _Fail(f"{prefix}: '{prop}' does not apply to datasets of this type")
        local = rec.setdefault("local", {})
        if prop == "compression":
            if value not in _COMPRESS_VALUES:
                raise _Fail(f"{prefix}: 'compression' must be one of '{_COMPRESS_HELP}'")
            # zfs prints gzip-6 as "gzip" (the first name of that value in its table;
            # seen on the lab's OpenZFS 2.3)
            local[prop] = "gzip" if value == "gzip-6" else value
            return
        if choices is not None:
            if value not in choices:
                raise _Fail(f"{prefix}: '{prop}' must be one of '{' | '.join(choices)}'")
            local[prop] = value
            return
        if prop == "mountpoint":
            if value not in ("none", "legacy") and not value.startswith("/"):
                raise _Fail(f"{prefix}: 'mountpoint' must be an absolute path, 'none', or "
                            "'legacy'")
            local[prop] = value
            return
        if prop == "refreservation" and value == "auto":
            if typ != "volume":
                raise _Fail(f"{prefix}: 'refreservation=auto' only supported on volumes")
            rec["refreservation"] = _reservation(rec["volsize"], rec["volblocksize"])
            return
        n = 0 if value == "none" and prop != "volsize" else _parse_size(value)
        if n is None:
            raise _Fail(f"{prefix}: bad numeric value '{value}'")
        if prop == "recordsize":
            if n < 512 or n > (16 << 20) or n & (n - 1):
                raise _Fail(f"{prefix}: 'recordsize' must be power of 2 from 512B to 16M")
            local[prop] = str(n)
        elif prop == "refreservation":
            rec["refreservation"] = n
        elif prop == "volsize":
            vbs = rec["volblocksize"]
            if n == 0:
                raise _Fail(f"{prefix}: volume size cannot be zero")
            if n % vbs:
                raise _Fail(f"{prefix}: volume size must be a multiple of volume block size")
            old = rec["volsize"]
            if rec["refreservation"] and rec["refreservation"] == _reservation(old, vbs):
                rec["refreservation"] = _reservation(n, vbs)
            rec["volsize"] = n
        else:
            local[prop] = str(n)

    def _parse_assignments(self, cmd: str, items: list[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for item in items:
            if "=" not in item:
                raise _usage(cmd, "missing '=' for property argument")
            k, v = item.split("=", 1)
            if k in seen:
                raise _usage(cmd, f"property '{k}' specified multiple times")
            seen.add(k)
            out.append((k, v))
        return out

    def _check_parent(self, txn: _Txn, name: str, make_parents: bool, prefix: str,
                      ) -> list[str]:
        """Missing ancestors of `name` to create (with -p), or raise like libzfs."""
        pool = name.split("/", 1)[0]
        if pool not in self.base.pool_range:
            raise _Fail(f"{prefix}: no such pool '{pool}'")
        missing: list[str] = []
        parent = _parent(name)
        while parent is not None:
            rec = txn.view.record(parent)
            if rec is not None:
                if rec["type"] != "filesystem":
                    raise _Fail(f"{prefix}: parent is not a filesystem")
                break
            missing.append(parent)
            parent = _parent(parent)
        if missing and not make_parents:
            raise _Fail(f"{prefix}: parent does not exist")
        return list(reversed(missing))

    def _new_dataset(self, txn: _Txn, name: str, typ: str) -> Rec:
        pool = name.split("/", 1)[0]
        rec: Rec = {
            "name": name, "type": typ, "guid": txn.guid(name), "createtxg": txn.txg(pool),
            "creation": txn.now, "origin": None, "volsize": None, "volblocksize": None,
            "referenced": _FS_REF, "logicalreferenced": _FS_LREF, "written": _FS_REF,
            "ubd": _FS_REF, "ubs": 0, "refreservation": 0, "lused_own": _FS_LREF,
            "snapshots_changed": 0, "local": {},
        }
        if typ == "volume":
            rec.update(referenced=_ZVOL_MIN_REF, logicalreferenced=_ZVOL_MIN_LREF,
                       written=_ZVOL_MIN_REF, ubd=_ZVOL_MIN_REF, lused_own=_ZVOL_MIN_LREF)
        return rec

    # -- zfs create ------------------------------------------------------------------------------
    def _zfs_create(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("create", args, "psu", "Vbo")
        parents = sparse = False
        volsize_text: str | None = None
        vbs_text: str | None = None
        props_text: list[str] = []
        for o, v in opts:
            if o == "p":
                parents = True
            elif o == "s":
                sparse = True
            elif o == "V":
                volsize_text = v
            elif o == "b":
                vbs_text = v
            elif o == "o":
                props_text.append(v)
        if len(rest) != 1:
            raise _usage("create", "missing filesystem argument" if not rest
                         else "too many arguments")
        name = rest[0]
        props = self._parse_assignments("create", props_text)
        for k, v in props:
            if k == "volblocksize":
                vbs_text = v
        if volsize_text is None and (sparse or vbs_text is not None):
            raise _usage("create", "'-s' and '-b' can only be used when creating a volume")
        volsize = None
        if volsize_text is not None:
            volsize = _parse_size(volsize_text)
            if volsize is None:
                raise _Fail(f"bad volume size '{volsize_text}': invalid numeric suffix")
        vbs = 16384
        if vbs_text is not None:
            got = _parse_size(vbs_text)
            if got is None:
                raise _Fail(f"bad volume block size '{vbs_text}'")
            vbs = got
        prefix = f"cannot create '{name}'"

        def op(txn: _Txn) -> list[str]:
            problem = _name_problem(name, snapshot=False)
            if problem is not None:
                raise _Fail(f"{prefix}: {problem}")
            existing = txn.view.record(name)
            if existing is not None:
                if parents and existing["type"] != "snapshot":
                    return []
                raise _Fail(f"{prefix}: dataset already exists")
            missing = self._check_parent(txn, name, parents, prefix)
            typ = "volume" if volsize is not None else "filesystem"
            rec = self._new_dataset(txn, name, typ)
            if volsize is not None:
                if vbs < 512 or vbs > 131072 or vbs & (vbs - 1):
                    raise _Fail(f"{prefix}: 'volblocksize' must be power of 2 from 512B to "
                                "128KB")
                if volsize == 0:
                    raise _Fail(f"{prefix}: volume size cannot be zero")
                if volsize % vbs:
                    raise _Fail(f"{prefix}: volume size must be a multiple of volume block "
                                "size")
                rec["volsize"] = volsize
                rec["volblocksize"] = vbs
                rec["refreservation"] = 0 if sparse else _reservation(volsize, vbs)
            for k, v in props:
                self._assign(rec, k, v, prefix, creating=True)
            need = rec["refreservation"] - rec["written"]
            pool = name.split("/")[0]
            if need > 0 and need > txn.view.avail(pool):
                raise _Fail(f"{prefix}: out of space")
            for p in missing:
                self._created(txn, self._new_dataset(txn, p, "filesystem"), None)
            args: list[tuple[str, Any]] = []
            for o, v in opts:
                if o == "V":
                    args.append(("volsize", volsize))
                elif o == "b":
                    args.append(("volblocksize", vbs))
                elif o == "o":
                    k = v.split("=", 1)[0]
                    args.append((_canon_prop(k) or k, None))
            if rec["refreservation"] and not any(k == "refreservation" for k, _ in args):
                args.append(("refreservation", None))
            self._created(txn, rec, args)
            if volsize is not None and vbs < 16384:
                ctx.err.append(
                    f"Warning: volblocksize ({vbs}) is less than the default minimum block size"
                    " (16384).\nTo reduce wasted space a volblocksize of 16384 is "
                    "recommended.\n")
            return []

        return self._mutate(op, ctx)

    def _created(self, txn: _Txn, rec: Rec, props: list[tuple[str, Any]] | None,
                 origin: Rec | None = None) -> None:
        """Put a new filesystem, volume or clone and log it like zfs_ioc_create/clone: the
        create (or clone) record in its own txg, then its properties (`props`: the ioctl's
        props in order, None values taken from `rec`; None: no props nvlist at all)."""
        name = rec["name"]
        pool = _pool_of(name)
        txg = txn.stamp(pool)
        rec["createtxg"] = txg
        txn.put(rec)
        if origin is not None:
            txn.internal(pool, "clone", f"origin={origin['name']} ({_dsid(origin['guid'])})",
                         txg, ds=name, guid=rec["guid"])
        else:
            txn.internal(pool, "create", " ", txg, ds=name, guid=rec["guid"])
        values = [(k, self._prop_arg(rec, k) if v is None else v) for k, v in props or ()]
        txn.log_props(rec, [k for k, _ in values if k not in ("volsize", "volblocksize")])
        args: list[tuple[str, Any]] = []
        if origin is not None:
            args.append(("origin", origin["name"]))
        else:
            args.append(("type", 3 if rec["type"] == "volume" else 2))
        if props is not None:
            args.append(("props", values))
        txn.ioctl(pool, "clone" if origin is not None else "create", args)

    @staticmethod
    def _prop_arg(rec: Rec, prop: str) -> Any:
        """The value of `prop` (set on `rec`) as libzfs passes it to the kernel: numbers for
        numeric and index properties, strings for the others."""
        if prop == "refreservation":
            return int(rec["refreservation"])
        if prop in ("volsize", "volblocksize"):
            return int(rec[prop])
        value = (rec.get("local") or {}).get(prop, "")
        if ":" in prop:
            return value
        num = _prop_number(prop, value)
        return int(num) if num.isdigit() else num

    # -- zfs snapshot ------------------------------------------------------------------------------
    def _zfs_snapshot(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, names = _getopt("snapshot", args, "r", "o")
        recursive = any(o == "r" for o, _ in opts)
        props = self._parse_assignments("snapshot", [v for o, v in opts if o == "o"])
        if not names:
            raise _usage("snapshot", "missing snapshot argument")

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            for n in names:
                problem = _name_problem(n, snapshot=True)
                if problem is not None:
                    raise _Fail(f"cannot create snapshot '{n}': {problem}")
            targets: list[tuple[str, str]] = []
            for n in names:
                ds, sname = n.split("@", 1)
                rec = v.record(ds)
                if rec is None:
                    raise _usage("snapshot", f"cannot open '{ds}': dataset does not exist")
                targets.append((ds, sname))
                if recursive:
                    for d in txn.subtree(ds, frozenset({"fs", "vol"})):
                        if d["name"] != ds:
                            targets.append((d["name"], sname))
            seen: set[str] = set()
            for ds, _ in targets:
                if ds in seen:
                    raise _Fail("cannot create snapshots : multiple snapshots of same fs not "
                                "allowed")
                seen.add(ds)
            exists = [f"{ds}@{sn}" for ds, sn in targets if v.exists(f"{ds}@{sn}")]
            if exists:
                raise _Fail("".join(f"cannot create snapshot '{n}': dataset already exists\n"
                                    for n in exists))
            txgs: dict[str, int] = {}
            for ds, sn in targets:
                head = txn.get(ds)
                assert head is not None
                name = f"{ds}@{sn}"
                pool = _pool_of(ds)
                if pool not in txgs:
                    txgs[pool] = txn.stamp(pool)  # one sync task for all the snapshots
                snap: Rec = {
                    "name": name, "type": "snapshot", "guid": txn.guid(name),
                    "createtxg": txgs[pool], "creation": txn.now,
                    "referenced": head["referenced"],
                    "logicalreferenced": head["logicalreferenced"],
                    "written": head["written"], "unique": 0,
                    "volsize": head.get("volsize"), "clones": [], "local": {},
                }
                for k, val in props:
                    self._assign(snap, k, val, f"cannot create snapshot '{name}'")
                head["written"] = 0
                head["snapshots_changed"] = txn.now
                txn.put(head)
                txn.put(snap)
                txn.internal(pool, "snapshot", " ", txgs[pool], ds=name, guid=snap["guid"])
                for k, _ in props:
                    prop = _canon_prop(k) or k
                    txn.internal(pool, "set", f"{prop}={_prop_number(prop, snap['local'][prop])}",
                                 txgs[pool], ds=name, guid=snap["guid"])
            txn.ioctl(_pool_of(targets[0][0]), "snapshot", [
                ("snaps", [(f"{ds}@{sn}", True) for ds, sn in targets]),
                ("props", [(_canon_prop(k) or k, v) for k, v in props])])
            return []

        return self._mutate(op, ctx)

    # -- zfs clone ---------------------------------------------------------------------------------
    def _zfs_clone(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("clone", args, "pu", "o")
        parents = any(o == "p" for o, _ in opts)
        props = self._parse_assignments("clone", [v for o, v in opts if o == "o"])
        source, target = _source_and_target("clone", rest)

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            snap = _open(v, source, snapshot=None)
            if snap["type"] != "snapshot":
                raise _Fail(f"cannot open '{source}': operation not applicable to datasets of "
                            "this type")
            prefix = f"cannot create '{target}'"
            problem = _name_problem(target, snapshot=False)
            if problem is not None:
                raise _Fail(f"{prefix}: {problem}")
            if target.split("/", 1)[0] != source.split("/", 1)[0].split("@", 1)[0]:
                raise _Fail(f"{prefix}: source and target pools differ")
            if v.exists(target):
                raise _Fail(f"{prefix}: dataset already exists")
            missing = self._check_parent(txn, target, parents, prefix)
            head = v.record(source.split("@", 1)[0])
            assert head is not None
            rec = self._new_dataset(txn, target, head["type"])
            rec.update(origin=source, volsize=snap.get("volsize"),
                       volblocksize=head.get("volblocksize"),
                       referenced=snap["referenced"],
                       logicalreferenced=snap["logicalreferenced"],
                       written=_CLONE_REF, ubd=_CLONE_REF, lused_own=_CLONE_REF // 2)
            for k, val in props:
                self._assign(rec, k, val, prefix)
            s = txn.get(source)
            assert s is not None
            s["clones"] = [*(s.get("clones") or []), target]
            for p in missing:
                self._created(txn, self._new_dataset(txn, p, "filesystem"), None)
            txn.put(s)
            self._created(txn, rec, [(_canon_prop(k) or k, None) for k, _ in props], origin=s)
            return []

        return self._mutate(op, ctx)

    # -- zfs set / inherit -------------------------------------------------------------------------
    def _zfs_set(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("set", args, "u", "")
        assigns: list[str] = []
        i = 0
        while i < len(rest) and "=" in rest[i]:
            assigns.append(rest[i])
            i += 1
        names = rest[i:]
        if not assigns:
            raise _usage("set", "missing property=value argument(s)")
        if not names:
            raise _usage("set", "missing dataset name(s)")
        props = self._parse_assignments("set", assigns)

        def op(txn: _Txn) -> list[str]:
            for name in names:
                rec = txn.get(name)
                if rec is None:
                    ctx.fail(f"cannot open '{name}': dataset does not exist")
                    continue
                refres = rec.get("refreservation")
                try:
                    for k, v in props:
                        self._assign(rec, k, v, f"cannot set property for '{name}'")
                except _Fail as f:
                    ctx.fail(f.stderr, f.code)
                    continue
                txn.put(rec)
                txn.touch(_pool_of(name))
                logged = [_canon_prop(k) or k for k, _ in props]
                if "volsize" in logged and rec.get("refreservation") != refres \
                        and "refreservation" not in logged:
                    logged.append("refreservation")  # libzfs adjusts a thick volume's
                txn.log_props(rec, logged)
            return []

        return self._mutate(op, ctx)

    def _zfs_inherit(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("inherit", args, "rS", "")
        recursive = any(o == "r" for o, _ in opts)
        if not rest:
            raise _usage("inherit", "missing property argument")
        if len(rest) < 2:
            raise _usage("inherit", "missing dataset argument")
        prop_text, names = rest[0], rest[1:]
        prop = _canon_prop(prop_text)
        if prop is None:
            raise _usage("inherit", f"invalid property '{prop_text}'")
        if ":" not in prop and prop not in _INHERIT:
            if prop in _READONLY:
                raise _Fail(f"{prop} property is read-only")
            raise _Fail(f"'{prop}' property cannot be inherited")

        def op(txn: _Txn) -> list[str]:
            todo: list[str] = []
            for name in names:
                if not txn.view.exists(name):
                    ctx.fail(f"cannot open '{name}': dataset does not exist")
                    continue
                todo.append(name)
                if recursive:
                    todo += [d["name"] for d in txn.subtree(name) if d["name"] != name]
            for name in todo:
                rec = txn.get(name)
                if rec is None:
                    continue
                if prop in (rec.get("local") or {}):
                    del rec["local"][prop]
                    txn.put(rec)
                if rec["type"] == "snapshot" and ":" not in prop:
                    continue
                # logged as what is in effect afterwards (dsl_prop_set_sync_impl)
                value = self._inherited(txn.view, rec, prop)
                pool = _pool_of(name)
                txn.internal(pool, "inherit", f"{prop}={value}", txn.stamp(pool), ds=name,
                             guid=rec["guid"])
            return []

        return self._mutate(op, ctx)

    def _inherited(self, view: _View, rec: Rec, prop: str) -> str:
        """What `rec` inherits for `prop` from its ancestors (as the kernel logs it: the
        ancestor's raw value, numbers for numeric properties), or '' / the default."""
        parent = _parent(rec["name"])
        cur = view.record(parent) if parent else None
        while cur is not None:
            local = cur.get("local") or {}
            if prop in local:
                return _prop_number(prop, local[prop])
            parent = _parent(cur["name"])
            cur = view.record(parent) if parent else None
        if ":" in prop or prop == "mountpoint":
            return ""
        return _prop_number(prop, _STATIC.get(prop, ""))

    # -- zfs destroy -------------------------------------------------------------------------------
    def _zfs_destroy(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("destroy", args, "dfnpRrv", "")
        flags = {o for o, _ in opts}
        recurse = bool(flags & {"r", "R"})
        clones_too = "R" in flags
        dry = "n" in flags
        parsable = "p" in flags
        verbose = "v" in flags or parsable
        if len(rest) != 1:
            raise _usage("destroy", "missing dataset argument" if not rest
                         else "too many arguments")
        target = rest[0]
        verb = "would" if dry else "will"

        def say(lines: list[str], name: str) -> None:
            if verbose:
                lines.append(f"destroy\t{name}" if parsable else f"{verb} destroy {name}")

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            lines: list[str] = []
            if "#" in target:
                if v.record(target) is None:
                    raise _Fail(f"bookmark '{target}' does not exist.")
                say(lines, target)
                if not dry:
                    txn.drop(target, base=False, subtree=False)
                    # the kernel logs no internal record for a bookmark's destruction
                    txn.ioctl(_pool_of(target), "destroy_bookmarks", [(target, True)])
                return lines
            if "@" in target:
                ds, spec = target.split("@", 1)
                problem = _name_problem(ds, snapshot=False)
                if problem is not None:
                    raise _Fail(f"cannot open '{ds}': {problem}")
                if v.record(ds) is None:
                    raise _Fail("could not find any snapshots to destroy; check snapshot names.")
                dsets = [ds]
                if recurse:
                    dsets += [d["name"] for d in txn.subtree(ds, frozenset({"fs", "vol"}))
                              if d["name"] != ds]
                found: list[Rec] = []
                for dname in dsets:
                    for sn in spec.split(","):
                        rec = v.record(f"{dname}@{sn}")
                        if rec is not None:
                            found.append(rec)
                if not found:
                    raise _Fail("could not find any snapshots to destroy; check snapshot names.")
                deps = self._dependents(txn, [c for s in found for c in s.get("clones") or ()])
                if deps and not clones_too:
                    cloned = next(s["name"] for s in found if s.get("clones"))
                    raise _Fail(f"cannot destroy '{cloned}': snapshot has dependent clones\n"
                                "use '-R' to destroy the following datasets:\n"
                                + "\n".join(deps))
                extra = self._clone_closure(txn, [c for s in found for c in s.get("clones") or ()])
                for name in deps:
                    say(lines, name)
                for s in found:
                    say(lines, s["name"])
                if verbose:
                    reclaim = sum(s["unique"] for s in found)
                    lines.append(f"reclaim\t{reclaim}" if parsable
                                 else f"{verb} reclaim {_nicenum(reclaim)}")
                if dry:
                    return lines
                self._log_destroys(txn, [*(v.record(n) for n in deps), *found])
                self._remove(txn, extra, [s["name"] for s in found])
                return lines
            rec = _open(v, target, snapshot=False)
            pool = target.split("/", 1)[0]
            if target == pool:
                if not recurse:
                    raise _Fail(f"cannot destroy '{pool}': operation does not apply to pools\n"
                                f"use 'zfs destroy -r {pool}' to destroy all datasets in the "
                                f"pool\nuse 'zpool destroy {pool}' to destroy the pool itself")
                return self._destroy_pool_contents(txn, pool, lines, say, dry, verbose)
            sub = txn.subtree(target)
            typ = rec["type"]
            if len(sub) > 1 and not recurse:
                raise _Fail(f"cannot destroy '{target}': {typ} has children\nuse '-r' to "
                            "destroy the following datasets:\n"
                            + "\n".join(d["name"] for d in sub[1:]))
            inside = {d["name"] for d in sub}
            outside = [c for d in _destroy_order(sub) if d["type"] == "snapshot"
                       for c in d.get("clones") or () if c not in inside]
            deps = self._dependents(txn, outside)
            if deps and not clones_too:
                raise _Fail(f"cannot destroy '{target}': {typ} has dependent clones\nuse '-R' "
                            "to destroy the following datasets:\n" + "\n".join(deps))
            extra = self._clone_closure(txn, outside)
            for name in deps:
                say(lines, name)
            for d in _destroy_order(sub):
                say(lines, d["name"])
            if dry:
                return lines
            self._log_destroys(txn, [*(v.record(n) for n in deps), *_destroy_order(sub)])
            self._remove(txn, {target: sub, **extra}, [])
            return lines

        return self._mutate(op, ctx)

    def _log_destroys(self, txn: _Txn, recs: Iterable[Rec | None]) -> None:
        """History of destroying `recs` in this order, as `zfs destroy` does it: each run of
        snapshots in one lzc_destroy_snaps (one txg, an ioctl record), each filesystem or
        volume in its own txg (a thick one first drops its refreservation)."""
        batch: list[Rec] = []

        def flush() -> None:
            if batch:
                pool = _pool_of(batch[0]["name"])
                txg = txn.stamp(pool)
                for snap in batch:
                    txn.internal(pool, "destroy", " ", txg, ds=snap["name"], guid=snap["guid"])
                txn.ioctl(pool, "destroy_snaps", [("snaps", [(x["name"], True) for x in batch])])
                batch.clear()

        for d in recs:
            if d is None or d["type"] == "bookmark":
                continue
            if d["type"] == "snapshot":
                batch.append(d)
                continue
            flush()
            name = d["name"]
            pool = _pool_of(name)
            txg = txn.stamp(pool)
            if d.get("refreservation"):
                txn.internal(pool, "set", "refreservation=0", txg, ds=name, guid=d["guid"])
            mintxg = d.get("origin_createtxg", 1)
            if d.get("origin") and "origin_createtxg" not in d:
                origin = txn.view.record(d["origin"])
                mintxg = origin["createtxg"] if origin is not None else 1
            txn.internal(pool, "destroy", f"(bptree, mintxg={mintxg})", txg, ds=name,
                         guid=d["guid"])
        flush()

    def _dependents(self, txn: _Txn, clones: Iterable[str]) -> list[str]:
        """Clones (oldest first) with everything that depends on them, in the order zfs lists
        them in 'use -R to destroy the following datasets' (dependents before their origin)."""
        out: list[str] = []
        seen: set[str] = set()
        v = txn.view

        def by_txg(names: Iterable[str]) -> list[str]:
            recs = [(v.record(n), n) for n in names if n not in seen]
            return [n for r, n in sorted((x for x in recs if x[0] is not None),
                                         key=lambda x: x[0]["createtxg"])]  # type: ignore[index]

        def visit(clone: str) -> None:
            seen.add(clone)
            for d in _destroy_order(txn.subtree(clone)):
                if d["type"] == "snapshot":
                    for c in by_txg(d.get("clones") or ()):
                        visit(c)
                out.append(d["name"])

        for c in by_txg(clones):
            if c not in seen:
                visit(c)
        return out

    def _clone_closure(self, txn: _Txn, clones: Iterable[str]) -> dict[str, list[Rec]]:
        """Subtrees of `clones`, and of clones of their snapshots, recursively (for -R)."""
        out: dict[str, list[Rec]] = {}
        todo = list(clones)
        covered: set[str] = set()
        while todo:
            c = todo.pop()
            if c in covered or any(_in_subtree(c, r) for r in out):
                continue
            sub = txn.subtree(c)
            out[c] = sub
            for d in sub:
                covered.add(d["name"])
                if d["type"] == "snapshot":
                    todo.extend(x for x in d.get("clones") or () if x not in covered)
        return out

    def _remove(self, txn: _Txn, subtrees: dict[str, list[Rec]], snapshots: list[str]) -> None:
        """Destroy whole subtrees (root -> its derived records) and single snapshots, fixing the
        records that survive: origin snapshots' clone lists and heads of destroyed snapshots."""
        v = txn.view
        gone: set[str] = set(snapshots)
        for recs in subtrees.values():
            gone.update(d["name"] for d in recs)
        base_roots = {r: v.is_base(r) for r in subtrees}
        base_snaps = {s: v.is_base(s) for s in snapshots}
        fix_clones: dict[str, list[str]] = {}
        for recs in subtrees.values():
            for d in recs:
                o = d.get("origin")
                if d["type"] != "snapshot" and o and o not in gone:
                    fix_clones.setdefault(o, []).append(d["name"])
        heads: dict[str, list[Rec]] = {}
        for s in snapshots:
            head = s.split("@", 1)[0]
            if head not in gone:
                rec = v.record(s)
                assert rec is not None
                heads.setdefault(head, []).append(rec)
        remaining = {h: [d for d in _snapshot_names(v, h) if d["name"] not in gone]
                     for h in heads}
        for root, is_base in base_roots.items():
            for name in [n for n in txn.ov.records if _in_subtree(n, root)]:
                txn.drop(name, base=False, subtree=False)
            if is_base:
                txn.drop(root, base=True, subtree=True)
        for s, is_base in base_snaps.items():
            txn.drop(s, base=is_base, subtree=False)
        for o, names in fix_clones.items():
            rec = txn.get(o)
            if rec is not None:
                rec["clones"] = [c for c in rec.get("clones") or () if c not in names]
                txn.put(rec)
        for h, gone_snaps in heads.items():
            rec = txn.get(h)
            if rec is None:
                continue
            rest = remaining[h]
            last_txg = max((d["createtxg"] for d in rest), default=-1)
            old_ubs = rec["ubs"]
            for sr in gone_snaps:
                rec["ubs"] = max(0, rec["ubs"] - sr["unique"])
                if sr["createtxg"] > last_txg:
                    rec["written"] = min(rec["referenced"], rec["written"] + sr["written"])
            if not rest:
                rec["written"] = rec["ubd"] if rec.get("origin") else rec["referenced"]
                rec["ubs"] = 0
            before = rec["ubd"] + old_ubs
            if before:
                rec["lused_own"] = rec["lused_own"] * (rec["ubd"] + rec["ubs"]) // before
            rec["snapshots_changed"] = txn.now
            txn.put(rec)

    def _destroy_pool_contents(self, txn: _Txn, pool: str, lines: list[str],
                               say: Callable[[list[str], str], None], dry: bool,
                               verbose: bool) -> list[str]:
        v = txn.view
        if verbose or not dry:
            recs = list(_destroy_order_iter(v, pool)) if verbose else None
            for d in recs or ():
                say(lines, d["name"])
            if not dry:
                self._log_destroys(txn, recs if recs is not None
                                   else _destroy_order_iter(v, pool))
        if dry:
            return lines
        b = self.base
        a, z = b.pool_range[pool]
        for k in range(a, z):
            tname = b.tenant_name(k)
            if not txn.ov.hides(tname):
                txn.drop(tname, base=True, subtree=True)
        for name in [n for n in txn.ov.records if n != pool and _pool_of(n) == pool]:
            txn.drop(name, base=False, subtree=False)
        root = txn.get(pool)
        assert root is not None
        if root["ubs"] or root["written"] != root["referenced"] or root.get("snapshots_changed"):
            root.update(ubs=0, written=root["referenced"], snapshots_changed=txn.now,
                        lused_own=root["logicalreferenced"])
            txn.put(root)
        return lines

    # -- zfs rename / promote ---------------------------------------------------------------------
    def _move(self, txn: _Txn, mapping: dict[str, str], subtree_root: str | None = None) -> None:
        """Rename records old -> new, keeping guids, and fix origin/clone references."""
        v = txn.view
        base_root = v.is_base(subtree_root) if subtree_root else False
        base_names = {} if subtree_root else {n: v.is_base(n) for n in mapping}
        recs = {}
        for n in mapping:
            rec = txn.get(n)
            assert rec is not None
            recs[n] = rec
        outside: dict[str, Rec] = {}
        for n, rec in recs.items():
            if rec["type"] == "snapshot":
                for c in rec.get("clones") or ():
                    if c not in mapping:
                        other = outside.get(c) or txn.get(c)
                        if other is not None:
                            other["origin"] = mapping[n]
                            outside[c] = other
            elif rec.get("origin") and rec["origin"] not in mapping:
                o = rec["origin"]
                snap = outside.get(o) or txn.get(o)
                if snap is not None:
                    snap["clones"] = [mapping.get(c, c) for c in snap.get("clones") or ()]
                    outside[o] = snap
        heads: set[str] = set()
        for n, rec in recs.items():
            rec["name"] = mapping[n]
            if rec.get("origin") in mapping:
                rec["origin"] = mapping[rec["origin"]]
            if rec["type"] == "snapshot":
                rec["clones"] = [mapping.get(c, c) for c in rec.get("clones") or ()]
                if subtree_root is None:
                    heads.add(n.split("@", 1)[0])
                    heads.add(mapping[n].split("@", 1)[0])
        for n in mapping:
            txn.drop(n, base=base_names.get(n, False), subtree=False)
        if subtree_root is not None and base_root:
            txn.drop(subtree_root, base=True, subtree=True)
        for rec in recs.values():
            txn.put(rec)
        for rec in outside.values():
            txn.put(rec)
        for h in heads:
            rec = txn.get(h)
            if rec is not None and rec["type"] != "snapshot":
                rec["snapshots_changed"] = txn.now
                txn.put(rec)

    def _zfs_rename(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        opts, rest = _getopt("rename", args, "fpru", "")
        flags = {o for o, _ in opts}
        old, new = _source_and_target("rename", rest)

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            rec = _open(v, old, snapshot=None)
            target = new
            prefix = f"cannot rename to '{new}'"
            if rec["type"] == "snapshot":
                ds, sn = old.split("@", 1)
                if target.startswith("@"):
                    target = ds + target
                if "@" not in target or target.split("@", 1)[0] != ds:
                    raise _Fail(f"cannot rename to '{new}': snapshots must be part of same "
                                "dataset")
                problem = _name_problem(target, snapshot=True)
                if problem is not None:
                    raise _Fail(f"{prefix}: {problem}")
                nsn = target.split("@", 1)[1]
                pairs = {old: target}
                if "r" in flags:
                    for d in txn.subtree(ds, frozenset({"fs", "vol"})):
                        if d["name"] != ds and v.exists(f"{d['name']}@{sn}"):
                            pairs[f"{d['name']}@{sn}"] = f"{d['name']}@{nsn}"
                for n in pairs.values():
                    if v.exists(n):
                        raise _Fail(f"cannot rename to '{n}': dataset already exists")
                pool = _pool_of(ds)
                txg = txn.stamp(pool)
                for a, b in pairs.items():
                    snap = v.record(a)
                    assert snap is not None
                    txn.internal(pool, "rename", f"-> @{b.split('@', 1)[1]}", txg, ds=a,
                                 guid=snap["guid"])
                self._move(txn, pairs)
                return []
            if "r" in flags:
                raise _usage("rename", "-r can only be used on snapshots")
            problem = _name_problem(target, snapshot=False)
            if problem is not None:
                raise _Fail(f"{prefix}: {problem}")
            pool = old.split("/", 1)[0]
            if old == pool:
                raise _Fail(f"cannot rename '{old}': operation does not apply to pools")
            if target.split("/", 1)[0] != pool:
                raise _Fail(f"{prefix}: datasets must be within same pool")
            if target.startswith(old + "/"):
                raise _Fail(f"{prefix}: New dataset name cannot be a descendant of current "
                            "dataset name")
            if v.exists(target):
                raise _Fail(f"{prefix}: dataset already exists")
            missing = self._check_parent(txn, target, "p" in flags, f"cannot create '{new}'")
            sub = txn.subtree(old, _ALL_KINDS)
            mapping = {d["name"]: target + d["name"][len(old):] for d in sub}
            for p in missing:
                self._created(txn, self._new_dataset(txn, p, "filesystem"), None)
            txn.internal(pool, "rename", f"-> {target}", txn.stamp(pool), ds=old,
                         guid=rec["guid"])
            self._move(txn, mapping, subtree_root=old)
            return []

        return self._mutate(op, ctx)

    def _zfs_promote(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        _, rest = _getopt("promote", args, "", "")
        if len(rest) != 1:
            raise _usage("promote", "missing clone filesystem argument" if not rest
                         else "too many arguments")
        name = rest[0]

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            rec = _open(v, name, snapshot=False)
            origin = rec.get("origin")
            if not origin:
                raise _Fail(f"cannot promote '{name}': not a cloned filesystem")
            snap = v.record(origin)
            assert snap is not None
            ods = origin.split("@", 1)[0]
            osnaps = _snapshot_names(v, ods)
            moved = [s for s in osnaps if s["createtxg"] <= snap["createtxg"]]
            later = [s for s in osnaps if s["createtxg"] > snap["createtxg"]]
            mine = {d["name"].split("@", 1)[1] for d in _snapshot_names(v, name)}
            for s in moved:
                short = s["name"].split("@", 1)[1]
                if short in mine:
                    raise _Fail(f"cannot promote '{name}': conflicting snapshot '{short}' from "
                                f"parent '{ods}'")
            mapping = {s["name"]: f"{name}@{s['name'].split('@', 1)[1]}" for s in moved}
            moved_unique = sum(s["unique"] for s in moved)
            c = txn.get(name)
            o = txn.get(ods)
            assert c is not None and o is not None
            former = o.get("origin")
            c["origin"] = former
            c["ubs"] += moved_unique
            c["ubd"] = c["referenced"]
            o["ubs"] = max(0, o["ubs"] - moved_unique)
            o["ubd"] = min(o["referenced"], o["written"] + sum(s["written"] for s in later))
            for r in (c, o):
                ratio = r["logicalreferenced"] / r["referenced"] if r["referenced"] else 1.0
                r["lused_own"] = int((r["ubd"] + r["ubs"]) * ratio) >> 9 << 9
                r["snapshots_changed"] = txn.now
            txn.put(c)
            txn.put(o)
            orig = txn.get(origin)
            assert orig is not None
            orig["clones"] = [ods if x == name else x for x in orig.get("clones") or ()]
            txn.put(orig)
            if former:
                z = txn.get(former)
                if z is not None:
                    z["clones"] = [name if x == ods else x for x in z.get("clones") or ()]
                    txn.put(z)
            pool = _pool_of(name)
            txn.internal(pool, "promote", " ", txn.stamp(pool), ds=name, guid=c["guid"])
            self._move(txn, mapping)
            return []

        return self._mutate(op, ctx)

    # -- zfs bookmark --------------------------------------------------------------------------
    def _zfs_bookmark(self, args: list[str], ctx: _Ctx) -> Iterator[str]:
        _, rest = _getopt("bookmark", args, "", "")
        if len(rest) != 2:
            raise _usage("bookmark", "missing snapshot argument" if not rest
                         else "missing bookmark argument" if len(rest) == 1
                         else "too many arguments")
        source, target = rest
        if target.startswith("#"):
            target = _ds(source) + target

        def op(txn: _Txn) -> list[str]:
            v = txn.view
            prefix = f"cannot create bookmark '{target}'"
            if "@" not in source and "#" not in source:
                raise _Fail(f"{prefix}: source must be a snapshot or bookmark")
            src = v.record(source)
            if src is None:
                raise _Fail(f"{prefix}: dataset does not exist")
            problem = _name_problem(target, snapshot=None, bookmark=True)
            if problem is not None:
                raise _Fail(f"{prefix}: {problem}")
            if _ds(target) != _ds(source):
                raise _Fail(f"{prefix}: source is not an ancestor of the new bookmark's dataset")
            if v.exists(target):
                raise _Fail(f"{prefix}: bookmark exists")
            txn.put({"name": target, "type": "bookmark", "guid": src["guid"],
                     "createtxg": src["createtxg"], "creation": src["creation"],
                     "referenced": src["referenced"],
                     "logicalreferenced": src["logicalreferenced"], "local": {}})
            head = v.record(_ds(source))
            assert head is not None
            pool = _pool_of(source)
            short = target.split("#", 1)[1]
            if "@" in source:
                text = (f"name={short} creation_txg={src['createtxg']} "
                        f"target_snap={_dsid(src['guid'])} redact_obj=0")
            else:
                text = f"name={short} creation_txg={src['createtxg']} source_guid={src['guid']}"
            txn.internal(pool, "bookmark", text, txn.stamp(pool), ds=head["name"],
                         guid=head["guid"])
            txn.ioctl(pool, "bookmark", [(target, source)])
            return []

        return self._mutate(op, ctx)


def _destroy_order(recs: list[Rec]) -> list[Rec]:
    """Children before parents, each dataset's snapshots just before it."""
    snaps: dict[str, list[Rec]] = {}
    dsets: list[Rec] = []
    for d in recs:
        if d["type"] in ("snapshot", "bookmark"):
            snaps.setdefault(_ds(d["name"]), []).append(d)
        else:
            dsets.append(d)
    out: list[Rec] = []
    for d in reversed(dsets):
        out.extend(snaps.pop(d["name"], []))
        out.append(d)
    for rest in snaps.values():
        out.extend(rest)
    return out


def _destroy_order_iter(view: _View, pool: str) -> Iterator[Rec]:
    """What `zfs destroy -r POOL` destroys, in order, tenant by tenant (without keeping
    them all)."""
    for d in view.loose_derived(pool):
        if d["name"].startswith(pool + "@"):
            yield d
    chunk: list[Rec] = []
    current: str | None = None
    def ordered(chunk: list[Rec]) -> list[Rec]:
        # a clone's origin is mostly in its tenant: note its txg (history's mintxg) here
        txgs = {d["name"]: d["createtxg"] for d in chunk if d["type"] == "snapshot"}
        for d in chunk:
            if d.get("origin") in txgs:
                d["origin_createtxg"] = txgs[d["origin"]]
        return _destroy_order(chunk)

    for d in view.items(pool, None, None, frozenset({"fs", "vol", "snap"}), None, keep=False):
        top = "/".join(_ds(d["name"]).split("/", 2)[:2])
        if current is not None and top != current:
            yield from ordered(chunk)
            chunk = []
        current = top
        if not d["name"].startswith(pool + "@"):
            chunk.append(d)
    yield from ordered(chunk)


def _throttle(lines: Iterator[str], rate: float, closed: Callable[[], bool]) -> Iterator[str]:
    """`lines` at `rate` lines a second; waits in short slices so that a connection closed
    meanwhile (`closed()`) ends the stream at once, as a dropped SSH connection does."""
    start = time.monotonic()
    for n, line in enumerate(lines, 1):
        if n % 256 == 0:
            while (ahead := n / rate - (time.monotonic() - start)) > 0 and not closed():
                time.sleep(min(ahead, 0.05))
        yield line
