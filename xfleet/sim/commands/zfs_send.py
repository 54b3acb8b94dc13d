"""`zfs send`: a snapshot as a simulated stream (xfleet/sim/stream.py), full or incremental
(`-i`, `-I` with the snapshots between), the chain with its properties (`-R`, `-p`), resumed
from a receive's token (`-t`), or only its size estimate (`-n -v -P`), with zfs's checks and
words. `-I` and `-R` take temporary holds on the snapshots they send, as libzfs does (their
hold and release records are the only history a send logs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xfleet.sim.content import content_of
from xfleet.sim.formats import nicenum
from xfleet.sim.names import dataset_of, pool_of
from xfleet.sim.options import getopt, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.process import StreamOutput
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.settings import mix
from xfleet.sim.stream import BadToken, Stream, Substream, parse_token, stream_size, token_lines
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import View, snapshots_of

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

_NOT_SIMULATED = {"d": "--redact", "X": "-X", "b": "-b", "h": "-h", "s": "-s"}
_DEDUP_WARNING = ("WARNING: deduplicated send is no longer supported.  A regular,\n"
                  "non-deduplicated stream will be generated.\n\n")


@command("zfs", "send")
def zfs_send(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("send", args, "DLPbcehnpsVvwR", "iItdX")
    flags = {o for o, v in opts if not v}
    for o, _ in opts:
        if o in _NOT_SIMULATED:
            raise Fail(f"sim: 'zfs send {_NOT_SIMULATED[o]}' is not simulated\n", 2)
    froms = [(o, v) for o, v in opts if o in "iI"]
    if len(froms) > 1:
        raise usage("send")
    fromname = froms[0][1] if froms else None
    doall = bool(froms) and froms[0][0] == "I"
    resume = next((v for o, v in opts if o == "t"), None)
    if "D" in flags:
        ctx.err.append(_DEDUP_WARNING)
    verbose = bool(flags & {"v", "P", "V"})
    send = {"L": bool(flags & {"L", "w"}), "c": bool(flags & {"c", "w"}),
            "e": bool(flags & {"e", "w"}), "w": "w" in flags,
            "p": bool(flags & {"p", "R"})}
    if resume is not None:
        if fromname is not None or "R" in flags or "p" in flags:
            raise usage("send", "invalid flags combined with -t")
        if rest:
            raise usage("send", "too many arguments")
    elif not rest:
        raise usage("send", "missing snapshot argument")
    elif len(rest) > 1:
        raise usage("send", "too many arguments")
    view = View(sim, sim.current_overlay())
    dry = "n" in flags
    out = [] if dry else ctx.err  # estimates: on stdout for a dry run, else on stderr
    if resume is not None:
        stream = _resumed(sim, view, resume, send, verbose, out)
    elif "R" in flags or doall:
        chain = _chain(sim, view, rest[0], fromname, "R" in flags, send, ctx)
        if chain is None:
            ctx.code = 1  # nothing between the two snapshots: libzfs says nothing
            return iter(())
        stream = chain
        if not dry:
            _hold_and_release(sim, stream, ctx)
    else:
        stream = _one(sim, view, rest[0], fromname, send, ctx)
    if verbose:
        out.extend(line + "\n" for line in _estimates(stream, "P" in flags,
                                                      "R" in flags or doall))
    if dry:
        return iter([line.rstrip("\n") for line in "".join(out).splitlines()])
    return StreamOutput(stream)


# ---------------------------------------------------------------------------------------------
# the three kinds of send


def _one(sim: SimTransport, view: View, name: str, fromname: str | None,
         send: dict[str, bool], ctx: Context) -> Stream:
    """`zfs send [-i FROM] SNAP` (libzfs' zfs_send_one)."""
    if fromname is not None and "@" not in fromname and "#" not in fromname:
        ctx.err.append("Warning: incremental source didn't specify type, assuming snapshot. "
                       "Use '@' or '#' prefix to avoid ambiguity.\n")
        fromname = "@" + fromname
    if fromname is not None and fromname[0] in "@#":
        fromname = dataset_of(name) + fromname
    to = _open(view, name)
    if to["type"] != "snapshot":
        raise Fail(f"warning: cannot send '{name}': target is busy; if a filesystem, it must "
                   "not be mounted")
    sub_from: Rec | None = None
    if fromname is not None:
        sub_from = _open(view, fromname)
        if not _before(view, sub_from, to):
            raise Fail(f"warning: cannot send '{name}': not an earlier snapshot from the same "
                       "fs")
    head = view.record(dataset_of(name))
    assert head is not None
    return _stream(sim, view, head, [(sub_from, to)], send)


def _chain(sim: SimTransport, view: View, name: str, fromname: str | None,
           replicate: bool, send: dict[str, bool], ctx: Context) -> Stream | None:
    """`zfs send -I FROM SNAP` and `zfs send -R [-i|-I FROM] SNAP` (libzfs' zfs_send): every
    snapshot after FROM up to SNAP (-i with -R: the last one only); None when SNAP does not
    come after FROM."""
    if fromname is not None and "#" in fromname:
        raise Fail("Error: multiple snapshots cannot be sent from a bookmark.")
    if "@" not in name:
        raise Fail("Error: Unsupported flag with filesystem or bookmark.")
    ds, tosnap = name.split("@", 1)
    head = _open(view, ds)
    if head["type"] == "snapshot":
        raise Fail(f"cannot open '{ds}': operation not applicable to datasets of this type")
    short: str | None = None
    if fromname is not None:
        fds, at, short = fromname.rpartition("@")
        if not at:
            fds, short = "", fromname
        if fds and fds != ds:
            if fds + "@" + short == head.get("origin"):
                raise Fail("sim: sending from a clone's origin is not simulated\n", 2)
            raise usage("send", "incremental source must be in same filesystem")
        if "@" in short or "/" in short:
            raise usage("send", "invalid incremental source")
        if not short:
            raise Fail(f"cannot send '{ds}': zero-length incremental source")
        _open(view, f"{ds}@{short}")
    to = _open(view, name)
    if replicate and any(d["name"] != ds for d in
                         view.items(pool_of(ds), [ds], 1, frozenset({"fs", "vol"}), None)):
        raise Fail(f"sim: 'zfs send -R' of {ds}, which has children, is not simulated\n", 2)
    snaps = snapshots_of(view, ds)
    names = [s["name"] for s in snaps]
    last = names.index(to["name"])
    if short is None:
        chain = snaps[:last + 1] if replicate else [to]
        first: Rec | None = None
    else:
        at_from = names.index(f"{ds}@{short}")
        if at_from >= last:
            return None
        first = snaps[at_from]
        chain = snaps[at_from + 1:last + 1]
    pairs: list[tuple[Rec | None, Rec]] = []
    prev = first
    for s in chain:
        pairs.append((prev, s))
        prev = s
    return _stream(sim, view, head, pairs, send, replicate=replicate)


def _resumed(sim: SimTransport, view: View, text: str, send: dict[str, bool], verbose: bool,
             out: list[str]) -> Stream:
    """`zfs send -t TOKEN`: the rest of the substream a partial receive has part of."""
    try:
        fields = parse_token(text)
    except BadToken as exc:
        raise Fail(f"cannot resume send: {exc}") from None
    if verbose:
        out.append("resume token contents:\n")
        out.extend(line + "\n" for line in token_lines(fields))
    toname = fields.get("toname")
    if not isinstance(toname, str) or "@" not in toname or not all(
            isinstance(fields.get(k), int) for k in ("object", "offset", "bytes", "toguid")):
        raise Fail("cannot resume send: resume token is corrupt")
    to = _by_guid(view, dataset_of(toname), int(fields["toguid"]), bookmarks=False)
    if to is None:
        why = "is no longer the same snapshot used in the initial send" \
            if view.exists(toname) else "used in the initial send no longer exists"
        raise Fail(f"cannot resume send: '{toname}' {why}")
    sub_from: Rec | None = None
    fromguid = int(fields.get("fromguid") or 0)
    if fromguid:
        sub_from = _by_guid(view, dataset_of(toname), fromguid, bookmarks=True)
        if sub_from is None:
            raise Fail(f"cannot resume send: incremental source {fromguid:#x} no longer "
                       "exists")
    flags = {"L": bool(fields.get("largeblockok")) or send["L"],
             "c": bool(fields.get("compressok")) or send["c"],
             "e": bool(fields.get("embedok")) or send["e"],
             "w": bool(fields.get("rawok")) or send["w"], "p": False}
    head = view.record(dataset_of(to["name"]))
    assert head is not None
    stream = _stream(sim, view, head, [(sub_from, to)], flags, resuming=True)
    sub = stream.subs[0]
    sub.offset = min(int(fields["bytes"]), sub.size)
    stream.header = b""  # the offset is part of the header
    return stream


# ---------------------------------------------------------------------------------------------
# helpers


def _open(view: View, name: str) -> Rec:
    rec = view.record(name)
    if rec is None:
        raise Fail(f"cannot open '{name}': dataset does not exist")
    return rec


def _before(view: View, first: Rec, then: Rec) -> bool:
    """Whether snapshot (or bookmark) `first` is an earlier snapshot of `then`'s dataset or
    of the origins it was cloned from (libzfs' snapshot_is_before)."""
    ds = dataset_of(then["name"])
    txg = int(then["createtxg"])
    while True:
        if dataset_of(first["name"]) == ds:
            return int(first["createtxg"]) < txg
        head = view.record(ds)
        origin = head.get("origin") if head is not None else None
        if not origin:
            return False
        snap = view.record(origin)
        if snap is None:
            return False
        ds, txg = dataset_of(origin), int(snap["createtxg"]) + 1


def _by_guid(view: View, ds: str, guid: int, *, bookmarks: bool) -> Rec | None:
    """The snapshot (or bookmark) of `ds` with this guid (libzfs' guid_to_name)."""
    pool = pool_of(ds)
    kinds = frozenset({"snap", "bm"} if bookmarks else {"snap"})
    if view.record(ds) is None:
        return None
    for d in view.items(pool, [ds], 1, kinds, None):
        if d["type"] in ("snapshot", "bookmark") and int(d["guid"]) == guid:
            rec: Rec = d
            return rec
    return None


def _data(view: View, first: Rec | None, then: Rec, compressed: bool) -> int:
    """The bytes of blocks a substream carries: a full one the snapshot's (as stored with -c,
    else logical), an incremental one what was written between the two snapshots."""
    if first is None:
        return int(then["referenced"] if compressed else then["logicalreferenced"])
    ds = dataset_of(then["name"])
    lo, hi = int(first["createtxg"]), int(then["createtxg"])
    if dataset_of(first["name"]) == ds:
        written = sum(int(s["written"]) for s in snapshots_of(view, ds)
                      if lo < int(s["createtxg"]) <= hi)
    else:  # from the origin of a clone: what the clone referenced of its own
        written = int(then["written"])
    written = min(written, int(then["referenced"]))
    if compressed or not then["referenced"]:
        return written
    return written * int(then["logicalreferenced"]) // int(then["referenced"])


def _stream(sim: SimTransport, view: View, head: Rec, pairs: list[tuple[Rec | None, Rec]],
            send: dict[str, bool], *, replicate: bool = False,
            resuming: bool = False) -> Stream:
    subs = []
    for first, then in pairs:
        data = _data(view, first, then, send["c"])
        snap: dict[str, Any] = {
            "name": then["name"].split("@", 1)[1], "creation": int(then["creation"]),
            "createtxg": int(then["createtxg"]), "referenced": int(then["referenced"]),
            "logicalreferenced": int(then["logicalreferenced"]),
            "written": data if first is not None else int(then["referenced"]),
            "content": content_of(then), "volsize": then.get("volsize"),
        }
        if send["p"]:
            snap["local"] = {k: v for k, v in (then.get("local") or {}).items()}
        subs.append(Substream(
            toname=then["name"], toguid=int(then["guid"]),
            fromguid=int(first["guid"]) if first is not None else 0,
            fromname=first["name"] if first is not None else None, snap=snap,
            size=stream_size(data)))
    props = None
    if send["p"]:
        props = dict(head.get("local") or {})
    compression = view.effective(head, "compression")[0] if head["type"] != "snapshot" \
        else "off"
    return Stream(dataset=head["name"], type=head["type"], flags=dict(send), subs=subs,
                  volsize=head.get("volsize"), volblocksize=head.get("volblocksize"),
                  compression=compression, props=props, node=sim.node, resuming=resuming)


def _estimates(stream: Stream, parsable: bool, chain: bool) -> list[str]:
    """What `zfs send -v` / `-P` print before the stream: one line per snapshot, then the
    total (send_print_verbose, estimate_size). The header's bytes count with the first."""
    out: list[str] = []
    head = len(stream.encode())
    for i, s in enumerate(stream.subs):
        size = s.sent + (head if i == 0 else 0)
        if s.fromname is None:
            first = None
        elif chain:
            first = s.fromname.split("@", 1)[1]  # libzfs prints the short name here
        else:
            first = s.fromname
        if parsable:
            out.append(f"incremental\t{first}\t{s.toname}\t{size}" if first is not None
                       else f"full\t{s.toname}\t{size}")
        elif first is not None:
            shown = f"@{first}" if "@" not in first and "#" not in first else first
            out.append(f"send from {shown} to {s.toname} estimated size is {nicenum(size)}")
        else:
            out.append(f"full send of {s.toname} estimated size is {nicenum(size)}")
    total = stream.length
    out.append(f"size\t{total}" if parsable else f"total estimated size is {nicenum(total)}")
    return out


def _hold_and_release(sim: SimTransport, stream: Stream, ctx: Context) -> None:
    """The temporary holds libzfs takes on what `-I`/`-R` send (tag .send-PID-N, released
    when the send ends): their history, and the send's command line after them."""
    names = [s.fromname for s in stream.subs[:1] if s.fromname] + \
        [s.toname for s in stream.subs]
    pid = 1000 + mix(sim.node, "send-pid", names[0], len(ctx.argv)) % 30000
    tag = f".send-{pid}-1"

    def op(txn: Transaction) -> list[str]:
        pool = pool_of(names[0])
        recs = [r for r in (txn.view.record(n) for n in names) if r is not None]
        txg = txn.stamp(pool)
        for r in recs:
            refs = len(r.get("holds") or {}) + 1
            txn.internal(pool, "hold", f"tag={tag} temp=1 refs={refs}", txg, ds=r["name"],
                         guid=r["guid"])
        txn.ioctl(pool, "hold", [("holds", [(r["name"], tag) for r in recs]),
                                 ("cleanup_fd", 5)])
        txg = txn.stamp(pool)
        for r in recs:
            refs = len(r.get("holds") or {})
            txn.internal(pool, "release", f"tag={tag} refs={refs}", txg, ds=r["name"],
                         guid=r["guid"])
        return []

    list(sim.mutate(op, ctx))

