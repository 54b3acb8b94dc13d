"""A round's remote commands grow with the volumes that changed, never with the volumes a policy
replicates.

- On a node of 100,000 generated volumes, all replicated: after 100 of them were written and
  snapshotted, a round sends exactly those 100 streams, with as many remote commands as the same
  round on a node of 1,000.
- After the first round, CHANGED of N volumes written and snapshotted are CHANGED streams, with
  as many commands for N as for N/5 (small N: every stream of the first round is real).

On the 100k node, a first round of 100k full streams would take hours on the simulator. The
policy first takes only the volumes that will change (a real first round of full sends). Then
it takes them all, and the other replicas are seeded in the mirror as a finished first round
leaves them: idle, with their cursor at their volume's newest snapshot."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import write_sim_inventory

from unit.ops.replicate.conftest import policies, rep_fleet, run_round
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.replicate.round import ensure
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

CHANGED = 20
POLICY = policies("""\
policies:
  - name: rep
    match: {name: "tank/rep/*"}
    schedule: {every: 15m}
    keep: {frequently: 1}
    replicate: [{node: n2, pool: tank, rpo: 1h}]
""")
# the generated volumes (tank/tNNNN/vol-NNNNNN, numbered across the node) of n1, copied under
# tank/copies on n2 (which has a generated tank/t0000/vol-000000 of its own)
BY_NAME = """\
policies:
  - name: rep
    match: {{node: n1, name: "tank/t*/vol-*{suffix}"}}
    schedule: {{every: 15m}}
    keep: {{frequently: 1}}
    replicate: [{{node: n2, pool: tank, rpo: 1h, root: tank/copies}}]
"""
# the cursor a finished first round leaves: the source volume's newest snapshot
SEED = """UPDATE replicas SET state = 'idle', rounds = 1, (cursor, cursor_guid, cursor_txg,
    as_of) = (SELECT substr(s.name, length(replicas.volume) + 2), s.guid, s.createtxg,
    s.creation FROM datasets s WHERE s.node = replicas.source_node AND s.name >=
    replicas.volume || '@' AND s.name < replicas.volume || 'A' AND s.type = 'snapshot'
    ORDER BY s.createtxg DESC LIMIT 1) WHERE state = 'new'"""


def _round_after_100_changed(tmp_path: Path, volumes: int, suffix: str) -> dict[str, Any]:
    """The round after the volumes named *`suffix` (1 in 10 or 1 in 1,000 of the node's
    `volumes`: 100) changed; every volume of the node replicated."""
    tmp_path.mkdir()
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"volumes": volumes, "seed": 4},
        "n2": {"volumes": 1, "seed": 5, "pool_size": "10P"}}))
    assert sync(inv).ok
    first = run_round(inv, policies(BY_NAME.format(suffix=suffix)))
    ours = sorted(s["volume"] for s in first.sent)
    # generated volumes without a snapshot have nothing to send yet
    assert first.failed == [] and 90 <= len(ours) <= 100, (len(ours), first.failed[:3])
    everything = policies(BY_NAME.format(suffix=""))
    conn = mirror.connect(inv.mirror)
    try:
        added = ensure(conn, everything, inv)  # the round's own step 1: every volume's row
    finally:
        conn.close()
    db = sqlite3.connect(tmp_path / "mirror.db")
    try:
        with db:
            db.execute(SEED)
        seeded = db.execute("SELECT count(*) FROM replicas WHERE rounds = 1 AND cursor IS NOT "
                            "NULL").fetchone()[0]
    finally:
        db.close()
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    for v in ours:
        t.write(v, 1 << 20)
    t.run(["zfs", "snapshot", *(f"{v}@changed" for v in ours)])
    assert sync(inv).ok
    res = run_round(inv, everything)
    assert res.failed == [], res.failed[:3]
    assert sorted(s["volume"] for s in res.sent) == ours
    assert {(s["how"], s["snapshot"]) for s in res.sent} == {("incremental", "changed")}
    return {"replicas": res.replicas, "seeded": seeded, "added": added + res.added, "due": res.due,
            "streams": len(res.sent), "commands": res.commands, "first": first.replicas}


def test_a_round_after_100_changed_of_100k_sends_100_streams(tmp_path: Path) -> None:
    big = _round_after_100_changed(tmp_path / "big", 100_000, "000")
    small = _round_after_100_changed(tmp_path / "small", 1_000, "0")
    assert big["replicas"] == 100_000 and small["replicas"] == 1_000
    # seeded: every replica whose volume has a snapshot (~8% of the generated ones have none:
    # nothing to send, in this round or any)
    assert big["first"] + big["added"] == 100_000 and big["seeded"] >= 90_000
    assert big["due"] == big["streams"] and small["due"] == small["streams"]
    # 100 streams each way (a few generated volumes have no snapshot: 95 and 94 of 100)
    assert 90 <= big["streams"] <= 100 and 90 <= small["streams"] <= 100
    # per stream: the target's state, the send and the receive, the state again; per round:
    # one cursor command per node pair and the syncs of the two nodes. The same per-stream and
    # per-round costs on both nodes: nothing grows with the 100,000
    fixed = {n["commands"] - 4 * n["streams"] for n in (big, small)}
    assert len(fixed) == 1 and 0 < fixed.pop() <= 20, (big, small)
    print(f"\n  a round after 100 changed volumes: {big['streams']} streams, "
          f"{big['commands']} remote commands on a node of 100,000 replicated volumes; "
          f"{small['streams']} streams, {small['commands']} commands on a node of 1,000")


def _round_after_changes(tmp_path: Path, volumes: int) -> tuple[int, int, list[str]]:
    """(streams, remote commands, the volumes sent) of the round after CHANGED of `volumes`
    replicated volumes changed."""
    inv, t, vols = rep_fleet(tmp_path, volumes)
    first = run_round(inv, POLICY)
    assert (len(first.sent), first.failed) == (volumes, [])
    changed = vols[::volumes // CHANGED][:CHANGED]
    for v in changed:
        t.write(v, 1 << 20)
    t.run(["zfs", "snapshot", *(f"{v}@r2" for v in changed)])
    assert sync(inv).ok
    res = run_round(inv, POLICY)
    assert res.failed == [] and res.replicas == volumes and res.due == CHANGED
    assert all(s["how"] == "incremental" and s["snapshot"] == "r2" for s in res.sent)
    return len(res.sent), res.commands, sorted(s["volume"] for s in res.sent)


def test_round_commands_grow_with_the_changes_not_the_volumes(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    big = _round_after_changes(tmp_path / "big", 5 * CHANGED)
    small = _round_after_changes(tmp_path / "small", CHANGED)
    assert big[0] == small[0] == CHANGED
    assert len(big[2]) == CHANGED and big[2] != small[2]  # a fifth of big's volumes
    assert big[1] == small[1], (big[1], small[1])
