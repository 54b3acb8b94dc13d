"""The overlay and its store: changes persist in the state directory, shared by transports
and processes; a fresh base when the settings change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xfleet.sim import SimTransport

from .simkit import by_name, ok, sim


def test_state_persists_across_instances(tmp_path: Path) -> None:
    a = sim(100, seed=1, state_dir=tmp_path)
    b = sim(100, seed=1, state_dir=tmp_path)
    ok(a, "zfs", "create", "-V", "1G", "tank/from-a")
    assert "tank/from-a" in by_name(b)  # another process's view of the same node
    ok(b, "zfs", "destroy", "tank/from-a")
    assert "tank/from-a" not in by_name(a)
    assert (tmp_path / "sim-n1.sqlite").is_file()
    conn = sqlite3.connect(tmp_path / "sim-n1.sqlite")
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] < 10  # only the overlay
    other = sim(100, seed=1, node="n2", state_dir=tmp_path)
    assert "tank/from-a" not in by_name(other)
    ok(a, "zfs", "create", "tank/kept")
    changed = sim(101, seed=1, state_dir=tmp_path)  # other settings: a fresh base
    assert "tank/kept" not in by_name(changed)
    in_memory = sim(100, seed=1)
    assert "tank/kept" not in by_name(in_memory)


def test_concurrent_changes_from_two_transports_all_land(tmp_path: Path) -> None:
    import threading

    nodes = [sim(50, state_dir=tmp_path) for _ in range(2)]

    def work(t: SimTransport, prefix: str) -> None:
        for i in range(8):
            ok(t, "zfs", "create", "-s", "-V", "1G", f"tank/{prefix}{i}")
            ok(t, "zfs", "snapshot", f"tank/{prefix}{i}@s")

    threads = [threading.Thread(target=work, args=(t, p)) for t, p in zip(nodes, "ab",
                                                                         strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    names = set(by_name(sim(50, state_dir=tmp_path)))
    assert {f"tank/{p}{i}@s" for p in "ab" for i in range(8)} <= names


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    from xfleet.core.errors import TransportError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransportError, match="cannot open the simulator state"):
        sim(10, state_dir=blocker / "state")


def test_a_mutation_copies_only_what_it_changes_and_a_failed_one_changes_nothing() -> None:
    t = sim(50)
    for i in range(3):
        ok(t, "zfs", "create", "-s", "-V", "1G", f"tank/cow{i}")
    before = t.current_overlay()
    kept = before.records["tank/cow0"]
    ok(t, "zfs", "set", "compression=zstd", "tank/cow1")
    after = t.current_overlay()
    assert after is not before
    assert after.records["tank/cow0"] is kept  # shared, not copied: copy-on-write
    assert after.records["tank/cow1"] is not before.records["tank/cow1"]
    assert before.records["tank/cow1"].get("local", {}).get("compression") != "zstd"
    assert after.records["tank/cow1"]["local"]["compression"] == "zstd"
    # a command that fails half-way (the second snapshot's volume does not exist) leaves the
    # committed overlay untouched: the records it would have changed are the old objects
    res = t.run(["zfs", "snapshot", "tank/cow2@s", "tank/missing@s"], check=False)
    assert res.exit_status != 0, res.stderr
    assert t.current_overlay() is after
    assert "tank/cow2@s" not in after.records and after.records["tank/cow2"] is \
        before.records["tank/cow2"]
