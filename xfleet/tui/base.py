"""What every dashboard screen shares: the banner, the prompt, the keys (`COMMANDS`), bars, and
`BaseView` (refresh on mirror changes, the command prompt, stale data shown as such)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

if TYPE_CHECKING:
    from xfleet.tui.actions import Prompt
    from xfleet.tui.app import XfleetApp


STALE_AFTER_S = 15 * 60  # mirror data older than this is shown as old (yellow)

# Every key, for the help screen and docs/tui.md: (keys, where, what).
KEYS: tuple[tuple[str, str, str], ...] = (
    (":", "everywhere", "command mode: :nodes :vols [FILTER] :ops :comp :help :q"),
    ("?", "everywhere", "this help"),
    ("esc", "everywhere", "close the prompt / clear the filter / back to the previous view"),
    ("q, ctrl+c", "everywhere", "quit"),
    ("/", "volumes", "filter: words match names (glob with * ? [), COLUMN OP VALUE "
                     "(used>10G compression=off node=n2 type=clone); reopens with the "
                     "current filter + a space, so typing narrows it (ctrl+u: start over)"),
    ("enter", "fleet, volumes, detail", "drill down (node → its volumes → volume detail → "
                                        "clone/origin)"),
    ("up/down, j/k", "tables", "move the cursor"),
    ("pgup/pgdn, ctrl+b/ctrl+f, space", "volumes", "page up / down"),
    ("home/end, g/G", "volumes", "first / last row"),
    ("O N T Z U R L W C X E A", "volumes", "sort by node, name, type, volsize, used, "
                                           "referenced, logicalused, written, compression, "
                                           "ratio, tenant, age (again: reverse)"),
    ("m", "volumes, detail", "move the volume to another node (write actions: --write only)"),
    ("s", "volumes, detail", "snapshot the volume (asks for the name)"),
    ("c", "volumes, detail", "clone: a branch of the volume or snapshot (asks for its name)"),
    ("d", "volumes, detail", "destroy (type the name to confirm; clones and holds refuse)"),
    ("ctrl+r", "everywhere", "re-read the mirror now (it also refreshes by itself)"),
    ("mouse", "everywhere", "click a row to select, double-click to open, click a column "
                            "header to sort, wheel to scroll"),
)

COMMANDS: dict[str, str] = {
    "nodes": "nodes", "node": "nodes", "fleet": "nodes", "no": "nodes",
    "vols": "vols", "vol": "vols", "volumes": "vols", "ds": "vols", "datasets": "vols",
    "ops": "ops", "operations": "ops", "op": "ops",
    "comp": "comp", "compression": "comp",
    "help": "help", "h": "help",
    "q": "quit", "quit": "quit", "q!": "quit",
}


def bar(fraction: float | None, width: int = 20, *, warn: float = 0.8,
        crit: float = 0.9) -> Text:
    """A capacity bar: `████████░░░░ 43%`, yellow past `warn`, red past `crit`."""
    if fraction is None:
        return Text("-".ljust(width + 5), style="grey50")
    f = max(0.0, min(1.0, fraction))
    filled = round(f * width)
    colour = "red" if f >= crit else "yellow" if f >= warn else "green"
    t = Text("█" * filled, style=colour)
    t.append("░" * (width - filled), style="grey35")
    t.append(f" {f * 100:3.0f}%")
    return t


def ratio_bar(logical: float | None, physical: float | None, width: int = 20) -> Text:
    """Physical as a share of logical: the shorter the bar, the more compression saves."""
    if not logical or physical is None:
        return Text("-".ljust(width + 8), style="grey50")
    f = max(0.0, min(1.0, physical / logical))
    filled = round(f * width)
    t = Text("▓" * filled, style="cyan")
    t.append("·" * (width - filled), style="green")
    t.append(f" {logical / physical if physical else 0:5.2f}x")
    return t


class Banner(Static):
    """Environment, mode and view: production must be unmistakable."""

    DEFAULT_CSS = """
    Banner { height: 1; width: 1fr; }
    """

    def __init__(self, view: str) -> None:
        super().__init__(id="banner")
        self.view = view

    def on_mount(self) -> None:
        self.update(self.render_banner())

    def render_banner(self) -> Text:
        app = cast("XfleetApp", self.app)  # Textual types it App[object]
        env = app.environment
        colour = env.get("colour") or ("red" if env.get("name", "").startswith("prod")
                                       else "blue")
        t = Text()
        t.append(" xfleet ", style="bold black on white")
        name = env.get("name")
        t.append(f" {name.upper() if name else 'NO ENVIRONMENT'} ",
                 style=f"bold white on {colour}")
        if app.write:
            t.append(" WRITE ", style="bold white on red")
        else:
            t.append(" READ-ONLY ", style="bold black on green")
        t.append(f" {self.view} ", style="bold")
        t.append(f" {app.mirror_path.name}", style="grey62")
        return t


class PromptInput(Input):
    """The `:` / `/` prompt. Its editing keys (ctrl+u, backspace, arrows, enter) run here, in
    the order typed. Textual resolves a focused widget's bindings only once the key has bubbled
    up to the app, while printable keys are inserted at once, so in a fast burst `/`, `ctrl+u`,
    `used>1T` the ctrl+u ran after the new text and erased it."""

    async def _on_key(self, event: events.Key) -> None:
        if event.is_printable:
            return  # Input._on_key (next in the MRO) inserts it
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return


class BaseView(Screen[None]):
    """A view: banner, body, status line, a `:`/`/` prompt, footer."""

    view_name: ClassVar[str] = ""
    can_filter: ClassVar[bool] = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "prompt('command')", ":cmd", show=True),
        Binding("question_mark", "app.help", "help", show=True),
        Binding("escape", "back", "back", show=True),
        Binding("ctrl+r", "reload", "reload", show=False),
    ]

    DEFAULT_CSS = """
    BaseView #status { height: 1; background: $panel; padding: 0 1; }
    BaseView #prompt { height: 1; border: none; padding: 0 1; display: none; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.prompt_mode: str | None = None
        self.write_for: tuple[str, str] | None = None  # (node, name) of an open write prompt
        self._message: Text | None = None
        self._message_until = 0.0
        self.stale_data = False
        self.ready = False  # mounted, focused and painted: keys typed ahead can be replayed

    @property
    def xapp(self) -> XfleetApp:
        return cast("XfleetApp", self.app)  # Textual types it App[object]

    def compose(self) -> ComposeResult:
        yield Banner(self.view_name)
        yield from self.body()
        yield Static(id="status")
        prompt = PromptInput(id="prompt", select_on_focus=False)
        prompt.cursor_blink = self.xapp.cursor_blink  # off in snapshot tests
        yield prompt
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        # runs after the subclass's on_mount (Textual calls every class's handler); the body's
        # focus() is deferred, so the view is ready for typed-ahead keys after the next refresh
        self.call_after_refresh(self._became_ready)

    def _became_ready(self) -> None:
        self.ready = True
        self.xapp.release_keys()

    def on_screen_resume(self) -> None:
        if self.stale_data:
            self.stale_data = False
            self.reload()
        self.update_status()

    # -- status line ----------------------------------------------------------------------

    def status_text(self) -> Text:
        return Text("")

    def flash(self, message: str, *, error: bool = False, seconds: float = 6.0) -> None:
        """A message in the status line (errors in red) instead of a traceback."""
        self._message = Text(message, style="bold red" if error else "bold yellow")
        self._message_until = time.monotonic() + seconds
        self.update_status()
        self.set_timer(seconds + 0.05, self.update_status)

    def update_status(self) -> None:
        if not self.is_mounted:
            return
        text = self.status_text()
        if self._message is not None and time.monotonic() < self._message_until:
            text = Text.assemble(self._message, "  ", text)
        for status in self.query("#status").results(Static):
            status.update(text)

    # -- prompt: ':' commands and '/' filters ---------------------------------------------

    def action_prompt(self, mode: str) -> None:
        if mode == "filter" and not self.can_filter:
            self.flash("this view has no filter; try :vols", error=True)
            return
        prompt = self.query_one("#prompt", Input)
        self.prompt_mode = mode
        prompt.display = True
        if mode == "command":
            prompt.placeholder = "nodes | vols [FILTER] | ops | comp | help | q"
            prompt.value = ""
        else:
            prompt.placeholder = "name, glob or COLUMN OP VALUE, e.g. vol-01 used>10G"
            current = self.current_filter_text()
            # the current filter plus a space: what you type narrows it (words are AND-ed), so
            # after drilling into n1, `/used>1T` reads `node=n1 used>1T`; ctrl+u starts over
            prompt.value = f"{current} " if current else ""
        prompt.border_title = mode
        self.prompt_opened(mode)
        # focus now, not on the next idle (widget.focus() is deferred): keys typed right after
        # ':' in a real terminal must land in the prompt, not in the table behind it
        self.set_focus(prompt, scroll_visible=False)
        prompt.cursor_position = len(prompt.value)
        self.update_status()

    def close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.display = False
        self.prompt_mode = None
        self.focus_body()
        self.update_status()
        self.xapp.release_keys()  # keys typed after enter/esc wait for this (see XfleetApp)

    def focus_body(self) -> None:
        pass

    def prompt_opened(self, mode: str) -> None:
        pass

    def restore_filter(self) -> None:
        """The filter prompt was cancelled: back to the filter from before it opened."""

    def current_filter_text(self) -> str:
        return ""

    def apply_filter(self, text: str, *, final: bool) -> None:
        pass

    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        if self.prompt_mode == "filter":
            self.apply_filter(event.value, final=False)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode = self.prompt_mode
        value = event.value.strip()
        self.close_prompt()
        if mode and mode.startswith("write:") and self.write_for is not None:
            self.xapp.run_write(mode.split(":", 1)[1], self.write_for, value, self)
        elif mode == "command":
            self.xapp.run_command(value)
        elif mode == "filter":
            self.apply_filter(value, final=True)

    def action_back(self) -> None:
        if self.prompt_mode is not None:
            restore = self.prompt_mode == "filter"
            if self.prompt_mode.startswith("write:"):
                self._message = None  # the write prompt's question
            self.close_prompt()
            if restore:
                self.restore_filter()
            return
        if self.clear_filter():
            return
        self.xapp.back()

    def clear_filter(self) -> bool:
        return False

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Re-read the mirror (it changed), keeping the user's place."""

    def action_write(self, what: str) -> None:
        self.xapp.write_action(what, self)

    def write_target(self) -> tuple[str, str] | None:
        """(node, dataset name) that a write action acts on; None where there is none."""
        return None

    def open_write_prompt(self, what: str, target: tuple[str, str], prompt: Prompt) -> None:
        self.write_for = target
        box = self.query_one("#prompt", Input)
        self.prompt_mode = f"write:{what}"
        box.display = True
        box.placeholder = prompt.placeholder
        box.value = prompt.value
        box.border_title = what
        self.set_focus(box, scroll_visible=False)
        box.cursor_position = len(box.value)
        self.flash(prompt.placeholder + " (enter: go, esc: cancel)", seconds=600)


# ---------------------------------------------------------------------------------------------
# Fleet
