"""Which process runs a journaled operation (a move, a playbook run, a rollout).

A row of such a table carries `pid`, `host` and `heartbeat`. A process takes the row over
(`take`) unless another live process on this host holds it with a fresh heartbeat (`holder`).
A process that died (SIGKILL, crash, reboot) leaves its pid behind: it is not alive, so the
next `resume` takes over. One helper for every journal, so they agree on what "alive" means.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from xfleet.mirror.backend import Connection, Row

STALE = 120.0  # a heartbeat older than this: nobody runs the operation any more


def me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def alive(pid: int | None, host: str | None) -> bool:
    """True when `pid` is a live process on this host other than ourselves (zombies are dead)."""
    if not pid or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (killed, not yet reaped) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def holder(row: Row | dict[str, object], *, stale: float | None = STALE) -> int | None:
    """The pid of another live process holding `row` (with a heartbeat younger than `stale`
    seconds, unless `stale` is None), else None."""
    pid, host, beat = row["pid"], row["host"], row["heartbeat"]
    if not isinstance(pid, int) or not alive(pid, host if isinstance(host, str) else None):
        return None
    if stale is not None and not (isinstance(beat, (int, float)) and time.time() - beat < stale):
        return None
    return pid


def take(conn: Connection, table: str, row_id: int,
         columns: Mapping[str, object] | None = None) -> None:
    """Mark `row_id` of `table` as ours (pid, host, fresh heartbeat), writing `columns` with it.
    Call inside the caller's transaction, after `holder` said nobody else holds it."""
    extra = dict(columns or {})
    if not all(c.isidentifier() for c in (table, *extra)):  # names are put into SQL text
        raise ValueError(f"bad table or column name in {table!r}, {list(extra)!r}")
    pid, host = me()
    sets = "".join(f", {c} = ?" for c in extra)
    conn.execute(f"UPDATE {table} SET pid = ?, host = ?, heartbeat = ?{sets} WHERE id = ?",
                 (pid, host, time.time(), *extra.values(), row_id))


def beat(conn: Connection, table: str, row_id: int) -> None:
    """Refresh our heartbeat on `row_id` (no-op when another process took it over)."""
    conn.execute(f"UPDATE {table} SET heartbeat = ? WHERE id = ? AND pid = ?",
                 (time.time(), row_id, os.getpid()))


def release(conn: Connection, table: str, row_id: int) -> None:
    conn.execute(f"UPDATE {table} SET pid = NULL WHERE id = ? AND pid = ?",
                 (row_id, os.getpid()))
