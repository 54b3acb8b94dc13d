"""A move's live cutover (`xfleet move --live`, docs/moves.md "Live cutover"): the database
host's I/O rides through the move on its own multipath, no hook stops it.

1. prepare (before the final snapshot): the source's export gets an ANA group of its own,
   optimized; the copy (its device enabled) is exported by the target node under the same
   identity (NQN, namespace UUID and NGUID, serial: xfleet:uuid, docs/identity.md) to the
   volume's attached hosts, with the other half of the controller ids, in an inaccessible ANA
   group; each attached host connected to the volume gets the second path (`nvme connect` over
   its SSH, with the reconnect budget of the path it has) and it is waited for, live.
2. switch: the source's group goes inaccessible (the host holds its I/O), the final snapshot
   is taken and its incremental received into the exported copy, the copy's group goes
   optimized (the host's I/O resumes there). A failure before the copy's group is optimized
   puts the source's back: the host resumes where it was.
3. finish: each host's old controller is disconnected (never left reconnecting), the source's
   export withdrawn, the copy's namespace back in the node's group 1 and its own group removed.

Only the kernel target (`nvmet` driver) is driven: configfs through one remote program
(xfleet/remote/programs/nvmet_live.py), one command per step and node. Every step is
idempotent, so `xfleet moves resume` continues a live cutover wherever it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xfleet.core.errors import RemoteCommandError
from xfleet.core.identity import UUID_PROPERTY, volume_identity, volume_nqn
from xfleet.fleet.connections import Connections, initiator_connections
from xfleet.fleet.inventory import Inventory
from xfleet.fleet.secrets import read_secret
from xfleet.mirror.backend import Connection
from xfleet.ops import initiator
from xfleet.ops.access.attach import allowed
from xfleet.ops.moves.journal import WAIT_DEVICE, Move, MoveError
from xfleet.ops.target import CONFIGFS, ZVOL_DIR, NvmetDriver, driver_for
from xfleet.remote.programs import program
from xfleet.remote.transport import Transport

LIVE_PROGRAM = program("nvmet_live")  # xfleet/remote/programs/nvmet_live.py
HALF = 32768  # controller ids: the source below, the copy from here (or the other way round)
CNTLID_MAX = 65519
CONNECT_TIMEOUT = 60.0  # for a host's new path to come live
POLL = 0.5
NOT_EXPORTED = 3  # nvmet_live's exit status: no such subsystem
OTHER_DEVICE = 4  # nvmet_live's exit status: the subsystem exports another device


def check(inv: Inventory, conn: Connection, node: str, volume: str, target_node: str) -> None:
    """MoveError unless a live cutover of `volume` from `node` to `target_node` can be done:
    both nodes run the kernel target with the same NQN prefix, the volume is attached, and
    its initiators are in the inventory, their DH-CHAP secrets (if any) readable (no remote
    command)."""
    prefixes = {}
    for n in (node, target_node):
        spec = inv.hosts[n].target
        if spec is None or spec.driver != "nvmet":
            raise MoveError(f"--live needs the kernel target (target: {{driver: nvmet}}) on "
                            f"{n}; it has " + (f"the {spec.driver} driver" if spec else
                                               "no target in the inventory"),
                            hint="move without --live (the nodes' cutover hooks stop and "
                            "restart the I/O)")
        prefixes[n] = spec.nvmet_settings()["nqn_prefix"]
    if prefixes[node] != prefixes[target_node]:
        raise MoveError(f"--live needs one NQN prefix on both nodes: {node} has "
                        f"{prefixes[node]}, {target_node} {prefixes[target_node]}",
                        hint="the host joins the two paths only under the same NQN")
    hosts = allowed(conn, node, volume)
    if not hosts:
        raise MoveError(f"{volume} is attached to no host: nothing to carry live",
                        hint="move without --live, or xfleet attach it first")
    missing = [a.initiator for a in hosts if a.initiator not in inv.initiators]
    if missing:
        raise MoveError(f"{volume} is attached to {', '.join(missing)}, not in the "
                        "inventory's initiators: xfleet cannot give them the new path",
                        hint="list them under 'all: initiators:' (docs/inventory.md)")
    for a in hosts:  # a host with a DH-CHAP secret connects its new path with it: readable?
        read_secret(inv.initiators[a.initiator])


def parse_fields(text: str) -> dict[str, str]:
    """nvmet_live's `key=value key=value` line -> {key: value}."""
    out: dict[str, str] = {}
    for word in text.split():
        k, sep, v = word.partition("=")
        if sep:
            out[k] = v
    return out


def cntlid_range(source_min: int) -> tuple[int, int]:
    """The copy's controller ids: the half of the id space the source's do not start in."""
    return (HALF, CNTLID_MAX) if source_min < HALF else (1, HALF - 1)


def live_argv(op: str, nqn: str, *args: str) -> list[str]:
    return LIVE_PROGRAM.argv(CONFIGFS, op, initiator.check_nqn(nqn), *args)


def device_of(volume: str) -> str:
    return ZVOL_DIR + volume


@dataclass
class Cutover:
    """One move's live cutover; its progress lives in `m.options["live_state"]` (journaled
    with the move by the caller's save)."""

    inv: Inventory
    conns: Connections
    m: Move
    journal: Callable[[str], None]

    @property
    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = self.m.options.setdefault("live_state", {})
        return st

    def _driver(self, node: str) -> NvmetDriver:
        drv = driver_for(node, self.conns.get(node), self.inv.hosts[node].target)
        if not isinstance(drv, NvmetDriver):
            raise MoveError(f"--live needs the kernel target (nvmet driver) on {node}")
        return drv

    @property
    def nqn(self) -> str:
        vol_uuid = self.m.receive_properties.get(UUID_PROPERTY)
        if not vol_uuid:
            raise MoveError(f"{self.m.volume} has no {UUID_PROPERTY}: its NVMe identity is the "
                            "node's, a copy elsewhere cannot take its place live",
                            hint="xfleet identity assign, restart the source's target so it "
                            "exports the volume under its own identity, reconnect the hosts")
        prefix = str(self._driver(self.m.source_node).settings["nqn_prefix"])
        return volume_nqn(prefix, str(vol_uuid))

    def _run(self, node: str, op: str, *args: str, stdin: bytes | None = None) -> str:
        t = self.conns.get(node)
        res = t.run(live_argv(op, self.nqn, *args), stdin=stdin, check=False)
        if res.exit_status == NOT_EXPORTED:
            raise MoveError(f"{node} does not export {self.nqn}: "
                            f"{' '.join(res.stderr.split())}",
                            hint=f"the host must be connected to {self.m.volume} under its own "
                            "identity: restart the node's target (it exports a volume with "
                            "xfleet:uuid under it) and reconnect the host")
        if res.exit_status == OTHER_DEVICE:
            raise MoveError(f"{node}: {' '.join(res.stderr.split())}",
                            hint="an older copy of the volume is exported there under the "
                            "same identity: withdraw it (or retire that move) first")
        if not res.ok:
            raise RemoteCommandError(node, res.argv, res.exit_status, res.stderr)
        return res.stdout

    def address(self) -> tuple[str, int]:
        """Where the target node's kernel target listens (its `address` setting, else the
        node's private address, else its address)."""
        node = self.m.target_node
        got = self._driver(node).listen_address(self.inv.hosts[node])
        if got is None:
            raise MoveError(f"no address for {node}'s NVMe/TCP target",
                            hint="set target: {address: ...} or private_address in the "
                            "inventory")
        return got

    # -- 1. prepare ----------------------------------------------------------------------
    def prepare(self, conn: Connection, volmode: str) -> None:
        m, st = self.m, self.state
        if "-w" in m.send_flags:
            raise MoveError(f"{m.volume} is encrypted: its copy has no device until its key is "
                            "loaded on the target, so it cannot be exported live",
                            hint="move it without --live")
        src = parse_fields(self._run(m.source_node, "isolate", device_of(m.volume)))
        st["source_group"] = int(src.get("group", "0") or 0)
        self.journal(f"live: {m.source_node}'s export of {self.nqn} in its own ANA group "
                     f"{st['source_group']} (optimized)")
        hosts = allowed(conn, m.source_node, m.volume)
        if not hosts:
            raise MoveError(f"{m.volume} is attached to no host any more",
                            hint=f"xfleet moves abort {m.id}, then move without --live")
        tgt = self.conns.get(m.target_node)
        # volmode is set once, before the copy is exported: setting it (even to its value)
        # removes the device first, and OpenZFS 2.3 waits for an open device to be closed
        # there, which the kernel target never does: every later zvol task of the node then
        # hangs behind it. The final incremental is received without it, for the same reason.
        m.receive_properties.pop("volmode", None)
        have = tgt.run(["zfs", "get", "-H", "-o", "value,source", "volmode",
                        m.target_volume]).stdout.split("\t")
        if have[0].strip() != volmode or have[-1].strip() != "local":
            tgt.run(["zfs", "set", f"volmode={volmode}", m.target_volume])
        tgt.run(WAIT_DEVICE.argv(device_of(m.target_volume)))
        low, high = cntlid_range(int(src.get("cntlid_min", "1") or 1))
        address, port = self.address()
        ns_uuid, nguid = volume_identity(str(m.receive_properties[UUID_PROPERTY]))
        got = parse_fields(self._run(
            m.target_node, "export", device_of(m.target_volume), ns_uuid, nguid,
            src.get("serial", "-"), str(low), str(high), address, str(port), "inaccessible",
            stdin=",".join(sorted({a.hostnqn for a in hosts})).encode()))
        st["target_group"] = int(got.get("group", "0") or 0)
        st["address"], st["port"] = address, port
        self.journal(f"live: {m.target_node} exports the copy under {self.nqn} to "
                     f"{', '.join(a.initiator for a in hosts)} (ANA group "
                     f"{st['target_group']}, inaccessible; controller ids {low}-{high})")
        st.setdefault("hosts", [])
        with initiator_connections(self.inv) as clients:
            for a in hosts:
                self._second_path(clients.get(a.initiator), a.initiator)
        st["prepared"] = True

    def _paths(self, t: Transport) -> list[initiator.Controller]:
        return [c for c in initiator.controllers(t) if c.nqn == self.nqn]

    def _second_path(self, t: Transport, name: str) -> None:
        """Give the host the path to the copy, waited for live, and count it in the state's
        `hosts` (the ones to carry across). A host not connected to the volume at all has
        nothing to carry."""
        address, port = self.state["address"], int(self.state["port"])
        have = self._paths(t)
        if not have:
            self.journal(f"live: {name} is attached but not connected to {self.nqn}: it gets "
                         "no path now (it connects to the new node when it wants)")
            return
        if name not in self.state["hosts"]:
            self.state["hosts"].append(name)  # journaled with the next line: undo finds it
        if not any(c.address == address for c in have):
            old = have[0]
            initiator.connect(t, address, port, self.nqn,
                              ctrl_loss_tmo=-1 if old.ctrl_loss_tmo is None
                              else old.ctrl_loss_tmo,
                              reconnect_delay=max(1.0, old.reconnect_delay or 1.0),
                              secret=read_secret(self.inv.initiators[name]))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            new = [c for c in self._paths(t) if c.address == address]
            if new and all(c.live for c in new) and any(c.namespaces for c in new):
                self.journal(f"live: {name} has the path to {address} ({new[0].name}, "
                             "live, inaccessible until the switch)")
                return
            if time.monotonic() > deadline:
                raise MoveError(f"{name}: the path to {address} is not live after "
                                f"{CONNECT_TIMEOUT:.0f}s ("
                                + (", ".join(f"{c.name} {c.state}" for c in new) or
                                   "no controller") + ")",
                                hint=f"nvme list-subsys on {name}; then xfleet moves resume "
                                f"{self.m.id} (or abort)")
            time.sleep(POLL)

    # -- 2. switch -----------------------------------------------------------------------
    def switch(self, final: Callable[[], None]) -> float:
        """Hold the hosts' I/O, run `final` (the final snapshot received into the copy), and
        release it on the copy. Seconds the I/O was held."""
        m = self.m
        # journaled first: if this process dies in the switch, the hosts' I/O stays held
        # until `xfleet moves resume`, and the mirror says so (XfleetMoveStuck's summary)
        self.state["switching"] = True
        self.journal("live: switching: the hosts' I/O is held from now until the copy's path "
                     "is optimized")
        t0 = time.monotonic()
        self._run(m.source_node, "ana", "inaccessible")
        try:
            final()
        except BaseException:
            try:
                self._run(m.source_node, "ana", "optimized")
                self.state.pop("switching", None)
                self.journal("live: the final incremental failed; the source's path is "
                             "optimized again (the hosts resumed on it)")
            except Exception as exc:  # the original error is the one to report
                self.journal(f"live: the source's path could not be made optimized again "
                             f"({exc}): the hosts' I/O is held until xfleet moves resume "
                             f"{m.id}")
            raise
        self._run(m.target_node, "ana", "optimized")
        held = time.monotonic() - t0
        self.state["switched"] = True
        self.state.pop("switching", None)
        self.state["held"] = round(held, 3)
        return held

    # -- 3. finish -----------------------------------------------------------------------
    def _disconnect(self, to_copy: bool) -> list[str]:
        """Disconnect the carried hosts' controllers of the volume: the ones to the copy's
        node (`to_copy`), else every other one. The names disconnected."""
        out = []
        with initiator_connections(self.inv) as clients:
            for name in self.state.get("hosts", []):
                t = clients.get(name)
                for c in self._paths(t):
                    if (c.address == self.state["address"]) == to_copy:
                        initiator.disconnect_controller(t, c.name)
                        out.append(f"{name}:{c.name}")
        return out

    def finish(self) -> None:
        m, st = self.m, self.state
        gone = self._disconnect(to_copy=False)
        self.journal("live: old path(s) disconnected: " + (", ".join(gone) or "none left"))
        self._run(m.source_node, "withdraw")
        self._run(m.target_node, "settle")
        self.journal(f"live: {m.source_node}'s export withdrawn; {m.target_node}'s in ANA "
                     "group 1")
        st["finished"] = True

    def undo(self) -> None:
        """Before the switch (an abort): the hosts' paths to the copy disconnected, the copy's
        export withdrawn, the source's namespace back in group 1."""
        st = self.state
        if st.get("switched"):
            raise MoveError(f"move {self.m.id} has switched the hosts to the copy",
                            hint=f"xfleet moves resume {self.m.id} finishes it")
        if "address" in st:
            self._disconnect(to_copy=True)
        self._run(self.m.target_node, "withdraw")
        with contextlib.suppress(MoveError):  # the source no longer exports it: nothing to do
            self._run(self.m.source_node, "settle")
        st.clear()
