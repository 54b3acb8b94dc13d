"""The most hostile user property values a node can hold, for the lab and the simulator.

ZFS lets a user property's value hold any byte but NUL, up to 8191 bytes: tabs and newlines
that would forge `zfs list -H` lines, quotes and shell syntax, control characters, characters
beyond the Basic Multilingual Plane (which `zfs get -j` drops), and bytes that are not UTF-8
(at which `zfs get -j` stops printing). `commands(pool)` stores them all on a node;
`expected(pool)` is what a sync must mirror for each dataset afterwards.
"""

from __future__ import annotations

from tools.scenario import TENANT

NOTE = "xfleet:note"
ROOT = "hostile"
# leaf volume name -> its own tenant value
VALUES: dict[str, str] = {
    "tab": "a\tb",
    "newline": "evil\ntank/fake\tvolume\t1\t2",  # a forged `zfs list -H` line
    "quote": "q\"\\'$(id)`x`;rm -rf /",
    "unicode": "ünï €",
    "astral": "emoji 😀 end",  # `zfs get -j` drops the emoji: ZFS prints "emoji  end"
    "ctrl": "c\x01\x1f\x7fz",
    "cr": "x\r\ny",
    "empty": "",
    "json": '{"value":"forged","source":{"type":"LOCAL"}}},"tank/x":{',
    "long": "L" * 8191,  # the longest value ZFS takes
}
# Set through printf (an argument list cannot carry bytes that are not UTF-8).
BAD_VALUE_SH = "bad\\377\\376utf8"
BAD_VALUE_READ = "bad\ufffd\ufffdutf8"  # as xfleet reads it: each such byte is U+FFFD


# The same bytes for the simulator, which takes arguments as str: the surrogate escapes that
# os.fsdecode makes of them.
BAD_VALUE_SIM = "bad\udcff\udcfeutf8"


def commands(pool: str = "tank", *, sim: bool = False) -> list[list[str]]:
    """The commands that store the hostile values under POOL/hostile (thin 8M volumes); for
    the simulator with `sim` (no shell there)."""
    fs = f"{pool}/{ROOT}"
    out = [["zfs", "create", "-o", f"{TENANT}=plain", "-o", f"{NOTE}=", fs]]
    for leaf, value in VALUES.items():
        out.append(["zfs", "create", "-s", "-V", "8M", "-o", f"{TENANT}={value}",
                    f"{fs}/{leaf}"])
    out += [
        ["zfs", "create", "-s", "-V", "8M", f"{fs}/inherits"],
        ["zfs", "snapshot", f"{fs}/tab@s1", f"{fs}/inherits@s1"],
        ["zfs", "set", f"{NOTE}=snap\tnote\n", f"{fs}/tab@s1"],
        ["zfs", "create", "-s", "-V", "8M", f"{fs}/bad"],
        ["zfs", "set", f"{TENANT}={BAD_VALUE_SIM}", f"{fs}/bad"] if sim else
        ["sh", "-c", f'zfs set {TENANT}="$(printf \'{BAD_VALUE_SH}\')" {fs}/bad'],
        ["zfs", "create", "-s", "-V", "8M", "-o", f"{TENANT}=after", f"{fs}/zz-after-bad"],
    ]
    return out


def shown(value: str) -> str:
    """A value as `zfs get -j` prints it in the UTF-8 locale (characters beyond U+FFFF are
    dropped; the rest is exact)."""
    return "".join(ch for ch in value if ord(ch) <= 0xFFFF)


def expected(pool: str = "tank") -> dict[str, tuple[str | None, dict[str, str]]]:
    """Dataset name -> (tenant, other user properties) as the mirror must hold them."""
    fs = f"{pool}/{ROOT}"
    out: dict[str, tuple[str | None, dict[str, str]]] = {fs: ("plain", {NOTE: ""})}
    for leaf, value in VALUES.items():
        out[f"{fs}/{leaf}"] = (shown(value), {NOTE: ""})
    out[f"{fs}/inherits"] = ("plain", {NOTE: ""})
    out[f"{fs}/inherits@s1"] = ("plain", {NOTE: ""})
    out[f"{fs}/tab@s1"] = (VALUES["tab"], {NOTE: "snap\tnote\n"})
    out[f"{fs}/bad"] = (BAD_VALUE_READ, {NOTE: ""})
    out[f"{fs}/zz-after-bad"] = ("after", {NOTE: ""})
    return out


def forged_event(pool: str = "tank") -> str:
    """A value whose line breaks imitate the end of a `zpool events -v` event and a whole
    event about another dataset (that does not exist)."""
    return ('x"\n\nDec  5 2026 03:42:24.412000000\tsysevent.fs.zfs.history_event\n'
            '        class = "sysevent.fs.zfs.history_event"\n'
            f'        pool = "{pool}"\n'
            f'        history_dsname = "{pool}/victim"\n'
            '        history_internal_str = "y')


def forged_history(host: str, pool: str = "tank") -> str:
    """A value whose line breaks imitate the end of a `zpool history -il` record and a record
    destroying another dataset, at a txg far ahead of the pool's."""
    return (f"x [on {host}]\n"
            f"2026-12-05.03:42:24 [txg:99999999] destroy {pool}/{ROOT}/quote (1) y")


def changes(host: str, pool: str = "tank") -> list[list[str]]:
    """Changes after a first sync: values that imitate the change feeds, a changed value that
    spans lines, and snapshots that inherit hostile values (one the value that is not UTF-8)."""
    fs = f"{pool}/{ROOT}"
    return [
        ["zfs", "set", f"{TENANT}={forged_event(pool)}", f"{fs}/cr"],
        ["zfs", "set", f"{TENANT}={forged_history(host, pool)}", f"{fs}/ctrl"],
        ["zfs", "set", f"{TENANT}=now\ttabbed\nand forged", f"{fs}/tab"],
        ["zfs", "snapshot", f"{fs}/bad@s2", f"{fs}/newline@s2"],
    ]


def expected_after_changes(host: str, pool: str = "tank"
                           ) -> dict[str, tuple[str | None, dict[str, str]]]:
    fs = f"{pool}/{ROOT}"
    out = expected(pool)
    out[f"{fs}/cr"] = (forged_event(pool), {NOTE: ""})
    out[f"{fs}/ctrl"] = (forged_history(host, pool), {NOTE: ""})
    out[f"{fs}/tab"] = ("now\ttabbed\nand forged", {NOTE: ""})
    out[f"{fs}/tab@s1"] = ("now\ttabbed\nand forged", {NOTE: "snap\tnote\n"})
    out[f"{fs}/bad@s2"] = (BAD_VALUE_READ, {NOTE: ""})
    out[f"{fs}/newline@s2"] = (VALUES["newline"], {NOTE: ""})
    return out
