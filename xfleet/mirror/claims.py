"""Who runs a journaled operation (a move, a playbook run, a rollout), and who asked for it.

A row of such a table carries `pid`, `host` and `heartbeat`, and `held_by`/`held_since` (the
operator holding it, since when). A process takes the row over (`take`) unless another holds
it (`holder`):
- on this host, a live process (with a fresh heartbeat, where the kind asks for one): a process
  that died (SIGKILL, crash, reboot) leaves its pid behind, not alive, so the next `resume`
  takes over at once;
- on another machine (a team's PostgreSQL mirror), a heartbeat younger than the lease
  (STALE; XFLEET_LEASE seconds): that process cannot be seen from here, so a job whose process
  died is taken over only once its lease expires. Holders beat every `heartbeat_every`.
One helper for every journal, so they agree on what "alive" means.

The operator is XFLEET_OPERATOR when set (a team's identity), else user@host; `reason` is the
--reason of the command (XFLEET_REASON). Both are recorded on every job, log and audit row.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from xfleet.mirror.backend import Connection, Row


def _lease() -> float:
    text = os.environ.get("XFLEET_LEASE", "")
    try:
        value = float(text) if text else 120.0
    except ValueError:
        value = 120.0
    return value if value >= 1.0 else 120.0


# a heartbeat older than this: nobody runs the operation any more (the lease; XFLEET_LEASE)
STALE = _lease()


def heartbeat_every(seconds: float) -> float:
    """A holder's heartbeat period: `seconds`, or less so that four beats fit in the lease."""
    return min(seconds, STALE / 4)


def me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


_reason: str | None = None


def operator() -> str:
    """Who is acting: XFLEET_OPERATOR, else the OS user at this host."""
    who = os.environ.get("XFLEET_OPERATOR", "").strip()
    if who and who.isprintable() and len(who) <= 200:
        return who
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def set_reason(text: str | None) -> None:
    """The --reason of this command (recorded with the operator)."""
    global _reason
    _reason = text.strip() if text and text.strip() else None


def reason() -> str | None:
    """The command's --reason, else XFLEET_REASON, else None."""
    if _reason is not None:
        return _reason
    text = os.environ.get("XFLEET_REASON", "").strip()
    return text or None


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
    if not isinstance(pid, int):
        return None

    def fresh(limit: float) -> bool:
        return isinstance(beat, int | float) and time.time() - beat < limit

    if isinstance(host, str) and host != socket.gethostname():  # another machine: the lease
        return pid if fresh(stale if stale is not None else STALE) else None
    if not alive(pid, host if isinstance(host, str) else None):
        return None
    if stale is not None and not fresh(stale):
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
    now = time.time()
    conn.execute(f"UPDATE {table} SET pid = ?, host = ?, heartbeat = ?, held_by = ?, "
                 f"held_since = ?{sets} WHERE id = ?",
                 (pid, host, now, operator(), now, *extra.values(), row_id))


def beat(conn: Connection, table: str, row_id: int) -> None:
    """Refresh our heartbeat on `row_id` (no-op when another process took it over)."""
    conn.execute(f"UPDATE {table} SET heartbeat = ? WHERE id = ? AND pid = ? AND host = ?",
                 (time.time(), row_id, *me()))


def release(conn: Connection, table: str, row_id: int) -> None:
    conn.execute(f"UPDATE {table} SET pid = NULL WHERE id = ? AND pid = ? AND host = ?",
                 (row_id, *me()))
