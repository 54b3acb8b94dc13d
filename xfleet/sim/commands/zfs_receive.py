"""`zfs receive` (alias `recv`): a simulated stream (xfleet/sim/stream.py) read from stdin
becomes a new volume or filesystem, or new snapshots of an existing one, keeping the sent
snapshots' guids, with the checks, words and history of OpenZFS 2.3 (libzfs_sendrecv.c,
dmu_recv.c; tests/fixtures/real/zpool_history_ops.txt):

- a full stream: `receive NAME` in one txg, the `-o`/`-x` properties in the next, `finish
  receiving` and the snapshot in the one after;
- an incremental stream into NAME/%recv (a hidden clone of NAME's newest snapshot), then
  `finish receiving`, `clone swap`, the snapshot and the clone's destruction in one txg;
- a stream cut short: with `-s` (or when it resumed one) a partial receive that keeps a
  `receive_resume_token` (NAME itself, inconsistent, for a full stream; NAME/%recv for an
  incremental one), which `zfs send -t` resumes (`resume receive`) and `receive -A` discards;
  without, nothing is left;
- a resumable receive (-s) that succeeds logs its ZFS_IOC_RECV_NEW ioctl, begin record and
  all, as the kernel does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet.sim.commands.zfs_create import prop_arg
from xfleet.sim.commands.zfs_destroy import remove
from xfleet.sim.commands.zfs_set import inherited
from xfleet.sim.names import name_problem, parent_of, pool_of
from xfleet.sim.options import getopt, usage
from xfleet.sim.overlay import Rec
from xfleet.sim.properties import INHERITABLE, assign, canon_prop
from xfleet.sim.registry import Context, Fail, command
from xfleet.sim.space import FS_LREF, FS_REF, ZVOL_MIN_LREF, ZVOL_MIN_REF
from xfleet.sim.stream import BadStream, Incoming, Stream, Substream, decode, token
from xfleet.sim.transaction import Transaction
from xfleet.sim.view import View, snapshots_of

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

RECV = "%recv"  # the hidden clone an incremental receive writes into


@dataclass
class Options:
    """What `zfs receive` was asked to do."""

    target: str
    resumable: bool = False  # -s
    force: bool = False  # -F
    prefix: bool = False  # -d
    tail: bool = False  # -e
    dry: bool = False  # -n
    verbose: bool = False  # -v
    props: list[tuple[str, str]] = field(default_factory=list)  # -o, in order
    excluded: list[str] = field(default_factory=list)  # -x


@command("zfs", "receive", "recv")
def zfs_receive(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("receive", args, "dehMnuvFsAc", "ox")
    flags = {o for o, v in opts if o not in "ox"}
    if "c" in flags:
        raise Fail("sim: 'zfs receive -c' (corrective receive) is not simulated\n", 2)
    if "d" in flags and "e" in flags:
        raise usage("receive", "invalid option combination: -d and -e are mutually exclusive")
    props: list[tuple[str, str]] = []
    excluded: list[str] = []
    seen: set[str] = set()
    for o, v in opts:
        if o not in "ox":
            continue
        name, eq, value = v.partition("=")
        if o == "o" and not eq:
            raise usage("receive", "missing '=' for property argument")
        if name in seen:
            raise usage("receive", f"property '{name}' specified multiple times")
        seen.add(name)
        if o == "o":
            props.append((name, value))
        else:
            excluded.append(name)
    if not rest:
        raise usage("receive", "missing snapshot argument")
    if len(rest) > 1:
        raise usage("receive", "too many arguments")
    if "A" in flags:
        if flags & {"d", "e", "n", "s", "u"}:
            raise usage("receive", "invalid option")
        return _abort(sim, rest[0], ctx)
    asked = Options(target=rest[0], resumable="s" in flags, force="F" in flags,
                    prefix=bool(flags & {"d", "e"}), tail="e" in flags, dry="n" in flags,
                    verbose="v" in flags, props=props, excluded=excluded)
    incoming = ctx.input()
    try:
        stream = decode(incoming)
    except BadStream as exc:
        raise Fail(f"cannot receive: {exc}") from None
    failed: list[Fail] = []

    def op(txn: Transaction) -> list[str]:
        lines: list[str] = []
        try:
            Receive(txn, asked, stream, incoming, lines).run()
        except Fail as f:
            failed.append(f)
            ctx.code = f.code  # the command line is not logged
        return lines

    out = list(sim.mutate(op, ctx))
    if failed:
        ctx.err.append(failed[0].stderr)
        ctx.code = failed[0].code
    return iter(out)


class Receive:
    """One `zfs receive` of `stream` in the transaction `txn` (substream by substream, as
    libzfs calls the kernel once per snapshot)."""

    def __init__(self, txn: Transaction, o: Options, stream: Stream, incoming: Incoming,
                 lines: list[str]):
        self.txn = txn
        self.view = txn.view
        self.o = o
        self.stream = stream
        self.count = incoming.count
        self.lines = lines

    def run(self) -> None:
        s = self.stream
        if "@" in self.o.target and (self.o.prefix or self.o.tail):
            raise Fail("cannot receive: invalid argument - snapshot not allowed with "
                       f"{'-e' if self.o.tail else '-d'}")
        if "@" in self.o.target and len(s.subs) > 1:
            raise Fail("cannot receive: cannot specify snapshot name for multi-snapshot "
                       "stream")
        for sub, (first, end) in zip(s.subs, s.bounds(), strict=True):
            if self.count < first or (self.count == first and sub is not s.subs[0]
                                      and sub.sent):
                raise Fail("cannot receive: failed to read from stream")
            got = min(self.count, end) - first
            self.one(sub, got)

    # -- one substream ---------------------------------------------------------------------
    def destination(self, sub: Substream) -> str:
        t = self.o.target
        toname = sub.toname
        if self.o.tail:
            cut = self.stream.dataset.rfind("/")
            chop = toname[cut:] if cut >= 0 else "/" + toname
        elif self.o.prefix:
            slash = toname.find("/")
            chop = toname[slash:] if slash >= 0 else toname[toname.find("@"):]
        elif "@" not in t:
            chop = toname[len(self.stream.dataset):]
        else:
            chop = ""
        dest = t + chop
        if name_problem(dest, snapshot=True) is not None:
            raise Fail("cannot receive: invalid name")
        return dest

    def one(self, sub: Substream, got: int) -> None:
        # a fresh view: what the substreams before this one received is part of it
        self.view = self.txn.view = View(self.txn.sim, self.txn.ov)
        dest = self.destination(sub)
        name, short = dest.split("@", 1)
        if self.stream.resuming:
            self.resume(sub, got, name, short)
        elif sub.fromguid == 0:
            self.full(sub, got, name, short)
        else:
            self.incremental(sub, got, name, short)

    def errbuf(self, sub: Substream) -> str:
        if self.stream.resuming:
            return "cannot receive resume stream"
        return "cannot receive new filesystem stream" if sub.fromguid == 0 else \
            "cannot receive incremental stream"

    def full(self, sub: Substream, got: int, name: str, short: str) -> None:
        v = self.view
        err = self.errbuf(sub)
        existing = v.record(name)
        if existing is not None:
            if not self.o.force:
                raise Fail(f"{err}: destination '{name}' exists\nmust specify -F to "
                           "overwrite it")
            snaps = snapshots_of(v, name)
            if snaps:
                raise Fail(f"{err}: destination has snapshots (eg. {snaps[0]['name']})\n"
                           "must destroy them to overwrite it")
            if existing.get("origin"):
                raise Fail(f"{err}: destination '{name}' is a clone\nmust destroy it to "
                           "overwrite it")
            self.check_props(sub, existing["type"], err)
            if existing.get("recv"):
                raise Fail(f"{err}: destination {name} contains partially-complete state "
                           'from "zfs receive -s".')
            self.into_clone(sub, got, name, short, existing, None)
            return
        parent = parent_of(name)
        if parent is None:
            raise Fail(f"{err}: destination '{name}' does not exist")
        prec = v.record(parent)
        if prec is None:
            raise Fail(f"cannot open '{parent}': dataset does not exist\n{err}: unable to "
                       "restore to destination")
        if prec["type"] != "filesystem":
            raise Fail(f"{err}: parent '{parent}' is not a filesystem")
        self.check_props(sub, self.stream.type, err)
        if not self.announce(sub, name, short):
            return
        txn = self.txn
        pool = pool_of(name)
        txg = txn.stamp(pool)
        ref, lref = (ZVOL_MIN_REF, ZVOL_MIN_LREF) if self.stream.type == "volume" else \
            (FS_REF, FS_LREF)
        head: Rec = {
            "name": name, "type": self.stream.type, "guid": txn.guid(name), "createtxg": txg,
            "creation": txn.now, "origin": None, "volsize": self.stream.volsize,
            "volblocksize": self.stream.volblocksize, "referenced": ref,
            "logicalreferenced": lref, "written": ref, "ubd": ref, "ubs": 0,
            "refreservation": 0, "lused_own": lref, "snapshots_changed": 0, "local": {},
            "inconsistent": 1,
        }
        txn.put(head)
        txn.internal(pool, "receive", " ", txg, ds=name, guid=head["guid"])
        self.apply_props(head, sub)
        stop = self.stop(sub, got, pool)
        if stop is not None:
            self.cut(sub, *stop, head, name, None, txg)
            return
        self.finish(sub, head, name, short, None)

    def incremental(self, sub: Substream, got: int, name: str, short: str) -> None:
        v = self.view
        err = self.errbuf(sub)
        head = v.record(name)
        if head is None:
            raise Fail(f"{err}: destination '{name}' does not exist")
        self.check_props(sub, head["type"], err)
        if head.get("recv"):
            raise Fail(f"{err}: destination {name} contains partially-complete state from "
                       '"zfs receive -s".')
        snaps = snapshots_of(v, name)
        same = v.record(f"{name}@{short}")
        if same is not None:
            if any(int(s["guid"]) == sub.toguid for s in snaps):
                return  # libzfs: that snapshot is there already; the substream is skipped
            raise Fail(f"cannot restore to {name}@{short}: destination already exists")
        at = next((i for i, s in enumerate(snaps) if int(s["guid"]) == sub.fromguid), None)
        if at is None:
            raise Fail(f"{err}: most recent snapshot of {name} does not\nmatch incremental "
                       "source")
        since = snaps[at]["name"].split("@", 1)[1]
        if not self.o.force and (v.written_since(head, since) or 0) > 0:
            raise Fail(f"{err}: destination {name} has been modified\nsince most recent "
                       "snapshot")
        if not self.announce(sub, name, short):
            return
        self.into_clone(sub, got, name, short, self.txn.get(name) or head, snaps[at])

    def into_clone(self, sub: Substream, got: int, name: str, short: str, head: Rec,
                   base: Rec | None) -> None:
        """Receive into NAME/%recv, a clone of NAME's snapshot `base` (or of nothing: -F of
        a full stream over NAME)."""
        txn = self.txn
        pool = pool_of(name)
        txg = txn.stamp(pool)
        clone = f"{name}/{RECV}"
        guid = txn.guid(clone)
        txn.internal(pool, "receive", " ", txg, ds=clone, guid=guid)
        head = txn.get(name) or head
        self.apply_props(head, sub)
        stop = self.stop(sub, got, pool)
        if stop is not None:
            self.cut(sub, *stop, head, clone, base, txg, recv_guid=guid)
            return
        self.finish(sub, head, name, short, base, clone_guid=guid)

    def resume(self, sub: Substream, got: int, name: str, short: str) -> None:
        v = self.view
        err = self.errbuf(sub)
        head = v.record(name)
        if head is None:
            raise Fail(f"{err}: destination '{name}' does not exist")
        if sub.fromguid == 0 and not head.get("inconsistent") and not self.o.force:
            raise Fail(f"{err}: Resuming recv on existing destination '{name}'\nmust "
                       "specify -F to overwrite it")
        recv = head.get("recv")
        tok = (recv or {}).get("token") or {}
        if not recv or int(tok.get("toguid", 0)) != sub.toguid or \
                int(tok.get("fromguid", 0)) != sub.fromguid or \
                int(tok.get("bytes", -1)) != sub.offset:
            why = "kernel modules must be upgraded to receive this stream." \
                if self.o.resumable else "invalid backup stream"
            raise Fail(f"{err}: {why}")
        if not self.announce(sub, name, short):
            return
        txn = self.txn
        pool = pool_of(name)
        rec = txn.get(name)
        assert rec is not None
        full = sub.fromguid == 0
        ds, guid = (name, rec["guid"]) if full else (f"{name}/{RECV}", recv["guid"])
        txg = txn.stamp(pool)
        txn.internal(pool, "resume receive", " ", txg, ds=ds, guid=guid)
        stop = self.stop(sub, got, pool)
        if stop is not None:
            self.cut(sub, *stop, rec, ds, None, int(recv["txg"]), recv_guid=guid, again=recv)
            return
        base = None
        if not full:
            base = next((s for s in snapshots_of(v, name)
                         if int(s["guid"]) == sub.fromguid), None)
        rec.pop("recv", None)
        self.finish(sub, rec, name, short, base, clone_guid=None if full else guid)

    # -- the end of a substream ----------------------------------------------------------------
    def finish(self, sub: Substream, head: Rec, name: str, short: str, base: Rec | None,
               clone_guid: int | None = None) -> None:
        """The substream is all there: its snapshot is made (for an incremental, NAME/%recv
        is swapped in and destroyed; with -F, NAME's snapshots after `base` go first)."""
        txn = self.txn
        pool = pool_of(name)
        txg = txn.stamp(pool)
        snap = sub.snap
        clone = f"{name}/{RECV}"
        if clone_guid is None:
            txn.internal(pool, "finish receiving", f"snap={short}", txg, ds=name,
                         guid=head["guid"])
        else:
            txn.internal(pool, "finish receiving", f"snap={short}", txg, ds=clone,
                         guid=clone_guid)
            if base is not None:
                later = [s for s in snapshots_of(self.view, name)
                         if int(s["createtxg"]) > int(base["createtxg"])]
                for s in reversed(later):
                    txn.internal(pool, "destroy", " ", txg, ds=s["name"], guid=s["guid"])
                if later:
                    remove(txn, {}, [s["name"] for s in later])
                    head = txn.get(name) or head
            txn.internal(pool, "clone swap", f"parent={name.rsplit('/', 1)[-1]}", txg,
                         ds=clone, guid=clone_guid)
        rec: Rec = {
            "name": f"{name}@{short}", "type": "snapshot", "guid": sub.toguid,
            "createtxg": txg, "creation": int(snap["creation"]),
            "referenced": int(snap["referenced"]),
            "logicalreferenced": int(snap["logicalreferenced"]),
            "written": int(snap["written"]), "unique": 0, "volsize": snap.get("volsize"),
            "clones": [], "local": {}, "content": snap["content"],
        }
        if snap.get("local"):
            rec["received"] = dict(snap["local"])
        txn.put(rec)
        txn.internal(pool, "snapshot", " ", txg, ds=rec["name"], guid=rec["guid"])
        if clone_guid is not None:
            mintxg = int(base["createtxg"]) if base is not None else 1
            txn.internal(pool, "destroy", f"(bptree, mintxg={mintxg})", txg, ds=clone,
                         guid=clone_guid)
        head.pop("recv", None)
        head.pop("inconsistent", None)
        head.update(referenced=rec["referenced"], logicalreferenced=rec["logicalreferenced"],
                    written=0, ubd=rec["referenced"], lused_own=rec["logicalreferenced"],
                    snapshots_changed=txn.now, content=rec["content"])
        if self.stream.volsize is not None and head["type"] == "volume":
            head["volsize"] = int(snap.get("volsize") or self.stream.volsize)
        txn.put(head)
        self.ioctl(sub, rec["name"], head)

    def cut(self, sub: Substream, got: int, nospace: bool, head: Rec, ds: str,
            base: Rec | None, txg: int, *, recv_guid: int | None = None,
            again: dict[str, Any] | None = None) -> None:
        """The stream ended inside the substream (or the pool filled up): a partial receive
        with its token when it may resume, else nothing of it is left."""
        txn = self.txn
        pool = pool_of(ds)
        name = head["name"]
        err = self.errbuf(sub)
        full = sub.fromguid == 0
        keep = self.o.resumable or again is not None
        if keep:
            done = sub.offset + got
            tok: dict[str, Any] = {}
            if not full:
                tok["fromguid"] = sub.fromguid
            tok.update(object=1, offset=done, bytes=done, toguid=sub.toguid,
                       toname=sub.toname)
            flags = self.stream.flags
            for key, flag in (("largeblockok", "L"), ("embedok", "e"),
                              ("compressok", "c"), ("rawok", "w")):
                if flags.get(flag):
                    tok[key] = True
            recv = dict(again or {})
            recv.update(guid=recv_guid if recv_guid is not None else head["guid"],
                        txg=txg, token=tok)
            rec = txn.get(name) or head
            rec["recv"] = recv
            if full:
                rec["inconsistent"] = 1
                rec["referenced"] = max(int(rec["referenced"]), min(
                    int(sub.snap["referenced"]), ZVOL_MIN_REF + done))
                rec["ubd"] = rec["referenced"]
            txn.put(rec)
        else:
            next_txg = txn.stamp(pool)
            if full:
                txn.internal(pool, "destroy", "(bptree, mintxg=1)", next_txg, ds=name,
                             guid=head["guid"])
                txn.drop(name, base=False, subtree=False)
            else:
                txn.internal(pool, "destroy", f"(livelist, mintxg={txg})", next_txg,
                             ds=ds, guid=recv_guid if recv_guid is not None else 0)
        if nospace:
            raise Fail(f"{err}: out of space")
        if keep:
            raise Fail(f"{err}: checksum mismatch or incomplete stream.\nPartially received "
                       "snapshot is saved.\nA resuming stream can be generated on the "
                       f"sending system by running:\n    zfs send -t {token(tok)}")
        raise Fail(f"{err}: incomplete stream")

    # -- properties, space, output ---------------------------------------------------------
    def check_props(self, sub: Substream, typ: str, err: str) -> None:
        """-o and -x as libzfs checks them before the kernel gets the stream."""
        scratch: Rec = {"name": "x", "type": typ, "local": {}, "refreservation": 0,
                        "volsize": self.stream.volsize or 0,
                        "volblocksize": self.stream.volblocksize or 16384}
        for k, value in self.o.props:
            prop = canon_prop(k)
            if prop is None:
                raise Fail(f"{err}: invalid property '{k}'")
            assign(scratch, k, value, err, creating=True)
        for k in self.o.excluded:
            if canon_prop(k) is None:
                raise Fail(f"{err}: invalid property '{k}'")

    def apply_props(self, head: Rec, sub: Substream) -> None:
        """The stream's properties (-p, -R: received), then -o (local) and -x (inherited):
        set on the dataset after the receive began, logged as zfs set / inherit are."""
        txn = self.txn
        pool = pool_of(head["name"])
        if self.stream.props is not None and sub.fromguid == 0:
            txn.internal(pool, "set", "$hasrecvd=", txn.stamp(pool), ds=head["name"],
                         guid=head["guid"])
            head["received"] = dict(self.stream.props)
            txn.put(head)
        names: list[str] = []
        for k, value in self.o.props:
            assign(head, k, value, "cannot receive", creating=True)
            prop = canon_prop(k) or k
            if prop != "volblocksize":
                names.append(prop)
        if names:
            txn.put(head)
            txn.log_props(head, names)
        for k in self.o.excluded:
            prop = canon_prop(k) or k
            if ":" not in prop and prop not in INHERITABLE:
                continue
            (head.get("local") or {}).pop(prop, None)
            (head.get("received") or {}).pop(prop, None)
            txn.put(head)
            txn.internal(pool, "inherit", f"{prop}={inherited(self.view, head, prop)}",
                         txn.stamp(pool), ds=head["name"], guid=head["guid"])

    def stop(self, sub: Substream, got: int, pool: str) -> tuple[int, bool] | None:
        """Where the substream stops short, if it does: (the payload bytes that went in,
        whether the pool filled up first) — the stream was cut, or the pool has less room."""
        avail = self.view.avail(pool)
        room = sub.sent if avail >= sub.sent else max(0, avail)
        if got < sub.sent or room < sub.sent:
            return min(got, room), room < sub.sent
        return None

    def announce(self, sub: Substream, name: str, short: str) -> bool:
        """Say what is received (-v); False for a dry run (-n): nothing more to do."""
        if self.o.verbose:
            self.lines.append(
                f"{'would receive' if self.o.dry else 'receiving'} "
                f"{'incremental' if sub.fromguid else 'full'} stream of {sub.toname} into "
                f"{name}@{short}")
        return not self.o.dry

    def ioctl(self, sub: Substream, snapname: str, head: Rec) -> None:
        """ZFS_IOC_RECV_NEW, which only a resumable receive uses, logs its nvlists."""
        if not (self.o.resumable or self.stream.resuming or self.stream.flags.get("w")):
            return
        args: list[tuple[str, Any]] = [("snapname", snapname)]
        if self.stream.props is not None and sub.fromguid == 0:
            args.append(("props", [(k, v) for k, v in self.stream.props.items()]))
        local: list[tuple[str, Any]] = []
        for k, _ in self.o.props:
            prop = canon_prop(k) or k
            if prop != "volblocksize":
                local.append((prop, prop_arg(head, prop)))
        local += [(canon_prop(k) or k, True) for k in self.o.excluded]
        if local:
            args.append(("localprops", local))
        rec = self.stream.begin_record(sub)
        args += [(f"begin_record[{i}]", b) for i, b in enumerate(rec)]
        args.append(("input_fd", 0))
        if self.o.force:
            args.append(("force", True))
        if self.o.resumable:
            args.append(("resumable", True))
        self.txn.ioctl(pool_of(snapname), "receive", args, output=[
            ("read_bytes", sub.sent), ("error_flags", 0), ("errors", [])])


def _abort(sim: SimTransport, name: str, ctx: Context) -> Iterator[str]:
    """`zfs receive -A NAME`: discard NAME's partial receive (NAME/%recv, or NAME itself
    when it was a full stream that never finished)."""

    def op(txn: Transaction) -> list[str]:
        head = txn.get(name)
        if head is None or head["type"] == "snapshot":
            raise usage("receive", f"cannot open '{name}': dataset does not exist"
                        if head is None else f"cannot open '{name}': operation not "
                        "applicable to datasets of this type")
        recv = head.get("recv")
        if not recv:
            raise Fail(f"'{name}' does not have any resumable receive state to abort")
        pool = pool_of(name)
        txg = txn.stamp(pool)
        if head.get("inconsistent"):
            txn.internal(pool, "destroy", "(bptree, mintxg=1)", txg, ds=name,
                         guid=head["guid"])
            txn.drop(name, base=txn.view.is_base(name), subtree=False)
            return []
        txn.internal(pool, "destroy", f"(livelist, mintxg={recv['txg']})", txg,
                     ds=f"{name}/{RECV}", guid=int(recv["guid"]))
        del head["recv"]
        txn.put(head)
        return []

    return sim.mutate(op, ctx)

