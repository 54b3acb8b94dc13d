"""`xfleet replicate run|status|show|promote` (xfleet/cli/replicate.py) on the moves' simulated
fleet (n1 with tank/app/db, n2): a round as JSON, the status and a replica's log, promotion
refused without --yes on a pipe, then done; and policy files the command cannot use, each a
clear error without a traceback. The rounds themselves are tested in tests/unit/ops/replicate/."""

from __future__ import annotations

from pathlib import Path

from unit.ops.moves.conftest import make_fleet, node
from unit.ops.replicate.conftest import POLICY, VOL, prop
from xfleet.fleet import inventory

from .conftest import Cli


def _fleet(tmp_path: Path, policy: str = POLICY) -> tuple[str, str]:
    """The fleet's inventory file and a policy file `policy`."""
    _, inv_path, _ = make_fleet(tmp_path)
    pol = tmp_path / "snapshots.yaml"
    pol.write_text(policy)
    return str(inv_path), str(pol)


def test_run_status_show_then_promote_with_the_source_lost(tmp_path: Path, cli: Cli) -> None:
    inv, pol = _fleet(tmp_path)
    r = cli("-i", inv, "replicate", "run", "--policy", pol, "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert got["ok"] is True and (got["replicas"], got["added"], got["failed"]) == (1, 1, [])
    assert [(s["volume"], s["target_node"], s["how"]) for s in got["sent"]] == \
        [(VOL, "n2", "full")]
    assert got["commands"] > 0 and got["bytes"] == got["sent"][0]["bytes"] > 0
    again = cli("-i", inv, "replicate", "run", "--policy", pol, "--json").json()
    assert (again["ok"], again["sent"], again["commands"]) == (True, [], 0)
    text = cli("-i", inv, "replicate", "run", "--policy", pol)
    assert text.code == 0 and "1 replica(s) (0 new): 0 sent" in text.out, text.out
    assert "0 remote commands" in text.out

    st = cli("-i", inv, "replicate", "status", "--json")
    assert st.code == 0, st.err
    [row] = st.json()["replicas"]
    assert (row["source_node"], row["volume"], row["target_node"], row["state"],
            row["cursor"], row["within_rpo"]) == ("n1", VOL, "n2", "idle", "b", True)
    table = cli("-i", inv, "replicate", "status")
    assert table.code == 0 and "app" in table.out and f"n1:{VOL}" in table.out

    shown = cli("-i", inv, "replicate", "show", f"n2:{VOL}")  # by its copy
    assert shown.code == 0, shown.err
    assert f"n1:{VOL}" in shown.out and "at @b (full" in shown.out
    assert cli("-i", inv, "replicate", "show", str(row["id"]), "--json").json()["log"]
    missing = cli("-i", inv, "replicate", "show", "n1:tank/nope")
    assert missing.code != 0 and "no replica of or at n1:tank/nope" in missing.err
    assert "Traceback" not in missing.err

    # without --yes on a pipe: refused, nothing changed
    r = cli("-i", inv, "replicate", "promote", f"n1:{VOL}", "--source-lost")
    assert r.code != 0 and "refusing to promote a replica without its source" in r.err
    assert "Traceback" not in r.err
    n2 = node(inventory.load(inv), "n2")
    assert prop(n2, "volmode")[0] == "none"
    r = cli("-i", inv, "replicate", "promote", f"n1:{VOL}", "--source-lost", "--yes",
            "--json")
    assert r.code == 0, r.err
    p = r.json()
    assert p["ok"] is True and p["mode"] == "source lost"
    assert p["replica"]["state"] == "promoted"
    assert prop(n2, "volmode")[0] != "none" and prop(n2, "xfleet:replica-of")[0] == "-"
    listed = cli("-i", inv, "replicate", "status", "--all", "--json").json()
    assert [x["state"] for x in listed["replicas"]] == ["promoted"]
    assert listed["policies"] == []  # a promoted replica is a primary, not counted


def test_a_policy_without_replicate_targets_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    plain = POLICY.split("    replicate:")[0]
    inv, pol = _fleet(tmp_path, plain)
    r = cli("-i", inv, "replicate", "run", "--policy", pol)
    assert r.code == 2 and "has `replicate:` targets" in r.err, r.err
    assert "Traceback" not in r.err


def test_a_policy_replicating_to_an_unknown_node_is_a_clear_error(tmp_path: Path,
                                                                   cli: Cli) -> None:
    inv, pol = _fleet(tmp_path, POLICY.replace("node: n2", "node: n9"))
    r = cli("-i", inv, "replicate", "run", "--policy", pol, "--json")
    assert r.code != 0 and "Traceback" not in r.err
    assert "replicates to node 'n9', which is not in the inventory" in r.err + r.out
    status = cli("-i", inv, "replicate", "status", "--json")
    assert status.code == 0 and status.json()["replicas"] == []  # nothing was added


def test_a_broken_policy_file_names_its_line(tmp_path: Path, cli: Cli) -> None:
    inv, pol = _fleet(tmp_path, POLICY.replace("rpo: 1h", "rpo: 5m"))
    r = cli("-i", inv, "replicate", "run", "--policy", pol)
    assert r.code != 0 and f"{pol}:6" in r.err and "shorter than the schedule" in r.err
    assert "Traceback" not in r.err
