"""Where the mirror lives and what a connection to it offers, whichever engine holds it.

A path is an SQLite file (the embedded default); a `postgresql://` URL (or `postgres://`) is a
PostgreSQL database shared by a team (xfleet/mirror/postgres.py). Both engines are reached
through `Connection`: `sqlite3.Connection` is one as is, and `postgres.PgConnection` speaks the
same subset (`?` parameters, rows by name and index, explicit BEGIN/COMMIT), so the schema, the
query layer and every journal are written once. docs/mirror.md, "Two engines", says which SQL
is portable.

A URL never carries a password: libpq finds it in ~/.pgpass (PGPASSFILE) or a service file
(PGSERVICEFILE), so it never reaches the inventory, logs, errors or the mirror.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from xfleet.core.errors import MirrorError

URL_SCHEMES = ("postgresql://", "postgres://")


class Cursor(Protocol):
    """What callers use of a cursor: rows (by name and index), counts, and the columns."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int | None = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection to the mirror: `sqlite3.Connection` or `postgres.PgConnection`."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class Row(Protocol):
    """A result row: by column name or position (sqlite3.Row, postgres.PgRow)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class DatabaseError(Exception):
    """An error PostgreSQL reported about a statement or the connection (sqlite3 raises its
    own `sqlite3.Error`; catch `ERRORS` for either). `sqlstate` is PostgreSQL's code."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ProgrammingError(DatabaseError):
    """The statement itself is wrong (syntax, unknown table or column): the user's SQL."""


class QueryCanceled(DatabaseError):
    """The statement was cancelled (`interrupt`) or ran past its timeout."""


# What a mirror operation can raise for a database reason, on either engine.
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseError)


@dataclass(frozen=True)
class PgUrl:
    """A PostgreSQL mirror: a libpq URL without a password."""

    url: str

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        """The database's name (the URL's path), for messages."""
        return urlsplit(self.url).path.lstrip("/") or "(the user's default database)"


# Where a mirror is: an SQLite file or a PostgreSQL URL.
Location = Path | PgUrl


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.startswith(URL_SCHEMES)


def location(text: str | Path | PgUrl, *, base: Path | None = None) -> Location:
    """The mirror `text` names: a URL is PostgreSQL (checked: no password in it), anything
    else a path to an SQLite file (relative to `base` when given)."""
    if isinstance(text, PgUrl):
        return text
    if is_url(text):
        return pg_url(str(text))
    p = Path(text).expanduser()
    return base / p if base is not None and not p.is_absolute() else p


def pg_url(text: str) -> PgUrl:
    """Check a PostgreSQL URL: well formed, and no password in it (a password in the URL would
    end up in the inventory, shell history and process listings)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise MirrorError(f"the mirror URL is not valid: {exc}",
                          hint="write it as postgresql://USER@HOST:PORT/DATABASE") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.password is not None or "password" in query:
        shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="").geturl()
        raise MirrorError(
            f"the mirror URL carries a password (shown here without it: {shown})",
            hint="remove it from the URL: libpq reads passwords from ~/.pgpass (or the file "
            "PGPASSFILE names) or a service file (PGSERVICEFILE, `?service=NAME`); "
            "docs/team.md shows the setup")
    return PgUrl(text)


def describe(loc: Location) -> str:
    """The mirror for messages: the SQLite file's path or the URL (which has no password)."""
    return str(loc)
