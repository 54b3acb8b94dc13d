"""Playbooks: YAML lists of steps that map to library calls, validated before anything runs,
journaled in the mirror so a crashed run resumes (`xfleet play --resume RUN`).

A playbook is a list of steps, or a mapping with `name`, `vars` and `steps`. A step is a
mapping with exactly one step-kind key (its arguments) and optional common keys:

    - name: snapshot the free tier          # a label
      snapshot: {select: {tenant: free}, name: "nightly-{{ date }}"}
      when: "{{ count }} > 0"               # an SQL expression; {{ }} values are bound
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
a resumed run renders the same names. How an interrupted item resumes is its step kind's
business (lifecycle steps re-plan and skip what exists, a `move` item resumes the move it
recorded): xfleet/playbook/steps/.

The engine knows step kinds only through the registry (`KINDS`, filled by `@step_kind`): it
imports no feature (nothing of xfleet.ops); the step modules (xfleet/playbook/steps/) are where
features meet the playbook, and `xfleet.playbook` imports them all.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xfleet import mirror
from xfleet.core.errors import InventoryError, XfleetError
from xfleet.core.yamlsrc import Val, convert, plain
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import jobs
from xfleet.mirror.backend import Connection, Location
from xfleet.mirror.query import read_only
from xfleet.playbook.journal import PLAY_RUNS, Journal, claim, finish, start
from xfleet.playbook.model import Playbook, PlaybookError, Step, typename
from xfleet.playbook.template import EXPRESSION, condition, is_template, refs, render

COMMON_KEYS = ("name", "when", "for_each", "as", "concurrency", "register")
BUILTINS = ("date", "time", "now", "run", "check")
# Kinds whose capability arrives with another piece of work: a clear error until it lands.
PENDING_KINDS: dict[str, str] = {}


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
    needs_register: str = ""  # why a step of this kind must have `register:` (if it must)


KINDS: dict[str, StepKind] = {}


def step_kind(name: str, fields: dict[str, Field], *, one_of: tuple[tuple[str, ...], ...] = (),
              validate: Callable[[dict[str, Any], str], None] | None = None,
              needs_register: str = "",
              ) -> Callable[[Callable[[StepCtx, dict[str, Any]], Any]],
                            Callable[[StepCtx, dict[str, Any]], Any]]:
    """Register a step kind: `fn(ctx, args) -> result` plans, and acts unless `ctx.check`
    (then it only describes, in `ctx.commands`/`ctx.notes`, what it would do). The step modules
    (xfleet/playbook/steps/) register every kind when `xfleet.playbook` is imported."""

    def deco(fn: Callable[[StepCtx, dict[str, Any]], Any]
             ) -> Callable[[StepCtx, dict[str, Any]], Any]:
        KINDS[name] = StepKind(name, fields, fn, (fn.__doc__ or "").strip(), one_of, validate,
                               needs_register)
        return fn

    return deco


# What a resumed run does first when an item was interrupted mid-way (a crash may have changed
# nodes the mirror has not seen yet): bring the mirror up to date. Registered by a step module
# (steps/sync.py, with @resync), so that the engine imports no feature.
Resync = Callable[[Inventory, Location, Connections], None]
RESYNC: list[Resync] = []


def resync(fn: Resync) -> Resync:
    """Register `fn(inv, mirror_path, conns)`: run before a resumed run retries interrupted
    items."""
    RESYNC.append(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# loading and validation


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
        if isinstance(val, str) and is_template(val):
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
    if spec.needs_register and not step.register:
        raise _err(p, line, f"{kind}: {spec.needs_register}: add 'register: NAME'")
    return step


def _types_text(types: tuple[type, ...]) -> str:
    return " or ".join(typename(t()) for t in types)


def _check_vars(p: Path, step: Step, defined: set[str]) -> None:
    def check(found: Iterator[tuple[str, int]], names: set[str]) -> None:
        for expr, line in found:
            if not EXPRESSION.match(expr):
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

    check(refs(step.for_each), defined)
    inner = defined | ({step.loop_var} if step.for_each is not None else set())
    check(refs(step.when), inner)
    check(refs(step.args), inner)


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class StepCtx:
    """What a step kind's function gets: the fleet, the mirror, the variables, check mode,
    and where it reports what it did or would do."""

    inv: Inventory
    mirror_path: Location
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

    def reader(self) -> Connection:
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


HEARTBEAT = 20.0  # seconds between heartbeats of a run being played (at most a quarter lease)


class Player:
    """Plays a playbook's runs: `run(run_id)` takes run RUN over (a journaled job,
    xfleet/mirror/jobs.py: refused while another live process plays it) and plays its steps from
    where it stopped, the file's content unchanged; `check()` describes what a run would do and
    journals nothing. The same shape as every job's runner (`jobs.JobRunner`)."""

    def __init__(self, inv: Inventory, mirror_path: Location, pb: Playbook, conns: Connections, *,
                 say: Say | None = None) -> None:
        self.inv, self.mirror_path, self.pb, self.conns = inv, mirror_path, pb, conns
        self.tell: Say = say or (lambda _m: None)

    def check(self) -> PlayReport:
        now = time.time()
        variables = {**self.pb.vars, "date": time.strftime("%Y%m%d", time.gmtime(now)),
                     "time": time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)),
                     "now": int(now), "run": 0, "check": True}
        return self._play(PlayReport(str(self.pb.path), None, True), variables, None)

    def run(self, run_id: int) -> PlayReport:
        pb, mirror_path = self.pb, self.mirror_path
        row = claim(mirror_path, run_id)
        if row["digest"] != pb.digest:
            finish(mirror_path, run_id, "failed", "the playbook changed since the run started")
            raise PlaybookError(f"{pb.path} changed since run {run_id} started",
                                hint="resume with the file as it was, or start a new run")
        journal = Journal(mirror_path, run_id)
        interrupted = journal.conn.execute(
            "SELECT count(*) FROM play_items WHERE run = ? AND state = 'running'",
            (run_id,)).fetchone()[0]
        if interrupted:  # a crash may have changed nodes the mirror has not seen yet
            self.tell(f"run {run_id}: {interrupted} interrupted item(s); syncing the mirror first")
            for fn in RESYNC:
                fn(self.inv, mirror_path, self.conns)
        # the heartbeat keeps the run's lease for operators on other machines (claims.py)
        with jobs.Heartbeat(mirror_path, PLAY_RUNS, run_id, interval=HEARTBEAT):
            return self._play(PlayReport(str(pb.path), run_id, False),
                              json.loads(row["vars"]), journal)

    def _play(self, report: PlayReport, variables: dict[str, Any],
              journal: Journal | None) -> PlayReport:
        pb, mirror_path, check = self.pb, self.mirror_path, journal is None
        planned: set[tuple[str, str]] = set()  # check mode: what earlier steps would create
        try:
            for step in pb.steps:
                sr = StepReport(step.idx, step.kind, step.label, step.line)
                report.steps.append(sr)
                _run_step(self.inv, mirror_path, self.conns, pb, step, sr, variables, journal,
                          check, self.tell, after_changes=any(s.commands for s in report.steps),
                          planned=planned)
                if sr.state == "failed":
                    report.state = "failed"
                    if journal is not None:
                        finish(mirror_path, journal.run_id, "failed",
                               f"step {step.idx + 1} ({step.label}, line {step.line}): "
                               f"{sr.error}")
                    return report
            report.state = "done"
            if journal is not None:
                finish(mirror_path, journal.run_id, "done", None)
            return report
        except BaseException as exc:
            if journal is not None and report.state == "running":
                finish(mirror_path, journal.run_id, "failed",
                       exc.message if isinstance(exc, XfleetError) else repr(exc))
            raise
        finally:
            if journal is not None:
                journal.close()


def play(inv: Inventory, mirror_path: Location, pb: Playbook, conns: Connections, *,
         check: bool = False, resume: int | None = None, say: Say | None = None) -> PlayReport:
    """Run (or with `check`, describe) a playbook. A new run is journaled first; `resume`
    continues run RUN (same file content required)."""
    player = Player(inv, mirror_path, pb, conns, say=say)
    if check:
        return player.check()
    return player.run(resume if resume is not None else start(inv, mirror_path, pb))


def _run_step(inv: Inventory, mirror_path: Location, conns: Connections, pb: Playbook, step: Step,
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
