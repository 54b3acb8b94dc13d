"""Playbooks: YAML lists of steps that map to library calls, validated before anything runs,
journaled in the mirror so a crashed run resumes (`xfleet play --resume RUN`).

A playbook is a list of steps, or a mapping with `name`, `vars` and `steps`. A step is a
mapping with exactly one step-kind key (its arguments) and optional common keys:

    - name: snapshot the free tier          # a label
      snapshot: {select: {tenant: free}, name: "nightly-{{ date }}"}
      when: "{{ count }} > 0"               # an SQLite expression; {{ }} values are bound
      for_each: "{{ vols }}"                # run once per item (a query's rows)
      as: row                               # the item's variable (default `row`)
      concurrency: 4                        # items at once (default 1)
      register: snaps                       # bind the step's result to a variable

Templates are `{{ name }}`, `{{ name.field }}`, `{{ name.0.field }}`: a string that is one
template keeps the value's type (a list stays a list), else values are interpolated. Every
variable must be defined before its step (vars, --var, built-ins, an earlier `register`, the
loop variable): an undefined one is an error with file:line before anything runs, as are
unknown step kinds, unknown or mistyped fields.

The journal (`play_runs`, `play_steps`, `play_items`, docs/mirror.md): a step's items are
recorded as they finish, so a resumed run skips finished steps (their registered results are
restored) and finished items; the built-ins (`date`, `time`, `run`) are frozen at the start, so
a resumed run renders the same names. Lifecycle steps are idempotent by construction (plans
skip what exists), a `move` item records its move id before it starts and resumes that move.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import json as json_mod
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xfleet import mirror
from xfleet.core.errors import InventoryError, UsageError, XfleetError
from xfleet.core.yamlsrc import Val, convert, plain
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, query
from xfleet.mirror.query import read_only
from xfleet.ops import compression, lifecycle, moves, report, rollout
from xfleet.ops.sync import sync
from xfleet.remote.transport import check_argv, quote_command

COMMON_KEYS = ("name", "when", "for_each", "as", "concurrency", "register")
BUILTINS = ("date", "time", "now", "run", "check")
DEFAULT_MAX_ROWS = 100_000
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_:\-]+)*\Z")
# Kinds whose capability arrives with another piece of work: a clear error until it lands.
PENDING_KINDS: dict[str, str] = {}


class PlaybookError(UsageError):
    """An invalid playbook (where: file:line) or a step that failed."""


# ---------------------------------------------------------------------------------------------
# the registry of step kinds: one function each


@dataclass
class Field:
    types: tuple[type, ...]
    required: bool = False
    doc: str = ""
    sql: bool = False  # SQL text: its {{ }} values are bound parameters, never pasted in


@dataclass
class StepKind:
    name: str
    fields: dict[str, Field]
    fn: Callable[[StepCtx, dict[str, Any]], Any]
    doc: str
    one_of: tuple[tuple[str, ...], ...] = ()  # groups of fields of which exactly one is given
    validate: Callable[[dict[str, Any], str], None] | None = None


KINDS: dict[str, StepKind] = {}


def step_kind(name: str, fields: dict[str, Field], *, one_of: tuple[tuple[str, ...], ...] = (),
              validate: Callable[[dict[str, Any], str], None] | None = None,
              ) -> Callable[[Callable[[StepCtx, dict[str, Any]], Any]],
                            Callable[[StepCtx, dict[str, Any]], Any]]:
    """Register a step kind: `fn(ctx, args) -> result` plans, and acts unless `ctx.check`
    (then it only describes, in `ctx.commands`/`ctx.notes`, what it would do)."""

    def deco(fn: Callable[[StepCtx, dict[str, Any]], Any]
             ) -> Callable[[StepCtx, dict[str, Any]], Any]:
        KINDS[name] = StepKind(name, fields, fn, (fn.__doc__ or "").strip(), one_of, validate)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# loading and validation


@dataclass
class Step:
    idx: int
    kind: str
    line: int
    args: Any  # Val tree (lines kept) of the kind's arguments
    name: str | None = None
    when: Val | None = None
    for_each: Val | None = None
    loop_var: str = "row"
    concurrency: int = 1
    register: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass
class Playbook:
    path: Path
    name: str
    vars: dict[str, Any]
    steps: list[Step]
    digest: str

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def _err(path: Path, line: int, message: str, hint: str | None = None) -> PlaybookError:
    return PlaybookError(message, where=f"{path}:{line}", hint=hint)


def load(path: str | Path, variables: dict[str, Any] | None = None) -> Playbook:
    """Read and validate a playbook: every error (syntax, unknown kind or field, wrong type,
    undefined variable) names file:line. `variables` are the --var values."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PlaybookError(f"playbook {p} does not exist", where=str(p),
                            hint="the examples are in playbooks/") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"cannot read playbook {p}: {exc}", where=str(p)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        root = convert(node, str(p), yaml.constructor.SafeConstructor()) if node else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise _err(p, mark.line + 1 if mark else 1, f"YAML syntax error: {exc.problem}",
                   hint="check indentation and quoting near this line") from None
    except InventoryError as exc:  # the shared loader's errors (duplicate keys, merges)
        raise PlaybookError(exc.message, where=exc.where, hint=exc.hint) from None
    name, pvars, steps_v, steps_line = p.stem, {}, root, 1
    if isinstance(root, dict):
        unknown = [k for k in root if k not in ("name", "vars", "steps")]
        if unknown:
            raise _err(p, root[unknown[0]].at, f"unknown playbook key {unknown[0]!r}",
                       hint="a playbook has name, vars and steps (or is a list of steps)")
        if "steps" not in root:
            raise _err(p, 1, "the playbook has no steps", hint="add 'steps:' with a list")
        name = str(plain(root["name"])) if "name" in root else name
        if "vars" in root:
            if not isinstance(root["vars"].value, dict):
                raise _err(p, root["vars"].at, "vars must be a mapping")
            pvars = plain(root["vars"])
        steps_v, steps_line = root["steps"].value, root["steps"].at
    if not isinstance(steps_v, list) or not steps_v:
        raise _err(p, steps_line, "a playbook is a non-empty list of steps",
                   hint="see playbooks/*.yaml for examples")
    pvars = {**pvars, **(variables or {})}
    defined = set(pvars) | set(BUILTINS)
    steps = []
    for i, sv in enumerate(steps_v):
        step = _step(p, i, sv)
        _check_vars(p, step, defined)
        if step.register:
            defined.add(step.register)
        steps.append(step)
    return Playbook(p, name, pvars, steps, hashlib.sha256(text.encode()).hexdigest())


def _step(p: Path, idx: int, sv: Val) -> Step:
    if not isinstance(sv.value, dict) or not sv.value:
        raise _err(p, sv.line, f"step {idx + 1} must be a mapping with a step kind",
                   hint=f"kinds: {', '.join(sorted(KINDS))}")
    d: dict[str, Val] = sv.value
    kinds = [k for k in d if k not in COMMON_KEYS]
    if not kinds:
        raise _err(p, sv.line, f"step {idx + 1} has no step kind",
                   hint=f"kinds: {', '.join(sorted(KINDS))}")
    if len(kinds) > 1:
        known = [k for k in kinds if k in KINDS or k in PENDING_KINDS]
        other = next((k for k in kinds if k not in KINDS and k not in PENDING_KINDS), kinds[1])
        if len(known) == 1:
            close = difflib.get_close_matches(other, COMMON_KEYS, n=1)
            raise _err(p, d[other].at, f"unknown step field {other!r}",
                       hint=(f"did you mean {close[0]!r}? " if close else "")
                       + f"common fields: {', '.join(COMMON_KEYS)}")
        raise _err(p, d[kinds[1]].at, f"step {idx + 1} has several step kinds: "
                   f"{', '.join(kinds)}", hint="one kind per step")
    kind = kinds[0]
    line = d[kind].at
    if kind in PENDING_KINDS:
        raise _err(p, line, f"step kind {kind!r} is not available yet: it arrives with "
                   f"{PENDING_KINDS[kind]}", hint="remove the step, or run it by hand for now")
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, [*KINDS, *PENDING_KINDS], n=1)
        raise _err(p, line, f"unknown step kind {kind!r}",
                   hint=(f"did you mean {close[0]!r}? " if close else "")
                   + f"kinds: {', '.join(sorted(KINDS))}")
    spec = KINDS[kind]
    args = d[kind].value
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _err(p, line, f"{kind}: its arguments are a mapping, got {typename(args)}",
                   hint=f"fields: {', '.join(spec.fields)}")
    for k, v in args.items():
        if k not in spec.fields:
            close = difflib.get_close_matches(k, list(spec.fields), n=1)
            raise _err(p, v.at, f"{kind}: unknown field {k!r}",
                       hint=(f"did you mean {close[0]!r}? " if close else "")
                       + f"fields: {', '.join(spec.fields)}")
        f = spec.fields[k]
        val = v.value
        if isinstance(val, str) and _is_template(val):
            continue  # checked when rendered
        if not isinstance(plain(val), f.types) or (isinstance(plain(val), bool) and
                                                    bool not in f.types):
            raise _err(p, v.at, f"{kind}: {k} must be {_types_text(f.types)}, got "
                       f"{typename(plain(val))}")
    for k, f in spec.fields.items():
        if f.required and k not in args:
            raise _err(p, line, f"{kind}: missing field {k!r}", hint=f.doc or None)
    for group in spec.one_of:
        given = [k for k in group if k in args]
        if len(given) != 1:
            raise _err(p, line, f"{kind}: give exactly one of {', '.join(group)}")
    if spec.validate is not None:
        spec.validate(args, str(p))
    step = Step(idx, kind, line, args)
    if "name" in d:
        step.name = str(plain(d["name"]))
    step.when = d.get("when")
    step.for_each = d.get("for_each")
    if "as" in d:
        var = plain(d["as"])
        if not isinstance(var, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", var):
            raise _err(p, d["as"].at, "as: a variable name (letters, digits, _)")
        step.loop_var = var
        if step.for_each is None:
            raise _err(p, d["as"].at, "as: only with for_each")
    if "concurrency" in d:
        n = plain(d["concurrency"])
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 64:
            raise _err(p, d["concurrency"].at, "concurrency must be a number from 1 to 64")
        step.concurrency = n
    if "register" in d:
        r = plain(d["register"])
        if not isinstance(r, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", r) \
                or r in BUILTINS:
            raise _err(p, d["register"].at, "register: a variable name (letters, digits, _), "
                       f"not one of the built-ins {', '.join(BUILTINS)}")
        step.register = r
    if kind == "query" and not step.register:
        raise _err(p, line, "query: its rows are bound to a variable: add 'register: NAME'")
    return step


def typename(v: Any) -> str:
    if v is None:
        return "nothing"
    return {list: "a list", dict: "a mapping", str: "a string", int: "a number",
            float: "a number", bool: "true/false"}.get(type(v), type(v).__name__)


def _types_text(types: tuple[type, ...]) -> str:
    return " or ".join(typename(t()) for t in types)


def _is_template(s: str) -> bool:
    return bool(_TEMPLATE.search(s))


def _refs(v: Any) -> Iterator[tuple[str, int]]:
    """(variable root, line) of every template in a Val tree."""
    if isinstance(v, Val):
        if isinstance(v.value, str):
            for m in _TEMPLATE.finditer(v.value):
                yield m.group(1), v.line
        else:
            yield from _refs(v.value)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _refs(x)
    elif isinstance(v, list):
        for x in v:
            yield from _refs(x)


def _check_vars(p: Path, step: Step, defined: set[str]) -> None:
    def check(refs: Iterator[tuple[str, int]], names: set[str]) -> None:
        for expr, line in refs:
            if not _PATH.match(expr):
                raise _err(p, line, f"cannot read the template {{{{ {expr} }}}}",
                           hint="templates are {{ name }}, {{ name.field }} or "
                           "{{ name.0.field }}")
            root = expr.split(".", 1)[0]
            if root not in names:
                close = difflib.get_close_matches(root, sorted(names), n=1)
                raise _err(p, line, f"undefined variable {root!r}",
                           hint=(f"did you mean {close[0]!r}? " if close else "")
                           + "variables come from vars:, --var NAME=VALUE, a step's "
                           "register: (earlier steps only) or the loop's as:")

    check(_refs(step.for_each), defined)
    inner = defined | ({step.loop_var} if step.for_each is not None else set())
    check(_refs(step.when), inner)
    check(_refs(step.args), inner)


# ---------------------------------------------------------------------------------------------
# templates


def lookup(variables: dict[str, Any], expr: str, where: str | None = None) -> Any:
    parts = expr.split(".")
    if parts[0] not in variables:
        raise PlaybookError(f"undefined variable {parts[0]!r}", where=where)
    v = variables[parts[0]]
    for part in parts[1:]:
        if isinstance(v, dict) and part in v:
            v = v[part]
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            raise PlaybookError(f"{{{{ {expr} }}}}: {part!r} is not in the value",
                                where=where, hint=f"the value is {typename(v)}"
                                + (f" with keys {', '.join(map(str, v))}"
                                   if isinstance(v, dict) else ""))
    return v


def render(v: Any, variables: dict[str, Any], where: str | None = None) -> Any:
    """A Val tree (or plain value) with templates replaced: a string that is exactly one
    template keeps the value's type."""
    if isinstance(v, Val):
        return render(v.value, variables, where=where.rsplit(":", 1)[0] + f":{v.line}"
                      if where else None)
    if isinstance(v, dict):
        return {k: render(x, variables, where) for k, x in v.items()}
    if isinstance(v, list):
        return [render(x, variables, where) for x in v]
    if isinstance(v, str):
        m = _TEMPLATE.fullmatch(v.strip())
        if m:
            return lookup(variables, m.group(1), where)
        return _TEMPLATE.sub(lambda m: _text(lookup(variables, m.group(1), where)), v)
    return v


def _text(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return ""
    return str(v)


def bind(sql: str, variables: dict[str, Any], where: str | None = None
         ) -> tuple[str, list[Any]]:
    """SQL text with each {{ }} replaced by a bound parameter (a list or mapping binds its
    length): values never become SQL text."""
    params: list[Any] = []

    def one(m: re.Match[str]) -> str:
        v = lookup(variables, m.group(1), where)
        params.append(len(v) if isinstance(v, (list, dict)) else v)
        return "?"

    return _TEMPLATE.sub(one, sql), params


def condition(conn: sqlite3.Connection, expr: str, variables: dict[str, Any],
              where: str) -> bool:
    """An SQLite expression with {{ }} values bound as parameters, evaluated on the mirror:
    `{{ count }} > 0`, `{{ row.compression }} = 'off'`."""
    sql, params = bind(expr, variables, where)
    try:
        row = conn.execute(f"SELECT ({sql})", params).fetchone()
    except sqlite3.Error as exc:
        raise PlaybookError(f"cannot evaluate {expr!r}: {exc}", where=where,
                            hint="an SQLite expression; {{ }} values are bound parameters "
                            "(a list counts as its length)") from None
    return bool(row and row[0])


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class StepCtx:
    """What a step kind's function gets: the fleet, the mirror, the variables, check mode,
    and where it reports what it did or would do."""

    inv: Inventory
    mirror_path: Path
    conns: Connections
    check: bool
    vars: dict[str, Any]
    where: str  # file:line of the step
    run_id: int | None
    commands: list[str] = field(default_factory=list)  # commands run, or that would run
    notes: list[str] = field(default_factory=list)
    remote: int = 0  # remote commands issued (reads included)
    journal: Callable[[dict[str, Any]], None] = lambda _r: None  # record partial progress
    previous: dict[str, Any] | None = None  # what an interrupted attempt of this item recorded
    after_changes: bool = False  # check mode: earlier steps would have changed the fleet
    planned: set[tuple[str, str]] = field(default_factory=set)  # check: (node, name) created

    def reader(self) -> sqlite3.Connection:
        return mirror.connect(self.mirror_path, readonly=self.check)


@dataclass
class StepReport:
    idx: int
    kind: str
    label: str
    line: int
    state: str = "pending"  # done, skipped (when), resumed (done before), failed
    items: int = 0
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remote: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PlayReport:
    playbook: str
    run_id: int | None
    check: bool
    steps: list[StepReport] = field(default_factory=list)
    state: str = "running"

    @property
    def ok(self) -> bool:
        return self.state == "done"

    def to_dict(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "run": self.run_id, "check": self.check,
                "state": self.state, "ok": self.ok,
                "commands": sum(len(s.commands) for s in self.steps),
                "steps": [s.to_dict() for s in self.steps]}


Say = Callable[[str], None]


def _item_key(item: Any) -> str:
    if isinstance(item, dict) and "name" in item:
        return f"{item.get('node', '')}:{item['name']}"
    return json.dumps(item, sort_keys=True, default=str)


class Journal:
    """The run's rows in the mirror (one connection, serialised by a lock)."""

    def __init__(self, mirror_path: Path, run_id: int):
        self.conn = mirror.connect(mirror_path)
        self.run_id = run_id
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def exec(self, sql: str, args: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.execute(sql, args)

    def step(self, idx: int) -> sqlite3.Row | None:
        with self.lock:
            row: sqlite3.Row | None = self.conn.execute(
                "SELECT * FROM play_steps WHERE run = ? AND idx = ?",
                (self.run_id, idx)).fetchone()
            return row

    def items(self, idx: int) -> dict[str, sqlite3.Row]:
        with self.lock:
            return {r["item"]: r for r in self.conn.execute(
                "SELECT * FROM play_items WHERE run = ? AND step = ?", (self.run_id, idx))}

    def heartbeat(self, step: int) -> None:
        self.exec("UPDATE play_runs SET heartbeat = ?, updated_at = ?, step = ? WHERE id = ?",
                  (time.time(), time.time(), step, self.run_id))


def start(inv: Inventory, mirror_path: Path, pb: Playbook) -> int:
    """Create the run's journal row (the built-ins are frozen here); returns the run id."""
    now = time.time()
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a new playbook run")
        cur = conn.execute(
            "INSERT INTO play_runs (file, name, digest, vars, state, pid, host, heartbeat, "
            "created_at, updated_at) VALUES (?, ?, ?, '{}', 'running', ?, ?, ?, ?, ?)",
            (str(pb.path.resolve()), pb.name, pb.digest, os.getpid(), socket.gethostname(),
             now, now, now))
        run_id = cur.lastrowid
        assert run_id is not None
        frozen = {**pb.vars, "date": time.strftime("%Y%m%d", time.gmtime(now)),
                  "time": time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)), "now": int(now),
                  "run": run_id, "check": False}
        conn.execute("UPDATE play_runs SET vars = ? WHERE id = ?",
                     (json.dumps(frozen, sort_keys=True, default=str), run_id))
        for s in pb.steps:
            conn.execute("INSERT INTO play_steps (run, idx, kind, name, line, state) "
                         "VALUES (?, ?, ?, ?, ?, 'pending')",
                         (run_id, s.idx, s.kind, s.name, s.line))
        conn.execute("COMMIT")
        return run_id
    finally:
        conn.close()


def claim(mirror_path: Path, run_id: int) -> sqlite3.Row:
    """Take over a run for --resume: refused while another live process runs it."""
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "the claim of a playbook run")
        row = conn.execute("SELECT * FROM play_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            mirror.rollback(conn)
            raise PlaybookError(f"no playbook run {run_id}", hint="xfleet plays list")
        if row["state"] == "done":
            mirror.rollback(conn)
            raise PlaybookError(f"run {run_id} is done already", hint=f"xfleet plays show {run_id}")
        if row["state"] == "running" and claims.holder(row, stale=None) is not None:
            mirror.rollback(conn)
            raise PlaybookError(f"run {run_id} is being run by process {row['pid']}",
                                hint="wait for it, or stop that process first")
        claims.take(conn, "play_runs", run_id, extra=", state = 'running', error = NULL")
        conn.execute("COMMIT")
        return row  # type: ignore[no-any-return]
    finally:
        conn.close()


def play(inv: Inventory, mirror_path: Path, pb: Playbook, conns: Connections, *,
         check: bool = False, resume: int | None = None, say: Say | None = None) -> PlayReport:
    """Run (or with `check`, describe) a playbook. A new run is journaled first; `resume`
    continues run RUN (same file content required)."""
    tell: Say = say or (lambda _m: None)
    report = PlayReport(str(pb.path), None, check)
    planned: set[tuple[str, str]] = set()  # check mode: what earlier steps would create
    journal: Journal | None = None
    if check:
        now = time.time()
        variables = {**pb.vars, "date": time.strftime("%Y%m%d", time.gmtime(now)),
                     "time": time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)),
                     "now": int(now), "run": 0, "check": True}
    elif resume is not None:
        row = claim(mirror_path, resume)
        if row["digest"] != pb.digest:
            _finish(mirror_path, resume, "failed", "the playbook changed since the run started")
            raise PlaybookError(f"{pb.path} changed since run {resume} started",
                                hint="resume with the file as it was, or start a new run")
        variables = json.loads(row["vars"])
        report.run_id = resume
        journal = Journal(mirror_path, resume)
        interrupted = journal.conn.execute(
            "SELECT count(*) FROM play_items WHERE run = ? AND state = 'running'",
            (resume,)).fetchone()[0]
        if interrupted:  # a crash may have changed nodes the mirror has not seen yet

            tell(f"run {resume}: {interrupted} interrupted item(s); syncing the mirror first")
            sync(inv, mirror_path, refresh=False, connections=conns)
    else:
        report.run_id = start(inv, mirror_path, pb)
        journal = Journal(mirror_path, report.run_id)
        variables = json.loads(journal.conn.execute(
            "SELECT vars FROM play_runs WHERE id = ?", (report.run_id,)).fetchone()[0])
    try:
        for step in pb.steps:
            sr = StepReport(step.idx, step.kind, step.label, step.line)
            report.steps.append(sr)
            _run_step(inv, mirror_path, conns, pb, step, sr, variables, journal, check, tell,
                      after_changes=any(s.commands for s in report.steps), planned=planned)
            if sr.state == "failed":
                report.state = "failed"
                if journal is not None:
                    _finish(mirror_path, journal.run_id, "failed",
                            f"step {step.idx + 1} ({step.label}, line {step.line}): {sr.error}")
                return report
        report.state = "done"
        if journal is not None:
            _finish(mirror_path, journal.run_id, "done", None)
        return report
    except BaseException as exc:
        if journal is not None and report.state == "running":
            _finish(mirror_path, journal.run_id, "failed",
                    exc.message if isinstance(exc, XfleetError) else repr(exc))
        raise
    finally:
        if journal is not None:
            journal.close()


def _finish(mirror_path: Path, run_id: int, state: str, error: str | None) -> None:
    conn = mirror.connect(mirror_path)
    try:
        now = time.time()
        conn.execute("UPDATE play_runs SET state = ?, error = ?, pid = NULL, updated_at = ?, "
                     "finished_at = CASE WHEN ? = 'done' THEN ? ELSE finished_at END "
                     "WHERE id = ?", (state, error, now, state, now, run_id))
    finally:
        conn.close()


def _run_step(inv: Inventory, mirror_path: Path, conns: Connections, pb: Playbook, step: Step,
              sr: StepReport, variables: dict[str, Any], journal: Journal | None, check: bool,
              tell: Say, *, after_changes: bool = False,
              planned: set[tuple[str, str]] | None = None) -> None:
    where = pb.where(step.line)
    spec = KINDS[step.kind]
    if journal is not None:
        row = journal.step(step.idx)
        if row is not None and row["state"] in ("done", "skipped"):
            sr.state = "resumed"
            sr.items = row["items"]
            if step.register and row["result"] is not None:
                variables[step.register] = json.loads(row["result"])
            tell(f"step {step.idx + 1} {step.label}: {row['state']} before, skipped")
            return
        journal.exec("UPDATE play_steps SET state = 'running', started_at = ?, error = NULL "
                     "WHERE run = ? AND idx = ?", (time.time(), journal.run_id, step.idx))
        journal.heartbeat(step.idx)
    try:
        if step.for_each is not None:
            items = render(step.for_each, variables, where)
            if not isinstance(items, list):
                raise PlaybookError(f"for_each: {step.for_each.value!r} is {typename(items)}, "
                                    "not a list", where=where,
                                    hint="loop over a query's rows: for_each: \"{{ rows }}\"")
        else:
            items = [None]
        conn = read_only(mirror.connect(mirror_path, readonly=True))
        try:
            if step.when is not None and step.for_each is None and \
                    not condition(conn, str(step.when.value), variables, where):
                sr.state = "skipped"
                tell(f"step {step.idx + 1} {step.label}: skipped (when is false)")
                if step.register:
                    variables[step.register] = None
                if journal is not None:
                    journal.exec("UPDATE play_steps SET state = 'skipped', finished_at = ? "
                                 "WHERE run = ? AND idx = ?",
                                 (time.time(), journal.run_id, step.idx))
                return
        finally:
            conn.close()
        done = journal.items(step.idx) if journal is not None else {}
        results: list[Any] = [None] * len(items)
        errors: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            item = items[i]
            key = _item_key(item) if step.for_each is not None else "-"
            prev = done.get(key)
            if prev is not None and prev["state"] in ("done", "skipped"):
                results[i] = json.loads(prev["result"]) if prev["result"] else None
                return
            local = dict(variables)
            if step.for_each is not None:
                local[step.loop_var] = item
                if step.when is not None:
                    c = read_only(mirror.connect(mirror_path, readonly=True))
                    try:
                        if not condition(c, str(step.when.value), local, where):
                            return
                    finally:
                        c.close()
            ctx = StepCtx(inv, mirror_path, conns, check, local, where,
                          journal.run_id if journal else None, after_changes=after_changes,
                          planned=planned if planned is not None else set())
            if prev is not None and prev["result"]:
                ctx.previous = json.loads(prev["result"])
            if journal is not None:
                jr = journal

                def record(partial: dict[str, Any]) -> None:
                    jr.exec("INSERT INTO play_items (run, step, item, state, result, at) "
                            "VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT (run, step, item) "
                            "DO UPDATE SET state = 'running', result = excluded.result, "
                            "at = excluded.at",
                            (jr.run_id, step.idx, key, json.dumps(partial, default=str),
                             time.time()))

                ctx.journal = record
                record(ctx.previous or {})
            try:
                args = {k: (str(v.value) if spec.fields[k].sql else render(v, local, where))
                        for k, v in step.args.items()}
                res = spec.fn(ctx, args)
            except XfleetError as exc:
                msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
                with lock:
                    errors.append(msg if step.for_each is None else f"{key}: {msg}")
                    sr.commands.extend(ctx.commands)
                    sr.remote += ctx.remote
                if journal is not None:
                    journal.exec("UPDATE play_items SET state = 'failed', error = ?, at = ? "
                                 "WHERE run = ? AND step = ? AND item = ?",
                                 (msg, time.time(), journal.run_id, step.idx, key))
                return
            results[i] = res
            with lock:
                sr.commands.extend(ctx.commands)
                sr.notes.extend(ctx.notes)
                sr.remote += ctx.remote
                sr.items += 1
            if journal is not None:
                journal.exec("UPDATE play_items SET state = 'done', result = ?, commands = ?, "
                             "at = ? WHERE run = ? AND step = ? AND item = ?",
                             (json.dumps(res, default=str), len(ctx.commands), time.time(),
                              journal.run_id, step.idx, key))
                journal.heartbeat(step.idx)

        if step.concurrency > 1 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=step.concurrency,
                                    thread_name_prefix=f"xfleet-play-{step.idx}") as ex:
                list(ex.map(one, range(len(items))))
        else:
            for i in range(len(items)):
                one(i)
                if errors:
                    break
        if errors:
            raise PlaybookError("; ".join(errors[:5]) +
                                (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""),
                                where=where)
        result = results if step.for_each is not None else results[0]
        if step.register:
            variables[step.register] = result
        sr.state = "done"
        verb = "would run" if check else "ran"
        tell(f"step {step.idx + 1} {step.label}: {verb} {len(sr.commands)} command(s)"
             + (f" over {len(items)} item(s)" if step.for_each is not None else ""))
        if journal is not None:
            journal.exec("UPDATE play_steps SET state = 'done', finished_at = ?, items = ?, "
                         "done = ?, commands = ?, result = ? WHERE run = ? AND idx = ?",
                         (time.time(), len(items), sr.items, len(sr.commands),
                          json.dumps(result, default=str) if step.register else None,
                          journal.run_id, step.idx))
    except XfleetError as exc:
        sr.state = "failed"
        sr.error = exc.message
        tell(f"step {step.idx + 1} {step.label}: FAILED: {exc.message}")
        if journal is not None:
            journal.exec("UPDATE play_steps SET state = 'failed', error = ?, commands = ? "
                         "WHERE run = ? AND idx = ?",
                         (exc.message, len(sr.commands), journal.run_id, step.idx))


# ---------------------------------------------------------------------------------------------
# the journal, read back


def runs(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT id, name, file, state, step, created_at, finished_at, error FROM play_runs "
        "ORDER BY id DESC LIMIT ?", (limit,))]


def show(conn: sqlite3.Connection, run_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM play_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise PlaybookError(f"no playbook run {run_id}", hint="xfleet plays list")
    steps = [dict(r) for r in conn.execute(
        "SELECT idx, kind, name, line, state, items, done, commands, started_at, finished_at, "
        "error FROM play_steps WHERE run = ? ORDER BY idx", (run_id,))]
    failed = [dict(r) for r in conn.execute(
        "SELECT step, item, error FROM play_items WHERE run = ? AND state = 'failed' "
        "ORDER BY step, item LIMIT 50", (run_id,))]
    out = dict(row)
    out["vars"] = json.loads(out["vars"])
    return {**out, "steps": steps, "failed_items": failed}


# ---------------------------------------------------------------------------------------------
# step kinds


def _targets(ctx: StepCtx, args: dict[str, Any]) -> list[lifecycle.Target]:
    """`targets` (names, or rows with name/node, e.g. a query's) or `select` (like xfleet ls:
    node, pool, type, tenant, pattern, where)."""

    conn = ctx.reader()
    try:
        if "select" in args:
            s = args["select"]
            if not isinstance(s, dict):
                raise PlaybookError("select: a mapping (node, pool, type, tenant, pattern, "
                                    "where)", where=ctx.where)
            unknown = set(s) - {"node", "pool", "type", "tenant", "pattern", "where", "label"}
            if unknown:
                raise PlaybookError(f"select: unknown key {sorted(unknown)[0]!r}",
                                    where=ctx.where, hint="node, pool, type, tenant, label, "
                                    "pattern, where")

            def many(k: str) -> tuple[str, ...]:
                v = s.get(k)
                return () if v is None else tuple(map(str, v)) if isinstance(v, list) \
                    else (str(v),)

            sel = query.Selection(nodes=many("node"), pools=many("pool"),
                                  types=many("type") or ("volume",), tenants=many("tenant"),
                                  labels=many("label"), pattern=s.get("pattern"),
                                  where=many("where"),
                                  columns=("node", "name", "type", "volsize", "volblocksize",
                                           "origin"))
            return lifecycle.targets_from_rows(query.ls(conn, sel))
        raw = args["targets"]
        if isinstance(raw, (str, dict)):
            raw = [raw]
        if not isinstance(raw, list):
            raise PlaybookError(f"targets: a list of names or rows, got {typename(raw)}",
                                where=ctx.where)
        out = []
        node = args.get("node")
        for t in raw:
            if isinstance(t, dict):
                if "name" not in t:
                    raise PlaybookError("targets: a row needs a 'name' column",
                                        where=ctx.where, hint="SELECT node, name FROM ...")
                out.extend(lifecycle.resolve(conn, [str(t["name"])], t.get("node") or node,
                                             where=ctx.where))
            else:
                out.extend(lifecycle.resolve(conn, [str(t)], node, where=ctx.where))
        return out
    finally:
        conn.close()


def _apply(ctx: StepCtx, plan: lifecycle.LifecyclePlan) -> dict[str, Any]:
    ctx.commands.extend(c.line() for c in plan.commands)
    ctx.notes.extend(f"skip {n}:{x}: {w}" for n, x, w in plan.skipped[:5])
    if len(plan.skipped) > 5:
        ctx.notes.append(f"... {len(plan.skipped) - 5} more skipped")
    if ctx.check:
        ctx.planned.update(plan.created)
    summary: dict[str, Any] = {
        "op": plan.op, "commands": len(plan.commands),
        "created": [x for _, x in plan.created], "destroyed": len(plan.destroyed),
        "changed": len(plan.changed), "skipped": len(plan.skipped)}
    if ctx.check or not plan.commands:
        return summary
    out = lifecycle.execute(ctx.inv, ctx.mirror_path, plan, ctx.conns, source="play")
    ctx.remote += out.commands
    if not out.ok:
        raise PlaybookError("; ".join(f"{n.node}: {n.error}" for n in out.nodes if not n.ok),
                            where=ctx.where)
    return summary


_TARGETS = {"targets": Field((list, str, dict), doc="dataset names or rows with name/node"),
            "select": Field((dict,), doc="like xfleet ls: node, pool, type, tenant, where"),
            "node": Field((str,), doc="the node, when names are ambiguous")}


def _props_ok(key: str) -> Callable[[dict[str, Any], str], None]:
    def check(args: dict[str, Any], file: str) -> None:
        if key in args and isinstance(args[key].value, dict):
            props = plain(args[key])
            if not any(isinstance(v, str) and _is_template(v) for v in props.values()):
                try:
                    lifecycle.validate_properties(props, types=(),
                                                  where=f"{file}:{args[key].at}")
                except UsageError as exc:
                    raise PlaybookError(exc.message, where=exc.where, hint=exc.hint) from None

    return check


@step_kind("sync", {"nodes": Field((list,), doc="nodes or groups (default: all)"),
                    "full": Field((bool,))})
def _sync(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Bring the mirror up to date (incremental unless `full`)."""

    nodes = [str(n) for n in args.get("nodes") or []]
    ctx.inv.select(nodes)  # unknown names are errors, in check mode too
    if ctx.check:
        ctx.notes.append(f"sync {', '.join(nodes) or 'all nodes'}"
                         + (" (full)" if args.get("full") else ""))
        return {"nodes": nodes}
    rep = sync(ctx.inv, ctx.mirror_path, nodes, full=bool(args.get("full")), refresh=False,
               connections=ctx.conns)
    ctx.remote += sum(n.commands for n in rep.nodes)
    if not rep.ok:
        raise PlaybookError("sync failed: " + "; ".join(
            f"{n.node}: {n.error}" for n in rep.failed), where=ctx.where)
    return {"nodes": [n.node for n in rep.nodes],
            "datasets": sum(n.datasets for n in rep.nodes)}


@step_kind("query", {"sql": Field((str,), required=True, doc="a SELECT on the mirror",
                                 sql=True),
                     "max_rows": Field((int,))})
def _query(ctx: StepCtx, args: dict[str, Any]) -> list[dict[str, Any]]:
    """SQL on the mirror (read-only); the rows (dicts) are bound to `register`."""
    limit = int(args.get("max_rows") or DEFAULT_MAX_ROWS)
    conn = read_only(mirror.connect(ctx.mirror_path, readonly=True))
    try:
        try:
            sql, params = bind(str(args["sql"]), ctx.vars, ctx.where)
            cur = conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise PlaybookError(f"query: {exc}", where=ctx.where,
                                hint="a read-only SELECT on the mirror (docs/mirror.md)") from None
        cols = [d[0] for d in cur.description or ()]
        rows: list[dict[str, Any]] = []
        for r in cur:
            if len(rows) >= limit:
                raise PlaybookError(f"query: more than {limit} rows", where=ctx.where,
                                    hint="narrow it, or raise max_rows")
            rows.append(dict(zip(cols, r, strict=True)))
    finally:
        conn.close()
    ctx.notes.append(f"query: {len(rows)} row(s)")
    return rows


@step_kind("snapshot", {**_TARGETS, "name": Field((str,), required=True, doc="after the @"),
                        "properties": Field((dict,))}, one_of=(("targets", "select"),))
def _snapshot(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Snapshot the targets: one `zfs snapshot` per pool (existing snapshots are skipped)."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_snapshot(conn, _targets(ctx, args), str(args["name"]),
                                       properties=args.get("properties"))
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("clone", {"source": Field((str,), required=True, doc="a volume or a snapshot"),
                     "target": Field((str,), required=True, doc="the clone's name"),
                     "snapshot": Field((str,), doc="pin an existing snapshot of source"),
                     "node": Field((str,)), "properties": Field((dict,))},
           validate=_props_ok("properties"))
def _clone(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Branch a volume: a clone of a snapshot (pinned, or a new one)."""
    conn = ctx.reader()
    try:
        source = str(args["source"])
        would = [n for n, x in ctx.planned if x == source and n == args.get("node", n)]
        if ctx.check and would and not lifecycle.resolve_optional(conn, source, would[0]):
            src = lifecycle.Target(would[0], source, "snapshot")  # an earlier step creates it
        else:
            (src,) = lifecycle.resolve(conn, [source], args.get("node"), where=ctx.where)
        stamp = str(ctx.vars.get("time")) if "time" in ctx.vars else None
        plan = lifecycle.plan_clone(conn, src, str(args["target"]), snapshot=args.get("snapshot"),
                                    properties=args.get("properties"), stamp=stamp)
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("destroy", {**_TARGETS, "clones": Field((str,), doc="refuse, destroy or promote"),
                       "release": Field((bool,))}, one_of=(("targets", "select"),))
def _destroy(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Destroy volumes (with their snapshots) or snapshots; refusals as `xfleet destroy`.
    Targets already gone are skipped."""
    conn = ctx.reader()
    try:
        try:
            targets = _targets(ctx, args)
        except UsageError as exc:
            if "not in the mirror" not in exc.message:
                raise
            ctx.notes.append(f"destroy: {exc.message} (gone already)")
            return {"op": "destroy", "commands": 0, "destroyed": 0}
        plan = lifecycle.plan_destroy(conn, targets, clones=str(args.get("clones", "refuse")),
                                      release=bool(args.get("release")),
                                      holds=lifecycle.RemoteHolds(ctx.conns))
    finally:
        conn.close()
    ctx.notes.extend(f"destroy {n}:{x} ({t})" for n, x, t in plan.destroyed[:50])
    return _apply(ctx, plan)


@step_kind("set", {**_TARGETS, "properties": Field((dict,), required=True)},
           one_of=(("targets", "select"),), validate=_props_ok("properties"))
def _set(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Set properties on the targets: one `zfs set` per node and batch."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_set(conn, _targets(ctx, args), dict(args["properties"]))
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("resize", {**_TARGETS, "size": Field((str,), required=True, doc="20G or +10G")},
           one_of=(("targets", "select"),))
def _resize(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Grow volumes (volsize); shrinking is refused."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_resize(conn, _targets(ctx, args), str(args["size"]))
    finally:
        conn.close()
    return _apply(ctx, plan)


def _run_moves(ctx: StepCtx, ids: list[int], parallel: int) -> list[dict[str, Any]]:

    runner = moves.Runner(ctx.inv, ctx.mirror_path, ctx.conns)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
        done = list(ex.map(runner.run, ids))
    failed = [m for m in done if m.state != "done"]
    if failed:
        raise PlaybookError("; ".join(f"move {m.id} ({m.volume}) {m.state}: {m.error}"
                                      for m in failed[:5]), where=ctx.where,
                            hint="xfleet moves show ID; xfleet play --resume continues")
    return [{"id": m.id, "volume": m.volume, "target": f"{m.target_node}:{m.target_volume}",
             "retired_as": m.retired_as} for m in done]


@step_kind("move", {"volume": Field((str,), required=True), "to": Field((str,), required=True,
                                                                        doc="NODE[/POOL]"),
                    "from": Field((str,)), "options": Field((dict,))})
def _move(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Move a volume to another node (xfleet.ops.moves: verified send/receive with cutover)."""

    prev = ctx.previous or {}
    if "move" in prev and not ctx.check:  # an interrupted attempt: continue that move
        ctx.notes.append(f"resuming move {prev['move']}")
        return _run_moves(ctx, [int(prev["move"])], 1)[0]
    conn = ctx.reader()
    try:
        p = moves.plan_move(ctx.inv, conn, str(args["volume"]), str(args["to"]),
                            source_node=args.get("from"), options=args.get("options"))
        ctx.commands.extend(p.commands)
        if ctx.check:
            return {"volume": p.volume, "target": f"{p.target_node}:{p.target_volume}"}
        m = moves.create(ctx.inv, conn, p, args.get("options"))
    finally:
        conn.close()
    ctx.journal({"move": m.id})
    return _run_moves(ctx, [m.id], 1)[0]


@step_kind("drain", {"node": Field((str,), required=True), "to": Field((list,)),
                     "parallel": Field((int,), doc="moves at once (default 1)")})
def _drain(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Move every volume off a node (xfleet.ops.moves.plan_drain), balancing by free space."""

    prev = ctx.previous or {}
    parallel = int(args.get("parallel") or 1)
    if "moves" in prev and not ctx.check:
        ctx.notes.append(f"resuming moves {prev['moves']}")
        return {"moves": _run_moves(ctx, [int(i) for i in prev["moves"]], parallel),
                "refused": prev.get("refused", [])}
    conn = ctx.reader()
    try:
        plans, refused = moves.plan_drain(ctx.inv, conn, str(args["node"]),
                                          [str(t) for t in args.get("to") or []])
        for p in plans:
            ctx.commands.append(f"move {p.volume} ({p.source_node}) -> "
                                f"{p.target_node}:{p.target_volume} ({p.needed_bytes:,} bytes)")
        ctx.notes.extend(f"cannot move {v}: {w}" for v, w in refused)
        if refused:
            raise PlaybookError(f"drain: {len(refused)} volume(s) cannot move: "
                                + "; ".join(f"{v}: {w}" for v, w in refused[:5]),
                                where=ctx.where)
        if ctx.check:
            return {"moves": len(plans)}
        ids = []
        for p in plans:
            ids.append(moves.create(ctx.inv, conn, p).id)
            ctx.journal({"moves": ids})
    finally:
        conn.close()
    return {"moves": _run_moves(ctx, ids, parallel), "refused": []}


def _compression_scope(ctx: StepCtx, args: dict[str, Any]) -> Any:

    where = args.get("where") or ()
    return compression.scope_for(
        ctx.inv, [str(n) for n in args.get("nodes") or ()],
        [str(w) for w in ([where] if isinstance(where, str) else where)],
        args.get("pattern"), [str(args["tenant"])] if args.get("tenant") else [])


_COMPRESSION_SCOPE = {
    "policy": Field((str,), doc="a policy file (default: the inventory's compression_policy)"),
    "nodes": Field((list,), doc="nodes or groups (default: all)"),
    "tenant": Field((str,), doc="only this tenant's volumes"),
    "pattern": Field((str,), doc="a name glob, e.g. tank/t0001/*"),
    "where": Field((list, str), doc="conditions like xfleet ls --where (compression=off)"),
}


@step_kind("compression_apply", dict(_COMPRESSION_SCOPE))
def _compression_apply(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Apply the compression policy (xfleet compression apply): one `zfs set` per 500
    volumes per node, audited, resumable. New settings affect newly written data only."""

    conn = ctx.reader()
    try:
        prev = ctx.previous or {}
        if "run" in prev and not ctx.check:
            run_id = int(prev["run"])
            ctx.notes.append(f"resuming compression run {run_id}")
        else:
            pol = compression.policy_for(ctx.inv, args.get("policy"))
            plan = compression.plan(conn, pol, ctx.inv, scope=_compression_scope(ctx, args),
                                    tenant_property=ctx.inv.tenant_property)
            cmds = list(compression.dry_run_commands(conn, plan))
            ctx.commands.extend(f"{node}: {' '.join(argv[:4])} ... ({len(argv) - 3} "
                                "volume(s))" for node, argv in cmds)
            ctx.notes.append("a new setting applies to newly written data only; existing "
                             "data is recompressed by a rewrite (a move without -c)")
            if ctx.check or not cmds:
                return {"changes": sum(g.volumes for g in plan.groups), "commands": len(cmds)}
            run_id = compression.create_run(conn, plan).id
            ctx.journal({"run": run_id})
    finally:
        conn.close()
    run, per_node = compression.apply_run(ctx.mirror_path, run_id, ctx.conns)
    ctx.remote += sum(n.commands for n in per_node)
    failed = [n for n in per_node if n.error]
    if failed:
        raise PlaybookError(f"compression run {run_id}: {failed[0].node}: {failed[0].error}",
                            where=ctx.where, hint=f"xfleet compression apply --resume {run_id}")
    return {"run": run_id, "changes": run.done, "commands": run.commands}


@step_kind("compression_report", {
    **_COMPRESSION_SCOPE,
    "by": Field((str,), doc="node, pool, tenant, compression, volume or label:KEY"),
    "html": Field((str,), doc="write the self-contained HTML report to this file"),
    "json": Field((str,), doc="write the report as JSON to this file"),
})
def _compression_report(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """The compression cost report (xfleet report compression), written to files; records
    today's totals for the trend."""


    scope = _compression_scope(ctx, args)
    outputs = [(k, str(args[k])) for k in ("html", "json") if args.get(k)]
    ctx.commands.extend(f"write the compression report ({k}) to {f}" for k, f in outputs)
    if ctx.check:
        return {"files": [f for _, f in outputs]}
    pol = None
    if args.get("policy") or ctx.inv.compression_policy is not None:
        pol = compression.policy_for(ctx.inv, args.get("policy"))
    conn = ctx.reader()
    try:
        report.record_daily(conn)
        node_clause = "1" if not scope.nodes else \
            f"node IN ({', '.join('?' for _ in scope.nodes)})"
        rep = report.build(conn, by=str(args.get("by") or "node"), policy=pol,
                           inventory=ctx.inv, price_per_gb_month=ctx.inv.price_per_gb_month,
                           where=f"({scope.where}) AND {node_clause}",
                           params=[*scope.params, *scope.nodes],
                           tenant_property=ctx.inv.tenant_property)
    finally:
        conn.close()
    for kind, path in outputs:
        Path(path).write_text(report.render_html(rep) if kind == "html"
                              else json_mod.dumps(rep.to_dict(), indent=2))
    return {"files": [f for _, f in outputs], "groups": len(rep.to_dict().get("rows", []))}


@step_kind("upgrade_target", {
    "version": Field((str,), required=True, doc="the version to upgrade the target to"),
    "package": Field((str,), required=True, doc="its package on this host (relative to the "
                     "playbook; a .deb or VERSION=PATH)"),
    "rollback_packages": Field((list,), doc="packages of the versions the nodes run now"),
    "nodes": Field((list,), doc="nodes or groups (default: every node with a target)"),
    "canary": Field((str,), doc="the node upgraded first, alone"),
    "serial": Field((list, str, int), doc='batch sizes after the canary, e.g. [1, 2, "25%"]'),
    "max_failures": Field((int,), doc="failures a batch may have (more pauses); default 0"),
    "soak": Field((int, float), doc="seconds a node stays ready before the next (10)"),
    "ready_timeout": Field((int, float), doc="seconds for a restarted target to be ready"),
    "deadline": Field((int, float), doc="progress deadline per node, seconds"),
    "skip_checks": Field((list,), doc="preflight checks to skip, by name"),
    "allow_downgrade": Field((bool,), doc="allow an older version"),
})
def _upgrade_target(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """A rolling upgrade of the NVMe-oF target daemon (xfleet upgrade target): preflight,
    staging, canary, batches; fails (with the rollout paused) when a batch exceeds its
    failure budget. Resuming the playbook resumes the rollout."""

    prev = ctx.previous or {}
    if "rollout" in prev and not ctx.check:
        rid = int(prev["rollout"])
        ctx.notes.append(f"resuming rollout {rid}")
    else:
        serial = args.get("serial", [1])
        opts = rollout.Options(
            serial=rollout.parse_serial(serial if isinstance(serial, (list, str))
                                        else [serial]),
            max_failures=int(args.get("max_failures", 0)),
            soak=float(args.get("soak", 10.0)),
            ready_timeout=float(args.get("ready_timeout", 120.0)),
            deadline=float(args.get("deadline", 600.0)),
            skip=tuple(map(str, args.get("skip_checks") or ())),
            allow_downgrade=bool(args.get("allow_downgrade", False)),
            canary=args.get("canary"))
        p = rollout.plan(ctx.inv, ctx.mirror_path, ctx.conns, str(args["version"]),
                         str(args["package"]), [str(x) for x in args.get("rollback_packages")
                                                or ()],
                         opts, [str(n) for n in args.get("nodes") or ()] or None,
                         base=Path(ctx.where.rsplit(":", 1)[0]).parent)
        ctx.commands.extend(f"batch {i + 1}: restart {', '.join(b)} into {p.version}"
                            for i, b in enumerate(p.batches))
        ctx.notes.extend(f"{c.node or ''} {c.name}: {c.message}" for c in p.checks
                         if not c.ok or c.warning)
        if p.refused:
            first = p.refused[0]
            raise PlaybookError(f"upgrade_target: preflight refused: {first.node or ''} "
                                f"{first.name}: {first.message}", where=ctx.where,
                                hint="fix it, or add the check's name to skip_checks")
        if ctx.check:
            return {"nodes": len(p.nodes), "batches": len(p.batches)}
        rid = rollout.start(ctx.mirror_path, p)
        ctx.journal({"rollout": rid})
    res = rollout.Runner(ctx.inv, ctx.mirror_path, ctx.conns, rid).run()
    if res.state != "done":
        raise PlaybookError(f"rollout {rid} {res.state}: {res.reason}", where=ctx.where,
                            hint=f"xfleet rollouts show {rid}; the playbook's --resume "
                            "resumes the rollout")
    return {"rollout": rid, "state": res.state, "nodes": len(res.nodes)}


@step_kind("wait", {"that": Field((str,), required=True, sql=True,
                                  doc="an SQLite expression on the mirror"),
                    "timeout": Field((int, float)), "interval": Field((int, float)),
                    "sync": Field((bool, list), doc="sync (these nodes) before each check")})
def _wait(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Wait until a condition on the mirror holds (syncing first when `sync`)."""

    timeout = float(args.get("timeout", 600))
    interval = float(args.get("interval", 5))
    expr = str(args["that"])
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        if args.get("sync") and not ctx.check:
            nodes = args["sync"] if isinstance(args["sync"], list) else []
            sync(ctx.inv, ctx.mirror_path, [str(n) for n in nodes], refresh=False,
                 connections=ctx.conns)
        conn = mirror.connect(ctx.mirror_path, readonly=True)
        try:
            ok = condition(conn, expr, ctx.vars, ctx.where)
        finally:
            conn.close()
        polls += 1
        if ok:
            return {"polls": polls, "met": True}
        if ctx.check:
            ctx.notes.append(f"wait: not met now; would wait up to {timeout:g}s")
            return {"polls": polls, "met": False}
        if time.monotonic() >= deadline:
            raise PlaybookError(f"wait: {args['that']!r} not met after {timeout:g}s",
                                where=ctx.where)
        time.sleep(interval)


@step_kind("assert", {"that": Field((str,), required=True, sql=True,
                                    doc="an SQLite expression on the mirror"),
                      "message": Field((str,), doc="said when it fails")})
def _assert(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Stop the run unless a condition holds (in --check too)."""
    conn = read_only(mirror.connect(ctx.mirror_path, readonly=True))
    try:
        ok = condition(conn, str(args["that"]), ctx.vars, ctx.where)
    finally:
        conn.close()
    message = str(args.get("message") or f"assertion failed: {args['that']}")
    if not ok and ctx.check and ctx.after_changes:
        ctx.notes.append(f"does not hold now ({message}); earlier steps would change that")
        return {"ok": None}
    if not ok:
        raise PlaybookError(message, where=ctx.where)
    return {"ok": True}


@step_kind("run", {"argv": Field((list,), required=True, doc="an argument list, never a shell "
                                 "line"),
                   "nodes": Field((list,), required=True, doc="nodes or groups"),
                   "check_exit": Field((bool,))})
def _run(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Run a command (an argument list) on nodes; a node that already ran it in this run is
    not run again on resume."""

    raw = args["argv"]
    if not raw:
        raise PlaybookError("run: argv is empty", where=ctx.where,
                            hint="argv: [program, arg, ...] (an argument list, never a shell "
                            "line)")
    wrong = [a for a in raw if a is None or isinstance(a, (bool, dict, list))]
    if wrong:
        raise PlaybookError(f"run: argv holds {typename(wrong[0])}, not a string or a number",
                            where=ctx.where, hint="quote every argument; a template that "
                            "renders to nothing is an empty string: \"\"")
    argv = [str(a) for a in raw]
    check_argv(argv)
    hosts = [h.name for h in ctx.inv.select([str(n) for n in args["nodes"]])]

    prev = {n: r for n, r in (ctx.previous or {}).get("nodes", {}).items() if r["exit"] == 0}
    todo = [h for h in hosts if h not in prev]
    ctx.commands.extend(f"{h}: {quote_command(argv)}" for h in todo)
    if ctx.check:
        return {"nodes": hosts}
    results: dict[str, Any] = dict(prev)
    lock = threading.Lock()

    def one(node: str, t: Any) -> None:
        res = t.run(argv, check=False)
        with lock:
            results[node] = {"exit": res.exit_status, "stdout": res.stdout[-4000:],
                             "stderr": res.stderr[-2000:]}
            ctx.journal({"nodes": results})

    outs = ctx.conns.each(todo, one, parallel=ctx.inv.parallel)
    ctx.remote += len(todo)
    bad = [f"{r.node}: {r.error.message}" for r in outs if r.error is not None]
    if args.get("check_exit", True):
        bad += [f"{n}: exit {r['exit']}: {r['stderr'].strip()[-200:]}"
                for n, r in results.items() if r["exit"] != 0]
    if bad:
        raise PlaybookError("run: " + "; ".join(bad[:5]), where=ctx.where)
    return {"nodes": results}
