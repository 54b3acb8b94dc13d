"""What a simulated node is: its settings (the inventory's `sim:` mapping), the software it
claims to run, and `mix`, the stable hash every seeded choice of the simulator is made with."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xfleet.core.errors import UsageError
from xfleet.sim.formats import parse_size

ZFS_VERSION = "zfs-2.3.2-1"  # what the lab's real nodes run (tests/fixtures/real)
ZFS_KMOD_VERSION = "zfs-kmod-2.3.2-1"
DEFAULT_NOW = 1777593600  # 2026-05-01 00:00:00 UTC: the base fleet's "now"
TXG_SECONDS = 5
MAX_SNAPSHOTS = 100
DAY = 86400

# The kernel and the software the simulated nodes claim to run (history "uts" strings).
UTS = "6.1.0-28-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22) x86_64"
POOL_VERSION_TEXT = "pool version 5000; software version " + ZFS_VERSION
# What `zpool create` enables on an OpenZFS 2.3 pool, in the order it logs them.
FEATURES = (
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

# Faults `zpool status` can show (the `faults` setting): one side of mirror-0 OFFLINE, or
# with checksum errors its last scrub repaired.
FAULTS = ("offline", "checksum")

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
    "faults": "mapping of pool name to a fault zpool status shows (vdev 'mirror' only): "
              "'offline' (one side of mirror-0 OFFLINE: the pool DEGRADED) or 'checksum' "
              "(one side with checksum errors its last scrub repaired); default none",
    "tenant_property": "user property naming a volume's tenant; default xfleet:tenant",
    "rows_per_second": "throttle listings to this rate (0 = unthrottled, the default)",
    "zevent_len_max": "events the kernel queue keeps (`zpool events`; oldest dropped); "
                      "default 512",
    "history_len_max": "records `zpool history` keeps per pool after its creation records "
                       "(oldest dropped, like the on-disk ring buffer); default 100000",
    "data_path": "true (default): `zfs send`/`receive` stream between simulated nodes; "
                 "false: the node refuses binary streams (a node without a data path)",
}


def mix(*parts: object) -> int:
    """A stable 64-bit hash of `parts` (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


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
    faults: tuple[tuple[str, str], ...] = ()  # (pool, fault), sorted by pool
    tenant_property: str = "xfleet:tenant"
    rows_per_second: float = 0.0
    zevent_len_max: int = 512
    history_len_max: int = 100_000
    data_path: bool = True

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

        seed = num("seed", mix("xfleet-sim", node) & 0xFFFFFFFF, -(2**63), 2**63, True)
        volumes = num("volumes", 1000, 0, 50_000_000, True)
        tenants = num("tenants", max(1, volumes // 25), 1, 50_000_000, True)
        tenants = max(1, min(tenants, volumes)) if volumes else 1
        max_snaps = num("max_snapshots", 5, 0, MAX_SNAPSHOTS, True)
        snaps = num("snapshots", min(2.0, float(max_snaps)), 0, max_snaps, False)
        pool_size: int | None = None
        if raw.get("pool_size") is not None:
            ps = raw["pool_size"]
            size = parse_size(ps) if isinstance(ps, str) else ps
            if not isinstance(size, int) or isinstance(size, bool) or size < (1 << 30):
                raise UsageError(f"sim setting pool_size={ps!r} is not valid", where=node,
                                 hint="a size of at least 1G, e.g. 500T or 549755813888000")
            pool_size = size
        vdev = raw.get("vdev", "mirror")
        if vdev not in ("mirror", "single"):
            raise UsageError(f"sim setting vdev={vdev!r} is not valid", where=node,
                             hint="expected 'mirror' or 'single'")
        faults = raw.get("faults") or {}
        if not isinstance(faults, dict) or any(
                not isinstance(k, str) or v not in FAULTS for k, v in faults.items()):
            raise UsageError(f"sim setting faults={faults!r} is not valid", where=node,
                             hint=f"a mapping of pool name to {' or '.join(FAULTS)}, e.g. "
                             "{tank: offline}")
        if faults and vdev != "mirror":
            raise UsageError("sim setting faults needs vdev 'mirror'", where=node,
                             hint="a fault takes one side of a mirror")
        tprop = raw.get("tenant_property", "xfleet:tenant")
        if not isinstance(tprop, str) or not re.match(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]+\Z", tprop):
            raise UsageError(f"sim setting tenant_property={tprop!r} is not valid", where=node,
                             hint="a user property name such as xfleet:tenant")
        data_path = raw.get("data_path", True)
        if not isinstance(data_path, bool):
            raise UsageError(f"sim setting data_path={data_path!r} is not valid", where=node,
                             hint="expected true or false")
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
            faults=tuple(sorted(faults.items())),
            tenant_property=tprop,
            rows_per_second=num("rows_per_second", 0, 0, 1e9, False),
            zevent_len_max=num("zevent_len_max", 512, 1, 10_000_000, True),
            history_len_max=num("history_len_max", 100_000, 1, 1_000_000_000, True),
            data_path=data_path,
        )

    def fingerprint(self, node: str, pools: Sequence[str]) -> str:
        return f"v1:{mix(node, tuple(pools), self.seed, self.volumes, self.tenants, self.snapshots, self.max_snapshots, self.clone_fraction, self.thick_fraction, self.now):016x}"  # noqa: E501
