"""ZFS change feeds, parsed: `zpool events -v` and `zpool history -il`, and what each change
means for the mirror.

Both feeds come from the same place in OpenZFS: every internal history record (create, clone,
snapshot, destroy, set, inherit, rename, promote, receive steps, ...) is written to the pool's
on-disk history (txg-stamped, survives reboots, read whole by `zpool history`) and posted as a
`sysevent.fs.zfs.history_event` to the kernel's event queue (about 512 events, numbered by a
per-boot `eid`, followed live by `zpool events -f`).

xfleet does not interpret a change beyond "which names must be fetched again": `touches()` maps a
record to the dataset names whose rows may have changed (recursively or not), and the sync
engine fetches their current state with one batched `zfs list` per batch of names. Applying a
change twice, or out of order, therefore gives the same mirror.

Parsers are pure functions tested on output captured from real OpenZFS (tests/fixtures/real/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from xfleet.core.zfs import ParseError

HISTORY_EVENT = "sysevent.fs.zfs.history_event"


def zpool_events(*, follow: bool = False) -> list[str]:
    """`zpool events -H -v`: every queued event; with `follow`, then new ones as they come."""
    return ["zpool", "events", *(["-f"] if follow else []), "-H", "-v"]


def zpool_history(pool: str) -> list[str]:
    """`zpool history -il POOL`: the pool's whole on-disk history, internal records included."""
    return ["zpool", "history", "-il", pool]


# ---------------------------------------------------------------------------------------------
# zpool events -H -v


@dataclass(frozen=True)
class ZEvent:
    """One event of `zpool events -v`. `fields` keeps the raw values (strings unquoted)."""

    eid: int
    cls: str
    time: tuple[int, int]
    fields: dict[str, str] = field(compare=False, repr=False)

    @property
    def pool(self) -> str | None:
        return self.fields.get("pool")

    @property
    def pool_guid(self) -> str | None:
        raw = self.fields.get("pool_guid")
        return str(_int(raw)) if raw is not None else None

    @property
    def internal_name(self) -> str | None:
        return self.fields.get("history_internal_name")

    @property
    def dsname(self) -> str | None:
        return self.fields.get("history_dsname")

    @property
    def internal_str(self) -> str:
        return self.fields.get("history_internal_str", "").strip()

    @property
    def txg(self) -> int | None:
        raw = self.fields.get("history_txg")
        return _int(raw) if raw is not None else None

    @property
    def is_history(self) -> bool:
        return self.cls == HISTORY_EVENT

    @property
    def stamp(self) -> str:
        """The event's kernel time as one string (identifies an eid across queue reads)."""
        return f"{self.time[0]}.{self.time[1]:09d}"


def _int(raw: str) -> int:
    try:
        return int(raw, 0)
    except ValueError:
        raise ParseError(f"expected a number in zpool events output, got {raw!r}") from None


_INDENT = "        "


# Only a history event's `history_internal_str` holds text a user chose (a property value
# of `zfs set`, which may span lines, and which ZFS prints raw). The fields before it are
# ZFS's own; these close every history event, in this order, after it:
_TRAILER = ("history_internal_name", "history_dsid", "history_txg", "history_time", "time",
            "eid")
_POOL_TRAILER = tuple(k for k in _TRAILER if k != "history_dsid")  # a pool's own records
_HEADER = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d{4} \d\d:\d\d:\d\d\.\d{9}\t(\S+)\Z")
_FIELD = re.compile(r"^ {8}(\w+) = (.*)\Z")
_STR = "history_internal_str"
# The eid of an event whose text could not be read whole (see parse_events).
UNREADABLE = -1


def unreadable_after(events: Sequence[ZEvent], eid: int) -> list[ZEvent]:
    """The UNREADABLE events that come after event `eid` in the queue's order (those before
    it were judged when the checkpoint was taken)."""
    seen = [i for i, e in enumerate(events) if 0 <= e.eid <= eid]
    return [e for e in events[seen[-1] + 1 if seen else 0:] if e.eid == UNREADABLE]


def _unquote(value: str) -> str:
    value = value.rstrip(" ")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _history_event(cls: str, block: list[str], after: int | None) -> ZEvent:
    """A history event's block: the head (ZFS's fields, up to history_internal_str), the
    value of history_internal_str over as many lines as it takes, then the trailer (the
    last len(_TRAILER) lines). A block of another shape (a value that forged a blank line or
    an event header splits an event) is UNREADABLE, with the head's fields."""
    fields: dict[str, str] = {}
    at = None
    for i, line in enumerate(block):
        m = _FIELD.match(line)
        if m is None or m.group(1) in fields:
            break
        if m.group(1) == _STR:
            at = i
            break
        fields[m.group(1)] = _unquote(m.group(2))
    trailer: list[re.Match[str] | None] = []
    n = 0
    for shape in (_TRAILER, _POOL_TRAILER):
        n = len(shape)
        trailer = [_FIELD.match(line) for line in block[-n:]] if len(block) > n else []
        if [m.group(1) if m else None for m in trailer] == list(shape):
            break
        trailer = []
    if at is None or not trailer or at + 1 > len(block) - n:
        return ZEvent(eid=UNREADABLE, cls=cls, time=(0, 0), fields=fields)
    tail = {m.group(1): m.group(2) for m in trailer if m}
    eid = _int(tail["eid"].strip())
    t = tail["time"].split()
    when = (_int(t[0]), _int(t[1])) if len(t) == 2 else (0, 0)
    if after is not None and eid <= after:
        return ZEvent(eid=eid, cls=cls, time=when, fields={})
    first = block[at][len(_INDENT) + len(_STR) + 3:]
    fields[_STR] = _unquote("\n".join([first, *block[at + 1:len(block) - n]]))
    fields.update((k, _unquote(v)) for k, v in tail.items())
    return ZEvent(eid=eid, cls=fields.get("class", cls), time=when, fields=fields)


def parse_events(lines: Iterable[str], after: int | None = None) -> Iterator[ZEvent]:
    """Events from `zpool events -H -v` lines, each yielded as soon as its block ends (the blank
    line after it), so a `-f` stream is applied live. Nested nvlists and unknown lines are
    skipped; an event without an `eid` cannot be checkpointed and is skipped too. Events with
    an eid at or below `after` are yielded with their id, time and class only (the queue is
    re-read whole on every sync: its old events are only needed to judge continuity).

    A history event whose text is not of the shape ZFS gives it (a property value with line
    breaks can imitate a blank line and an event header) is yielded with eid UNREADABLE: the
    queue cannot vouch for the changes around it (new_events)."""
    cls: str | None = None
    block: list[str] = []
    orphan = False

    def done() -> ZEvent | None:
        if cls is None:
            return None
        if cls == HISTORY_EVENT:
            return _history_event(cls, block, after)
        eid = when = None
        for line in reversed(block):  # `time` and `eid` close the block
            key, _, value = line.strip().partition(" = ")
            if key == "eid":
                eid = _int(value.strip())
            elif key == "time":
                t = value.split()
                when = (_int(t[0]), _int(t[1])) if len(t) == 2 else (0, 0)
            if eid is not None and when is not None:
                break
        if eid is None:
            return None
        fields: dict[str, str] = {}
        if after is None or eid > after:
            for line in block:
                if line.startswith(_INDENT) and line[8:9] != " ":
                    key, sep, value = line[8:].partition(" = ")
                    if not sep:
                        continue
                    fields.setdefault(key, _unquote(value))
        return ZEvent(eid=eid, cls=fields.get("class", cls), time=when or (0, 0), fields=fields)

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            ev = done()
            cls, block, orphan = None, [], False
            if ev is not None:
                yield ev
            continue
        if not line.startswith(" "):
            header = _HEADER.match(line)
            if header is None and cls is not None:
                block.append(line)  # a line of a value that spans lines
                continue
            ev = done()
            if ev is not None:
                yield ev
            if line.startswith("dropped "):  # a follower fell behind (`zpool events -f`): the
                cls, block = None, []  # count is not what was lost; the eid gap tells
                continue
            if header is not None:
                cls, block = header.group(1), []
                continue
            head = line.split("\t")
            cls, block = (head[-1].strip() if len(head) > 1 else line.split()[-1]), []
            continue
        if cls is not None:
            block.append(line)
        elif not orphan:  # fields of no event: the rest of one that a value split (see above)
            orphan = True
            yield ZEvent(eid=UNREADABLE, cls="", time=(0, 0), fields={})
    ev = done()
    if ev is not None:
        yield ev


# ---------------------------------------------------------------------------------------------
# zpool history -il


@dataclass(frozen=True)
class HistoryRecord:
    """An internal record of `zpool history -il` (user command and ioctl records are skipped:
    the internal records say what changed, with the txg it changed in)."""

    time: str
    txg: int
    op: str
    dsname: str | None
    detail: str
    # False for the pool's creation records (up to its `zpool create` command), which OpenZFS
    # keeps forever; True for the rest, a bounded tail whose oldest records get dropped.
    tail: bool = True


_HIST_HEAD = re.compile(r"^History for '([^']+)':$")
# the end of a user command's record (a line of a value that spans lines can look like an
# internal record up to it)
_HIST_USER = re.compile(r" \[user \d+ \([^)]*\) on [^\]]*\]$")
_HIST_CREATE = re.compile(r"^\d{4}-\d\d-\d\d\.\d\d:\d\d:\d\d zpool create ")
_HIST_INTERNAL = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d\.\d\d:\d\d:\d\d) \[txg:(?P<txg>\d+)\] (?P<rest>.*?)"
    r"(?: \[on [^\]]*\])?$"
)


def parse_history(lines: Iterable[str], pool: str | None = None) -> Iterator[HistoryRecord]:
    """Internal records of `zpool history -il POOL`. A record about a dataset reads
    `OP DSNAME (DSID) DETAIL`: the dataset name is recognised by starting with the pool's name
    (names may contain spaces, and some operations are two words, e.g. 'finish receiving')."""
    ds_re: re.Pattern[str] | None = _ds_pattern(pool) if pool else None
    tail = False
    held: HistoryRecord | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        head = _HIST_HEAD.match(line)
        if head:
            ds_re = _ds_pattern(head.group(1))
            tail = False
            continue
        if not tail and _HIST_CREATE.match(line):
            tail = True
            continue
        m = _HIST_INTERNAL.match(line)
        if m is None or _HIST_USER.search(line):
            continue  # user command, ioctl record or its continuation lines
        rest = m.group("rest").rstrip()
        d = ds_re.match(rest) if ds_re is not None else None
        if d is not None:
            rec = HistoryRecord(m.group("time"), int(m.group("txg")), d.group("op"),
                                d.group("ds"), (d.group("detail") or "").strip(), tail)
        else:
            op, _, detail = rest.partition(" ")
            rec = HistoryRecord(m.group("time"), int(m.group("txg")), op, None, detail.strip(),
                                tail)
        # txgs never go back in a pool's history: a record with a later txg than the record
        # after it is text a property value made up, and is dropped
        if held is not None and not (held.tail and rec.tail and rec.txg < held.txg):
            yield held
        held = rec
    if held is not None:
        yield held


def _ds_pattern(pool: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<op>.+?) (?P<ds>{re.escape(pool)}(?:[/@#%][^()]*?)?) \((?P<dsid>\d+)\)"
        r"(?: +(?P<detail>.*))?$"
    )


# ---------------------------------------------------------------------------------------------
# what a change touches


@dataclass(frozen=True)
class Touch:
    """A dataset whose row (and, when `recursive`, whose descendants' rows) must be fetched
    again. `promoted` marks a promote: the former origin's dataset changes too."""

    name: str
    recursive: bool = False
    promoted: bool = False
    moved: bool = False  # renamed away: clones of its snapshots now name another origin


# Properties that never flow to descendants: a set of these touches one row.
_LOCAL_ONLY = frozenset({
    "volsize", "refreservation", "reservation", "quota", "refquota", "volblocksize",
    "snapshot_limit", "filesystem_limit", "canmount",
})
# Operations that change only what the mirror does not hold (user holds, pool-level records).
_IGNORED = frozenset({"hold", "release", "open", "import", "export", "create pool", "scrub",
                      "vdev attach", "vdev online", "upgrade", "history_event"})


def touches(op: str | None, dsname: str | None, detail: str = "") -> list[Touch]:
    """The dataset names a history record says have changed."""
    if not op or not dsname or op in _IGNORED:
        return []
    name = dsname.split("%", 1)[0].rstrip("/")  # 'tank/x/%recv' (a receive's hidden clone)
    detail = detail.strip()
    if op in ("create", "clone", "snapshot", "destroy"):
        return [Touch(name)]
    if op == "bookmark":
        m = re.match(r"name=(\S+)", detail)
        base = name.split("@", 1)[0]
        return [Touch(name), *([Touch(f"{base}#{m.group(1)}")] if m else [])]
    if op in ("set", "inherit"):
        prop = detail.split("=", 1)[0].strip()
        return [Touch(name, recursive="@" not in name and prop not in _LOCAL_ONLY)]
    if op == "rename":
        new = detail[2:].strip() if detail.startswith("->") else ""
        if new.startswith("@"):
            new = name.split("@", 1)[0] + new
        tree = not _is_snapshot(name)
        return [Touch(name, recursive=tree, moved=True),
                *([Touch(new, recursive=tree)] if new else [])]
    if op == "promote":
        return [Touch(name, recursive=True, promoted=True)]
    # receive, finish receiving, clone swap, rollback, and anything we do not know: the whole
    # subtree, which is always correct.
    return [Touch(name, recursive=True)]


def event_touches(events: Iterable[ZEvent]) -> list[Touch]:
    out: list[Touch] = []
    for ev in events:
        if ev.is_history:
            out.extend(touches(ev.internal_name, ev.dsname, ev.internal_str))
    return out


def ancestors(name: str) -> list[str]:
    """'tank/a/b@s' -> ['tank/a/b', 'tank/a', 'tank'] (their space figures include the change)."""
    base = re.split(r"[@#]", name, maxsplit=1)[0]
    out = [base] if base != name else []
    parts = base.split("/")
    for i in range(len(parts) - 1, 0, -1):
        out.append("/".join(parts[:i]))
    return out


@dataclass
class Plan:
    """Names to fetch: `exact` rows, and `trees` (a dataset with all its descendants)."""

    exact: list[str]
    trees: list[str]

    def __len__(self) -> int:
        return len(self.exact) + len(self.trees)


def plan(touched: Sequence[Touch], extra_exact: Iterable[str] = ()) -> Plan:
    """Collapse touches into the fewest fetches: a name inside a fetched tree is not fetched
    again; every touched name's ancestors are fetched (their `used` includes the change)."""
    trees = sorted({t.name for t in touched if t.recursive and not _is_snapshot(t.name)})
    kept: list[str] = []
    for root in trees:  # sorted, so a tree's root comes before anything inside it
        if not any(_inside(root, k) for k in kept):
            kept.append(root)
    exact: set[str] = set(extra_exact)
    for t in touched:
        exact.add(t.name)
        exact.update(ancestors(t.name))
    return Plan(exact=sorted(n for n in exact if not any(_inside(n, k) for k in kept)),
                trees=kept)


def _is_snapshot(name: str) -> bool:
    return "@" in name or "#" in name


def _inside(name: str, root: str) -> bool:
    return name == root or name.startswith((root + "/", root + "@", root + "#"))
