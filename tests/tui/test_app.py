"""The dashboard driven with Pilot: every view and key, asserting what is on screen. Paging,
filters, sorting and live refresh run on both engines (`fleet_at`: SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from textual import events
from textual.pilot import Pilot
from textual.widgets import Input

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.mirror.backend import Connection
from xfleet.tui.app import XfleetApp
from xfleet.tui.table import VirtualTable
from xfleet.tui.views import (
    CompView,
    DetailView,
    FleetView,
    HelpScreen,
    OpsView,
    VolumesView,
)

from .conftest import screen_text, settle, until

SIZE = (150, 40)


def make(fleet: Path, at: str | None = None, **kw: Any) -> XfleetApp:
    """The app on the fleet's mirror: mirror.db beside it, or `at` (a path or a URL)."""
    inv = inventory.load(fleet / "fleet.yaml")
    return XfleetApp(at or fleet / "mirror.db", inventory=inv,
                     poll_seconds=kw.pop("poll", 0), **kw)


def table(app: XfleetApp) -> VirtualTable:
    return app.screen.query_one(VirtualTable)


async def test_fleet_view_shows_nodes_counts_and_stale_node(
        fleet: Path, sql: Connection) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, FleetView)
        text = screen_text(app)
        n1_vols = sql.execute(
            "SELECT count(*) FROM datasets WHERE node='n1' AND type='volume'").fetchone()[0]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("n1"))
        assert f"{n1_vols:,}" in line and "ONLINE" in line and "%" in line
        n2 = next(ln for ln in text.splitlines() if ln.strip().startswith("n2"))
        assert "STALE" in n2 and "ssh: timed out" in n2
        assert "1 stale" in text
        # environment banner and mode
        assert "PROD-EU" in text and "READ-ONLY" in text


async def test_fleet_view_shows_pool_health_with_its_errors(fleet: Path) -> None:
    conn = mirror.connect(fleet / "mirror.db")
    try:  # what a sync writes of a pool with a side gone and checksum errors on the other
        with mirror.transaction(conn, "a test"):
            conn.execute("UPDATE pools SET health = 'DEGRADED', read_errors = 1, "
                         "checksum_errors = 2, data_errors = 0, health_at = 1 "
                         "WHERE node = 'n1'")
    finally:
        conn.close()
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        n1 = next(ln for ln in text.splitlines() if ln.strip().startswith("n1"))
        assert "DEGRADED 3 err" in n1
        n2 = next(ln for ln in text.splitlines() if ln.strip().startswith("n2"))
        assert "ONLINE" in n2 and "err" not in n2
        # the alert panel: the shipped rules' conditions, as `xfleet status` shows them
        assert "CRITICAL XfleetPoolDegraded n1/tank" in text, text
        assert "XfleetPoolErrors n1/tank" in text


async def test_enter_on_a_node_opens_its_volumes_and_esc_goes_back(fleet: Path) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter")  # n2
        await settle(pilot)
        assert isinstance(app.screen, VolumesView)
        t = table(app)
        assert t.filter.text == "node=n2"
        assert t.rows and {r["node"] for r in t.rows} == {"n2"}
        assert "filter node=n2" in screen_text(app)
        await pilot.press("escape")  # clears the filter first
        await settle(pilot)
        assert isinstance(app.screen, VolumesView) and t.filter.empty
        assert t.count is not None and t.count.n == sum(app.conn.execute(
            "SELECT count(*) FROM datasets").fetchone())
        await pilot.press("escape")  # then back
        await settle(pilot)
        assert isinstance(app.screen, FleetView)


async def test_sort_keys_sort_and_reverse(fleet_at: tuple[Path, str], sql_at: Connection) -> None:
    sql = sql_at
    app = make(*fleet_at, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        biggest = sql.execute("SELECT max(used) FROM datasets").fetchone()[0]
        await pilot.press("U")
        await settle(pilot)
        used = [r["used"] for r in t.rows]
        assert t.sort.column == "used" and t.sort.desc
        assert used[0] == biggest and used == sorted(used, reverse=True)
        assert "USED▼" in screen_text(app)
        await pilot.press("U")
        await settle(pilot)
        used = [r["used"] for r in t.rows if r["used"] is not None]
        assert used == sorted(used) and not t.sort.desc
        await pilot.press("N")
        await settle(pilot)
        names = [r["name"] for r in t.rows]
        assert names == sorted(names)
        assert "NAME▲" in screen_text(app)


async def test_filter_by_expression_counts_matches(fleet_at: tuple[Path, str],
                                                  sql_at: Connection) -> None:
    sql = sql_at
    app = make(*fleet_at, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"used>10G", "space", *"type=volume", "enter")
        await settle(pilot)
        t = table(app)
        want = sql.execute("SELECT count(*) FROM datasets WHERE used > ? AND type = 'volume'",
                           (10 << 30,)).fetchone()[0]
        assert want > 0
        assert len(t.rows) == want
        assert all(r["used"] > 10 << 30 and r["type"] == "volume" for r in t.rows)
        assert f"{want:,} rows" in screen_text(app)


async def test_name_filter_and_glob(fleet_at: tuple[Path, str]) -> None:
    app = make(*fleet_at, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"vol-00001", "enter")
        await settle(pilot)
        rows = table(app).rows
        assert rows and all("vol-00001" in r["name"] for r in rows)
        await pilot.press("slash", "ctrl+u", *"*@*", "enter")
        await settle(pilot)
        rows = table(app).rows
        assert rows and all(r["type"] == "snapshot" for r in rows)


async def test_bad_filter_is_a_message_not_a_traceback(fleet: Path) -> None:
    app = make(fleet, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = [r["id"] for r in table(app).rows]
        await pilot.press("slash", *"used>lots", "enter")
        await settle(pilot)
        text = screen_text(app)
        assert "'lots' is not a valid value for 'used'" in text
        assert table(app).filter.empty
        assert [r["id"] for r in table(app).rows] == before
        await pilot.press("slash", "ctrl+u", *"colour=red", "enter")
        await settle(pilot)
        assert "unknown column 'colour'" in screen_text(app)
        assert app.is_running


async def test_paging_and_end(fleet_at: tuple[Path, str], sql_at: Connection) -> None:
    sql = sql_at
    app = make(*fleet_at, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        page = t.page_rows
        await pilot.press("pagedown")
        await settle(pilot)
        assert t.cursor == page and f"row {page + 1:,}" in screen_text(app)
        await pilot.press("pageup")
        await settle(pilot)
        assert t.cursor == 0
        await pilot.press("end")
        await settle(pilot)
        last = sql.execute("SELECT name FROM datasets ORDER BY node DESC, name DESC "
                           "LIMIT 1").fetchone()[0]
        total = sql.execute("SELECT count(*) FROM datasets").fetchone()[0]
        assert t.current is not None and t.current["name"] == last
        assert f"row {total:,}" in screen_text(app) and last in screen_text(app)
        await pilot.press("home")
        await settle(pilot)
        assert t.cursor == 0 and "row 1 " in screen_text(app)


async def test_scrolling_through_everything_sees_every_row_once(
        fleet_at: tuple[Path, str], sql_at: Connection) -> None:
    sql = sql_at
    app = make(*fleet_at, start="vols")
    async with app.run_test(size=(150, 20)) as pilot:
        await settle(pilot)
        t = table(app)
        total = sql.execute("SELECT count(*) FROM datasets").fetchone()[0]
        seen = [t.current["id"]] if t.current else []
        for _ in range(total + 5):
            t.move_cursor(1)
            if t.current and t.current["id"] != seen[-1]:
                seen.append(t.current["id"])
        assert len(seen) == total == len(set(seen))
        assert len(t.rows) <= 1200  # bounded buffer: never the whole table


async def test_enter_opens_detail_with_snapshots_and_clone_chain(
        fleet: Path, sql: Connection) -> None:
    clone, origin = sql.execute(
        "SELECT name, origin FROM datasets WHERE origin IS NOT NULL AND node='n1' "
        "ORDER BY name LIMIT 1").fetchone()
    app = make(fleet, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *clone.split("/")[-1], "space", "node=n1".__str__()[0])
        await pilot.press(*"ode=n1", "space", *"type=volume", "enter")
        await settle(pilot)
        current = table(app).current
        assert current is not None and current["name"] == clone
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailView)
        text = screen_text(app)
        assert "origin chain (1)" in text and origin in text
        assert "compressratio" in text and "written since last snapshot" in text
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, VolumesView)
        current = table(app).current
        assert current is not None and current["name"] == clone


async def test_detail_lists_snapshots(fleet: Path, sql: Connection) -> None:
    vol = sql.execute("SELECT name FROM datasets WHERE type='snapshot' AND node='n1' "
                      "LIMIT 1").fetchone()[0].split("@")[0]
    nsnaps = sql.execute("SELECT count(*) FROM datasets WHERE node='n1' AND name > ? AND "
                         "name < ?", (vol + "@", vol + "A")).fetchone()[0]
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(DetailView("n1", vol))
        await settle(pilot)
        text = screen_text(app)
        assert f"snapshots ({nsnaps})" in text and vol in text
        assert "STALE" not in text.split("node", 1)[1].splitlines()[0]


async def test_command_mode_jumps_between_views(fleet: Path) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"comp", "enter")
        await settle(pilot)
        assert isinstance(app.screen, CompView)
        text = screen_text(app)
        assert "by node/pool" in text and "n1/tank" in text and "by tenant" in text
        await pilot.press("colon", *"ops", "enter")
        await settle(pilot)
        assert isinstance(app.screen, OpsView)
        assert "No long-running operations" in screen_text(app)
        await pilot.press("colon", *"vols used>5G", "enter")
        await settle(pilot)
        assert isinstance(app.screen, VolumesView)
        assert table(app).filter.text == "used>5G"
        await pilot.press("colon", *"bogus", "enter")
        await settle(pilot)
        assert "unknown command :bogus" in screen_text(app)
        await pilot.press("colon", *"nodes", "enter")  # back to the fleet already open
        await settle(pilot)
        assert isinstance(app.screen, FleetView)
        assert sum(isinstance(s, FleetView) for s in app.screen_stack) == 1
        await pilot.press("colon", "q", "enter")
        await settle(pilot)
    assert not app.is_running


async def test_help_lists_keys_and_closes(fleet: Path) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "command mode" in text and "O N T Z U R L W C X E A" in text
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, FleetView)


async def test_read_only_refuses_write_actions(fleet: Path) -> None:
    app = make(fleet, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        text = screen_text(app)
        assert "read-only mode" in text and "--write" in text and "READ-ONLY" in text


async def test_write_mode_snapshot_clone_destroy_and_move_refusal(fleet: Path) -> None:

    app = make(fleet, start="vols", write=True)
    db = sqlite3.connect(fleet / "mirror.db")

    def names(glob: str) -> list[str]:
        return [r[0] for r in db.execute("SELECT name FROM datasets WHERE node = 'n1' AND "
                                         "name GLOB ? ORDER BY name", (glob,))]

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert " WRITE " in text and "READ-ONLY" not in text
        assert isinstance(app.screen, VolumesView)
        app.screen.apply_filter("type=volume node=n1", final=True)
        await settle(pilot)
        current = table(app).current
        assert current is not None
        vol = str(current["name"])
        # s: snapshot, the prompt offers a name; enter takes it
        await pilot.press("s")
        await settle(pilot)
        assert "snapshot name for n1:" + vol in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert "taken" in screen_text(app), screen_text(app)
        assert len(names(vol + "@manual-*")) == 1  # the mirror has it (re-fetched)
        # c: a branch of the volume (a snapshot of it is taken for the clone)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert db.execute("SELECT origin FROM datasets WHERE name = ?", (vol + "-branch",)
                          ).fetchone()[0].startswith(vol + "@")
        # d: destroy asks for the name typed again; a wrong answer destroys nothing
        await pilot.press("d")
        await settle(pilot)
        assert "type " + vol + " to destroy it" in screen_text(app)
        await pilot.press(*"nope", "enter")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert "nothing was destroyed" in screen_text(app) and names(vol) == [vol]
        # ... and the volume has a clone now: destroying it is refused with the reason
        await pilot.press("d")
        await settle(pilot)
        await pilot.press(*vol, "enter")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert "clone" in screen_text(app) and names(vol) == [vol]
        # m: the move's preflight refuses (it would orphan the clone), shown, not a traceback
        await pilot.press("m")
        await settle(pilot)
        assert "move " + vol + " from n1 to NODE" in screen_text(app)
        await pilot.press(*"n2", "enter")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert "would orphan them" in screen_text(app)
        assert db.execute("SELECT count(*) FROM moves").fetchone()[0] == 0


async def test_mouse_click_selects_and_header_click_sorts(fleet: Path) -> None:
    app = make(fleet, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        await pilot.click(VirtualTable, offset=(5, 4))  # 4th data row
        await settle(pilot)
        assert t.cursor == 3
        await pilot.click(VirtualTable, offset=(5, 4), times=2)
        await settle(pilot)
        assert isinstance(app.screen, DetailView)
        await pilot.press("escape")
        await settle(pilot)
        x = sum(c.width + 1 for c in t.columns[:2] if c.width) + t._widths()[1] + 2
        await pilot.click(VirtualTable, offset=(x, 0))  # the TYPE header
        await settle(pilot)
        assert t.sort.column == "type"


async def test_live_refresh_keeps_the_place(fleet: Path) -> None:
    app = make(fleet, start="vols", poll=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        await pilot.press("down", "down", "down")
        await settle(pilot)
        row = t.current
        assert row is not None
        w = mirror.connect(fleet / "mirror.db")
        w.execute("UPDATE datasets SET compression = 'zstd-19' WHERE id = ?", (row["id"],))
        w.close()
        for _ in range(40):
            await settle(pilot)
            if t.current and t.current["compression"] == "zstd-19":
                break
        assert t.current is not None and t.current["id"] == row["id"]
        assert t.current["compression"] == "zstd-19" and t.cursor == 3
        assert "zstd-19" in screen_text(app)


async def test_a_stale_view_refreshes_when_it_comes_back(fleet: Path) -> None:
    app = make(fleet, poll=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"ops", "enter")
        await settle(pilot)
        w = mirror.connect(fleet / "mirror.db")
        w.execute("UPDATE nodes SET stale = 0, last_error = NULL WHERE name = 'n2'")
        w.close()
        for _ in range(10):
            await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, FleetView)
        assert "STALE" not in screen_text(app)


async def test_no_operations_and_a_registered_source(fleet: Path) -> None:
    from xfleet.tui import operations

    def fake(conn: Connection) -> list[operations.Operation]:
        return [operations.Operation("1", "move", "tank/t0000/vol-000001", "n1", "running",
                                     done=30, total=120)]

    operations.register("test", fake)
    try:
        app = make(fleet, start="ops")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            text = screen_text(app)
            assert "tank/t0000/vol-000001" in text and "25%" in text and "1 running" in text
    finally:
        operations.unregister("test")


# -- keys typed faster than the screen changes (a real terminal delivers a burst at once) -----

KEY_CHARS = {"slash": "/", "colon": ":", "space": " ", "greater_than_sign": ">"}


async def burst(pilot: Pilot[None], *keys: str) -> None:
    """Deliver keys the way a terminal does when someone types fast: all at once, with no
    pause for the app to react in between (Pilot.press waits for idle after every key)."""
    for key in keys:
        name = {"/": "slash", ":": "colon", " ": "space", ">": "greater_than_sign"}.get(key, key)
        char = KEY_CHARS.get(name, name if len(name) == 1 else None)
        pilot.app.post_message(events.Key(name, char))
    await settle(pilot)


async def test_filter_typed_in_one_burst_lands_in_the_prompt(
        fleet: Path, sql: Connection) -> None:
    app = make(fleet, start="vols")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        await burst(pilot, "/", *"used>10G", "enter")
        want = sql.execute("SELECT count(*) FROM datasets WHERE used > ?",
                           (10 << 30,)).fetchone()[0]
        assert t.filter.text == "used>10G"
        assert t.count is not None and t.count.n == want
        assert isinstance(app.screen, VolumesView)
        assert f"{want:,} rows" in screen_text(app) and app.screen.prompt_mode is None
        # ctrl+u in the same burst clears the prefilled filter before the new one is typed
        await burst(pilot, "/", "ctrl+u", *"type=clone", "enter")
        assert t.filter.text == "type=clone"
        assert t.rows and all(r["origin"] for r in t.rows)
        assert "filter type=clone" in screen_text(app)


async def test_command_then_filter_in_one_burst(fleet: Path) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await burst(pilot, ":", *"vols", "enter", "/", *"used>10G", "enter", "U")
        await until(pilot, lambda: isinstance(app.screen, VolumesView)
                    and table(app).sort.column == "used" and "USED▼" in screen_text(app),
                    "the volumes view, filtered and sorted by used")
        assert isinstance(app.screen, VolumesView)
        t = table(app)
        assert t.filter.text == "used>10G" and t.sort.column == "used"
        assert "filter used>10G" in screen_text(app) and "USED▼" in screen_text(app)


async def test_filter_after_drilling_into_a_node_narrows_it(
        fleet: Path, sql: Connection) -> None:
    app = make(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await burst(pilot, "enter", "/")  # n1, then the filter prompt in the same burst
        assert isinstance(app.screen, VolumesView)
        prompt = app.screen.query_one("#prompt", Input)
        assert prompt.has_focus and prompt.value == "node=n1 "  # a space: typing narrows
        assert prompt.cursor_position == len(prompt.value)
        await burst(pilot, *"used>10G", "enter")
        t = table(app)
        want = sql.execute("SELECT count(*) FROM datasets WHERE node = 'n1' AND used > ?",
                           (10 << 30,)).fetchone()[0]
        assert 0 < want < sql.execute("SELECT count(*) FROM datasets WHERE used > ?",
                                      (10 << 30,)).fetchone()[0]
        assert t.filter.text == "node=n1 used>10G"
        assert t.count is not None and t.count.n == want
        assert all(r["node"] == "n1" and r["used"] > 10 << 30 for r in t.rows)
        assert f"{want:,} rows" in screen_text(app)
        # esc in the prompt keeps the filter; ctrl+u starts over
        await burst(pilot, "/", "ctrl+u", *"node=n2", "enter")
        assert t.filter.text == "node=n2" and {r["node"] for r in t.rows} == {"n2"}


async def test_fleet_view_shows_a_live_watch_and_refreshes_with_it(fleet: Path) -> None:
    import time

    app = make(fleet, poll=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "live (watch)" not in screen_text(app)
        w = mirror.connect(fleet / "mirror.db")
        w.execute("UPDATE nodes SET watch_pid = 4242, watch_host = 'ops1', watch_state = "
                  "'following', watch_heartbeat = ? WHERE name = 'n1'", (time.time(),))
        w.close()
        for _ in range(40):
            await settle(pilot)
            if "live (watch)" in screen_text(app):
                break
        line = next(ln for ln in screen_text(app).splitlines() if ln.strip().startswith("n1"))
        assert "live (watch)" in line
        # a watch that stopped reporting is not shown as live
        w = mirror.connect(fleet / "mirror.db")
        w.execute("UPDATE nodes SET watch_heartbeat = ? WHERE name = 'n1'", (time.time() - 60,))
        w.close()
        for _ in range(40):
            await settle(pilot)
            if "live (watch)" not in screen_text(app):
                break
        assert "live (watch)" not in screen_text(app)


async def test_a_hostile_tenant_value_is_shown_as_text(fleet: Path) -> None:
    """Terminal escape sequences and Rich markup in a user property value (ZFS lets a tenant
    store any character): shown escaped, as text, in the table and the detail view."""
    conn = mirror.connect(fleet / "mirror.db")
    vol = conn.execute("SELECT name FROM datasets WHERE type='volume' AND node='n1' "
                       "ORDER BY name LIMIT 1").fetchone()[0]
    hostile = "\x1b[2J[/] [bold]evil\nline"
    conn.execute("UPDATE datasets SET tenant = ?, user_properties = ? WHERE node='n1' AND "
                 "name = ?", (hostile, '{"xfleet:note": "[red]x\\u001b[31m"}', vol))
    conn.close()
    app = make(fleet, start="vols")
    async with app.run_test(size=(220, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *vol.rsplit("/", 1)[1], "enter")
        await until(pilot, lambda: vol in [r["name"] for r in table(app).rows][:3],
                    f"the filter to show {vol} first")
        text = screen_text(app)
        assert "\\x1b[2J" in text and "\x1b" not in text, text  # (the column is narrow)
        app.push_screen(DetailView("n1", vol))
        await settle(pilot)
        text = screen_text(app)
        assert "\\x1b[2J[/] [bold]evil\\nline" in text and "\x1b" not in text, text
        assert "[red]x\\x1b[31m" in text, text


async def test_another_processs_sync_shows_without_a_key(fleet_at: tuple[Path, str]) -> None:
    """A sync by someone else (here: another connection, as another process would) shows in
    the open dashboard within a couple of seconds, at the app's own polling period, with no
    key pressed after it. PostgreSQL: the commit's NOTIFY; SQLite: data_version."""
    import asyncio

    from xfleet.ops.sync import sync
    from xfleet.sim import SimTransport

    fleet, at = fleet_at
    inv = inventory.load(fleet / "fleet.yaml")
    app = make(fleet, at, start="vols", poll=1.0)  # the app's default period (POLL_SECONDS)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"live-new", "enter")
        await settle(pilot)
        t = table(app)
        assert t.filter.text == "live-new" and t.rows == [], [r["name"] for r in t.rows]
        t_node = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
        t_node.run(["zfs", "create", "-s", "-V", "1G", "tank/live-new"])
        report = await asyncio.to_thread(sync, inv, at, ["n1"])
        assert report.ok, report.to_dict()
        await until(pilot, lambda: [r["name"] for r in t.rows] == ["tank/live-new"],
                    "the synced volume to show without a key press", timeout=10.0)
        assert "tank/live-new" in screen_text(app)
