"""`xfleet snapshots plan` (xfleet/cli/snapshots.py): the plan as a table and as JSON, read from
the mirror; a bad policy file is a file:line error, never a traceback."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli, write_sim_inventory

from xfleet.fleet import inventory
from xfleet.sim import SimTransport

POLICY = """\
policies:
  - name: hot
    match: {name: "tank/t0000/*"}
    schedule: {every: 15m}
    keep: {frequently: 4, hourly: 24}
  - name: rest
    schedule: {daily: "02:30"}
    keep: {daily: 7}
"""


def test_plan_table_json_and_errors(tmp_path: Path) -> None:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml",
                                   {"n1": {"seed": 1, "volumes": 40, "tenants": 4}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    vol = t.run(["zfs", "list", "-H", "-o", "name", "-t", "volume"]).stdout.split()[-1]
    assert not vol.startswith("tank/t0000/")  # a volume of policy `rest`
    t.run(["zfs", "snapshot", f"{vol}@xfleet_rest_2026-01-01_02:30:00Z"])
    assert run_cli("-i", str(inv_path), "sync").code == 0
    policy = tmp_path / "snapshots.yaml"
    policy.write_text(POLICY)
    r = run_cli("-i", str(inv_path), "snapshots", "plan", "--policy", str(policy), "--json")
    assert r.code == 0, r.err
    doc = r.json()
    by = {p["policy"]: p for p in doc["pools"]}
    volumes = int(run_cli("-i", str(inv_path), "ls", "--type", "volume", "--count").out)
    assert by["hot"]["volumes"] + by["rest"]["volumes"] == volumes
    assert by["hot"]["due"] == by["hot"]["volumes"]  # no snapshot of the policy yet
    assert by["rest"]["snapshots"] == 1 and by["rest"]["prune"] == 0  # at_least keeps it
    r = run_cli("-i", str(inv_path), "snapshots", "plan", "--policy", str(policy))
    assert r.code == 0 and "POLICY" in r.out and "hot" in r.out and "rest" in r.out, r.err
    r = run_cli("-i", str(inv_path), "snapshots", "status", "--policy", str(policy), "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert sum(x["volumes"] for x in st) == volumes
    assert next(x for x in st if x["policy"] == "rest" and x["never"] < x["volumes"])
    r = run_cli("-i", str(inv_path), "snapshots", "status", "--policy", str(policy))
    assert r.code == 0 and "LAG_PERIODS" in r.out, r.err
    policy.write_text(POLICY.replace("every: 15m", "every: 7m"))
    r = run_cli("-i", str(inv_path), "snapshots", "plan", "--policy", str(policy))
    assert r.code == 2 and f"{policy}:4" in r.err and "does not divide a day" in r.err
    assert "Traceback" not in r.err


def test_run_takes_due_snapshots_then_prunes_with_confirmation(tmp_path: Path) -> None:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 2, "volumes": 30}})
    assert run_cli("-i", str(inv_path), "sync").code == 0
    policy = tmp_path / "snapshots.yaml"
    policy.write_text("policies:\n  - name: all\n    schedule: {every: 1h}\n"
                      "    keep: {frequently: 1}\n")
    volumes = int(run_cli("-i", str(inv_path), "ls", "--type", "volume", "--count").out)
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--dry-run")
    assert r.code == 0 and "zfs snapshot" in r.out, r.err
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--json")
    assert r.code == 0, r.err  # nothing to prune yet: no question asked
    assert r.json()["ok"] is True
    count = "SELECT count(*) FROM datasets WHERE name LIKE '%@xfleet_all_%'"
    assert run_cli("-i", str(inv_path), "sql", count, "--json").json()[0] == {
        "count(*)": volumes}
    taken = run_cli("-i", str(inv_path), "sql", "SELECT max(creation) AS t FROM datasets WHERE "
                    "name LIKE '%@xfleet_all_%'", "--json").json()[0]["t"]
    again = run_cli("-i", str(inv_path), "snapshots", "plan", "--policy", str(policy), "--json",
                    "--at", str(taken))  # as of the snapshots' own time: in the slot they took
    assert sum(p["due"] for p in again.json()["pools"]) == 0
    inv = inventory.load(inv_path)  # one more snapshot of the policy per volume, by hand
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    names = run_cli("-i", str(inv_path), "ls", "--type", "volume", "--csv", "-o", "name",
                    "--limit", "0").out.split()[1:]
    t.run(["zfs", "snapshot", *(f"{n}@xfleet_all_2099-01-01_00:00:00Z" for n in names)])
    assert run_cli("-i", str(inv_path), "sync").code == 0
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--json")
    assert r.code != 0 and "--yes" in r.err  # destroying asks first; a pipe cannot answer
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--json",
                "--yes")
    assert r.code == 0 and r.json()["ok"] is True, r.err
    # the older of the two went, the newer stayed (had an hour begun since the first run, a
    # new snapshot was taken as well: counted apart, so the test holds at any time)
    for where, n in ((f"name LIKE '%@xfleet_all_2026%' AND creation <= {taken}", 0),
                     ("name LIKE '%@xfleet_all_2099%'", volumes)):
        got = run_cli("-i", str(inv_path), "sql", f"SELECT count(*) AS n FROM datasets WHERE "
                      f"{where}", "--json").json()[0]["n"]
        assert got == n, (where, got)
