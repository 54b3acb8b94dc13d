"""A virtual table over the mirror: only the rows on screen plus a small prefetch are in memory.

The widget keeps a bounded buffer of rows read by a `Pager` (keyset paging, see
xfleet/mirror/paging.py). Moving past either end of the buffer reads the next chunk after the
last row (or before the first); the far end is dropped when the buffer grows beyond
`MAX_BUFFER` rows. Re-reads for a new sort or filter run in a worker thread on their own
connection, so a slow query never freezes the screen and a newer keystroke interrupts an
older query.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import Worker, get_current_worker

from xfleet.core.text import printable
from xfleet.core.units import format_age, format_size
from xfleet.mirror.backend import ERRORS, Connection, QueryCanceled
from xfleet.mirror.paging import Count, Filter, Key, Pager, Row, Sort

CHUNK = 200  # rows per read (one read serves several pages)
MAX_BUFFER = 1200  # rows kept in memory at most


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int  # 0 = takes the remaining width
    right: bool = False
    fmt: Callable[[Any, Row, float], str] | None = None  # (value, row, now)

    def text(self, row: Row, now: float) -> str:
        v = row.get(self.key)
        if self.fmt is not None:
            return self.fmt(v, row, now)
        return "-" if v is None else str(v)


def _size(v: Any, row: Row, now: float) -> str:
    return format_size(v)


def _ratio(v: Any, row: Row, now: float) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _type(v: Any, row: Row, now: float) -> str:
    if v == "volume" and row.get("origin"):
        return "clone"
    return {"volume": "volume", "snapshot": "snap", "filesystem": "fs"}.get(str(v), str(v))


def _age(v: Any, row: Row, now: float) -> str:
    return "-" if v is None else format_age(now - v)


VOLUME_COLUMNS: tuple[Column, ...] = (
    Column("node", "NODE", 8),
    Column("name", "NAME", 0),
    Column("type", "TYPE", 7, fmt=_type),
    Column("volsize", "VOLSIZE", 8, True, _size),
    Column("used", "USED", 8, True, _size),
    Column("referenced", "REFER", 8, True, _size),
    Column("logicalused", "LUSED", 8, True, _size),
    Column("written", "WRITTEN", 8, True, _size),
    Column("compression", "COMP", 8),
    Column("compressratio", "RATIO", 6, True, _ratio),
    Column("tenant", "TENANT", 8),
    Column("creation", "AGE", 7, True, _age),
)

# sort keys: k9s-style shift+letter; pressing the same key again flips the direction
SORT_KEYS: dict[str, str] = {
    "O": "node", "N": "name", "T": "type", "Z": "volsize", "U": "used", "R": "referenced",
    "L": "logicalused", "W": "written", "C": "compression", "X": "compressratio",
    "E": "tenant", "A": "creation",
}

DESC_FIRST = frozenset({"volsize", "used", "referenced", "logicalused", "written",
                        "compressratio"})

_HEADER = Style(bold=True, color="black", bgcolor="cyan")
_HEADER_SORT = Style(bold=True, color="black", bgcolor="bright_cyan", underline=True)
_CURSOR = Style(color="black", bgcolor="bright_white", bold=True)
_CURSOR_UNFOCUSED = Style(color="black", bgcolor="grey62")
_ROW = Style()
_SNAP = Style(color="grey58")
_CLONE = Style(color="bright_magenta")
_FS = Style(color="cyan")
_STALE = Style(color="yellow", italic=True)


class VirtualTable(Widget, can_focus=True):
    """Rows of `datasets` through a Pager; never the whole table."""

    DEFAULT_CSS = """
    VirtualTable { height: 1fr; width: 1fr; }
    """

    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "PgUp", show=False),
        Binding("pagedown,ctrl+f,space", "page(1)", "PgDn", show=False),
        Binding("home,g", "home", "Top", show=False),
        Binding("end,G", "end", "Bottom", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    generation: reactive[int] = reactive(0, layout=False)

    class Selected(Message):
        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    class Changed(Message):
        """The window, the sort, the filter or the count changed (for the status line)."""

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        columns: tuple[Column, ...] = VOLUME_COLUMNS,
        sort: Sort | None = None,
        filter: Filter | None = None,
        stale_nodes: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.clock = clock  # wall clock for the AGE column (frozen in snapshot tests)
        self._connect = connect
        self.conn = connect()  # navigation reads (main thread)
        self._bg = connect()  # re-reads (worker thread)
        self._count_conn = connect()  # counting (worker thread)
        self.columns = columns
        self.sort = sort or Sort()
        self.filter = filter or Filter()
        self.stale_nodes = stale_nodes
        self.rows: list[Row] = []
        self.top = 0
        self.cursor = 0
        self.at_start = True
        self.at_end = True
        self.base_index: int | None = 0  # absolute index of rows[0] when known
        self.count: Count | None = None
        self.busy = False
        self.error: str | None = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._seq = 0
        self.changed_at = 0.0  # perf_counter() of the last change of what is shown

    def watch_generation(self) -> None:
        self.changed_at = time.perf_counter()

    # -- data -----------------------------------------------------------------------------

    def pager(self, conn: Connection | None = None) -> Pager:
        return Pager(conn or self.conn, sort=self.sort, filter=self.filter,
                     columns=[c.key for c in self.columns])

    @property
    def page_rows(self) -> int:
        return max(1, self.size.height - 1)

    @property
    def current(self) -> Row | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor]
        return None

    def requery(self, *, sort: Sort | None = None, filter: Filter | None = None,
                keep_place: bool = False) -> None:
        """Re-read the window for a new sort/filter (from the top) or after the mirror changed
        (`keep_place`: from the row at the top of the screen, cursor on the same row)."""
        if sort is not None:
            self.sort = sort
        if filter is not None:
            self.filter = filter
        self._seq += 1
        self.busy = True
        self.error = None
        self._bg.interrupt()  # a newer keystroke wins over an older, slower query
        anchor = None
        cursor_id = None
        if keep_place and self.rows:
            anchor = self.pager().key_of(self.rows[min(self.top, len(self.rows) - 1)])
            cur = self.current
            cursor_id = cur["id"] if cur else None
        self.post_message(self.Changed())
        self._read(self._seq, self.sort, self.filter, anchor, cursor_id)

    @work(thread=True, exclusive=True, group="table-read")
    def _read(self, seq: int, sort: Sort, flt: Filter, anchor: Key | None,
              cursor_id: int | None) -> None:
        worker = get_current_worker()
        with self._lock:  # an older read still finishing (interrupted) holds the connection
            if seq != self._seq:
                return
            self._read_locked(worker, seq, sort, flt, anchor, cursor_id)

    def _read_locked(self, worker: Worker[None], seq: int, sort: Sort, flt: Filter,
                     anchor: Key | None, cursor_id: int | None) -> None:
        pager = Pager(self._bg, sort=sort, filter=flt, columns=[c.key for c in self.columns])
        try:
            if anchor is None:
                rows = pager.first(CHUNK)
                at_start = True
            else:
                rows = pager.around(anchor, CHUNK)
                at_start = not rows or not pager.before(pager.key_of(rows[0]), 1)
        except (sqlite3.OperationalError, QueryCanceled) as exc:
            if "interrupt" in str(exc):
                return
            self.app.call_from_thread(self._failed, seq, str(exc))
            return
        if worker.is_cancelled:
            return
        self.app.call_from_thread(self._loaded, seq, rows, at_start, anchor, cursor_id)

    def _failed(self, seq: int, error: str) -> None:
        if seq != self._seq:
            return
        self.busy = False
        self.error = error
        self.post_message(self.Failed(error))
        self.refresh()

    def _loaded(self, seq: int, rows: list[Row], at_start: bool, anchor: Key | None,
                cursor_id: int | None) -> None:
        if seq != self._seq:
            return
        old_offset = self.base_index
        self.rows = rows
        self.at_start = at_start
        self.at_end = len(rows) < CHUNK
        self.busy = False
        if anchor is None:
            self.top = self.cursor = 0
            self.base_index = 0
            self.count = None
            self._count(seq, self.sort, self.filter)
        else:
            # same place: the anchor row (or its successor, if it is gone) at the top of the
            # screen, the cursor on the same row if it is still there
            ids = [r["id"] for r in rows]
            self.top = 0
            pager = self.pager()
            for i, r in enumerate(rows):
                if pager.key_of(r) == anchor:
                    self.top = i
                    break
            self.cursor = ids.index(cursor_id) if cursor_id in ids else self.top
            self.base_index = 0 if at_start else old_offset
            self._count(seq, self.sort, self.filter)
        self._fill()
        self.generation += 1
        self.post_message(self.Changed())
        self.refresh()

    @work(thread=True, exclusive=True, group="table-count")
    def _count(self, seq: int, sort: Sort, flt: Filter) -> None:
        pager = Pager(self._count_conn, sort=sort, filter=flt,
                      columns=[c.key for c in self.columns])
        with self._count_lock:
            if seq != self._seq:
                return
            try:
                c = pager.count(cancelled=lambda: seq != self._seq)
            except ERRORS:
                return
        self.app.call_from_thread(self._counted, seq, c)

    def _counted(self, seq: int, c: Count) -> None:
        if seq != self._seq:
            return
        self.count = c
        if self.base_index is None and c.exact and self.at_end:
            self.base_index = c.n - len(self.rows)
        self.post_message(self.Changed())

    def _fill(self) -> None:
        """Make sure the buffer covers the screen plus a page either side (synchronous reads:
        one indexed keyset read is well under a millisecond)."""
        pager = self.pager()
        need = self.page_rows
        if not self.at_end and self.cursor + 2 * need >= len(self.rows) and self.rows:
            more = pager.after(pager.key_of(self.rows[-1]), CHUNK)
            self.rows += more
            self.at_end = len(more) < CHUNK
        if not self.at_start and self.top - need < 0 and self.rows:
            more = pager.before(pager.key_of(self.rows[0]), CHUNK)
            self.rows[:0] = more
            self.top += len(more)
            self.cursor += len(more)
            if self.base_index is not None:
                self.base_index = max(0, self.base_index - len(more))
            self.at_start = len(more) < CHUNK
            if self.at_start:
                self.base_index = 0
        # drop the far side when the buffer grows
        excess = len(self.rows) - MAX_BUFFER
        if excess > 0:
            if self.cursor > len(self.rows) // 2:
                drop = min(excess, max(0, self.top - need))
                del self.rows[:drop]
                self.top -= drop
                self.cursor -= drop
                if self.base_index is not None:
                    self.base_index += drop
                if drop:
                    self.at_start = False
            else:
                keep = max(self.top + 3 * need, len(self.rows) - excess)
                if keep < len(self.rows):
                    del self.rows[keep:]
                    self.at_end = False

    # -- navigation -----------------------------------------------------------------------

    def _scroll_to_cursor(self) -> None:
        n = self.page_rows
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + n:
            self.top = self.cursor - n + 1
        self.top = max(0, min(self.top, max(0, len(self.rows) - n) if self.at_end else self.top))

    def move_cursor(self, delta: int, *, page: bool = False) -> None:
        if not self.rows:
            return
        n = self.page_rows
        target = self.cursor + delta
        if target >= len(self.rows) and not self.at_end:
            self._fill_forward(target - len(self.rows) + 1)
        if target < 0 and not self.at_start:
            added = self._fill_backward(-target)
            target += added
        target = max(0, min(len(self.rows) - 1, target))
        if page:
            self.top = max(0, self.top + (target - self.cursor))
        self.cursor = target
        self._scroll_to_cursor()
        if self.at_end:
            self.top = max(0, min(self.top, len(self.rows) - n))
        self.top = min(self.top, self.cursor)
        self._fill()
        self.generation += 1
        self.post_message(self.Changed())
        self.refresh()

    def _fill_forward(self, at_least: int) -> None:
        pager = self.pager()
        while not self.at_end and at_least > 0:
            more = pager.after(pager.key_of(self.rows[-1]), max(CHUNK, at_least))
            self.rows += more
            at_least -= len(more)
            self.at_end = len(more) < max(CHUNK, at_least + len(more))

    def _fill_backward(self, at_least: int) -> int:
        pager = self.pager()
        added = 0
        while not self.at_start and added < at_least:
            more = pager.before(pager.key_of(self.rows[0]), max(CHUNK, at_least))
            self.rows[:0] = more
            added += len(more)
            self.top += len(more)
            self.cursor += len(more)
            self.at_start = len(more) < max(CHUNK, at_least)
        if self.base_index is not None:
            self.base_index = max(0, self.base_index - added)
        if self.at_start:
            self.base_index = 0
        return added

    def action_move(self, delta: int) -> None:
        self.move_cursor(delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(direction * self.page_rows, page=True)

    def action_home(self) -> None:
        self.requery()

    def action_end(self) -> None:
        pager = self.pager()
        self.rows = pager.last(CHUNK)
        self.at_end = True
        self.at_start = len(self.rows) < CHUNK
        self.cursor = max(0, len(self.rows) - 1)
        self.top = max(0, len(self.rows) - self.page_rows)
        c = self.count
        self.base_index = 0 if self.at_start else (c.n - len(self.rows) if c and c.exact else None)
        self.generation += 1
        self.post_message(self.Changed())
        self.refresh()

    def action_select(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Selected(row))

    def set_sort_column(self, column: str) -> None:
        # a new size or ratio column starts with the biggest first; names start with A
        sort = self.sort.toggled() if self.sort.column == column else Sort(
            column, desc=column in DESC_FIRST)
        self.requery(sort=sort)

    # -- mouse ----------------------------------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            col = self._column_at(event.x)
            if col is not None:
                self.set_sort_column(col.key)
            return
        index = self.top + event.y - 1
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_select()
                return
            self.cursor = index
            self.generation += 1
            self.post_message(self.Changed())
            self.refresh()
            if event.chain >= 2:
                self.action_select()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.move_cursor(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.move_cursor(-3)

    def on_resize(self, event: events.Resize) -> None:
        self._fill()
        self._scroll_to_cursor()
        self.refresh()

    # -- rendering ------------------------------------------------------------------------

    def _widths(self) -> list[int]:
        width = self.size.width
        fixed = sum(c.width + 1 for c in self.columns if c.width)
        flex = max(12, width - fixed - 1)
        return [c.width or flex for c in self.columns]

    def _column_at(self, x: int) -> Column | None:
        pos = 0
        for col, w in zip(self.columns, self._widths(), strict=True):
            if pos <= x < pos + w + 1:
                return col
            pos += w + 1
        return None

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return container.height

    def _cells(self, texts: list[str], style: Style) -> list[Segment]:
        segs: list[Segment] = []
        for col, w, t in zip(self.columns, self._widths(), texts, strict=True):
            if len(t) > w:
                t = t[: w - 1] + "…" if col.key != "name" else "…" + t[-(w - 1):]
            segs.append(Segment((t.rjust(w) if col.right else t.ljust(w)) + " ", style))
        return segs

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            titles = []
            for c in self.columns:
                mark = ""
                if c.key == self.sort.column:
                    mark = "▼" if self.sort.desc else "▲"
                titles.append(c.title + mark)
            segs = []
            for c, seg in zip(self.columns, self._cells(titles, _HEADER), strict=True):
                segs.append(Segment(seg.text, _HEADER_SORT if c.key == self.sort.column
                                    else _HEADER))
            return Strip(segs).adjust_cell_length(width, _HEADER)
        index = self.top + y - 1
        if index >= len(self.rows):
            if y == 1 and not self.rows:
                msg = ("  loading…" if self.busy else
                       f"  error: {self.error}" if self.error else
                       "  no rows match" + (f" the filter {self.filter.text!r}"
                                            if not self.filter.empty else ""))
                return Strip([Segment(msg, _SNAP)]).adjust_cell_length(width)
            return Strip.blank(width)
        row = self.rows[index]
        if index == self.cursor:
            style = _CURSOR if self.has_focus else _CURSOR_UNFOCUSED
        elif row.get("node") in self.stale_nodes:
            style = _STALE
        elif row.get("type") == "snapshot":
            style = _SNAP
        elif row.get("origin"):
            style = _CLONE
        elif row.get("type") == "filesystem":
            style = _FS
        else:
            style = _ROW
        now = self.clock()
        strip = Strip(self._cells([printable(c.text(row, now)) for c in self.columns], style))
        return strip.adjust_cell_length(width, style)

    def position_label(self) -> str:
        if not self.rows:
            return "0"
        if self.base_index is None:
            return "?"
        return f"{self.base_index + self.cursor + 1:,}"

    def close(self) -> None:
        for c in (self.conn, self._bg, self._count_conn):
            try:
                c.interrupt()
                c.close()
            except ERRORS:
                pass

    def on_unmount(self) -> None:
        self.close()
