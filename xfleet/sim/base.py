"""The base fleet of one node: tenants, volumes, snapshots and clones that are never stored.

Which tenant holds a name, which pool holds a tenant, when the pools were created, the pools'
space totals (cached per settings fingerprint, in memory and in the node's state): everything
the compiled generator (xfleet/sim/generator.py) needs besides the tenant's own random stream.
"""

from __future__ import annotations

import bisect
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from xfleet.sim.generator import Env, Row, compile_generator
from xfleet.sim.names import dataset_of
from xfleet.sim.overlay import Rec, Store
from xfleet.sim.settings import DAY, SimSettings, mix
from xfleet.sim.space import FS_LREF, FS_REF

_TOTALS_CACHE: dict[tuple[str, str], tuple[int, int, int]] = {}


class BaseFleet:
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
        rng = random.Random(mix(st.seed, node, "tenants"))
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
            h = mix(st.seed, node, "pool", pool)
            self.pool_created[pool] = st.now - 700 * DAY - (h % (30 * DAY))
            self.pool_guid[pool] = mix(st.seed, node, "pool-guid", pool) | 1
            self.root_guid[pool] = mix(st.seed, node, "root-guid", pool) | 1
        self.range_starts = [self.pool_range[p][0] for p in self.pools]
        first_day = min(self.pool_created.values()) // DAY
        self.day0 = first_day
        self.days = [time.strftime("%Y%m%d", time.gmtime(d * DAY))
                     for d in range(first_day, st.now // DAY + 2)]
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
        self._seed_base = mix(st.seed, node, "tenant")
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
        ds = dataset_of(name)
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

    def tenant_rows(self, k: int, env: Env) -> list[Row]:
        """Base rows of tenant k as tuples in FIELDS order (slow path and lookups)."""
        gen = compile_generator(None, frozenset({"fs", "vol", "snap"}), True,
                                self.st.tenant_property)
        rows: list[Row] = gen(self, k, self.pool_of_tenant(k), env)[0]
        return rows

    def totals(self, pool: str, store: Store | None) -> tuple[int, int, int]:
        """(used, logicalused, physical) summed over the pool's base tenants (cached)."""
        key = (self.fingerprint, pool)
        got = _TOTALS_CACHE.get(key)
        if got is None and store is not None:
            got = store.load_totals(self.fingerprint, pool)
        if got is None:
            gen = compile_generator((), frozenset(), True, self.st.tenant_property, names=False)
            env = Env()
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

    def remember_totals(self, pool: str, got: tuple[int, int, int], store: Store | None) -> None:
        _TOTALS_CACHE[(self.fingerprint, pool)] = got
        if store is not None:
            store.save_totals(self.fingerprint, pool, got)

    def cached_totals(self, pool: str, store: Store | None) -> tuple[int, int, int] | None:
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
            "volblocksize": None, "referenced": FS_REF, "logicalreferenced": FS_LREF,
            "written": FS_REF, "ubd": FS_REF, "ubs": 0, "refreservation": 0,
            "lused_own": FS_LREF, "snapshots_changed": 0,
            "local": {"compression": "lz4", "mountpoint": "none", "canmount": "off"},
        }

    def pool_size(self, pool: str, store: Store | None) -> int:
        if self.st.pool_size:
            return self.st.pool_size
        used, _, _ = self.totals(pool, store)
        fill = 0.35 + 0.3 * ((mix(self.st.seed, self.node, "fill", pool) % 1000) / 1000)
        unit = 1 << 34
        return max(unit * 4, -(-int(used / fill) // unit) * unit)


def record_from_row(t: Row, tenant_prop: str) -> Rec:
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


class TenantLines:
    """The fast path for one pool: formatted lines of an untouched tenant, with the tenant's
    space totals added up on the way (for the pool root when it is spooled)."""

    def __init__(self, base: BaseFleet, gen: Callable[..., Any], pool: str, env: Env):
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
