"""Ending a move otherwise: abort (undo what the target received) and retire (destroy the
source once the copy is verified and placed)."""

from __future__ import annotations

import time

from xfleet import mirror
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Location
from xfleet.ops.moves.journal import FINAL, HALTED, Move, MoveError, claim, get, save
from xfleet.ops.moves.live import Cutover
from xfleet.ops.sync import sync


def abort(inv: Inventory, mirror_path: Location, conns: Connections, move_id: int) -> Move:
    """Stop a move before its cutover and remove what it created (the partial or complete copy
    on the target, its snapshots on the source). The source volume is untouched. After the
    cutover a move cannot be aborted (its copy is the volume now): it is finished instead."""
    conn = mirror.connect(mirror_path)
    try:
        m = get(conn, move_id)
        if m.state in FINAL:
            return m
        stage = m.options.get("failed_state", m.state) if m.state in HALTED else m.state
        if stage in ("verify", "placed"):
            raise MoveError(f"move {m.id} is past its cutover ({stage})",
                            hint=f"xfleet moves resume {m.id} finishes it")
        claim(conn, m)
        if m.options.get("live_state"):
            # the hosts' paths to the copy and its export go first (the copy is held open)
            Cutover(inv, conns, m, lambda msg: save(conn, m, msg)).undo()
            save(conn, m, "live: the hosts' paths to the copy and its export removed")
        t = conns.get(m.target_node)
        token = t.run(["zfs", "get", "-H", "-o", "value", "receive_resume_token",
                       m.target_volume], check=False)
        if token.ok and token.stdout.strip() not in ("", "-"):
            t.run(["zfs", "receive", "-A", m.target_volume], check=False)
        exists = t.run(["zfs", "list", "-H", "-o", "name", m.target_volume], check=False).ok
        if exists:
            # only a copy this move made: its snapshots are all ours
            snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1",
                           m.target_volume]).stdout.split("\n")
            ours = {f"{m.target_volume}@{s}" for s in m.snapshots}
            carried = _carried(conns, m)
            foreign = [s for s in snaps if s and s not in ours and
                       s.split("@", 1)[1] not in carried]
            if foreign:
                raise MoveError(f"{m.target_node}:{m.target_volume} has snapshots this move "
                                f"did not make ({', '.join(foreign[:3])}); not destroying it")
            t.run(["zfs", "destroy", "-r", m.target_volume])
        s = conns.get(m.source_node)
        for snap in m.snapshots:
            s.run(["zfs", "destroy", f"{m.volume}@{snap}"], check=False)
        m.state = "aborted"
        m.finished_at = time.time()
        save(conn, m, "aborted: target copy and move snapshots removed; source untouched")
        return m
    finally:
        conn.close()


def _carried(conns: Connections, m: Move) -> set[str]:
    out = conns.get(m.source_node).run(
        ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", m.volume],
        check=False).stdout
    return {line.split("@", 1)[1] for line in out.splitlines() if "@" in line}


def retire(inv: Inventory, mirror_path: Location, conns: Connections, move_id: int) -> Move:
    """Destroy a finished move's retired source (the caller has the user's confirmation)."""
    conn = mirror.connect(mirror_path)
    try:
        m = get(conn, move_id)
        if m.state != "done" or not m.retired_as:
            raise MoveError(f"move {m.id} is {m.state}: only a finished move's source can be "
                            "retired")
        t = conns.get(m.source_node)
        if t.run(["zfs", "list", "-H", "-o", "name", m.retired_as], check=False).ok:
            t.run(["zfs", "release", f"xfleet-move-{m.id}",
                   f"{m.retired_as}@{m.snap('final')}"], check=False)
            t.run(["zfs", "destroy", "-r", m.retired_as])
        m.step = "source destroyed"
        save(conn, m, f"retired: {m.retired_as} destroyed")

        sync(inv, mirror_path, [m.source_node], connections=conns)
        return m
    finally:
        conn.close()
