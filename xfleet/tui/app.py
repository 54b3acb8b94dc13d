"""The xfleet dashboard: a Textual app over the read-only mirror.

`XfleetApp(mirror_path, inventory=None, write=False)`; `xfleet.tui.run(...)` starts it.
Views live in xfleet/tui/views.py; the virtual table in xfleet/tui/table.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from xfleet import mirror
from xfleet.tui.views import (
    COMMANDS,
    BaseView,
    CompView,
    FleetView,
    HelpScreen,
    OpsView,
    VolumesView,
)

if TYPE_CHECKING:
    from xfleet.inventory import Inventory

POLL_SECONDS = 2.0
CACHE_KIB = 16384  # per connection; the mirror's default (64 MiB) x 4 connections is too much


class XfleetApp(App[None]):
    TITLE = "xfleet"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit", show=True),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, mirror_path: Path | str, inventory: Inventory | None = None,
                 write: bool = False, *, start: str = "nodes",
                 poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.mirror_path = Path(mirror_path)
        self.inventory = inventory
        self.write = write
        self.environment: dict[str, str] = dict(inventory.environment) if inventory else {}
        self.start = start
        self.poll_seconds = poll_seconds
        self.conn = self.connect()
        self._data_version = self._version()

    # -- the mirror -----------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection (one per thread that reads)."""
        conn = mirror.connect(self.mirror_path, readonly=True)
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    def _version(self) -> tuple[int, int]:
        """Changes whenever another connection commits (a sync or a watch)."""
        dv = self.conn.execute("PRAGMA data_version").fetchone()[0]
        run = self.conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0] or 0
        return int(dv), int(run)

    def stale_nodes(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.conn.execute(
            "SELECT name FROM nodes WHERE stale = 1"))

    def poll(self) -> None:
        try:
            v = self._version()
        except sqlite3.Error:
            return
        if v == self._data_version:
            return
        self._data_version = v
        self.mirror_changed()

    def mirror_changed(self) -> None:
        """Refresh the visible view now, the others when they come back on screen."""
        for screen in self.screen_stack:
            if isinstance(screen, BaseView):
                if screen is self.screen:
                    screen.reload()  # type: ignore[attr-defined]
                else:
                    screen.stale_data = True

    # -- views ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.open_view(self.start)
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.poll)

    def make_view(self, name: str, filter_text: str = "") -> Screen[Any]:
        if name == "vols":
            return VolumesView(filter_text)
        if name == "ops":
            return OpsView()
        if name == "comp":
            return CompView()
        return FleetView()

    def open_view(self, name: str, filter_text: str = "") -> None:
        """Jump to a view; if one of that kind is already open, go back to it (k9s-like)."""
        kinds = {"nodes": FleetView, "vols": VolumesView, "ops": OpsView, "comp": CompView}
        kind = kinds.get(name, FleetView)
        if isinstance(self.screen, kind):
            if filter_text and isinstance(self.screen, VolumesView):
                self.screen.apply_filter(filter_text, final=True)
            return
        for screen in self.screen_stack:
            if type(screen) is kind and not (kind is VolumesView and filter_text):
                while self.screen is not screen:
                    self.pop_screen()
                return
        self.push_screen(self.make_view(name, filter_text))

    def run_command(self, text: str) -> None:
        word, _, rest = text.strip().partition(" ")
        word = word.lstrip(":").lower()
        if not word:
            return
        target = COMMANDS.get(word)
        if target is None:
            self._flash(f"unknown command :{word} — try :nodes :vols :ops :comp :help :q",
                        error=True)
            return
        if target == "quit":
            self.exit()
        elif target == "help":
            self.action_help()
        else:
            self.open_view(target, rest.strip())

    def back(self) -> None:
        views = [s for s in self.screen_stack if isinstance(s, BaseView)]
        if len(views) > 1:
            self.pop_screen()
        else:
            self._flash("this is the first view — q quits")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def _flash(self, message: str, *, error: bool = False) -> None:
        if isinstance(self.screen, BaseView):
            self.screen.flash(message, error=error)
        else:
            self.notify(message, severity="error" if error else "information")

    # -- actions that change the fleet ----------------------------------------------------

    def write_action(self, what: str, view: BaseView) -> None:
        """Write actions come with later issues (moves, upgrades); read-only mode refuses
        them before anything else happens."""
        if not self.write:
            view.flash(f"read-only mode: '{what}' changes the fleet; start with "
                       "'xfleet tui --write' to allow it", error=True)
            return
        view.flash(f"'{what}' is not available yet (it arrives with the moves feature); "
                   "nothing was changed", error=True)


def run(mirror_path: Path, *, inventory: Inventory | None = None, write: bool = False) -> None:
    """Start the dashboard (raises MirrorError, with a hint, if the mirror cannot be read)."""
    mirror.connect(mirror_path, readonly=True).close()  # fail before the screen switches
    XfleetApp(mirror_path, inventory=inventory, write=write).run()
