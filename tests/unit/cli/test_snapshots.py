"""`xfleet snapshots plan|apply|prune|run|status|runs` (xfleet/cli/snapshots.py): the plan as a
table and as JSON, read from the mirror; a bad policy file is a file:line error, never a
traceback; apply takes only, prune destroys only (asking first), run does both as a journaled
job that `--resume ID` finishes; `--at` is the clock."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli, write_sim_inventory

from xfleet.fleet import inventory
from xfleet.mirror.backend import location
from xfleet.ops.snapshots import run as runs
from xfleet.ops.snapshots.policy import load_policies
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


def synced(tmp_path: Path, seed: int, volumes: int, schedule: str,
           keep: str) -> tuple[Path, Path, int]:
    """A synced sim node and a one-policy file `all`: (inventory, policy file, volumes)."""
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml",
                                   {"n1": {"seed": seed, "volumes": volumes}})
    assert run_cli("-i", str(inv_path), "sync").code == 0
    policy = tmp_path / "snapshots.yaml"
    policy.write_text(f"policies:\n  - name: all\n    schedule: {schedule}\n"
                      f"    keep: {keep}\n")
    return inv_path, policy, int(run_cli("-i", str(inv_path), "ls", "--type", "volume",
                                         "--count").out)


def test_run_takes_due_snapshots_then_prunes_with_confirmation(tmp_path: Path) -> None:
    inv_path, policy, volumes = synced(tmp_path, 2, 30, "{every: 1h}", "{frequently: 1}")
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
    # as of the first snapshots' time (--at): in their slot, so nothing is taken again
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--json",
                "--at", str(taken))
    assert r.code != 0 and "--yes" in r.err  # destroying asks first; a pipe cannot answer
    r = run_cli("-i", str(inv_path), "snapshots", "run", "--policy", str(policy), "--json",
                "--yes", "--at", str(taken))
    assert r.code == 0 and r.json()["ok"] is True, r.err
    assert (r.json()["taken"], r.json()["pruned"]) == (0, volumes)
    # the older of the two went, the newer stayed
    for where, n in ((f"name LIKE '%@xfleet_all_2026%' AND creation <= {taken}", 0),
                     ("name LIKE '%@xfleet_all_2099%'", volumes)):
        got = run_cli("-i", str(inv_path), "sql", f"SELECT count(*) AS n FROM datasets WHERE "
                      f"{where}", "--json").json()[0]["n"]
        assert got == n, (where, got)


def test_apply_prune_resume_and_runs(tmp_path: Path) -> None:
    inv_path, policy, volumes = synced(tmp_path, 4, 20, '{daily: "02:30"}', "{daily: 2}")
    cli = ("-i", str(inv_path), "snapshots")
    day = 86400.0
    t0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: the slot is that day's 02:30
    names = []
    for d in range(3):  # three simulated days, as of 08:00 each
        r = run_cli(*cli, "apply", "--policy", str(policy), "--at", str(t0 + d * day), "--json")
        assert r.code == 0, r.err
        doc = r.json()
        assert (doc["ok"], doc["mode"], doc["taken"], doc["pruned"]) == (
            True, "apply", volumes, 0), doc
        names.append(doc["names"]["all"])
    assert names[0] == "xfleet_all_2027-01-15_08:00:00Z"
    dry = run_cli(*cli, "prune", "--policy", str(policy), "--dry-run")
    assert dry.code == 0 and "zfs destroy" in dry.out, dry.err
    refused = run_cli(*cli, "prune", "--policy", str(policy), "--json")
    assert refused.code == 2 and "--yes" in refused.err, refused.err
    listed = run_cli(*cli, "runs", "--json").json()
    assert listed[0]["state"] == "stopped" and listed[0]["pruned"] == 0
    # all three were created in the same real day: `daily: 2` keeps the newest one per day
    # (and `at_least: 1`), so two of the three go
    pruned = run_cli(*cli, "prune", "--policy", str(policy), "--yes", "--json")
    assert pruned.code == 0, pruned.err
    assert (pruned.json()["pruned"], pruned.json()["taken"]) == (2 * volumes, 0)
    left = run_cli("-i", str(inv_path), "sql", "SELECT count(*) AS n FROM datasets WHERE "
                   f"name LIKE '%@{names[2]}'", "--json").json()[0]["n"]
    assert left == volumes
    # a run that was started and never worked (its process killed at once): --resume ID
    # finishes it with its own time and names; a second resume is refused
    rid = runs.start(location(str(tmp_path / "mirror.db")), load_policies(policy),
                     at=t0 + 3 * day)
    r = run_cli(*cli, "run", "--resume", str(rid), "--yes", "--json")
    assert r.code == 0, r.err
    assert (r.json()["id"], r.json()["at"], r.json()["taken"]) == (rid, t0 + 3 * day, volumes)
    again = run_cli(*cli, "run", "--resume", str(rid), "--yes")
    assert again.code == 2 and "nothing to resume" in again.err, again.err
    table = run_cli(*cli, "runs")
    assert table.code == 0 and "STEP" in table.out and "stopped" in table.out, table.err
    text = run_cli(*cli, "run", "--policy", str(policy), "--at", str(t0 + 3 * day), "--yes")
    assert text.code == 0 and "snapshot run" in text.out and ": done, took 0 of 0" in text.out
    missing = run_cli(*cli, "run")
    assert missing.code == 2 and "--policy is required" in missing.err
    for sub in ("apply", "prune", "run"):
        h = run_cli(*cli, sub, "--help")
        assert h.code == 0 and "Examples:" in h.out and "--at" in h.out and "--json" in h.out
