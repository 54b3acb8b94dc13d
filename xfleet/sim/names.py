"""Dataset names: their parts, the order `zfs list` prints them in, and libzfs' reasons for
refusing one."""

from __future__ import annotations

import re

_NAME_CHARS = re.compile(r"^[A-Za-z0-9_\-:. ]+\Z")


def dataset_of(name: str) -> str:
    """The dataset part of a snapshot (`@`) or bookmark (`#`) name."""
    for sep in "@#":
        at = name.find(sep)
        if at >= 0:
            return name[:at]
    return name


def pool_of(name: str) -> str:
    return dataset_of(name).split("/", 1)[0]


def list_key(name: str, txg: int) -> tuple[str, int, int]:
    """`zfs list` order: datasets by strcmp of the name, each one's snapshots (by createtxg)
    right after it."""
    at = name.find("@")
    if at < 0:
        return (name, 0, 0)
    return (name[:at], 1, txg)


def parent_of(name: str) -> str | None:
    if "@" in name or "#" in name:
        return dataset_of(name)
    if "/" in name:
        return name.rsplit("/", 1)[0]
    return None


def in_subtree(name: str, root: str) -> bool:
    return name == root or name.startswith((root + "/", root + "@", root + "#"))


def depth_below(name: str, root: str) -> int:
    rel = name[len(root):]
    return rel.count("/") + (1 if "@" in rel or "#" in rel else 0)


def name_problem(name: str, *, snapshot: bool | None, bookmark: bool = False) -> str | None:
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
