"""`zfs get`: property values and their sources, as -H -p prints them, as a table, or as
OpenZFS 2.3's JSON (-j), including the fast path `zfs get -r -s local,received USERPROPS` takes
over untouched tenants."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from xfleet.sim.base import TenantLines
from xfleet.sim.formats import human, table
from xfleet.sim.generator import IDENTITY_COLUMNS, compile_generator
from xfleet.sim.names import list_key, parent_of, pool_of
from xfleet.sim.options import getopt, parse_types, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import ALL_KINDS, KIND_OF, PROP_ORDER, TYPE_LETTER, canon_prop
from xfleet.sim.registry import Context, command
from xfleet.sim.view import View, by_pool, open_roots

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

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


@command("zfs", "get")
def zfs_get(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("get", args, "rHpj", "dots")
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
                raise usage("get", f"invalid depth '{v}'")
            depth, recursive = int(v), True
        elif o == "o":
            fields = []
            for f in v.split(","):
                if f == "all":
                    fields.extend(["name", "property", "value", "received", "source"])
                elif f in ("name", "property", "value", "received", "source"):
                    fields.append(f)
                else:
                    raise usage("get", f"invalid column name '{f}'")
        elif o == "t":
            kinds = parse_types("get", v)
        elif o == "s":
            sources = set()
            for word in v.split(","):
                if word not in ("local", "default", "inherited", "temporary", "received",
                                "none"):
                    raise usage("get", f"invalid source '{word}'")
                sources.add(word)
    if not rest:
        raise usage("get", "missing property argument")
    spec, names = rest[0], rest[1:]
    props: list[str] | None = None
    if spec != "all":
        props = []
        for word in spec.split(","):
            canon = word if word.startswith(("written@", "written#")) and len(word) > 8 \
                else canon_prop(word)
            if canon is None:
                raise usage("get", f"bad property list: invalid property '{word}'")
            props.append(canon)
    if kinds is None:
        kinds = ALL_KINDS
    if names and not recursive and kinds == frozenset({"snap"}):
        recursive, depth = True, 1
    need_space = props is None or any(not (p in IDENTITY_COLUMNS or ":" in p) for p in props)
    view = View(sim, sim.current_overlay())
    if as_json:
        return _get_json(view, props, sources, kinds, names, recursive, depth,
                         need_space, ctx)
    out = _get_lines(view, props, fields, sources, kinds, names, recursive, depth,
                     need_space, parsable, ctx)
    if scripted:
        return out
    return _get_table(out, fields)


def _get_table(lines: Iterable[str], fields: list[str]) -> Iterator[str]:
    rows = [line.split("\t") for line in lines]
    yield from table([f.upper() for f in fields], rows, set())


def _records(view: View, kinds: frozenset[str], names: list[str], recursive: bool,
             depth: int | None, need_space: bool, ctx: Context) -> Iterator[Rec]:
    """Derived records selected like `zfs get`/`zfs list` select them."""
    roots = open_roots(view, names, ctx)
    if names and not roots:
        return
    if names and not recursive:
        found = []
        for n in roots:
            d = view.derived_for(n, need_space)
            if d is not None and KIND_OF[d["type"]] in kinds:
                found.append(d)
        found.sort(key=lambda d: list_key(d["name"], d["createtxg"]))
        yield from found
        return
    for pool, pool_roots in by_pool(view.base.pools, roots):
        if (pool_roots is None or pool in pool_roots) and "fs" in kinds:
            yield view.root(pool, view.totals(pool) if need_space else None)
        yield from view.items(pool, pool_roots, depth, kinds, None, keep=False)


def _get_lines(view: View, props: list[str] | None, fields: list[str],
               sources: set[str] | None, kinds: frozenset[str], names: list[str],
               recursive: bool, depth: int | None, need_space: bool, parsable: bool,
               ctx: Context) -> Iterator[str]:
    records = _records(view, kinds, names, recursive, depth, need_space, ctx)
    for d, pairs in _get_pairs(view, records, props, sources):
        for prop, value, source in pairs:
            shown = value if parsable else human(prop, value)
            cells = {"name": d["name"], "property": prop, "value": shown,
                     "received": "-", "source": source}
            yield "\t".join(cells[f] for f in fields)


def _get_json(view: View, props: list[str] | None, sources: set[str] | None,
              kinds: frozenset[str], names: list[str], recursive: bool, depth: int | None,
              need_space: bool, ctx: Context) -> Iterator[str]:
    """`zfs get -j -p`: one line of JSON, printed the way OpenZFS 2.3 prints it (see
    _zfs_json_string), nothing at all when a name cannot be opened, and cut short (exit
    0) at a value that is not UTF-8."""
    tprop = view.tprop
    fast = recursive and depth is None and props is not None and sources is not None \
        and all(":" in p for p in props) and sources <= {"local", "received"}
    records: Iterable[Any] = _set_values_fast(view, kinds, names, ctx) if fast else \
        _records(view, kinds, names, recursive, depth, need_space, ctx)
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
                yield from _get_pairs(view, [it], props, sources)

    for d, pairs in tenants(records):
        if not pairs:
            continue
        name = d["name"]
        entry = [_zfs_json_string(name) or "", ":{\"name\":", _zfs_json_string(name) or "",
                 ",\"type\":\"", d["type"].upper(), "\",\"pool\":\"", pool_of(name),
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


def _set_values_fast(view: View, kinds: frozenset[str], names: list[str],
                     ctx: Context) -> Iterator[Any]:
    """What `zfs get -r -s local,received USERPROPS` looks at: derived records where the
    overlay touched something, and for each untouched tenant only its filesystem, the one
    dataset of the tenant with a user property of its own (name, createtxg)."""
    b = view.base
    roots = open_roots(view, names, ctx)
    if names and not roots:
        return
    gen = compile_generator(("name", "createtxg"), frozenset({"fs"}), False,
                            view.tprop)
    for pool, pool_roots in by_pool(b.pools, roots):
        if (pool_roots is None or pool in pool_roots) and "fs" in kinds:
            yield view.root(pool, None)
        fast = TenantLines(b, gen, pool, view.env(pool, (), False))
        for it in view.items(pool, pool_roots, None, kinds, fast, False):
            if type(it) is list:
                for line in it:
                    name, txg = line.split("\t")
                    yield (name, txg)
            else:
                yield it


def _get_pairs(view: View, records: Iterable[Rec], props: list[str] | None,
               sources: set[str] | None) -> Iterator[tuple[Rec, list[tuple[str, str, str]]]]:
    for d in records:
        letter = TYPE_LETTER[d["type"]]
        pairs: list[tuple[str, str, str]] = []
        if props is None:
            for prop, types in PROP_ORDER:
                if letter not in types:
                    continue
                got = view.value(d, prop)
                if got is None or got[0] is None:
                    continue
                pairs.append((prop, got[0], got[1]))
            for prop in _user_props(view, d):
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


def _user_props(view: View, d: Rec) -> list[str]:
    found: set[str] = set()
    if d["type"] == "bookmark":
        return []
    cur: Rec | None = d
    while cur is not None:
        found.update(k for k in (cur.get("local") or {}) if ":" in k)
        parent = parent_of(cur["name"])
        cur = view.record(parent) if parent else None
    return sorted(found)
