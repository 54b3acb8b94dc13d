"""Lifecycle operations on a simulated fleet: batching (commands counted), refusals, the
mirror equal to a fresh full sync afterwards, and the CLI's confirmations and dry runs (the
journaled changes and their audit rows on both engines of the mirror)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import FIXTURES, run_cli, write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import RemoteCommandError, UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror import query, store
from xfleet.mirror.backend import Connection
from xfleet.ops import lifecycle
from xfleet.ops.sync import sync
from xfleet.remote.host import Host
from xfleet.sim import SimTransport

Fleet = tuple[inventory.Inventory, Path, SimTransport]


def make_fleet(tmp_path: Path, mirror_at: str | None = None) -> Fleet:
    """n1 (120 volumes and tank/app/db with snapshots a, b, c) and n2, synced into the mirror
    at `mirror_at` (an SQLite path or a PostgreSQL URL; default mirror.db)."""
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 120, "seed": 4},
                                                             "n2": {"volumes": 20, "seed": 5}})
    if mirror_at is not None:
        text = inv_path.read_text()
        assert "mirror: mirror.db\n" in text, text
        inv_path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "-o", "xfleet:tenant=acme", "tank/app/db"])
    t.run(["zfs", "snapshot", "tank/app/db@a"])
    t.run(["zfs", "snapshot", "tank/app/db@b"])
    t.run(["zfs", "snapshot", "tank/app/db@c"])
    assert sync(inv).ok
    return inv, inv_path, t


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> Fleet:
    """The same fleet on each engine of the mirror (SQLite, PostgreSQL)."""
    return make_fleet(tmp_path, mirror_at)


def _vols(conn: Connection, n: int, node: str = "n1") -> list[lifecycle.Target]:
    rows = query.ls(conn, query.Selection(nodes=[node], types=["volume"], where=["origin=none"],
                                          pattern="tank/t*", limit=n, columns=query.COLUMNS))
    return lifecycle.targets_from_rows(rows)


def _state(conn: Connection) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in conn.execute(
        "SELECT node, name, type, guid, origin, volsize, compression, refreservation, "
        "user_properties, tenant FROM datasets"))


def _equal_to_full_sync(inv: inventory.Inventory) -> None:
    conn = mirror.connect(inv.mirror)
    before = _state(conn)
    assert sync(inv, full=True).ok
    assert _state(conn) == before


def test_snapshot_is_one_command_per_pool_whatever_the_count(fleet_at: Fleet) -> None:
    inv, _, _ = fleet_at
    conn = mirror.connect(inv.mirror)
    counts = []
    for n, snap in ((5, "s5"), (60, "s60")):
        targets = _vols(conn, n)
        assert len(targets) == n
        plan = lifecycle.plan_snapshot(conn, targets, snap)
        assert len(plan.commands) == 1
        assert plan.commands[0].argv[:2] == ["zfs", "snapshot"]
        assert len(plan.commands[0].argv) == 2 + n
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
            out = lifecycle.execute(inv, inv.mirror, plan, conns)
        assert out.ok
        counts.append(out.commands)
        assert conn.execute("SELECT count(*) FROM datasets WHERE glob(?, name)",
                            (f"*@{snap}",)).fetchone()[0] == n
    # the snapshot, and the mirror's batched re-fetch (the listing, the user properties)
    assert counts[0] == counts[1] == 3
    again = lifecycle.plan_snapshot(conn, _vols(conn, 60), "s60")
    assert again.commands == [] and len(again.skipped) == 60  # idempotent
    _equal_to_full_sync(inv)


def test_set_and_resize_batch_and_validate(fleet: Fleet) -> None:
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    targets = _vols(conn, 40)
    plan = lifecycle.plan_set(conn, targets, {"compression": "zstd-3", "xfleet:tier": "free"})
    assert len(plan.commands) == 1
    assert plan.commands[0].argv[:4] == ["zfs", "set", "compression=zstd-3", "xfleet:tier=free"]
    db = lifecycle.resolve(conn, ["tank/app/db"])
    grow = lifecycle.plan_resize(conn, [*db, *targets[:3]], "+16M")
    assert all(c.argv[2].startswith("volsize=") for c in grow.commands)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert lifecycle.execute(inv, inv.mirror, plan, conns).ok
        assert lifecycle.execute(inv, inv.mirror, grow, conns).ok
    assert conn.execute("SELECT count(*) FROM datasets WHERE node = 'n1' AND "
                        "compression = 'zstd-3'").fetchone()[0] >= 40
    # a sparse volume's resize posts no event: the mirror learns it from the re-fetch
    assert conn.execute("SELECT volsize FROM datasets WHERE name = 'tank/app/db'"
                        ).fetchone()[0] == (1 << 30) + (16 << 20)
    _equal_to_full_sync(inv)


@pytest.mark.parametrize("props,message", [
    ({"compresion": "lz4"}, "unknown property 'compresion'"),
    ({"used": "1G"}, "read-only"),
    ({"volblocksize": "8K"}, "read-only"),
    ({"compression": "zstd-42"}, "not a valid value"),
    ({"sync": "maybe"}, "not a valid value"),
    ({"volsize": "2G"}, "resize"),
    ({"quota": "1G"}, "does not apply to a volume"),
    ({"Bad:Prop": "x"}, "invalid user property"),
])
def test_property_validation(props: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        lifecycle.validate_properties(props, types=("volume",))
    assert message in str(exc.value)


def test_property_validation_accepts_known_shapes() -> None:
    ok = lifecycle.validate_properties(
        {"compression": "zstd-fast-10", "refreservation": "none", "readonly": True,
         "xfleet:tenant": "acme", "copies": 2}, types=("volume",))
    assert ok == {"compression": "zstd-fast-10", "refreservation": "none", "readonly": "on",
                  "xfleet:tenant": "acme", "copies": "2"}


def test_resize_refusals(fleet: Fleet) -> None:
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    db = lifecycle.resolve(conn, ["tank/app/db"])
    with pytest.raises(lifecycle.LifecycleError, match="shrinking is refused"):
        lifecycle.plan_resize(conn, db, "512M")
    with pytest.raises(lifecycle.LifecycleError, match="shrinking"):
        lifecycle.plan_resize(conn, db, "-1G")
    with pytest.raises(lifecycle.LifecycleError, match="multiple of its volblocksize"):
        lifecycle.plan_resize(conn, db, "+1000")
    fs = lifecycle.resolve(conn, ["tank/app"])
    with pytest.raises(lifecycle.LifecycleError, match="not a volume"):
        lifecycle.plan_resize(conn, fs, "+1G")
    assert lifecycle.plan_resize(conn, db, "1G").commands == []  # the same size: nothing


def test_clone_pinned_and_new_branch_point(fleet: Fleet) -> None:
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    (db,) = lifecycle.resolve(conn, ["tank/app/db"])
    pinned = lifecycle.plan_clone(conn, db, "tank/app/db-qa", snapshot="b",
                                  properties={"xfleet:env": "qa"})
    assert [c.argv for c in pinned.commands] == [
        ["zfs", "clone", "-o", "xfleet:env=qa", "tank/app/db@b", "tank/app/db-qa"]]
    fresh = lifecycle.plan_clone(conn, db, "tank/app/db-dev", stamp="20260501-000000")
    assert [c.argv for c in fresh.commands] == [
        ["zfs", "snapshot", "tank/app/db@branch-20260501-000000"],
        ["zfs", "clone", "tank/app/db@branch-20260501-000000", "tank/app/db-dev"]]
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert lifecycle.execute(inv, inv.mirror, pinned, conns).ok
        assert lifecycle.execute(inv, inv.mirror, fresh, conns).ok
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/app/db-qa'"
                        ).fetchone()[0] == "tank/app/db@b"
    again = lifecycle.plan_clone(conn, db, "tank/app/db-qa", snapshot="b")
    assert again.commands == [] and "exists already as a clone" in again.skipped[0][2]
    with pytest.raises(lifecycle.LifecycleError, match="exists already"):
        lifecycle.plan_clone(conn, db, "tank/app/db-qa", snapshot="a")
    with pytest.raises(UsageError, match="not in the mirror"):
        lifecycle.plan_clone(conn, db, "tank/app/x", snapshot="nope")
    with pytest.raises(lifecycle.LifecycleError, match="parent"):
        lifecycle.plan_clone(conn, db, "tank/nothere/x", snapshot="a")
    _equal_to_full_sync(inv)


class FakeHolds:
    def __init__(self, held: dict[str, int]):
        self.held = held
        self.asked: list[tuple[str, list[str]]] = []

    def userrefs(self, node: str, roots: list[str]) -> dict[str, int]:
        self.asked.append((node, roots))
        return self.held

    def tags(self, node: str, snaps: list[str]) -> dict[str, list[str]]:
        return {"keep": snaps}


def test_destroy_refusals_and_clone_handling(fleet_at: Fleet) -> None:
    inv, _, t = fleet_at
    t.run(["zfs", "clone", "tank/app/db@b", "tank/app/branch"])
    assert sync(inv, nodes=["n1"]).ok
    conn = mirror.connect(inv.mirror)
    db = lifecycle.resolve(conn, ["tank/app/db"])
    with pytest.raises(lifecycle.LifecycleError) as exc:
        lifecycle.plan_destroy(conn, db)
    assert "tank/app/branch" in exc.value.message and "--clones" in (exc.value.hint or "")
    with pytest.raises(lifecycle.LifecycleError, match="tank/app/branch"):
        lifecycle.plan_destroy(conn, lifecycle.resolve(conn, ["tank/app/db@b"]))
    # -R: the clone goes too, and is listed
    gone = lifecycle.plan_destroy(conn, db, clones="destroy")
    assert [c.argv for c in gone.commands] == [["zfs", "destroy", "-r", "-R", "tank/app/db"]]
    assert ("n1", "tank/app/branch", "volume") in gone.destroyed
    # promote: the clone keeps the snapshots up to its branch point
    promote = lifecycle.plan_destroy(conn, db, clones="promote")
    assert [c.argv for c in promote.commands] == [["zfs", "promote", "tank/app/branch"],
                                                  ["zfs", "destroy", "-r", "tank/app/db"]]
    destroyed = {n for _, n, _ in promote.destroyed}
    assert "tank/app/db@c" in destroyed and "tank/app/db@a" not in destroyed
    # held snapshots are refused unless released
    holds = FakeHolds({"tank/app/db@a": 1})
    with pytest.raises(lifecycle.LifecycleError, match="held snapshot"):
        lifecycle.plan_destroy(conn, db, clones="destroy", holds=holds)
    released = lifecycle.plan_destroy(conn, db, clones="destroy", release=True, holds=holds)
    assert released.commands[0].argv == ["zfs", "release", "keep", "tank/app/db@a"]
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert lifecycle.execute(inv, inv.mirror, promote, conns).ok
    assert conn.execute("SELECT count(*) FROM datasets WHERE glob('tank/app/db*', name)"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/app/branch'"
                        ).fetchone()[0] is None
    assert conn.execute("SELECT count(*) FROM datasets WHERE glob('tank/app/branch@*', name)"
                        ).fetchone()[0] == 2  # a and b moved to the promoted clone
    log = conn.execute("SELECT op, argv, ok, state FROM lifecycle_log ORDER BY id").fetchall()
    assert [tuple(x) for x in log] == [
        ("destroy", '["zfs", "promote", "tank/app/branch"]', 1, "done"),
        ("destroy", '["zfs", "destroy", "-r", "tank/app/db"]', 1, "done")], log
    _equal_to_full_sync(inv)


def test_destroying_an_origin_with_its_clone_destroys_the_clone_first(fleet: Fleet) -> None:
    inv, _, t = fleet
    t.run(["zfs", "clone", "tank/app/db@b", "tank/app/branch"])
    t.run(["zfs", "clone", "tank/app/db@b", "tank/app/zz-branch"])  # sorts after the origin
    assert sync(inv, nodes=["n1"]).ok
    conn = mirror.connect(inv.mirror)
    both = lifecycle.resolve(conn, ["tank/app/db", "tank/app/branch", "tank/app/zz-branch"])
    plan = lifecycle.plan_destroy(conn, both)
    order = [c.argv[-1] for c in plan.commands]
    assert order.index("tank/app/db") == 2, order  # ZFS refuses an origin with clones
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        out = lifecycle.execute(inv, inv.mirror, plan, conns)
    assert out.ok, out.to_dict()
    assert conn.execute("SELECT count(*) FROM datasets WHERE name GLOB 'tank/app/*'"
                        ).fetchone()[0] == 0
    _equal_to_full_sync(inv)


def test_a_failed_command_says_what_zfs_said_first_not_its_last_line() -> None:
    # the real error output of `zfs destroy -r` of an origin (tests/fixtures/real)
    text = (FIXTURES / "real" / "zfs_errors.txt").read_text()
    stderr = text.split("### zfs destroy -r tank/vols/tmpl\nexit=1\n", 1)[1].split("###")[0]
    err = RemoteCommandError("n1", ["zfs", "destroy", "-r", "tank/vols/tmpl"], 1, stderr)
    assert err.message.startswith("zfs exited with status 1: cannot destroy 'tank/vols/tmpl': "
                                  "volume has dependent clones / use '-R' to destroy the "
                                  "following datasets: / tank/vols/branch-1.1"), err.message
    assert err.message.endswith("(+2 more lines)")


def test_destroy_retired_move_source_and_active_move_refused(fleet: Fleet) -> None:
    inv, _, t = fleet
    t.run(["zfs", "rename", "tank/app/db", "tank/app/db.xfleet-moved-7"])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/app/moving"])
    assert sync(inv, nodes=["n1"]).ok
    conn = mirror.connect(inv.mirror)
    now = 0.0
    conn.execute("INSERT INTO moves (volume, source_node, target_node, target_volume, state, "
                 "created_at, updated_at) VALUES ('tank/app/moving', 'n1', 'n2', "
                 "'tank/app/moving', 'catchup', ?, ?)", (now, now))
    with pytest.raises(lifecycle.LifecycleError, match="retired move source"):
        lifecycle.plan_destroy(conn, lifecycle.resolve(conn, ["tank/app/db.xfleet-moved-7"]))
    assert lifecycle.plan_destroy(conn, lifecycle.resolve(
        conn, ["tank/app/db.xfleet-moved-7"]), release=True).commands
    with pytest.raises(lifecycle.LifecycleError, match="in move"):
        lifecycle.plan_destroy(conn, lifecycle.resolve(conn, ["tank/app/moving"]))


def test_destroy_snapshots_of_one_volume_in_one_command(fleet: Fleet) -> None:
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    snaps = lifecycle.resolve(conn, ["tank/app/db@a", "tank/app/db@c"])
    many = _vols(conn, 30)
    plan = lifecycle.plan_snapshot(conn, many, "tmp")
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert lifecycle.execute(inv, inv.mirror, plan, conns).ok
        d = lifecycle.plan_destroy(conn, snaps, holds=lifecycle.RemoteHolds(conns))
        assert [c.argv for c in d.commands] == [["zfs", "destroy", "tank/app/db@a,c"]]
        assert lifecycle.execute(inv, inv.mirror, d, conns).ok
        tmp = lifecycle.resolve(conn, [f"{v.name}@tmp" for v in many], "n1")
        d2 = lifecycle.plan_destroy(conn, tmp, holds=lifecycle.RemoteHolds(conns))
        assert len(d2.commands) == 30  # one per volume: `zfs destroy` takes one dataset
        out = lifecycle.execute(inv, inv.mirror, d2, conns)
        assert out.ok and out.commands == 32  # + one batched re-fetch (listing, properties)
    assert [r[0] for r in conn.execute("SELECT name FROM datasets WHERE name GLOB "
                                       "'tank/app/db@*'")] == ["tank/app/db@b"]
    _equal_to_full_sync(inv)


def test_cli_destroy_shows_and_asks_and_dry_run_changes_nothing(fleet: Fleet) -> None:
    inv, inv_path, _ = fleet
    r = run_cli("-i", str(inv_path), "destroy", "tank/app/db", "--dry-run")
    assert r.code == 0, r.err
    assert "tank/app/db@b" in r.out and "n1: zfs destroy -r tank/app/db" in r.out
    r = run_cli("-i", str(inv_path), "destroy", "tank/app/db")
    assert r.code == 2 and "without confirmation" in r.err and "--yes" in r.err
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT count(*) FROM datasets WHERE name = 'tank/app/db'"
                        ).fetchone()[0] == 1
    r = run_cli("-i", str(inv_path), "destroy", "tank/app/db", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["ok"] is True
    assert conn.execute("SELECT count(*) FROM datasets WHERE name GLOB 'tank/app/db*'"
                        ).fetchone()[0] == 0


def test_cli_set_on_many_datasets_asks_first(fleet: Fleet) -> None:
    inv, inv_path, _ = fleet
    conn = mirror.connect(inv.mirror)
    many = [v.name for v in _vols(conn, 3)]

    def compressions() -> list[str | None]:
        return [conn.execute("SELECT compression FROM datasets WHERE node = 'n1' AND name = ?",
                             (n,)).fetchone()[0] for n in many]

    before = compressions()
    r = run_cli("-i", str(inv_path), "set", "compression=zle", *many, "--node", "n1")
    assert r.code == 2 and "refusing to change many datasets without confirmation" in r.err
    assert compressions() == before
    r = run_cli("-i", str(inv_path), "set", "compression=zle", *many, "--node", "n1", "--yes")
    assert r.code == 0, r.err
    assert compressions() == ["zle"] * 3


def test_cli_snapshot_set_resize_clone(fleet: Fleet) -> None:
    inv, inv_path, _ = fleet
    r = run_cli("-i", str(inv_path), "snapshot", "--tenant", "acme", "--name", "n1", "--json",
                "--dry-run")
    assert r.code == 0, r.err
    assert r.json()["commands"][0]["argv"] == ["zfs", "snapshot", "tank/app/db@n1"]
    r = run_cli("-i", str(inv_path), "snapshot", "--tenant", "acme", "--name", "n1")
    assert r.code == 0, r.err
    r = run_cli("-i", str(inv_path), "snapshot", "--name", "x")
    assert r.code == 2 and "nothing selected" in r.err
    r = run_cli("-i", str(inv_path), "set", "compression=bogus", "tank/app/db")
    assert r.code == 2 and "not a valid value for compression" in r.err
    r = run_cli("-i", str(inv_path), "set", "compression=zstd", "tank/app/db")
    assert r.code == 0, r.err
    r = run_cli("-i", str(inv_path), "resize", "tank/app/db", "--size", "512M")
    assert r.code != 0 and "shrinking is refused" in r.err
    r = run_cli("-i", str(inv_path), "resize", "tank/app/db", "--size", "2G")
    assert r.code == 0, r.err
    r = run_cli("-i", str(inv_path), "clone", "tank/app/db@n1", "tank/app/db-n1")
    assert r.code == 0, r.err
    conn = mirror.connect(inv.mirror)
    row = conn.execute("SELECT compression, volsize FROM datasets WHERE name = 'tank/app/db'"
                       ).fetchone()
    assert tuple(row) == ("zstd", 2 << 30)
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/app/db-n1'"
                        ).fetchone()[0] == "tank/app/db@n1"
    log = conn.execute("SELECT op, ok FROM lifecycle_log ORDER BY id").fetchall()
    assert [tuple(x) for x in log] == [("snapshot", 1), ("set", 1), ("resize", 1),
                                       ("clone", 1)]
    for cmd in ("snapshot", "clone", "destroy", "set", "resize"):
        r = run_cli(cmd, "--help")
        assert r.code == 0 and "Example" in r.out


def test_cli_changes_are_audited_with_their_operator(fleet_at: Fleet) -> None:
    """`XFLEET_OPERATOR=alice xfleet --reason INC-42 snapshot|set|destroy`: each command's
    lifecycle_log row says what ran, that it succeeded, who ran it and why."""
    inv, inv_path, t = fleet_at
    i, env = str(inv_path), {"XFLEET_OPERATOR": "alice"}
    for args in (("snapshot", "tank/app/db", "--name", "n1"),
                 ("set", "compression=zle", "tank/app/db"),
                 ("destroy", "tank/app/db@a", "--yes")):
        r = run_cli("-i", i, "--reason", "INC-42", *args, env=env)
        assert r.code == 0, f"xfleet {' '.join(args)}: exit {r.code}\n{r.out}\n{r.err}"
    r = run_cli("-i", i, "snapshot", "tank/app/db", "--name", "n2")  # no reason given
    assert r.code == 0, f"xfleet snapshot: exit {r.code}\n{r.err}"
    conn = mirror.connect(inv.mirror)
    log = [tuple(x) for x in conn.execute(
        "SELECT op, argv, ok, state, operator, operator_reason FROM lifecycle_log ORDER BY id")]
    me = log[-1][4]
    assert log == [
        ("snapshot", '["zfs", "snapshot", "tank/app/db@n1"]', 1, "done", "alice", "INC-42"),
        ("set", '["zfs", "set", "compression=zle", "tank/app/db"]', 1, "done", "alice",
         "INC-42"),
        ("destroy", '["zfs", "destroy", "tank/app/db@a"]', 1, "done", "alice", "INC-42"),
        ("snapshot", '["zfs", "snapshot", "tank/app/db@n2"]', 1, "done", me, None)], log
    assert me != "alice" and "@" in me  # user@host without XFLEET_OPERATOR
    snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1",
                   "tank/app/db"]).stdout.split()
    assert snaps == ["tank/app/db@b", "tank/app/db@c", "tank/app/db@n1", "tank/app/db@n2"]
    assert conn.execute("SELECT compression FROM datasets WHERE name = 'tank/app/db'"
                        ).fetchone()[0] == "zle"


class FakeLzc:
    """Stands in for OpenZFS's `libzfs_core` module: records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str) -> object:
        if not name.startswith("lzc_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def last(self) -> tuple[str, tuple[object, ...]]:
        """The latest call (a method: mypy must not narrow it from an earlier assert)."""
        return self.calls[-1]


def test_libzfs_core_is_used_only_on_local_nodes_when_importable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    local = Host("me", kind="local")
    ssh = Host("far", kind="ssh", address="10.0.0.1")
    monkeypatch.setitem(sys.modules, "libzfs_core", None)  # not installed: import fails
    assert lifecycle.local_lzc(local) is None
    fake = FakeLzc()
    monkeypatch.setitem(sys.modules, "libzfs_core", fake)
    assert lifecycle.local_lzc(local) is fake
    assert lifecycle.local_lzc(ssh) is None  # over SSH the node's zfs command it is


def test_lzc_maps_the_batched_commands_and_declines_the_rest() -> None:
    fake = FakeLzc()
    names = [f"tank/v{i}@s" for i in range(50)]
    assert lifecycle.lzc_run(fake, ["zfs", "snapshot", "-o", "xfleet:why=x", *names], "n")
    assert fake.calls == [("lzc_snapshot", ([n.encode() for n in names],
                                            {b"xfleet:why": b"x"}))]  # one atomic call
    assert lifecycle.lzc_run(fake, ["zfs", "destroy", "tank/v@a,b"], "n")
    assert fake.last() == ("lzc_destroy_snaps", ([b"tank/v@a", b"tank/v@b"], False))
    assert lifecycle.lzc_run(fake, ["zfs", "clone", "tank/v@a", "tank/w"], "n")
    assert fake.last() == ("lzc_clone", (b"tank/w", b"tank/v@a", {}))
    assert lifecycle.lzc_run(fake, ["zfs", "release", "keep", "tank/v@a"], "n")
    assert fake.last() == ("lzc_release", ({b"tank/v@a": [b"keep"]},))
    assert lifecycle.lzc_run(fake, ["zfs", "promote", "tank/w"], "n")
    before = len(fake.calls)
    # no exact equivalent: left to the command line
    assert not lifecycle.lzc_run(fake, ["zfs", "destroy", "-r", "tank/v"], "n")
    assert not lifecycle.lzc_run(fake, ["zfs", "destroy", "-R", "tank/v@a"], "n")
    assert not lifecycle.lzc_run(fake, ["zfs", "clone", "-o", "compression=zstd", "tank/v@a",
                                        "tank/w"], "n")
    assert not lifecycle.lzc_run(fake, ["zfs", "set", "compression=zstd", "tank/v"], "n")
    assert len(fake.calls) == before


def test_lzc_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    class LzcError(RuntimeError):  # like pyzfs's: the errors of the batch in .errors
        errors: list[OSError]

    class Failing:
        def lzc_snapshot(self, snaps: list[bytes], props: dict[bytes, bytes]) -> None:
            err = LzcError("snapshot failure")
            err.errors = [OSError(17, "File exists")]
            raise err

    with pytest.raises(lifecycle.LifecycleError, match="libzfs_core snapshot failed: .*exists"):
        lifecycle.lzc_run(Failing(), ["zfs", "snapshot", "tank/v@s"], "n1")


def test_execute_routes_changes_through_libzfs_core(fleet: Fleet,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    inv, _, t = fleet
    fake = FakeLzc()

    def on_the_sim(host: Host) -> object:
        # as if n1 were a local node with pyzfs (the fake only records: nothing is created)
        return fake if host.name == "n1" else None

    monkeypatch.setattr(lifecycle, "local_lzc", on_the_sim)
    conn = mirror.connect(inv.mirror)
    targets = _vols(conn, 20)
    plan = lifecycle.plan_snapshot(conn, targets, "lzc")
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        out = lifecycle.execute(inv, inv.mirror, plan, conns)
    (n1,) = out.nodes
    assert n1.backend == "libzfs_core" and n1.lzc_calls == 1
    assert n1.commands == 2  # only the mirror's re-fetch forked zfs commands (list, get)
    assert [c[0] for c in fake.calls] == ["lzc_snapshot"]
    assert len(cast("list[bytes]", fake.calls[0][1][0])) == 20
    assert [tuple(r) for r in conn.execute("SELECT via FROM lifecycle_log")] == [
        ("libzfs_core",)]


class _MirrorTakenAfterSnapshot(SimTransport):
    """A node whose `zfs snapshot` is followed by another writer taking the mirror's write
    lock (and keeping it): the change is made, and the mirror cannot record it."""

    def __init__(self, host: Any, state_dir: Path, db: Path):
        super().__init__(host, state_dir=state_dir)
        self.db = db
        self.holder: Connection | None = None

    def run(self, argv: Any, **kw: Any) -> Any:
        res = super().run(argv, **kw)
        if list(argv[:2]) == ["zfs", "snapshot"] and self.holder is None:
            self.holder = sqlite3.connect(self.db, isolation_level=None,
                                          check_same_thread=False)
            self.holder.execute("BEGIN IMMEDIATE")
        return res


def test_a_change_the_mirror_cannot_record_is_reported_as_done_and_unrecorded(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal before acting, reconcile after: a snapshot made on the node is never reported
    as failed because the mirror was busy; the result says what ran and what was not recorded,
    the journal row stays 'started', and a sync brings the mirror up to date."""
    inv, _, _ = fleet
    monkeypatch.setattr(store, "WRITE_PATIENCE", 1.0)  # the other writer keeps the lock
    conn = mirror.connect(inv.mirror)
    plan = lifecycle.plan_snapshot(conn, lifecycle.resolve(conn, ["tank/app/db"]), "busy")
    conn.close()
    node = _MirrorTakenAfterSnapshot(inv.hosts["n1"], inv.state_dir, Path(str(inv.mirror)))
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        conns.use("n1", node)
        out = lifecycle.execute(inv, inv.mirror, plan, conns)
    assert node.holder is not None
    node.holder.execute("ROLLBACK")
    node.holder.close()
    n1 = out.nodes[0]
    assert n1.ok and n1.error is None and n1.done == ["n1: zfs snapshot tank/app/db@busy"], \
        out.to_dict()
    assert len(n1.unrecorded) == 2, n1.unrecorded
    assert n1.unrecorded[0].startswith("n1: zfs snapshot tank/app/db@busy: done on n1, but "
                                       "the mirror could not record it")
    assert "stays 'started'" in n1.unrecorded[0]
    assert "xfleet sync --node n1" in n1.unrecorded[1]
    assert node.run(["zfs", "list", "-H", "-o", "name", "tank/app/db@busy"]).ok  # it was made
    conn = mirror.connect(inv.mirror)
    try:
        assert [r[0] for r in conn.execute(
            "SELECT state FROM lifecycle_log WHERE argv LIKE '%@busy%'")] == ["started"]
        assert sync(inv, nodes=["n1"]).ok
        assert conn.execute("SELECT count(*) FROM datasets WHERE name = 'tank/app/db@busy'"
                            ).fetchone()[0] == 1
    finally:
        conn.close()
