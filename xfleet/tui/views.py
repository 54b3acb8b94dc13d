"""The dashboard's screens: Fleet, Volumes, Volume detail, Operations, Compression, Help.

Every view is a thin face over library calls (query.stats, query.show, paging.Pager,
operations.collect); slow aggregates run in worker threads so the screen paints at once.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode

from xfleet.core.errors import XfleetError
from xfleet.core.text import printable
from xfleet.core.units import format_age, format_size
from xfleet.mirror import query
from xfleet.mirror.paging import Filter, Sort, has_index, parse_filter
from xfleet.mirror.store import has_table
from xfleet.ops import alerts, capacity, rollout
from xfleet.tui import operations
from xfleet.tui.table import SORT_KEYS, VirtualTable

if TYPE_CHECKING:
    pass
from xfleet.mirror.backend import ERRORS, DatabaseError
from xfleet.tui.base import KEYS, STALE_AFTER_S, BaseView, bar, ratio_bar


class FleetView(BaseView):
    view_name = "nodes"

    DEFAULT_CSS = """
    FleetView #fleet { height: 1fr; }
    FleetView #alerts { height: auto; max-height: 6; padding: 0 1; }
    """
    SHOWN_ALERTS = 4  # the alert panel's lines; `xfleet status` lists them all

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="fleet", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="alerts")

    def on_mount(self) -> None:
        table = self.query_one("#fleet", DataTable)
        for label, key in (("NODE", "node"), ("POOL", "pool"), ("HEALTH", "health"),
                           ("CAPACITY", "capacity"), ("ALLOC/SIZE", "alloc"),
                           ("VOLUMES", "volumes"), ("SNAPSHOTS", "snapshots"),
                           ("CLONES", "clones"), ("LOGICAL", "logical"),
                           ("PHYSICAL", "physical"), ("RATIO", "ratio"), ("TARGET", "target"),
                           ("MIRROR DATA", "fresh")):
            table.add_column(label, key=key)
        self.rows: list[dict[str, Any]] = []
        self.targets: dict[str, str] = {}
        self.counted = False
        self.quick_load()
        self.load_stats()
        table.focus()

    def focus_body(self) -> None:
        self.set_focus(self.query_one("#fleet", DataTable))

    def quick_load(self) -> None:
        """Nodes and pools (tiny tables) at once; counts follow from load_stats."""
        conn = self.xapp.conn
        nodes = {r["name"]: dict(r) for r in conn.execute("SELECT * FROM nodes ORDER BY name")}
        pools = [dict(r) for r in conn.execute("SELECT * FROM pools ORDER BY node, name")]
        # the TARGET column: the version the rollouts journal knows (a few rows)
        self.targets = rollout.target_versions(conn) if has_table(conn, "rollouts") else {}
        now = self.xapp.clock()
        rows = []
        seen = set()
        for p in pools:
            n = nodes.get(p["node"], {})
            seen.add(p["node"])
            rows.append({"node": p["node"], "pool": p["name"], **{k: p.get(k) for k in (
                "size", "allocated", "free", "capacity", *query.HEALTH_FIELDS)},
                "errors": query.pool_errors(p),
                "stale": bool(n.get("stale")), "last_error": n.get("last_error"),
                "age_seconds": (now - n["last_success"]) if n.get("last_success") else None,
                **{k: n.get(k) for k in ("watch_pid", "watch_heartbeat", "watch_state")}})
        for name, n in nodes.items():
            if name not in seen:
                rows.append({"node": name, "pool": "-", "health": None, "stale": bool(
                    n.get("stale")), "last_error": n.get("last_error"), "age_seconds": (
                    now - n["last_success"]) if n.get("last_success") else None})
        self.rows = rows
        self.render_rows()

    @work(thread=True, exclusive=True, group="fleet-stats")
    def load_stats(self) -> None:
        conn = self.xapp.connect()
        try:
            stats = query.stats(conn)
            now = self.xapp.clock()
            found = alerts.evaluate(conn, now=now, forecasts=capacity.forecasts(conn, now=now))
        except ERRORS as exc:
            self.app.call_from_thread(self.flash, f"cannot read stats: {exc}", error=True)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._stats_loaded, stats)
        self.app.call_from_thread(self._alerts_loaded, found)

    def _alerts_loaded(self, found: list[alerts.Alert]) -> None:
        """The alert conditions that hold now (the shipped rules' conditions, as `xfleet
        status` shows them): a line each, the most severe first."""
        panel = self.query_one("#alerts", Static)
        if not found:
            panel.update(Text("no alerts", style="green"))
            return
        style = {"critical": "bold red", "warning": "yellow"}
        text = Text(f"{len(found)} alert{'s' if len(found) != 1 else ''} "
                    "(xfleet status lists them with what to do)\n", style="bold")
        for a in found[:self.SHOWN_ALERTS]:
            where = a.job or "/".join(x for x in (a.node, a.pool) if x) or "fleet"
            text.append(f"{a.severity.upper():8} ", style=style.get(a.severity, "cyan"))
            text.append(f"{a.name} {printable(where)}: {printable(a.summary)}\n")
        if len(found) > self.SHOWN_ALERTS:
            text.append(f"... and {len(found) - self.SHOWN_ALERTS} more", style="dim")
        panel.update(text)

    def _stats_loaded(self, stats: list[dict[str, Any]]) -> None:
        now = self.xapp.clock()  # ages by the app's clock (query.stats uses the wall clock)
        for r in stats:
            if r.get("last_success"):
                r["age_seconds"] = now - r["last_success"]
        self.rows = stats
        self.counted = True
        self.render_rows()

    def render_rows(self) -> None:
        table = self.query_one("#fleet", DataTable)
        cursor = table.cursor_row
        table.clear()
        dots = Text("…", style="grey50")
        for r in self.rows:
            stale = r.get("stale")
            age = r.get("age_seconds")
            hb = r.get("watch_heartbeat")
            watched = (r.get("watch_pid") is not None and hb is not None
                       and self.xapp.clock() - hb < query.WATCH_STALE_AFTER)
            if stale:
                fresh = Text(f"STALE {format_age(age)}: {r.get('last_error') or 'sync failed'}",
                             style="bold red")
            elif watched and r.get("watch_state") == "following":
                fresh = Text(f"live (watch) · synced {format_age(age)} ago"
                             if age is not None else "live (watch)", style="bold green")
            elif watched:
                fresh = Text(f"watch: {r.get('watch_state')}", style="yellow")
            elif age is None:
                fresh = Text("never synced", style="bold red")
            elif age > STALE_AFTER_S:
                fresh = Text(f"old {format_age(age)}", style="yellow")
            else:
                fresh = Text(f"{format_age(age)} ago", style="green")
            health = query.health_summary(r)  # e.g. "DEGRADED 3 err"
            hstyle = ("green" if health == "ONLINE" else "yellow"
                      if r.get("health") == "ONLINE" else "bold red")
            size, alloc = r.get("size"), r.get("allocated")
            frac = (alloc / size) if size and alloc is not None else None

            def num(key: str, r: dict[str, Any] = r) -> Text | str:
                return f"{r[key]:,}" if self.counted and r.get(key) is not None else dots

            logical = r.get("logicalused")
            physical = r.get("used")
            node_style = "bold red" if stale else "bold"
            table.add_row(
                Text(r["node"], style=node_style), r.get("pool") or "-",
                Text(health, style=hstyle), bar(frac, 16),
                f"{format_size(alloc)}/{format_size(size)}",
                num("volumes"), num("snapshots"), num("clones"),
                format_size(logical) if self.counted else dots,
                format_size(physical) if self.counted else dots,
                (f"{r['compressratio']:.2f}x" if r.get("compressratio") else "-")
                if self.counted else dots,
                Text(str(self.targets.get(r["node"]) or "-"), style="grey50"),
                fresh,
                key=f"{r['node']}/{r.get('pool')}",
            )
        if self.rows:
            table.move_cursor(row=min(max(cursor, 0), len(self.rows) - 1))
        self.update_status()

    def status_text(self) -> Text:
        stale = sum(1 for r in self.rows if r.get("stale"))
        nodes = len({r["node"] for r in self.rows})
        t = Text(f"{nodes} nodes")
        if stale:
            t.append(f" · {stale} stale", style="bold red")
        if not self.counted:
            t.append(" · counting…", style="grey50")
        t.append(" · enter: the node's volumes", style="grey50")
        return t

    @on(DataTable.RowSelected, "#fleet")
    def _open_node(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.rows):
            node = self.rows[event.cursor_row]["node"]
            self.xapp.open_view("vols", filter_text=f"node={node}")

    def reload(self) -> None:
        self.quick_load()
        self.load_stats()


# ---------------------------------------------------------------------------------------------
# Volumes


# write actions (xfleet tui --write): on the selected volume, snapshot or clone
WRITE_BINDINGS: list[BindingType] = [
    Binding("m", "write('move')", "move", show=False),
    Binding("s", "write('snapshot')", "snapshot", show=False),
    Binding("c", "write('clone')", "clone", show=False),
    Binding("d", "write('destroy')", "destroy", show=False),
]


class VolumesView(BaseView):
    view_name = "volumes"
    can_filter = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "prompt('filter')", "/filter", show=True),
        *WRITE_BINDINGS,
        *(Binding(k, f"sort('{col}')", f"sort {col}", show=False)
          for k, col in SORT_KEYS.items()),
    ]

    def __init__(self, filter_text: str = "", sort: Sort | None = None) -> None:
        super().__init__()
        self._initial_filter = filter_text
        self._initial_sort = sort
        self.filter_error: str | None = None

    def body(self) -> ComposeResult:
        flt = Filter()
        if self._initial_filter:
            try:
                flt = parse_filter(self._initial_filter)
            except XfleetError as exc:
                self.filter_error = exc.message
        yield VirtualTable(self.xapp.connect, sort=self._initial_sort, filter=flt,
                           stale_nodes=self.xapp.stale_nodes(), clock=self.xapp.clock,
                           id="table")

    def write_target(self) -> tuple[str, str] | None:
        row = self.table.current
        return (str(row["node"]), str(row["name"])) if row else None

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#table", VirtualTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.table.requery()
        if self.filter_error:
            self.flash(self.filter_error, error=True)

    def focus_body(self) -> None:
        self.set_focus(self.table)

    def current_filter_text(self) -> str:
        return self.table.filter.text

    def prompt_opened(self, mode: str) -> None:
        if mode == "filter":
            self.filter_before = self.table.filter

    def restore_filter(self) -> None:
        before = getattr(self, "filter_before", None)
        if before is not None and before != self.table.filter:
            self.table.requery(filter=before)

    def apply_filter(self, text: str, *, final: bool) -> None:
        """Live while typing (each keystroke that parses re-reads); a bad filter is a message
        in the status line, and pressing enter on one goes back to the previous filter."""
        try:
            flt = parse_filter(text)
        except XfleetError as exc:
            self.filter_error = exc.message + (f" — {exc.hint}" if exc.hint and final else "")
            self.flash(self.filter_error, error=True, seconds=8 if final else 3)
            if final:
                self.restore_filter()
            return
        if self.filter_error is not None:
            self.filter_error = None
            self._message = None  # the text parses now: drop the complaint about a prefix
        if flt != self.table.filter:
            self.table.requery(filter=flt)

    def clear_filter(self) -> bool:
        if self.table.filter.empty:
            return False
        self.table.requery(filter=Filter())
        return True

    def action_sort(self, column: str) -> None:
        self.table.set_sort_column(column)
        if not has_index(self.table.conn, column):
            self.flash(f"no index on {column}: sorting scans the mirror (slower)", seconds=3)

    @on(VirtualTable.Changed)
    def _table_changed(self) -> None:
        self.update_status()

    @on(VirtualTable.Failed)
    def _table_failed(self, event: VirtualTable.Failed) -> None:
        self.flash(f"query failed: {event.error}", error=True)

    @on(VirtualTable.Selected)
    def _open(self, event: VirtualTable.Selected) -> None:
        self.xapp.push_screen(DetailView(event.row["node"], event.row["name"]))

    def status_text(self) -> Text:
        if not self.is_mounted:
            return Text("")
        t = self.table
        out = Text()
        c = t.count
        if c is None:
            out.append("counting…", style="grey50")
        else:
            out.append(f"{c.label()} rows", style="bold")
            if not c.exact:
                out.append(f" ({c.reason()})", style="yellow")
        out.append(f" · row {t.position_label()}")
        out.append(f" · sort {t.sort.column} {'▼' if t.sort.desc else '▲'}")
        if not t.filter.empty:
            out.append(" · filter ", style="grey62")
            out.append(t.filter.text, style="bold cyan")
        if t.busy:
            out.append(" · loading…", style="yellow")
        return out

    def reload(self) -> None:
        self.table.stale_nodes = self.xapp.stale_nodes()
        self.table.requery(keep_place=True)


# ---------------------------------------------------------------------------------------------
# Volume detail


class DetailView(BaseView):
    view_name = "detail"

    BINDINGS: ClassVar[list[BindingType]] = [*WRITE_BINDINGS]

    def write_target(self) -> tuple[str, str] | None:
        return (self.node, self.ds_name)

    DEFAULT_CSS = """
    DetailView #detail-body { height: 1fr; }
    DetailView #props { width: 60; height: auto; }
    DetailView #tree { width: 1fr; height: 1fr; min-height: 10; }
    DetailView Horizontal { height: 1fr; }
    """

    def __init__(self, node: str, name: str) -> None:
        super().__init__()
        self.node = node
        self.ds_name = name
        self.detail: query.Detail | None = None

    def body(self) -> ComposeResult:
        from textual.containers import Horizontal

        with Horizontal(id="detail-body"):
            with VerticalScroll(id="props-scroll"):
                yield Static(id="props")
            yield Tree(self.ds_name, id="tree")

    def on_mount(self) -> None:
        self.load()
        self.query_one("#tree", Tree).focus()

    def focus_body(self) -> None:
        self.set_focus(self.query_one("#tree", Tree))

    def load(self) -> None:
        try:
            self.detail = query.show(self.xapp.conn, self.ds_name, self.node)
        except XfleetError as exc:
            self.detail = None
            self.query_one("#props", Static).update(Text(exc.message, style="bold red"))
            self.flash(f"{exc.message} (it may have been destroyed)", error=True)
            return
        self.query_one("#props", Static).update(self.properties())
        self.fill_tree()
        self.update_status()

    def properties(self) -> Table:
        d = self.detail
        assert d is not None
        r = d.row
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan", no_wrap=True)
        t.add_column()
        t.add_row(Text("placement", style="bold underline"), "")
        labels = d.node.get("labels") or {}
        t.add_row("node", Text(str(r["node"]) + (" (STALE)" if d.node.get("stale") else ""),
                               style="bold red" if d.node.get("stale") else ""))
        t.add_row("pool", str(r["pool"]))
        t.add_row("labels", ", ".join(f"{k}={v}" for k, v in labels.items()) or "-")
        t.add_row("mirror data", format_age(self.xapp.clock() - r["synced_at"]) + " old"
                  if r.get("synced_at") else "-")
        t.add_row(Text("compression", style="bold underline"), "")
        t.add_row("compression", str(r.get("compression") or "-"))
        ratio = r.get("compressratio")
        t.add_row("compressratio", f"{ratio:.2f}x" if ratio else "-")
        t.add_row("logical / physical",
                  f"{format_size(r.get('logicalused'))} / {format_size(r.get('used'))}")
        t.add_row("written since last snapshot", format_size(r.get("written")))
        t.add_row(Text("properties", style="bold underline"), "")
        for col in query.COLUMNS:
            if col in ("node", "pool", "user_properties", "synced_at"):
                continue
            v = r.get(col)
            if col in query.SIZE_COLUMNS:
                shown = "-" if v is None else f"{format_size(v)} ({v:,})"
            elif col == "creation" and v:
                shown = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v)) + " UTC"
            else:
                shown = "-" if v is None else str(v)
            t.add_row(col, Text(printable(shown)))  # Text: a value is never markup
        for k, v in (r.get("user_properties") or {}).items():
            t.add_row(k, Text(printable(str(v))))
        t.add_row("children", str(d.children))
        return t

    def fill_tree(self) -> None:
        d = self.detail
        assert d is not None
        tree: Tree[dict[str, Any]] = self.query_one("#tree", Tree)
        tree.clear()
        tree.root.set_label(Text(f"{d.row['name']}  ({d.row['type']} on {d.row['node']})",
                                 style="bold"))
        tree.root.expand()
        node = d.row["node"]
        chain = tree.root.add(f"origin chain ({len(d.origin_chain)})", expand=True)
        if not d.origin_chain:
            chain.add_leaf(Text("not a clone", style="grey50"))
        parent: TreeNode[dict[str, Any]] = chain
        for link in d.origin_chain:
            label = Text(link["snapshot"], style="magenta" if link["present"] else "red")
            if not link["present"]:
                label.append(" (not in mirror)", style="red")
            parent = parent.add(label, data={"node": node, "name": link["snapshot"]},
                                expand=True)
        snaps = tree.root.add(f"snapshots ({len(d.snapshots)})", expand=True)
        clones_by_origin: dict[str, list[dict[str, Any]]] = {}
        for c in d.clones:
            clones_by_origin.setdefault(c["origin"], []).append(c)
        for s in d.snapshots:
            label = Text(s["name"].split("@", 1)[1], style="bold")
            label.append(f"  used {format_size(s.get('used'))}"
                         f"  written {format_size(s.get('written'))}", style="grey62")
            sn = snaps.add(label, data={"node": node, "name": s["name"]},
                           expand=bool(clones_by_origin.get(s["name"])))
            for c in clones_by_origin.get(s["name"], []):
                sn.add_leaf(Text(f"clone {c['name']}", style="magenta"),
                            data={"node": c["node"], "name": c["name"]})
        clones = tree.root.add(f"clones ({len(d.clones)})", expand=True)
        for c in d.clones:
            clones.add_leaf(Text(f"{c['name']}  ← {c['origin']}", style="magenta"),
                            data={"node": c["node"], "name": c["name"]})

    @on(Tree.NodeSelected, "#tree")
    def _open(self, event: Tree.NodeSelected[dict[str, Any]]) -> None:
        data = event.node.data
        if data and data["name"] != self.ds_name:
            self.xapp.push_screen(DetailView(data["node"], data["name"]))

    def status_text(self) -> Text:
        d = self.detail
        if d is None:
            return Text(f"{self.ds_name} on {self.node}")
        return Text(f"{d.row['name']} on {d.row['node']} · {len(d.snapshots)} snapshots · "
                    f"{len(d.clones)} clones · enter: open a snapshot/clone · esc: back")

    def reload(self) -> None:
        self.load()


# ---------------------------------------------------------------------------------------------
# Operations


class OpsView(BaseView):
    view_name = "operations"

    DEFAULT_CSS = """
    OpsView #ops { height: 1fr; }
    OpsView #ops-empty { height: 1fr; }
    """

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="ops", cursor_type="row")
        yield table
        yield Static(id="ops-empty")

    def on_mount(self) -> None:
        table = self.query_one("#ops", DataTable)
        for label in ("KIND", "SUBJECT", "NODE", "STATE", "PROGRESS", "STARTED", "UPDATED",
                      "MESSAGE"):
            table.add_column(label, key=label.lower())
        self.ops: list[operations.Operation] = []
        self.reload()
        table.focus()

    def focus_body(self) -> None:
        self.set_focus(self.query_one("#ops", DataTable))

    def reload(self) -> None:
        ops, errors = operations.collect(self.xapp.conn)
        self.ops = ops
        table = self.query_one("#ops", DataTable)
        table.clear()
        now = self.xapp.clock()
        for o in ops:
            table.add_row(o.kind, o.subject, o.node or "-", o.state, bar(o.progress, 16, warn=2),
                          format_age(now - o.started_at) if o.started_at else "-",
                          format_age(now - o.updated_at) if o.updated_at else "-", o.message)
        empty = self.query_one("#ops-empty", Static)
        table.display = bool(ops)
        empty.display = not ops
        empty.update(Text.assemble(
            ("\n  No long-running operations.\n\n", "bold"),
            ("  Volume moves, rolling upgrades and compression rewrites appear here with their "
             "progress\n  once they run (each is a journaled job in the mirror).\n",
             "grey62"),
            *(("\n  source error: " + e, "red") for e in errors),
        ))
        for e in errors:
            self.flash(e, error=True)
        self.update_status()

    def status_text(self) -> Text:
        running = sum(1 for o in self.ops if o.state == "running")
        return Text(f"{len(self.ops)} operations · {running} running · sources: "
                    f"{', '.join(operations.sources())}")


# ---------------------------------------------------------------------------------------------
# Compression


class CompView(BaseView):
    view_name = "compression"

    def body(self) -> ComposeResult:
        with VerticalScroll(id="comp-scroll"):
            yield Static(Text("  reading the mirror…", style="grey50"), id="comp")

    def on_mount(self) -> None:
        self.data: dict[str, list[tuple[Any, ...]]] | None = None
        self.reload()
        self.query_one("#comp-scroll").focus()

    def reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="comp")
    def load(self) -> None:
        """The cost report's figures (xfleet.ops.report, the same as `xfleet report compression`):
        by node/pool, by compression, top tenants by savings."""
        from xfleet.ops import compression, report

        inv = self.xapp.inventory
        conn = self.xapp.connect()
        try:
            pol = None
            if inv is not None and inv.compression_policy is not None:
                try:
                    pol = compression.load_policy(inv.compression_policy)
                except XfleetError as exc:  # the figures without 'possible', and say why
                    self.app.call_from_thread(self.flash, f"policy: {exc}", error=True)
            data = {}
            for title, by, limit in (("node/pool", "pool", None),
                                     ("compression", "compression", None),
                                     ("tenant (top 20 by savings)", "tenant", 20)):
                rep = report.build(conn, by=by, policy=pol, inventory=inv, limit=limit,
                                   top=0, price_per_gb_month=inv.price_per_gb_month
                                   if inv is not None else 0.08)
                data[title] = [(r["group"], r["volumes"], r["logical"], r["physical"],
                                r["possible"]) for r in rep.rows
                               if by != "tenant" or r["group"] != "-"]
        except (sqlite3.Error, DatabaseError, XfleetError) as exc:
            self.app.call_from_thread(self.flash, f"cannot read: {exc}", error=True)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._loaded, data)

    def _loaded(self, data: dict[str, list[tuple[Any, ...]]]) -> None:
        self.data = data
        with_policy = any(r[4] is not None for rows in data.values() for r in rows)
        out = Table.grid(padding=(0, 2))
        out.add_column()
        for title, rows in data.items():
            t = Table(title=f"by {title}", title_justify="left", title_style="bold",
                      expand=False, show_edge=False, header_style="bold cyan")
            heads = [("", False), ("VOLUMES", True), ("LOGICAL", True), ("PHYSICAL", True),
                     ("SAVED", True)]
            if with_policy:
                heads.append(("POSSIBLE", True))
            for h, right in (*heads, ("PHYSICAL/LOGICAL, RATIO", False)):
                t.add_column(h, justify="right" if right else "left")
            for name, n, logical, physical, possible in rows:
                saved = (logical or 0) - (physical or 0)
                cells: list[Any] = [Text(printable(str(name))), f"{n:,}", format_size(logical),
                                    format_size(physical),
                                    Text(format_size(abs(saved)),
                                         style="green" if saved > 0 else "red")]
                if with_policy:
                    cells.append("-" if possible is None else
                                 Text(("-" if possible < 0 else "") + format_size(abs(possible)),
                                      style="cyan" if possible > 0 else "red"))
                t.add_row(*cells, ratio_bar(logical, physical, 24))
            out.add_row(t)
            out.add_row("")
        self.query_one("#comp", Static).update(out)
        self.update_status()

    def status_text(self) -> Text:
        if self.data is None:
            return Text("reading the mirror…", style="grey50")
        return Text("volumes only; physical = used - usedbyrefreservation; possible = estimated "
                    "by the policy, after a rewrite (xfleet report compression)")


# ---------------------------------------------------------------------------------------------
# Help


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 110; height: auto; max-height: 90%; border: round $accent;
                            background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        t = Table(show_edge=False, header_style="bold cyan", expand=True)
        t.add_column("KEY", style="bold", no_wrap=True)
        t.add_column("WHERE", style="grey62")
        t.add_column("WHAT")
        for keys, where, what in KEYS:
            t.add_row(keys, where, what)
        with Vertical():
            yield Static(Text("xfleet keys (esc or ? closes)", style="bold"))
            yield Static(t)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
