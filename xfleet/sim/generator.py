"""The compiled per-tenant generator: the hot path of every listing.

The base fleet is a pure function of (seed, node, tenant index): nothing of it is stored. A
tenant (`POOL/tNNNN`, a filesystem) holds a contiguous, zero-padded range of volumes
(`POOL/tNNNN/vol-NNNNNN`), so generating tenants in index order yields rows in `zfs list` order.
Rows are produced one tenant at a time by a generator compiled for the requested columns (a
template turned into Python source once per column set): it formats finished lines with one
f-string per row, which is what keeps a 300k-row listing near or above 300k lines/s.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xfleet.sim.space import ratio, reservation

# ---------------------------------------------------------------------------------------------
# the per-tenant generator template
#
# One function per (columns, row kinds, space) variant is compiled from this source by
# compile_generator.
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
_RS = {k: ratio(k, 4096) for k in range(4096, 16384, 512)}  # ratio text per K (see template)


@functools.lru_cache(maxsize=4096)
def _cached_reservation(volsize: int, volblocksize: int) -> int:
    return reservation(volsize, volblocksize)


# Internal field order of a base row tuple (the slow path turns it into a record).
FIELDS: tuple[str, ...] = (
    "name", "type", "guid", "createtxg", "origin", "creation", "volsize", "volblocksize", "used",
    "referenced", "logicalused", "logicalreferenced", "usedbysnapshots", "usedbyrefreservation",
    "refreservation", "written", "compression", "compressratio", "refcompressratio",
    "usedbydataset", "usedbychildren", "numclones", "mountpoint", "snapshots_changed", "tenant",
    "avx", "phys", "lused_own", "comp_local",
)
FIELD_INDEX = {name: i for i, name in enumerate(FIELDS)}
Row = tuple[Any, ...]  # a base row: values in FIELDS order

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
IDENTITY_COLUMNS = frozenset({"name", "type", "guid", "createtxg", "origin", "creation",
                              "numclones", "mountpoint", "snapshots_changed", "readonly",
                              "volmode", "tenant", "receive_resume_token", "keystatus",
                              "userrefs", "inconsistent"})
# Columns the compiled fast path can print (any user property can be printed too).
FAST_COLUMNS = frozenset(k for k in _SPEC["vol"] if k not in
                         ("tenant", "avx", "phys", "lused_own", "comp_local"))


@dataclass(frozen=True)
class Env:
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


def compile_generator(cols: tuple[str, ...] | None, kinds: frozenset[str], space: bool,
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
    ns: dict[str, Any] = {"Random": random.Random, "HM": _HM, "ratio": ratio,
                          "reservation": _cached_reservation, "RS": _RS}
    exec(compile(src, "<xfleet.sim tenant generator>", "exec"), ns)  # noqa: S102
    fn = ns["gen"]
    with _COMPILE_LOCK:
        _COMPILED[key] = fn
    return fn  # type: ignore[no-any-return]

