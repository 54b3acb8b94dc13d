"""The mirror on PostgreSQL (psycopg 3): a connection that speaks what callers write for SQLite.

`PgConnection` takes the statements the rest of xfleet writes (`?` parameters, `temp.` tables,
explicit BEGIN/COMMIT, rows by name and index) and runs them on PostgreSQL:
- `?` becomes `%s` and a literal `%` is doubled (outside quotes);
- `temp.T` is `pg_temp.T`, `main.T` is `T`, SQLite's `INDEXED BY` hint is dropped, and `rowid`
  (used only to order append-only logs) is `ctid`;
- `INSERT OR IGNORE` is `INSERT ... ON CONFLICT DO NOTHING`.
Everything else is written portably at its source (docs/mirror.md, "Two engines"). The few
SQLite functions the query layer uses (`glob`, `json_extract`, `instr`, `unixepoch`) exist in
PostgreSQL as SQL functions the schema creates (FUNCTIONS). `numeric` results (sums of
integers) come back as int or float, as SQLite's do.

Errors become `backend.DatabaseError` (with PostgreSQL's SQLSTATE), so no psycopg type leaks
into the callers; connecting fails with one clear MirrorError naming the URL (which never has
a password: backend.pg_url).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import MirrorError
from xfleet.mirror.backend import DatabaseError, PgUrl, ProgrammingError, QueryCanceled
from xfleet.mirror.schema import delta_values

if TYPE_CHECKING:
    import psycopg

# The channel every committed write is announced on (LISTEN/NOTIFY): readers such as an open
# TUI refresh when it fires, without polling the tables. The payload says what was written.
CHANNEL = "xfleet_mirror"

# The key of the advisory lock every writer takes for its transaction (store.begin): writers
# take turns, as on SQLite, so every journal's read-check-write stays correct across machines;
# readers never wait (MVCC).
WRITE_LOCK = 0x78666C65  # "xfle"


class PgRow(tuple[Any, ...]):
    """A result row by position or column name, like sqlite3.Row."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key])
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


class PgCursor:
    """A psycopg cursor seen as the sqlite3 one callers use."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        d = self._cur.description
        return None if d is None else [(c.name, None, None, None, None, None, None) for c in d]

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def fetchmany(self, size: int | None = None) -> list[Any]:
        if self._cur.description is None:
            return []
        return self._cur.fetchmany(size or 1)

    def __iter__(self) -> Iterator[Any]:
        if self._cur.description is None:
            return iter(())
        return iter(self._cur)


def _row_factory(cursor: Any) -> Any:
    desc = cursor.description
    index = {c.name: i for i, c in enumerate(desc or ())}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, index)

    return make


class PgConnection:
    """A mirror connection on PostgreSQL (autocommit; callers BEGIN and COMMIT themselves,
    as they do on SQLite)."""

    def __init__(self, raw: psycopg.Connection[Any], url: PgUrl, *, readonly: bool) -> None:
        self.raw, self.url, self.readonly = raw, url, readonly
        self.writing: str | None = None  # what the open write transaction records (begin)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus  # lazy: psycopg loads only for this engine

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = (), /) -> PgCursor:
        params = _params(parameters)
        text = translate(sql, params is not None, isinstance(params, Mapping))
        if self.writing is not None and text.strip().upper() in ("COMMIT", "END"):
            self._announce()
        cur = self.raw.cursor()
        try:
            cur.execute(text, params)
        except Exception as exc:  # psycopg.Error, as ours
            raise _ours(exc) from None
        if text.strip().upper() in ("COMMIT", "ROLLBACK", "END"):
            self.writing = None
        elif _AUTOCOMMIT_WRITE.match(sql) and not self.in_transaction:
            # a job's end, a watch's state: readers hear of it (a bare heartbeat is not news)
            self.writing = " ".join(sql.split()[:3])
            self._announce()
            self.writing = None
        return PgCursor(cur)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> PgCursor:
        cur = self.raw.cursor()
        try:
            cur.executemany(translate(sql, True), list(parameters))
        except Exception as exc:
            raise _ours(exc) from None
        return PgCursor(cur)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """COPY rows into `table` (PostgreSQL's fastest bulk path). Returns the row count."""
        if not all(c.isidentifier() for c in (table.replace("pg_temp.", ""), *columns)):
            raise ValueError(f"bad table or column name in {table!r}, {list(columns)!r}")
        n = 0
        try:
            with self.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        except Exception as exc:
            raise _ours(exc) from None
        return n

    def script(self, sql: str) -> None:
        """Run `sql` as written for PostgreSQL (several statements, dollar-quoted bodies)."""
        try:
            self.raw.execute(sql.encode())
        except Exception as exc:
            raise _ours(exc) from None

    def _announce(self) -> None:
        """NOTIFY readers that this transaction wrote (delivered when it commits)."""
        try:
            self.raw.execute("SELECT pg_notify(%s, %s)", (CHANNEL, (self.writing or "")[:200]))
        except Exception as exc:
            raise _ours(exc) from None

    def interrupt(self) -> None:
        cancel = getattr(self.raw, "cancel_safe", None) or self.raw.cancel
        cancel()

    def close(self) -> None:
        self.raw.close()


# an autocommit write that readers should hear of (a bare heartbeat refresh is not)
_AUTOCOMMIT_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b(?!\s+\w+\s+SET\s+heartbeat\s*=\s*\?"
                               r"\s+WHERE)", re.I)


def _params(parameters: Any) -> Any:
    """None for no parameters: the statement then goes as is (no `%` or `?` processing)."""
    if parameters is None or (isinstance(parameters, tuple | list | dict) and not parameters):
        return None
    return parameters


def _ours(exc: Exception) -> Exception:
    """A psycopg error as backend.DatabaseError (ProgrammingError for the statement's own
    mistakes, QueryCanceled when interrupted); anything else unchanged."""
    import psycopg  # lazy: see PgConnection.in_transaction

    if not isinstance(exc, psycopg.Error):
        return exc
    text = (exc.diag.message_primary if exc.diag and exc.diag.message_primary else str(exc))
    state = exc.sqlstate
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return QueryCanceled(f"interrupted: {text}", state)
    if isinstance(exc, psycopg.ProgrammingError | psycopg.errors.DataError):
        return ProgrammingError(text, state)
    return DatabaseError(text, state)


# ---------------------------------------------------------------------------------------------
# statements: SQLite's spelling to PostgreSQL's

# quoted literals and identifiers, and comments: left as they are (`?` or `:name` there is text)
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/)", re.S)
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\btemp\.", re.I), "pg_temp."),
    (re.compile(r"\bmain\.(?=\w)", re.I), ""),
    (re.compile(r"\bINDEXED\s+BY\s+\w+", re.I), ""),
    (re.compile(r"\bNOT\s+INDEXED\b", re.I), ""),
    (re.compile(r"\browid\b", re.I), "ctid"),
    (re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.I), "INSERT INTO"),
)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\b", re.I)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=2048)
def translate(sql: str, with_params: bool = True, named: bool = False) -> str:
    """`sql` as written for SQLite, in PostgreSQL's spelling (see the module's docstring).
    With parameters, `?` (or, `named`, `:name`) becomes psycopg's `%s` (`%(name)s`) and a
    literal `%` doubles."""
    out: list[str] = []
    for i, part in enumerate(_QUOTED.split(sql)):
        if i % 2:  # a quoted literal, identifier or comment: as is (a % still doubles)
            out.append(part.replace("%", "%%") if with_params else part)
            continue
        if with_params:
            part = part.replace("%", "%%").replace("?", "%s")
            if named:
                part = _NAMED.sub(r"%(\1)s", part)
        for pattern, repl in _REWRITES:
            part = pattern.sub(repl, part)
        out.append(part)
    text = "".join(out)
    if _OR_IGNORE.match(sql):
        text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text


# SQLite functions the query layer uses, as PostgreSQL SQL functions (created with the schema).
FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION glob_regex(p text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    r text := '^';
    i int := 1;
    n int := length(p);
    c text;
    j int;
BEGIN
    WHILE i <= n LOOP
        c := substr(p, i, 1);
        IF c = '*' THEN
            r := r || '.*';
        ELSIF c = '?' THEN
            r := r || '.';
        ELSIF c = '[' THEN
            -- a class: up to the next ']' (one right after '[' or '[^' belongs to the class)
            j := i + 1;
            IF substr(p, j, 1) = '^' THEN j := j + 1; END IF;
            IF substr(p, j, 1) = ']' THEN j := j + 1; END IF;
            WHILE j <= n AND substr(p, j, 1) <> ']' LOOP j := j + 1; END LOOP;
            IF j > n THEN  -- an unclosed class: SQLite's GLOB matches nothing
                RETURN '^(?!x)x';
            ELSE
                r := r || '[' || replace(substr(p, i + 1, j - i - 1), '\', '\\') || ']';
                i := j;
            END IF;
        ELSIF c ~ '[.^$+(){}|\\\]]' THEN
            r := r || '\' || c;
        ELSE
            r := r || c;
        END IF;
        i := i + 1;
    END LOOP;
    RETURN r || '$';
END
$fn$;
CREATE OR REPLACE FUNCTION glob(p text, s text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$ SELECT s ~ glob_regex(p) $fn$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT doc::jsonb ->> (CASE WHEN path LIKE '$."%"' THEN substr(path, 4, length(path) - 4)
                                ELSE substr(path, 3) END)
$fn$;
CREATE OR REPLACE FUNCTION instr(s text, sub text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$ SELECT strpos(s, sub) $fn$;
CREATE OR REPLACE FUNCTION unixepoch(t text) RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $fn$
    SELECT floor(extract(epoch FROM (CASE WHEN lower(t) = 'now' THEN now()
                                          ELSE t::timestamp AT TIME ZONE 'UTC' END)))::bigint
$fn$
"""

# The pool summaries' delta log (ingest.track_pool_deltas): a row trigger on `datasets`, off
# unless the writer's session sets xfleet.pool_deltas (an incremental sync), so a full sync's
# ingest pays one cheap WHEN per row. Created once `datasets` exists.
TRIGGERS = f"""
CREATE OR REPLACE FUNCTION xfleet_pool_delta() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO pg_temp.pool_delta VALUES ({delta_values('OLD', '-')});
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO pg_temp.pool_delta VALUES ({delta_values('NEW', '+')});
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS datasets_pool_delta ON datasets;
CREATE TRIGGER datasets_pool_delta AFTER INSERT OR UPDATE OR DELETE ON datasets FOR EACH ROW
    WHEN (current_setting('xfleet.pool_deltas', true) = 'on')
    EXECUTE FUNCTION xfleet_pool_delta()
"""

# which FUNCTIONS and TRIGGERS a mirror has (store._ensure_functions compares it)
FUNCTIONS_DIGEST = "xfleet-functions-" + hashlib.sha256(
    (FUNCTIONS + TRIGGERS).encode()).hexdigest()[:16]

_TYPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    # text compares and sorts by code point, as SQLite's BINARY does, whatever the database's
    # locale: the name ranges of a subtree ('/' + 1 = '0', ingest.tree_ranges) and every
    # order a user sees depend on it
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
    (re.compile(r"\bWITHOUT ROWID\b"), ""),
    (re.compile(r"(?<![\w\"])user(?![\w\"])"), '"user"'),  # a reserved word in PostgreSQL
)


def schema_sql(statement: str) -> str:
    """A migration's statement in PostgreSQL's types: 64-bit integers, double precision,
    identity keys, text in code point order."""
    for pattern, repl in _TYPES:
        statement = pattern.sub(repl, statement)
    return statement


# ---------------------------------------------------------------------------------------------
# connecting


def _numeric_loader() -> type:
    from psycopg.adapt import Loader  # lazy: see PgConnection.in_transaction

    class NumericLoader(Loader):
        """numeric (a sum of integers, an average) as int or float, as SQLite returns them."""

        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            if text.lstrip("-").isdigit():
                return int(text)
            return float(text)

    return NumericLoader


def connect(url: PgUrl, *, readonly: bool = False) -> PgConnection:
    """Connect to the PostgreSQL mirror at `url` (libpq finds the password in ~/.pgpass or
    PGPASSFILE, or a service file). A read-only connection runs every statement in a read-only
    transaction."""
    try:
        import psycopg  # lazy: only PostgreSQL mirrors load psycopg
    except ImportError:  # pragma: no cover - a dependency of xfleet
        raise MirrorError("PostgreSQL mirrors need psycopg 3",
                          hint="pip install 'psycopg[binary]'") from None
    try:
        raw = psycopg.connect(url.url, autocommit=True, row_factory=_row_factory,
                              connect_timeout=10, application_name="xfleet")
    except psycopg.Error as exc:
        raise MirrorError(
            f"cannot connect to the PostgreSQL mirror {url}: {_first_line(exc)}",
            where=str(url),
            hint="check that the server is up and the URL names its host, port, database and "
            "user; the password comes from ~/.pgpass or PGPASSFILE (docs/team.md)") from None
    raw.adapters.register_loader("numeric", _numeric_loader())
    if readonly:
        raw.execute("SET default_transaction_read_only = on")
    return PgConnection(raw, url, readonly=readonly)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listen(url: PgUrl) -> Any:
    """A separate connection LISTENing on CHANNEL; iterate `.notifies(timeout=...)` on it."""
    import psycopg  # lazy: see connect

    raw = psycopg.connect(url.url, autocommit=True, connect_timeout=10,
                          application_name="xfleet listen")
    raw.execute("LISTEN " + CHANNEL)
    return raw
