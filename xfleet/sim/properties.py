"""Dataset properties: what `zfs get/list` know, where they apply, their defaults, how the
kernel logs their values, and `assign`, which validates and applies `prop=value` as zfs does."""

from __future__ import annotations

import re

from xfleet.sim.formats import parse_size
from xfleet.sim.overlay import Rec
from xfleet.sim.registry import Fail
from xfleet.sim.space import reservation

# ZFS enum order (zfs_prop_t), which is the order of `zfs get all`. Types: f(ilesystem),
# v(olume), s(napshot). Defaults are what `-p` prints for a dataset that never set them.
PROP_ORDER: tuple[tuple[str, str], ...] = (
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
    ("relatime", "f"), ("redundant_metadata", "fv"), ("overlay", "f"),
    ("receive_resume_token", "fv"), ("encryption", "fvs"),
    ("keylocation", "fv"), ("keyformat", "fv"), ("pbkdf2iters", "fv"),
    ("special_small_blocks", "f"), ("snapshots_changed", "fv"), ("prefetch", "fvs"),
    ("volthreading", "v"), ("direct", "f"), ("longname", "f"),
)
_PROP_TYPES = dict(PROP_ORDER)
_HIDDEN_PROPS = {"name": "fvsb", "numclones": "s", "inconsistent": "fvs", "redacted": "fvs",
                 "unique": "fvs", "keystatus": "fv"}
ALL_PROPS = {**_PROP_TYPES, **_HIDDEN_PROPS}
_ALIASES = {
    "avail": "available", "refer": "referenced", "ratio": "compressratio",
    "refratio": "refcompressratio", "compress": "compression", "reserv": "reservation",
    "refreserv": "refreservation", "volblock": "volblocksize", "recsize": "recordsize",
    "usedsnap": "usedbysnapshots", "usedds": "usedbydataset", "usedchild": "usedbychildren",
    "usedrefreserv": "usedbyrefreservation", "lused": "logicalused",
    "lrefer": "logicalreferenced", "rdonly": "readonly", "dnsize": "dnodesize",
}
SPACE_COLUMNS = ("name", "available", "used", "usedbysnapshots", "usedbydataset",
                 "usedbyrefreservation", "usedbychildren")
# Values of properties the simulator does not model (static defaults), as `-p` prints them.
STATIC: dict[str, str] = {
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
INHERITABLE = frozenset({
    "compression", "readonly", "volmode", "checksum", "sync", "logbias", "primarycache",
    "secondarycache", "snapdev", "dedup", "copies", "atime", "relatime", "devices", "exec",
    "setuid", "mountpoint", "recordsize", "redundant_metadata", "snapdir", "xattr", "aclmode",
    "aclinherit", "acltype", "dnodesize", "sharenfs", "sharesmb", "prefetch", "direct",
    "volthreading", "special_small_blocks", "zoned", "vscan", "nbmand", "overlay", "context",
    "fscontext", "defcontext", "rootcontext", "mlslabel",
})
# Read-only statistics: their source is '-'.
READONLY = frozenset({
    "type", "creation", "used", "available", "referenced", "compressratio", "mounted",
    "origin", "createtxg", "guid", "usedbysnapshots", "usedbydataset", "usedbychildren",
    "usedbyrefreservation", "userrefs", "objsetid", "refcompressratio", "written", "clones",
    "logicalused", "logicalreferenced", "defer_destroy", "receive_resume_token", "keystatus",
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
SPECIAL_PROPS = ("quota", "reservation", "refquota", "refreservation")


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


def prop_number(prop: str, value: str) -> str:
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
TYPE_LETTER = {"filesystem": "f", "volume": "v", "snapshot": "s", "bookmark": "b"}
TYPE_WORDS = {"filesystem": "filesystem", "fs": "filesystem", "volume": "volume",
              "vol": "volume", "snapshot": "snapshot", "snap": "snapshot",
              "bookmark": "bookmark"}
KIND_OF = {"filesystem": "fs", "volume": "vol", "snapshot": "snap", "bookmark": "bm"}
ALL_KINDS = frozenset({"fs", "vol", "snap", "bm"})


def _is_user_prop(prop: str) -> bool:
    return ":" in prop and bool(re.match(r"^[a-z0-9_.\-]+:[a-z0-9_.:\-]*\Z", prop)) \
        and len(prop) <= 256


def canon_prop(prop: str) -> str | None:
    """The canonical name of a native or user property, or None if zfs would not know it."""
    if _is_user_prop(prop):
        return prop
    prop = _ALIASES.get(prop, prop)
    return prop if prop in ALL_PROPS else None


def assign(rec: Rec, prop_text: str, value: str, prefix: str,
           creating: bool = False) -> None:
    """Validate `prop=value` for `rec` (a private copy) and apply it; raise Fail."""
    prop = canon_prop(prop_text)
    typ = rec["type"]
    if prop is None:
        raise Fail(f"{prefix}: invalid property '{prop_text}'")
    if ":" in prop:
        if len(value) > 8191:
            raise Fail(f"{prefix}: property value too long")
        rec.setdefault("local", {})[prop] = value
        return
    if typ == "snapshot":
        raise Fail(f"{prefix}: this property can not be modified for snapshots")
    if prop == "volblocksize" and creating:
        return  # handled by create
    if prop not in _SETTABLE:
        if prop in READONLY or prop in ALL_PROPS:
            raise Fail(f"{prefix}: '{prop}' is readonly")
        raise Fail(f"{prefix}: invalid property '{prop_text}'")
    types, choices = _SETTABLE[prop]
    if TYPE_LETTER[typ] not in types:
        raise Fail(f"{prefix}: '{prop}' does not apply to datasets of this type")
    local = rec.setdefault("local", {})
    if prop == "compression":
        if value not in _COMPRESS_VALUES:
            raise Fail(f"{prefix}: 'compression' must be one of '{_COMPRESS_HELP}'")
        # zfs prints gzip-6 as "gzip" (the first name of that value in its table;
        # seen on the lab's OpenZFS 2.3)
        local[prop] = "gzip" if value == "gzip-6" else value
        return
    if choices is not None:
        if value not in choices:
            raise Fail(f"{prefix}: '{prop}' must be one of '{' | '.join(choices)}'")
        local[prop] = value
        return
    if prop == "mountpoint":
        if value not in ("none", "legacy") and not value.startswith("/"):
            raise Fail(f"{prefix}: 'mountpoint' must be an absolute path, 'none', or "
                       "'legacy'")
        local[prop] = value
        return
    if prop == "refreservation" and value == "auto":
        if typ != "volume":
            raise Fail(f"{prefix}: 'refreservation=auto' only supported on volumes")
        rec["refreservation"] = reservation(rec["volsize"], rec["volblocksize"])
        return
    n = 0 if value == "none" and prop != "volsize" else parse_size(value)
    if n is None:
        raise Fail(f"{prefix}: bad numeric value '{value}'")
    if prop == "recordsize":
        if n < 512 or n > (16 << 20) or n & (n - 1):
            raise Fail(f"{prefix}: 'recordsize' must be power of 2 from 512B to 16M")
        local[prop] = str(n)
    elif prop == "refreservation":
        rec["refreservation"] = n
    elif prop == "volsize":
        vbs = rec["volblocksize"]
        if n == 0:
            raise Fail(f"{prefix}: volume size cannot be zero")
        if n % vbs:
            raise Fail(f"{prefix}: volume size must be a multiple of volume block size")
        old = rec["volsize"]
        if rec["refreservation"] and rec["refreservation"] == reservation(old, vbs):
            rec["refreservation"] = reservation(n, vbs)
        rec["volsize"] = n
    else:
        local[prop] = str(n)
