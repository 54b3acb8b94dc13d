"""Validation of ZFS pool, dataset, snapshot and bookmark names.

The rules are OpenZFS's own (module/zcommon/zfs_namecheck.c and zpool_name_valid() in libzfs):

- a component uses letters, digits, `_`, `-`, `:`, `.` and space; `/` separates components,
  one `@` starts a snapshot name and one `#` a bookmark name (never both);
- no empty component, no component that is `.` or `..`, no leading or trailing `/`;
- a whole name is at most 255 characters and at most 50 levels deep;
- a pool name starts with a letter, is at most 239 characters (room for `pool/$ORIGIN@$ORIGIN`),
  and is not reserved: `zpool create` refuses `log` and anything starting with `mirror`,
  `raidz`, `draid` or `spare`.

(`%` is accepted by the kernel only for its own temporary clones, so it is rejected here.)
Names are validated before they are ever put on a command line: a name is data, never an option
or a shell word. Since a pool name starts with a letter, a valid name never starts with `-`.
"""

from __future__ import annotations

import re

from xfleet.core.errors import NameError_

MAX_NAME_LEN = 255  # ZFS_MAX_DATASET_NAME_LEN (256) - 1
MAX_POOL_LEN = 239  # ZFS_MAX_DATASET_NAME_LEN - 2 - 2 * len("$ORIGIN") - 1
MAX_NESTING = 50  # zfs_max_dataset_nesting (module parameter, default 50)
_ALLOWED = re.compile(r"[A-Za-z0-9_\-:. ]")
_RESERVED_PREFIXES = ("mirror", "raidz", "draid", "spare")
_RESERVED_NAMES = ("log",)

_HINT = (
    "names may use letters, digits, '_', '-', ':', '.' and space; '/' separates datasets, "
    "'@' starts a snapshot name, '#' a bookmark name"
)


def _bad(name: str, why: str) -> NameError_:
    return NameError_(f"invalid ZFS name {name!r}: {why}", hint=_HINT)


def _bad_chars(text: str) -> str:
    """The characters of `text` that ZFS does not allow, shown readably: ';', '$', '\\n'."""
    bad = sorted({c for c in text if not _ALLOWED.fullmatch(c)})
    return ", ".join(repr(c) for c in bad)


def _check_component(name: str, comp: str, what: str) -> None:
    if comp == "":
        raise _bad(name, f"empty {what} component")
    if comp in (".", ".."):
        raise _bad(name, f"a {what} component may not be '.' or '..'")
    bad = _bad_chars(comp)
    if bad:
        raise _bad(name, f"character(s) {bad} not allowed in a {what} name")


def _pool_problem(pool: str) -> str | None:
    """Why `pool` is not a valid pool name, or None."""
    if not pool:
        return "empty pool name"
    if len(pool) > MAX_POOL_LEN:
        return f"a pool name is at most {MAX_POOL_LEN} characters"
    bad = _bad_chars(pool)
    if bad:
        return f"character(s) {bad} not allowed in a pool name"
    if not ("a" <= pool[0] <= "z" or "A" <= pool[0] <= "Z"):
        return "a pool name must start with a letter"
    if pool in _RESERVED_NAMES or pool.startswith(_RESERVED_PREFIXES):
        return (
            "reserved pool name (ZFS reserves 'log' and names starting with "
            "'mirror', 'raidz', 'draid' or 'spare')"
        )
    return None


def validate_pool(name: str) -> str:
    """Return `name` if `zpool create` would accept it as a pool name, else raise NameError_."""
    if not isinstance(name, str):
        raise _bad(str(name), "a pool name must be a string")
    problem = _pool_problem(name)
    if problem:
        raise _bad(name, problem)
    return name


def validate_dataset(
    name: str, *, allow_snapshot: bool = True, allow_bookmark: bool = False
) -> str:
    """Return `name` if it is a valid filesystem/volume/snapshot name, else raise NameError_.

    With `allow_bookmark`, `pool/fs#mark` is accepted too; without `allow_snapshot`,
    `pool/fs@snap` is refused.
    """
    if not isinstance(name, str) or not name:
        raise _bad(str(name), "empty name")
    if len(name) > MAX_NAME_LEN:
        raise _bad(name[:40] + "...", f"{len(name)} characters, longer than {MAX_NAME_LEN}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _bad(name, "control characters are not allowed")
    bad = _bad_chars(name.replace("/", "").replace("@", "").replace("#", ""))
    if bad:  # the dangerous part first: `tank/x;rm -rf /` is about ';', not the trailing '/'
        raise _bad(name, f"character(s) {bad} not allowed in a ZFS name")
    if name.startswith("/"):
        raise _bad(name, "a name starts with its pool, not with '/'")
    base, snap, delim = name, None, ""
    if "@" in name and "#" in name:
        raise _bad(name, "a name has either one '@' (snapshot) or one '#' (bookmark), not both")
    if "@" in name:
        if not allow_snapshot:
            raise _bad(name, "a snapshot name is not allowed here")
        base, snap = name.split("@", 1)
        delim = "@"
    elif "#" in name:
        if not allow_bookmark:
            raise _bad(name, "'#' is only allowed before a bookmark name, not here")
        base, snap = name.split("#", 1)
        delim = "#"
    if snap is not None:
        if delim in snap:
            raise _bad(name, f"only one {delim!r} is allowed")
        if "/" in snap:
            raise _bad(name, f"no '/' is allowed after {delim!r}")
    parts = base.split("/")
    if base.endswith("/") and len(parts) > 1:
        raise _bad(name, "trailing '/'")
    if len(parts) > MAX_NESTING:
        depth = len(parts) - 1
        raise _bad(name, f"nested {depth} levels deep; ZFS allows fewer than {MAX_NESTING}")
    problem = _pool_problem(parts[0])
    if problem:
        raise _bad(name, problem)
    for comp in parts[1:]:
        _check_component(name, comp, "dataset")
    if snap is not None:
        _check_component(name, snap, "snapshot" if delim == "@" else "bookmark")
    return name


def pool_of(name: str) -> str:
    """The pool a dataset, snapshot or bookmark name belongs to (on sync's hot path: one split
    for the common case)."""
    pool = name.split("/", 1)[0]
    if "@" in pool or "#" in pool:
        pool = pool.split("@", 1)[0].split("#", 1)[0]
    return pool
