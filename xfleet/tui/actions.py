"""What the dashboard's write actions do (only in `xfleet tui --write`): snapshot, clone,
destroy and move the selected dataset, through the same library calls as the CLI
(xfleet.ops.lifecycle, xfleet.ops.moves), so the same refusals and the same journal apply.

No textual import here: `run(...)` returns the message to show, or raises an XfleetError whose
message and hint the view shows instead of a traceback. It runs in a worker thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Connection, Location
from xfleet.ops import lifecycle

ACTIONS = ("snapshot", "clone", "destroy", "move")


@dataclass(frozen=True)
class Prompt:
    placeholder: str
    value: str  # what the prompt starts with


def prompt_for(what: str, node: str, name: str, now: float | None = None) -> Prompt:
    """The question a write action asks before it acts."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    base = name.split("@", 1)[0]
    if what == "snapshot":
        return Prompt(f"snapshot name for {node}:{base} (after the @)", f"manual-{stamp}")
    if what == "clone":
        return Prompt(f"name of the new branch of {name} on {node}", f"{base}-branch")
    if what == "destroy":
        return Prompt(f"type {name} to destroy it on {node} (snapshots included)", "")
    if what == "move":
        return Prompt(f"move {name} from {node} to NODE[/POOL]", "")
    raise UsageError(f"unknown action {what!r}", hint=", ".join(ACTIONS))


def _summary(out: lifecycle.Outcome, what: str) -> str:
    if not out.ok:
        bad = next(n for n in out.nodes if not n.ok)
        raise UsageError(f"{what} failed on {bad.node}: {bad.error}")
    return f"{out.commands} remote command(s); the mirror is up to date"


def run(inv: Inventory, mirror_path: Location, what: str, node: str, name: str, answer: str) -> str:
    """Carry out a write action on (node, name) with the prompt's answer."""
    answer = answer.strip()
    conn = mirror.connect(mirror_path)
    try:
        with Connections(inv.hosts, trust_store=inv.trust_store,
                         state_dir=inv.state_dir) as conns:
            if what == "move":
                return _move(inv, mirror_path, conn, conns, node, name, answer)
            (target,) = lifecycle.resolve(conn, [name], node)
            if what == "snapshot":
                if not answer:
                    raise UsageError("a snapshot needs a name")
                base = name.split("@", 1)[0]
                (vol,) = lifecycle.resolve(conn, [base], node)
                plan = lifecycle.plan_snapshot(conn, [vol], answer)
                out = lifecycle.execute(inv, mirror_path, plan, conns, source="tui")
                return f"snapshot {base}@{answer} taken: {_summary(out, what)}"
            if what == "clone":
                plan = lifecycle.plan_clone(conn, target, answer)
                out = lifecycle.execute(inv, mirror_path, plan, conns, source="tui")
                return f"{answer} is a branch of {name}: {_summary(out, what)}"
            if what == "destroy":
                if answer != name:
                    raise UsageError(f"the name typed is not {name}: nothing was destroyed",
                                     hint="type the full name exactly to confirm")
                plan = lifecycle.plan_destroy(conn, [target],
                                              holds=lifecycle.RemoteHolds(conns))
                out = lifecycle.execute(inv, mirror_path, plan, conns, source="tui")
                gone = ", ".join(n for _, n, _ in plan.destroyed[:3])
                return f"destroyed {gone}: {_summary(out, what)}"
            raise UsageError(f"unknown action {what!r}", hint=", ".join(ACTIONS))
    finally:
        conn.close()


def _move(inv: Inventory, mirror_path: Location, conn: Connection, conns: Connections,
          node: str, name: str, target: str) -> str:
    from xfleet.ops import moves

    if not target:
        raise UsageError("a move needs a target: NODE or NODE/POOL")
    p = moves.plan_move(inv, conn, name, target, source_node=node)
    m = moves.create(inv, conn, p)
    done = moves.Runner(inv, mirror_path, conns).run(m.id)
    if done.state != "done":
        raise UsageError(f"move {m.id} is {done.state}: {done.error or ''}".rstrip(": "),
                         hint=f"xfleet moves show {m.id}; xfleet moves resume {m.id}")
    return (f"move {m.id} done: {done.target_node}:{done.target_volume}; the source is kept "
            f"as {done.retired_as} until `xfleet moves retire {m.id} --destroy`")
