"""`xfleet attach|detach|attachments|initiators` and `xfleet target audit` through the CLI on
the simulator, on both mirror engines: outputs, exit statuses, --from batches, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, write_sim_inventory

from xfleet import mirror, sim
from xfleet.ops.access import initiators

H1 = "nqn.2014-08.org.nvmexpress:uuid:00000001-0000-4000-8000-000000000001"
H2 = "nqn.2014-08.org.nvmexpress:uuid:00000002-0000-4000-8000-000000000002"
V1, V2, V3 = (f"tank/t0000/vol-00000{i}" for i in (1, 2, 3))


@pytest.fixture
def fleet(tmp_path: Path, mirror_at: str) -> tuple[Path, str]:
    """n1 (12 volumes, the simulated target), initiators db1 and db2, synced into mirror_at."""
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 12}},
                              extra=f"    target: {json.dumps(sim.TARGET)}")
    with inv.open("a") as f:
        f.write("  initiators:\n    db1: {kind: local}\n    db2: {kind: local}\n")
    r = run_cli("-i", str(inv), "-m", mirror_at, "sync")
    assert r.code == 0, r.err
    return inv, mirror_at


def x(fleet: tuple[Path, str], *args: str) -> tuple[int, str, str]:
    r = run_cli("-i", str(fleet[0]), "-m", fleet[1], *args)
    return r.code, r.out, r.err


def test_attach_detach_and_the_listings(fleet: tuple[Path, str], tmp_path: Path) -> None:
    code, out, _ = x(fleet, "initiators", "--json")
    assert code == 0 and [(i["name"], i["hostnqn"]) for i in json.loads(out)["initiators"]] \
        == [("db1", None), ("db2", None)]
    code, _, err = x(fleet, "attach", V1, "db1")
    assert code == 2 and "the host NQN of db1 was never read (xfleet initiators --read db1)" \
        in err
    conn = mirror.connect(fleet[1])
    initiators.record(conn, {"db1": (H1, None), "db2": (H2, None)})
    conn.close()

    code, out, _ = x(fleet, "attach", V1, "db1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["counts"]["ok"] == 1 and doc["commands"] == {"n1": 3}
    (item,) = doc["items"]
    assert (item["volume"], item["initiator"], item["outcome"]) == (V1, "db1", "ok")
    assert item["nqn"].endswith(":n1:tank.t0000.vol-000001")

    code, out, err = x(fleet, "attach", V1, "db2")
    assert code == 1 and "refused" in out and "a second writer is refused" in err
    code, out, _ = x(fleet, "attach", V1, "db2", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["items"][0]["outcome"] == "refused"
    assert "a second writer is refused" in doc["error"]["message"]

    batch = tmp_path / "batch.txt"
    batch.write_text(f"# shared between db1 and db2\n{V2} db1 shared\n{V2} db2 shared\n"
                     f"{V3} db2\n")
    code, out, _ = x(fleet, "attach", "--from", str(batch))
    assert code == 0 and "attach (batch " in out and "3 done, 0 unchanged" in out
    code, out, _ = x(fleet, "attachments", "--json")
    rows = json.loads(out)
    assert [(r["volume"], r["initiator"], r["shared"], r["state"]) for r in rows] == [
        (V1, "db1", False, "attached"), (V2, "db1", True, "attached"),
        (V2, "db2", True, "attached"), (V3, "db2", False, "attached")]
    code, out, _ = x(fleet, "attachments", "--host", "db2")
    assert code == 0 and V3 in out and V1 not in out

    # 9 volumes still open: the audit fails with its own exit status
    code, out, _ = x(fleet, "target", "audit")
    assert code == 5 and "12 export(s) on 1 node(s): 9 open" in out
    code, out, _ = x(fleet, "target", "audit", "--node", "n1", "--json")
    doc = json.loads(out)
    assert code == 5 and doc["ok"] is False and doc["counts"]["open"] == 9
    assert doc["nodes"][0]["commands"] == 1

    code, out, _ = x(fleet, "detach", V1, "db1", "--json")
    assert code == 0 and json.loads(out)["items"][0]["outcome"] == "ok"
    code, out, _ = x(fleet, "attachments", "--log", "10", "--json")
    log = json.loads(out)
    assert [(r["action"], r["volume"], r["outcome"]) for r in log][:2] == \
        [("detach", V1, "ok"), ("attach", V3, "ok")]
    assert any(r["outcome"] == "refused" for r in log)


def test_usage_errors(fleet: tuple[Path, str], tmp_path: Path) -> None:
    code, _, err = x(fleet, "attach", V1)
    assert code == 2 and "attach needs VOLUME and HOST (or --from FILE)" in err
    code, _, err = x(fleet, "detach", V1, "db1", "--from", str(tmp_path / "f"))
    assert code == 2 and "not both" in err
    code, _, err = x(fleet, "attach", "--from", str(tmp_path / "none.txt"))
    assert code == 2 and "cannot read" in err
    code, _, err = x(fleet, "attach", "tank/nope", "db9")
    assert code == 2 and "no initiator named 'db9'" in err
    if not Path("/etc/nvme/hostnqn").exists():  # not an NVMe host: db1 (local) cannot be read
        code, _, err = x(fleet, "initiators", "--read", "db1")
        assert code == 1 and "error: db1: cat exited with status 1" in err
