"""User property values: whatever a node holds, the node stays syncable and the mirror holds
the values exactly (as exactly as ZFS can print them).

The parsers are tested on output captured from real OpenZFS 2.3 (tests/fixtures/real/, the
values of tools.hostile); the simulator is held to that output (parity); the whole sync,
full and incremental, runs on the simulator here and on real ZFS in
tests/lab/test_user_properties_real.py."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli, write_sim_inventory
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tools import hostile
from xfleet.core import zfs
from xfleet.core.errors import XfleetError
from xfleet.core.events import UNREADABLE, parse_events, parse_history
from xfleet.core.text import printable
from xfleet.core.zfs import (
    EFFECTIVE_SOURCES,
    OutputCut,
    ParseError,
    UserProperties,
    UserPropertyValue,
    parse_get_json,
    parse_raw_value,
)
from xfleet.fleet import inventory
from xfleet.fleet.inventory import Inventory
from xfleet.ops.sync import new_events, read_values, sync
from xfleet.remote.local import LocalTransport
from xfleet.sim import SimTransport

REAL = ROOT / "tests" / "fixtures" / "real"
TENANT = "xfleet:tenant"
PROPS = [TENANT, hostile.NOTE]


def real_text(name: str) -> str:
    return (REAL / name).read_bytes().decode("utf-8", "replace")


def lines(text: str, seed: int) -> list[str]:
    """The same JSON document laid out over many lines, as a stream of lines (what a
    transport yields), at a random indent."""
    indent = random.Random(seed).choice([None, 0, 1, 2, 4])
    return json.dumps(json.loads(text), indent=indent, ensure_ascii=seed % 2 == 0).splitlines()


# ---------------------------------------------------------------------------------------------
# parsers, on real output


H = f"tank/{hostile.ROOT}"


def test_real_hostile_values_parse_exactly() -> None:
    """Every value of tools.hostile as real ZFS printed it: exact, but for the emoji
    (ZFS's JSON printer drops characters beyond U+FFFF; hostile.shown)."""
    recs = list(parse_get_json([real_text("zfs_get_json_hostile.txt")]))
    got = {(r.name, r.property): (r.value, r.source) for r in recs}
    want = {(f"{H}/{leaf}", TENANT): (hostile.shown(v), "local")
            for leaf, v in hostile.VALUES.items()}
    want.update({(H, TENANT): ("plain", "local"), (H, hostile.NOTE): ("", "local"),
                 (f"{H}/tab@s1", hostile.NOTE): ("snap\tnote\n", "local"),
                 (f"{H}/zz-after-bad", TENANT): ("after", "local")})
    assert got == want
    assert got[(f"{H}/astral", TENANT)] == ("emoji  end", "local")


@pytest.mark.parametrize("seed", range(5))
def test_the_parser_reads_a_stream_of_lines_in_any_layout(seed: int) -> None:
    text = real_text("zfs_get_json_hostile.txt")
    assert list(parse_get_json(lines(text, seed))) == list(parse_get_json([text]))


def test_output_cut_at_a_value_that_is_not_utf8_names_the_dataset() -> None:
    """Real ZFS stops its JSON at the first byte that is not UTF-8 and exits 0: the datasets
    before are complete, the one named and all after it are missing."""
    got: list[UserPropertyValue] = []
    with pytest.raises(OutputCut) as exc:
        for rec in parse_get_json(real_text("zfs_get_json_cut.txt").splitlines()):
            got.append(rec)
    assert exc.value.name == f"{H}/bad"
    assert [r.name for r in got] == [H, H, f"{H}/astral"]


def test_raw_value_of_one_dataset_is_exact() -> None:
    assert parse_raw_value(real_text("zfs_get_raw_value.txt")) == ("local",
                                                                    hostile.BAD_VALUE_READ)
    assert parse_raw_value("inherited from tank/fs/tab\ta\tb\nc\n") == (
        "inherited from tank/fs/tab", "a\tb\nc")
    assert parse_raw_value("-\t-\n") is None


def test_a_missing_name_makes_zfs_get_j_print_nothing() -> None:
    text = real_text("zfs_get_json_missing.txt")
    assert text.startswith("exit=1\n--- stdout\n--- stderr\ncannot open 'tank/hostile/nope'")
    assert list(parse_get_json([])) == [] and list(parse_get_json(["", "\n"])) == []


@pytest.mark.parametrize("bad", [
    '{"datasets":{"a":{"properties":{"p:q":{"value":1}}}}}',
    '{"datasets":{"a":{"name":"a"}}}',
    '{"datasets":{"a":{"properties":{}}}} trailing',
    '{"datasets":{"a"',
    '[1, 2]',
])
def test_output_of_another_shape_is_a_parse_error(bad: str) -> None:
    with pytest.raises(ParseError):
        list(parse_get_json([bad]))


def test_real_events_with_hostile_values() -> None:
    """A value over several lines is read whole; one imitating an event's end and another
    event makes that event UNREADABLE, and the queue then does not vouch for the changes."""
    events = list(parse_events(real_text("zpool_events_hostile.txt").split("\n")))
    sets = {e.dsname: e.internal_str for e in events if e.internal_name == "set"}
    assert sets[f"{H}/tab"] == "xfleet:tenant=now\ttabbed\nand forged"
    assert sets[f"{H}/ctrl"] == f"xfleet:tenant={hostile.forged_history('lab1')}"
    # the event whose value imitates an end and another event's head is UNREADABLE; the
    # made-up event it starts takes the real event's tail (it only names a dataset to fetch
    # again), and the gap makes the sync catch up from the pool's history
    bad = [e for e in events if e.eid == UNREADABLE]
    assert [e.dsname for e in bad] == [f"{H}/cr"]
    readable = [e.eid for e in events if e.eid != UNREADABLE]
    assert readable == sorted(readable) and len(set(readable)) == len(readable)
    fresh, gap = new_events(readable[0], events[0].stamp, events)
    assert gap is not None and f"(on {H}/cr)" in gap
    clean = [e for e in events if e.eid != UNREADABLE]
    assert new_events(readable[0], events[0].stamp, clean)[1] is None


def test_real_history_with_hostile_values() -> None:
    """A record over several lines is one record; a made-up record inside a value, at a txg
    the pool has not reached, is not taken for real when a later record shows the txgs."""
    recs = list(parse_history(real_text("zpool_history_hostile.txt").split("\n"), "tank"))
    sets = [r for r in recs if r.op == "set" and r.dsname == f"{H}/tab"]
    assert sets[-1].detail == "xfleet:tenant=now\ttabbed"
    assert all(r.txg < 99999999 for r in recs[:-1])
    lines = real_text("zpool_history_hostile.txt").split("\n")
    later = "2026-12-05.03:59:59 [txg:999] snapshot tank/x@later (1)   [on lab1]"
    recs = list(parse_history([*lines, later], "tank"))
    assert all(r.txg < 99999999 for r in recs) and recs[-1].dsname == "tank/x@later"


def test_inheritance_is_resolved_like_zfs() -> None:
    up = UserProperties()
    for name, prop, value in [("tank/t", TENANT, "acme"), ("tank/t", "x:y", "1"),
                              ("tank/t/v", TENANT, "other"), ("tank/t/v@s", "x:y", "snap"),
                              ("tank", "x:y", "root")]:
        up.add(UserPropertyValue(name, prop, value, "local"))
    assert up.effective("tank") == {"x:y": "root"}
    assert up.effective("tank/t/w") == {TENANT: "acme", "x:y": "1"}
    assert up.effective("tank/t/v") == {TENANT: "other", "x:y": "1"}
    assert up.effective("tank/t/v@s") == {TENANT: "other", "x:y": "snap"}
    assert up.effective("tank/t/v@r") == {TENANT: "other", "x:y": "1"}
    assert up.effective("tank/t/v#b") == {}  # bookmarks have no user properties
    assert up.effective("other/x") == {} and len(up) == 4


def test_builders() -> None:
    argv = zfs.zfs_get_user_properties(PROPS, ["tank"], recursive=True)
    assert argv == ["env", "LC_ALL=C.UTF-8", "zfs", "get", "-j", "-p", "-s", "local,received",
                    "-t", "filesystem,volume,snapshot", "-r", "xfleet:tenant,xfleet:note",
                    "tank"]
    assert zfs.zfs_get_raw_value(TENANT, "tank/v@s") == [
        "zfs", "get", "-H", "-p", "-o", "source,value", TENANT, "tank/v@s"]
    with pytest.raises(ParseError):
        zfs.zfs_get_user_properties(["Bad"], ["tank"])


# ---------------------------------------------------------------------------------------------
# the simulator prints what real ZFS prints


def sim_node(tmp_path: Path, **sim: Any) -> tuple[Inventory, SimTransport]:
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 3, "volumes": 40, **sim}},
                               extra="    user_properties: [xfleet:tenant, xfleet:note]")
    inv = inventory.load(path)
    return inv, SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)


def store_hostile(t: SimTransport) -> None:
    for argv in hostile.commands("tank", sim=True):
        res = t.run(argv, check=False)
        assert res.ok, f"{argv}: exit {res.exit_status}: {res.stderr}"


def test_sim_prints_real_zfs_get_j_for_the_same_values(tmp_path: Path) -> None:
    """The same commands on the simulator print the same records as on real ZFS, in the
    same JSON shape."""
    _, t = sim_node(tmp_path)
    store_hostile(t)
    t.run(["zfs", "inherit", TENANT, f"{H}/bad"])  # as the capture did before this file
    out = t.run(zfs.zfs_get_user_properties(PROPS, [H], recursive=True)).stdout
    real = real_text("zfs_get_json_hostile.txt")  # of all of tank: only H has values
    assert list(parse_get_json([out])) == list(parse_get_json([real]))
    mine, theirs = json.loads(out)["datasets"], json.loads(real)["datasets"]
    assert mine[f"{H}/tab@s1"].keys() == theirs[f"{H}/tab@s1"].keys()
    assert mine[f"{H}/tab"]["type"] == theirs[f"{H}/tab"]["type"] == "VOLUME"


def test_sim_cuts_its_output_where_real_zfs_does(tmp_path: Path) -> None:
    _, t = sim_node(tmp_path)
    store_hostile(t)
    out = t.run(zfs.zfs_get_user_properties(PROPS, ["tank/hostile"], recursive=True)).stdout
    with pytest.raises(OutputCut) as exc:
        list(parse_get_json([out]))
    assert exc.value.name == "tank/hostile/bad"
    assert out.endswith('"value":"bad\n')  # as in zfs_get_json_cut.txt
    assert real_text("zfs_get_json_cut.txt").endswith('"value":"bad\n')
    real = list(parse_get_json(real_text("zfs_get_json_cut.txt").splitlines()[:0]))
    assert real == []
    missing = t.run(zfs.zfs_get_user_properties(PROPS, ["tank/hostile", "tank/nope"],
                                                sources=EFFECTIVE_SOURCES), check=False)
    assert (missing.stdout, missing.exit_status) == ("", 1), missing.stderr


# ---------------------------------------------------------------------------------------------
# sync, full and incremental, on the simulator


def mirrored(db: Path, prefix: str) -> dict[str, tuple[str | None, dict[str, str]]]:
    conn = sqlite3.connect(db)
    try:
        return {name: (tenant, json.loads(props) if props else {}) for name, tenant, props in
                conn.execute("SELECT name, tenant, user_properties FROM datasets WHERE "
                             "name = ? OR name LIKE ? OR name LIKE ? ORDER BY name",
                             (prefix, prefix + "/%", prefix + "@%"))}
    finally:
        conn.close()


def test_full_and_incremental_sync_mirror_every_hostile_value(tmp_path: Path) -> None:
    inv, t = sim_node(tmp_path)
    db = tmp_path / "mirror.db"
    assert sync(inv, db, full=True).ok
    store_hostile(t)
    want = hostile.expected("tank")
    full = sync(inv, db, full=True)
    assert full.ok, full.to_dict()
    assert mirrored(db, "tank/hostile") == want
    # the listing is 5 commands (with zpool status -j); the cut at tank/hostile/bad costs one
    # -H read per mirrored property (PROPS, and the identity and hosts ones every inventory
    # mirrors) and one zfs get -j for the datasets after it
    assert len(inv.user_properties) == len(PROPS) + 2
    assert full.nodes[0].commands == 5 + len(inv.user_properties) + 1, t.history[-12:]
    # incremental: values that imitate the change feeds, a changed value over lines, new
    # snapshots inheriting hostile values
    for argv in hostile.changes("n1"):
        t.run(argv)
    inc = sync(inv, db)
    assert inc.ok and inc.nodes[0].mode == "incremental", inc.to_dict()
    assert "could not be read whole (on tank/hostile/cr)" in (inc.nodes[0].gap or ""), inc
    assert mirrored(db, "tank/hostile") == hostile.expected_after_changes("n1")
    assert mirrored(db, "tank/victim") == {}
    fresh = tmp_path / "fresh.db"
    assert sync(inv, fresh, full=True).ok
    assert mirrored(fresh, "tank") == mirrored(db, "tank")  # incremental == full


# ---------------------------------------------------------------------------------------------
# any value at all, on the simulator (property-based)

# Text a user property can hold: any character but NUL, characters beyond U+FFFF, and the
# surrogate escapes (U+DC80..U+DCFF) of bytes that are not UTF-8: how Python reads such bytes
# (from a node, or from the command line). Other lone surrogates cannot come from bytes.
any_value = st.text(st.one_of(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"], codec=None),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)), max_size=60)


def as_mirrored(value: str) -> str:
    """What the mirror must hold for `value`: with a byte that is not UTF-8, ZFS's JSON stops
    and the -H read gives the exact value with U+FFFD for each such byte; otherwise the JSON
    value, without the characters beyond U+FFFF that ZFS's printer drops."""
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return hostile.shown(value)


@pytest.fixture(scope="module")
def synced_node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Inventory, SimTransport, Path]:
    tmp = tmp_path_factory.mktemp("anyvalue")
    inv, t = sim_node(tmp, volumes=3)
    db = tmp / "mirror.db"
    assert sync(inv, db, full=True).ok
    t.run(["zfs", "create", "-s", "-V", "8M", "tank/any"])
    t.run(["zfs", "snapshot", "tank/any@s"])
    return inv, t, db


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=any_value)
@example(value="x\"\n\nDec  5 2026 03:42:24.412000000\tsysevent.fs.zfs.history_event\n"
               "        eid = 0x1\n")
@example(value="\udcff")
@example(value="a\n        history_dsname = \"tank/t0000\"\nb")
def test_any_value_is_mirrored_by_incremental_and_full_syncs(
        synced_node: tuple[Inventory, SimTransport, Path], value: str) -> None:
    inv, t, db = synced_node
    t.run(["zfs", "set", f"{TENANT}={value}", "tank/any"])
    inc = sync(inv, db)
    assert inc.ok, inc.to_dict()
    want = as_mirrored(value)
    got = mirrored(db, "tank/any")
    assert got == {"tank/any": (want, {}), "tank/any@s": (want, {})}, inc.to_dict()
    fresh = db.with_name("fresh.db")
    fresh.unlink(missing_ok=True)
    assert sync(inv, fresh, full=True).ok
    assert mirrored(fresh, "tank/any") == got


# ---------------------------------------------------------------------------------------------
# shown on a terminal: a value is text, never escape sequences or markup


def test_printable_escapes_what_would_drive_a_terminal() -> None:
    assert printable("\x1b]0;title\x07\x1b[2J\x1b[31mred\nline\tcol\r\x7f\x9b") == (
        "\\x1b]0;title\\x07\\x1b[2J\\x1b[31mred\\nline\\tcol\\r\\x7f\\x9b")
    assert printable("evil\u202etxt.exe \u200b") == "evil\\u202etxt.exe \\u200b"
    assert printable("ünï € [bold]x[/] 😀") == "ünï € [bold]x[/] 😀"


def test_ls_shows_hostile_values_as_text(tmp_path: Path) -> None:
    """A tenant value with terminal escape sequences and Rich markup: `xfleet ls` neither
    writes the escapes to the terminal nor fails on the markup (it crashed on '[/]')."""
    inv, t = sim_node(tmp_path)
    value = "\x1b]0;pwned\x07\x1b[2J[/] [bold]x\nline"
    t.run(["zfs", "create", "-s", "-V", "8M", "-o", f"{TENANT}={value}", "tank/esc"])
    assert sync(inv, inv.mirror, full=True).ok
    res = run_cli("-i", str(inv.path), "ls", "--where", "name=tank/esc")
    assert res.code == 0 and "Traceback" not in res.err, res.err
    assert "\x1b" not in res.out and "\x07" not in res.out, repr(res.out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J[/] [bold]x\\nline" in res.out.replace("\n", ""), res.out
    shown = run_cli("-i", str(inv.path), "ls", "--json", "--where", "name=tank/esc")
    assert json.loads(shown.out)[0]["tenant"] == value  # JSON keeps the value exact


def test_a_zfs_without_json_output_is_said_plainly() -> None:
    """OpenZFS before 2.3 answers `zfs get -j` with its usage (exit 2): the sync says what the
    node lacks, not a usage text. The stderr below is the older zfs's own first line."""
    t = LocalTransport("old")
    old = ["sh", "-c", "echo \"invalid option 'j'\" >&2; echo usage: >&2; exit 2"]
    with pytest.raises(XfleetError) as exc:
        read_values(t, old, lambda _: None)
    assert "OpenZFS 2.3 or later" in exc.value.message and exc.value.where == "old"
