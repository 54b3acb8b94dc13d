"""Telling a reader that the mirror changed, cheaply, whichever engine holds it.

A reader that shows the mirror (the TUI) asks `Changes.version()` on a short timer and
reloads when the answer differs. SQLite: `PRAGMA data_version` (changes when another
connection commits) and the newest sync run, read from the reader's own connection.
PostgreSQL: every committed write NOTIFYs (postgres.CHANNEL); a thread LISTENs and counts, so
asking costs no query at all and a write on another machine shows within the timer's period.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from xfleet.mirror.backend import ERRORS, Connection, Location, PgUrl


class Changes:
    """What the mirror's writers committed, as a value that changes when they do."""

    def __init__(self, where: Location, conn: Connection) -> None:
        self.conn = conn
        self.notified = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Any = None
        if isinstance(where, PgUrl):
            from xfleet.mirror import postgres  # lazy: psycopg only for PostgreSQL mirrors

            self._listener = postgres.listen(where)
            self._thread = threading.Thread(target=self._listen, name="xfleet-listen",
                                            daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                for _ in self._listener.notifies(timeout=0.5):
                    self.notified += 1
            except Exception:  # the connection broke or was closed: stop counting
                self.notified += 1  # readers reload once and show what the mirror has
                return

    def version(self) -> tuple[int, int]:
        """Differs from the last answer when something was committed since."""
        if self._listener is not None:
            return self.notified, 0
        dv = self.conn.execute("PRAGMA data_version").fetchone()[0]
        run = self.conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0] or 0
        return int(dv), int(run)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            with contextlib.suppress(*ERRORS, Exception):
                self._listener.close()
