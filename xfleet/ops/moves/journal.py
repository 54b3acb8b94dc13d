"""A move as the mirror records it: the Move, its states, its row and log in `moves`/`move_log`,
and its claim (a journaled job, xfleet/mirror/jobs.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet.core.errors import XfleetError
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Row
from xfleet.remote.programs import program

SNAP_PREFIX = "xfleet-move-"
ACTIVE = ("planned", "base", "catchup", "cutover", "verify", "placed")
STREAMING = ("planned", "base", "catchup", "cutover")  # states that hold a stream slot
HALTED = ("failed", "paused")  # resumable: `resume` goes back to the state it stopped in
FINAL = ("done", "aborted")
HEARTBEAT = claims.heartbeat_every(20.0)  # seconds between heartbeats of a running move
STALE = claims.STALE  # a heartbeat older than this: nobody runs the move any more
DEFAULTS: dict[str, Any] = {
    "catchup_bytes": 64 * 1024**2,  # stop catching up below this delta
    "max_rounds": 5,
    "headroom": 1.2,  # target free space needed: referenced (or volsize if thick) x headroom
    "verify": "sampled",
    "samples": 64,
    "attempts": 3,  # relay attempts per step (resumed from the receive token)
    "bwlimit": None,  # bytes/s for this move
    "direct": False,  # stream node to node (the source SSHes to the target) instead of relaying
}
# Direct mode: the source node sends to the target itself (xfleet/remote/programs/send_direct.bash).
SEND_DIRECT = program("send_direct")
Progress = Callable[["Move"], None]

# Sampled verification: the SHA-256 of each 1 MiB slice at the given MiB offsets of a device,
# in one process (xfleet/remote/programs/sample_hashes.py; a `dd | sha256sum` pair per slice
# cost two process starts each: ~10 s for 64 samples on a slow node).
SAMPLE_HASHES = program("sample_hashes")
WAIT_DEVICE = program("wait_device")


def sample_hashes_argv(device: str, offsets: Sequence[int]) -> list[str]:
    """`python3 -c sample_hashes.py DEVICE OFFSET...`: prints `SHA256 OFFSET` per 1 MiB slice
    (a slice past the end hashes what was read: nothing, or the short tail)."""
    return SAMPLE_HASHES.argv(device, *(str(o) for o in offsets))


class MoveError(XfleetError):
    """A move that cannot start or go on; the message says why and the hint what to do."""


MOVES = jobs.register(jobs.JobKind(
    "moves", "move", "xfleet moves list", frozenset((*ACTIVE, *HALTED)), stale=STALE,
    error=MoveError, missing="no move with id {id}", log=("move_log", "move")))


@dataclass
class Move:
    id: int
    volume: str
    source_node: str
    target_node: str
    target_volume: str
    state: str
    step: str | None = None
    snapshots: list[str] = field(default_factory=list)
    received: str | None = None  # the newest snapshot the target holds
    send_flags: list[str] = field(default_factory=list)
    receive_properties: dict[str, str] = field(default_factory=dict)
    verify: str = "sampled"
    verified: str | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    rate: float | None = None  # bytes/s of the current transfer, smoothed
    rounds: int = 0
    retired_as: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    operator: str | None = None  # who planned it (claims.operator) and why (--reason)
    operator_reason: str | None = None
    held_by: str | None = None  # the operator whose process runs it now, since when
    held_since: float | None = None

    @property
    def progress(self) -> float | None:
        if not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def eta(self) -> float | None:
        """Seconds left in the current transfer at the current rate (send size estimate)."""
        if not self.bytes_total or not self.rate or self.state not in STREAMING:
            return None
        return max(0.0, self.bytes_total - self.bytes_done) / self.rate

    def snap(self, n: int | str) -> str:
        return f"{SNAP_PREFIX}{self.id}-{n}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["progress"] = self.progress
        d["eta"] = self.eta
        return d


# ---------------------------------------------------------------------------------------------
# the journal


_JSON = ("snapshots", "send_flags", "receive_properties", "options")


def _from_row(r: Row) -> Move:
    d = dict(r)
    for k in _JSON:
        d[k] = json.loads(d[k]) if d.get(k) else ([] if k in ("snapshots", "send_flags") else {})
    for k in ("pid", "host", "heartbeat", "control"):
        d.pop(k, None)
    return Move(**d)


def get(conn: Connection, move_id: int) -> Move:
    return _from_row(jobs.get(conn, MOVES, move_id))


def listing(conn: Connection, *, active_only: bool = False) -> list[Move]:
    return [_from_row(r) for r in jobs.rows(conn, MOVES, open_only=active_only)]


def save(conn: Connection, m: Move, message: str | None = None) -> None:
    m.updated_at = time.time()
    jobs.save(conn, MOVES, m.id, {
        "state": m.state, "step": m.step, "snapshots": json.dumps(m.snapshots),
        "received": m.received, "send_flags": json.dumps(m.send_flags),
        "receive_properties": json.dumps(m.receive_properties, sort_keys=True),
        "verified": m.verified, "bytes_total": m.bytes_total, "bytes_done": m.bytes_done,
        "rate": m.rate, "rounds": m.rounds, "retired_as": m.retired_as,
        "options": json.dumps(m.options), "error": m.error, "updated_at": m.updated_at,
        "finished_at": m.finished_at, "heartbeat": time.time()}, message=message)


def log(conn: Connection, move_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT at, state, message FROM move_log WHERE move = ? ORDER BY at, rowid",
        (move_id,))]


def claim(conn: Connection, m: Move) -> None:
    """Only one process drives a move: refuse if another live process on this host holds it."""
    jobs.claim(conn, MOVES, m.id, set_columns={"control": None})
