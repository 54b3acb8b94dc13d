"""Read connections to the mirror for the service's request threads.

Each worker thread keeps one read-only connection (opening one per request would cost a schema
check each time); a connection that failed is dropped and the next request opens a new one,
so a restarted PostgreSQL server or a replaced SQLite file is picked up."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.mirror.backend import ERRORS, Connection, DatabaseError, Location


class Readers:
    def __init__(self, where: Location) -> None:
        self.where = where
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()
        self.errors = 0  # reads the mirror could not answer (xfleet_serve_mirror_errors_total)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """This thread's connection; dropped if the block fails on a database error."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = mirror.connect(self.where, readonly=True)
            except (XfleetError, sqlite3.Error, DatabaseError):
                self.errors += 1
                raise
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        try:
            yield conn
        except (XfleetError, sqlite3.Error, DatabaseError):
            self.errors += 1
            self._drop(conn)
            raise
        # no transaction stays open between reads (SQLite's reads autocommit, the PostgreSQL
        # connection is in autocommit): every request sees the newest commits

    def _drop(self, conn: Connection) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(*ERRORS):
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(*ERRORS):
                c.close()
