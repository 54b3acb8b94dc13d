"""The xfleet dashboard: a Textual app over the read-only mirror.

`XfleetApp(mirror_path, inventory=None, write=False)`; `xfleet.tui.run(...)` starts it.
Views live in xfleet/tui/views.py; the virtual table in xfleet/tui/table.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.widgets import Input

from xfleet import mirror
from xfleet.mirror.backend import ERRORS, Connection, Location, location
from xfleet.mirror.changes import Changes
from xfleet.tui.base import COMMANDS, BaseView
from xfleet.tui.views import (
    CompView,
    FleetView,
    HelpScreen,
    OpsView,
    VolumesView,
)

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

POLL_SECONDS = 1.0  # a write by another process shows within this (mirror.changes)
HOLD_MAX_S = 1.0  # keys held behind a view change are released after this at the latest
ENTER_SETTLE_S = 0.05  # enter on a row may open a view: keys right behind it wait this long
PROMPT_KEYS = {"colon": "command", "slash": "filter"}
CACHE_KIB = 16384  # per connection; the mirror's default (64 MiB) x 4 connections is too much


class XfleetApp(App[None]):
    TITLE = "xfleet"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit", show=True),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, mirror_path: Location | str, inventory: Inventory | None = None,
                 write: bool = False, *, start: str = "nodes",
                 poll_seconds: float = POLL_SECONDS,
                 clock: Callable[[], float] = time.time, cursor_blink: bool = True) -> None:
        super().__init__()
        # the wall clock for ages ("13s ago"); tests freeze it for stable snapshots
        self.clock = clock
        self.cursor_blink = cursor_blink
        # keys typed ahead while a view or the prompt changes (see on_event)
        self._held: list[events.Key] | None = None
        self._hold_serial = 0
        self.mirror_path = location(mirror_path)
        self.inventory = inventory
        self.write = write
        self.environment: dict[str, str] = dict(inventory.environment) if inventory else {}
        self.start = start
        self.poll_seconds = poll_seconds
        self.conn = self.connect()
        self.changes = Changes(self.mirror_path, self.conn)
        self._data_version = self._version()

    # -- the mirror -----------------------------------------------------------------------

    def connect(self) -> Connection:
        """A new read-only connection (one per thread that reads)."""
        conn = mirror.connect(self.mirror_path, readonly=True)
        if not mirror.is_postgres(conn):
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    def _version(self) -> tuple[int, int]:
        """Changes whenever another connection commits (a sync, a watch, a move's step)."""
        return self.changes.version()

    def stale_nodes(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.conn.execute(
            "SELECT name FROM nodes WHERE stale = 1"))

    def poll(self) -> None:
        try:
            v = self._version()
        except ERRORS:
            return
        if v == self._data_version:
            return
        self._data_version = v
        self.mirror_changed()

    def mirror_changed(self) -> None:
        """Refresh the visible view now, the others when they come back on screen."""
        for screen in self.screen_stack:
            if isinstance(screen, BaseView):
                # object: `is` against a Screen[Any] would narrow `screen` back from BaseView
                visible: object = self.screen
                if screen is visible:
                    screen.reload()
                else:
                    screen.stale_data = True

    # -- keys typed ahead -----------------------------------------------------------------
    #
    # Textual routes a key to the widget focused *when the key arrives*, but bindings run
    # later, when that widget's queue reaches the key. In a real terminal a burst like
    # `/used>1T⏎` arrives at once: without help, `used>1T` is routed to the table before the
    # `/` binding has opened and focused the prompt, and keys after `⏎` reach the prompt after
    # it has submitted. So: `:` and `/` open the prompt here, synchronously, before the next
    # key is routed; after `enter`/`esc` in the prompt (or `enter` on a row, which may open a
    # view), and while a new view is not yet ready, keys are held and replayed in order once
    # the prompt has closed / the view is ready (at the latest after HOLD_MAX_S).

    def _view_ready(self) -> bool:
        screen = self.screen
        if isinstance(screen, BaseView):
            return screen.ready
        return isinstance(screen, ModalScreen)  # help; the default screen before the 1st view

    def _hold(self, settle: float | None = None) -> None:
        if self._held is None:
            self._held = []
        self._hold_serial += 1
        serial = self._hold_serial
        self.set_timer(HOLD_MAX_S, lambda: self._release(force=serial == self._hold_serial))
        if settle is not None:
            self.set_timer(settle, self._release)

    def release_keys(self) -> None:
        """The prompt closed or a view is ready: replay held keys once the current handler
        (which may be about to push a view) has finished."""
        if self._held is not None:
            self.call_later(self._release)

    async def _release(self, force: bool = False) -> None:
        if self._held is None:
            return
        if not force:
            screen = self.screen
            if not self._view_ready() or (isinstance(screen, BaseView)
                                          and screen.prompt_mode is not None):
                return  # the view is not up yet / the prompt has not closed yet
        held, self._held = self._held, None
        while held:
            await self.on_event(held.pop(0))
            if self._held is not None:  # that key started another change: the rest wait
                self._held[:0] = held
                return

    async def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Key) or event.is_forwarded:
            await super().on_event(event)
            return
        if event.key == "ctrl+c":
            await super().on_event(event)
            return
        if self._held is not None or not self._view_ready():
            if self._held is None:
                self._hold()
            assert self._held is not None
            self._held.append(event)
            return
        screen = self.screen
        if isinstance(screen, BaseView):
            prompt = screen.query_one("#prompt", Input)
            in_prompt = screen.prompt_mode is not None and self.focused is prompt
            if not in_prompt and event.key in PROMPT_KEYS:
                screen.action_prompt(PROMPT_KEYS[event.key])  # focuses the prompt now
                return
            if in_prompt and event.key in ("enter", "escape"):
                self._hold()  # until the prompt has closed (BaseView.close_prompt)
            elif event.key == "enter":
                self._hold(ENTER_SETTLE_S)
        await super().on_event(event)

    # -- views ----------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self.changes.close()

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
        """Snapshot, clone, destroy or move the selected dataset (xfleet.tui.actions): refused
        in read-only mode before anything else happens; otherwise the prompt asks for the
        name (or the target, or the name typed again to destroy) and a worker acts."""
        if not self.write:
            view.flash(f"read-only mode: '{what}' changes the fleet; start with "
                       "'xfleet tui --write' to allow it", error=True)
            return
        target = view.write_target()
        if target is None:
            view.flash(f"'{what}': select a dataset first", error=True)
            return
        if self.inventory is None:
            view.flash("write actions need the inventory: xfleet -i INVENTORY tui --write",
                       error=True)
            return
        from xfleet.tui.actions import prompt_for

        view.open_write_prompt(what, target, prompt_for(what, *target))

    def run_write(self, what: str, target: tuple[str, str], answer: str,
                  view: BaseView) -> None:
        """Carry out a write action in a worker thread; the outcome (or the refusal, with its
        hint) is flashed in the view, and the view re-reads the mirror."""
        from xfleet.core.errors import XfleetError
        from xfleet.tui import actions

        inv = self.inventory
        assert inv is not None
        view.flash(f"{what} {target[0]}:{target[1]} ...", seconds=600)

        def work() -> None:
            try:
                message = actions.run(inv, self.mirror_path, what, *target, answer)
            except XfleetError as exc:
                text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
                self.call_from_thread(view.flash, text, error=True, seconds=20)
                return
            self.call_from_thread(view.flash, message, seconds=20)
            self.call_from_thread(view.reload)

        self.run_worker(work, thread=True, group="write", name=f"{what} {target[1]}")


def run(mirror_path: Location, *, inventory: Inventory | None = None, write: bool = False) -> None:
    """Start the dashboard (raises MirrorError, with a hint, if the mirror cannot be read)."""
    mirror.connect(mirror_path, readonly=True).close()  # fail before the screen switches
    XfleetApp(mirror_path, inventory=inventory, write=write).run()
