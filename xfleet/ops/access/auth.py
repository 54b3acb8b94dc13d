"""DH-CHAP (NVMe in-band authentication) for the initiators (docs/access.md "DH-CHAP").

A host's secret comes from the inventory's source for it (xfleet.fleet.secrets: a file or a
command on the operator's side), never from the mirror, and is never logged or printed. It
goes to two places:

- **every node's kernel target** (`hosts/HOSTNQN/dhchap_key`, and the node's auth_dir so the
  target service gives it back after a reboot, before it exports anything): the target then
  refuses that host NQN without it;
- **the host's live connections** to that node (`/sys/class/nvme/nvmeX/dhchap_secret`): the
  kernel re-authenticates each with it and keeps it for its reconnects. New connections are
  made with it (`initiator.connect(secret=...)`).

`apply` does it **node by node, like a rollout**: on each node the target first, then the
host's connections to that node, so no connection is ever left with a secret its target
would refuse at the next reconnect for longer than the two commands between. It stops at the
first node that fails and says which nodes are left; run again, it carries on (each step
compares first: `unchanged`). Rotating a secret is: change it at its source, then `apply`.

A connection made without a secret cannot be given one (the kernel refuses): a node where the
host has such a connection is refused before its target is touched, because the target would
refuse that connection's next reconnect.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet import mirror
from xfleet.core.errors import UsageError, XfleetError
from xfleet.fleet.connections import Connections, initiator_connections
from xfleet.fleet.inventory import Inventory
from xfleet.fleet.secrets import Secret, secrets_of
from xfleet.mirror import claims, store
from xfleet.mirror.backend import Connection, Location
from xfleet.ops import initiator
from xfleet.ops.access import initiators
from xfleet.ops.target import NvmetDriver, driver_for

Progress = Callable[[str], None]


@dataclass
class Step:
    """One host on one node: the target's state for its secret, and its connections there."""

    node: str
    host: str
    target: str | None = None  # changed, unchanged (apply); match, differs, none (status)
    connections: list[str] = field(default_factory=list)  # "nvme3 changed", ...
    error: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "host": self.host, "target": self.target,
                "connections": self.connections, "ok": self.ok, "error": self.error,
                "hint": self.hint}


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # nodes not reached after a failure
    batch: str | None = None  # apply's id in auth_log

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.left

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "batch": self.batch, "steps": [s.to_dict() for s in self.steps],
                "left": self.left}


def auth_nodes(inv: Inventory, nodes: Sequence[str] = ()) -> list[str]:
    """The storage nodes DH-CHAP applies to: those with the kernel target (all by default); a
    node named that has another target is a UsageError."""
    chosen = inv.select(list(nodes))
    out = []
    for h in chosen:
        if h.target is not None and h.target.driver == "nvmet":
            out.append(h.name)
        elif nodes:
            raise UsageError(f"{h.name} has no kernel target (target: {{driver: nvmet}}): "
                             "DH-CHAP secrets are set through it",
                             hint="leave the node out, or give it the nvmet target")
    if not out:
        raise UsageError("no node of the fleet has the kernel target (target: {driver: "
                         "nvmet}): DH-CHAP secrets are set through it",
                         where=str(inv.path), hint="docs/access.md, \"DH-CHAP\"")
    return out


def _secrets(inv: Inventory, hosts: Sequence[str]) -> dict[str, Secret]:
    """The chosen initiators' secrets (every initiator with a source when none is named)."""
    out = secrets_of(inv, hosts or None)
    for name in hosts:
        if name not in out:
            raise UsageError(f"initiator {name!r} has no DH-CHAP secret in the inventory",
                             where=str(inv.path),
                             hint="give it dhchap_secret_file or dhchap_secret_command "
                             "(docs/inventory.md)")
    if not out:
        raise UsageError("no initiator of the inventory has a DH-CHAP secret",
                         where=str(inv.path),
                         hint="give initiators dhchap_secret_file or dhchap_secret_command "
                         "(docs/inventory.md)")
    return out


def _hostnqns(where: Location, names: Sequence[str]) -> dict[str, str]:
    conn = mirror.connect(where, readonly=True)
    try:
        known = initiators.hostnqns(conn)
    finally:
        conn.close()
    missing = [n for n in names if n not in known]
    if missing:
        raise UsageError(f"the host NQN of {', '.join(missing)} was never read",
                         hint=f"xfleet initiators --read {' '.join(missing)}")
    return {n: known[n] for n in names}


def _journal(where: Location, batch: str | None, steps: Iterable[Step],
             nqns: dict[str, str], sources: dict[str, str | None]) -> None:
    """One node's steps into auth_log (one short transaction, after its commands)."""
    now, who = time.time(), claims.operator()
    conn = mirror.connect(where)
    try:
        with store.transaction(conn, "the DH-CHAP journal"):
            conn.executemany(
                "INSERT INTO auth_log (at, batch, node, initiator, hostnqn, source, target, "
                "connections, outcome, message, operator) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?)",
                [(now, batch, s.node, s.host, nqns[s.host], sources[s.host], s.target,
                  ", ".join(s.connections) or None, "ok" if s.ok else "failed", s.error, who)
                 for s in steps])
    finally:
        conn.close()


def log(conn: Connection, hosts: Sequence[str] = (), limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` lines of auth_log (of `hosts`), newest first."""
    if not store.has_table(conn, "auth_log"):
        return []
    where = f" WHERE initiator IN ({', '.join('?' for _ in hosts)})" if hosts else ""
    return [dict(r) for r in conn.execute(
        "SELECT id, at, batch, node, initiator, hostnqn, source, target, connections, outcome, "
        f"message, operator FROM auth_log{where} ORDER BY id DESC LIMIT {int(limit)}",
        list(hosts))]


def _driver(inv: Inventory, conns: Connections, node: str) -> NvmetDriver:
    drv = driver_for(node, conns.get(node), inv.hosts[node].target)
    assert isinstance(drv, NvmetDriver)  # auth_nodes chose nvmet nodes only
    return drv


def status(inv: Inventory, where: Location, conns: Connections, hosts: Sequence[str] = (),
           nodes: Sequence[str] = ()) -> Report:
    """For each chosen host and node: does the node's target hold the host's current secret
    (`match`, `differs`, `none`)? One command per node, in parallel; nothing changes."""
    secrets = _secrets(inv, hosts)
    chosen = auth_nodes(inv, nodes)
    nqns = _hostnqns(where, list(secrets))
    by_nqn = {nqns[h]: s for h, s in secrets.items()}
    results = conns.each(chosen, lambda n, _t: _driver(inv, conns, n).auth("check", by_nqn),
                         parallel=inv.parallel)
    out = Report()
    for r in results:
        for host in secrets:
            if not r.ok or r.value is None:
                err: XfleetError | None = r.error
                out.steps.append(Step(r.node, host, error=err.message if err else "failed",
                                      hint=err.hint if err else None))
                continue
            state, error = r.value[nqns[host]]
            out.steps.append(Step(r.node, host, target=state, error=error))
    return out


def apply(inv: Inventory, where: Location, conns: Connections, hosts: Sequence[str] = (),
          nodes: Sequence[str] = (), progress: Progress | None = None,
          clients: Connections | None = None) -> Report:
    """Give the chosen hosts' current secrets to every chosen node's target and to the hosts'
    connections to it, node by node (module docstring). Per node: one target command, then
    one command per host with connections there; per host, one listing of its connections
    first. `clients`: the initiators' connections (default: opened here, closed after)."""
    say = progress or (lambda _m: None)
    secrets = _secrets(inv, hosts)
    chosen = auth_nodes(inv, nodes)
    nqns = _hostnqns(where, list(secrets))
    out = Report(batch=f"auth-{uuid.uuid4().hex[:8]}")
    with contextlib.nullcontext(clients) if clients is not None else \
            initiator_connections(inv) as clients:
        ctrls = {h: initiator.controllers(clients.get(h)) for h in secrets}
        for i, node in enumerate(chosen):
            drv = _driver(inv, conns, node)
            addr = drv.listen_address(inv.hosts[node])
            mine = {h: [c for c in cs if addr is not None and c.address == addr[0]
                        and c.port in (None, addr[1])] for h, cs in ctrls.items()}
            steps = {h: Step(node, h) for h in secrets}
            bare = {h: [c.name for c in cs if c.authenticated is False]
                    for h, cs in mine.items()}
            for h, names in bare.items():
                if names:
                    steps[h].error = (f"{h} is connected to {node} without a DH-CHAP secret "
                                      f"({', '.join(names)}): once {node} asks for one, the "
                                      "next reconnect of that connection is refused")
                    steps[h].hint = (f"reconnect those paths of {h} with its secret first "
                                     f"(nvme disconnect -d NAME, then connect with "
                                     f"--dhchap-secret), or detach its volumes on {node}")
            todo = {h: s for h, s in secrets.items() if steps[h].ok}
            try:
                got = drv.auth("set", {nqns[h]: s for h, s in todo.items()})
            except XfleetError as exc:  # the node's own trouble: every host's step says it
                got = {nqns[h]: (None, exc.message) for h in todo}
                for h in todo:
                    steps[h].hint = exc.hint
            for h, secret in todo.items():
                state, error = got[nqns[h]]
                step = steps[h]
                step.target, step.error = state, error
                if error is not None or not mine[h]:
                    continue
                try:
                    done = initiator.reauthenticate(clients.get(h), [c.name for c in mine[h]],
                                                    secret)
                except XfleetError as exc:
                    step.error, step.hint = exc.message, exc.hint
                    continue
                step.connections = [f"{r.name} {'changed' if r.changed else 'unchanged'}"
                                    for r in done if r.ok]
                failed = [f"{r.name}: {r.error}" for r in done if not r.ok]
                if failed:
                    step.error = (f"{node}'s target has {h}'s secret but its connections "
                                  f"there could not all take it: {'; '.join(failed)}")
                    step.hint = f"fix them on {h}, then run the same command again"
            out.steps.extend(steps.values())
            _journal(where, out.batch, steps.values(), nqns,
                     {h: initiators.dhchap_source(inv.initiators[h]) for h in steps})
            say(f"{node}: " + ", ".join(
                f"{s.host} {s.target or 'failed'}" + (f" ({len(s.connections)} connection(s))"
                                                        if s.connections else "")
                for s in steps.values()))
            if not all(s.ok for s in steps.values()):
                out.left = chosen[i + 1:]
                break
    return out
