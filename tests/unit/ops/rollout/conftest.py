"""Fixtures and helpers of the rollout tests: local nodes with a fake target daemon, packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT

from xfleet import sim
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import rollout

SKIP = ("pools", "exports", "identities")  # local nodes have no pools and no mirror rows


# A target daemon in a file: installed/running version per node, restarts logged; a version
# listed in STATE/broken never gets ready; 1.3 changes the namespace identities.
FAKE = r"""#!/bin/sh
set -eu
S="$1"; N="$2"; OP="$3"; shift 3
case "$OP" in
  installed) cat "$S/$N.installed" ;;
  running) cat "$S/$N.running" 2>/dev/null || true ;;
  ready) test -s "$S/$N.running" && cat "$S/$N.running" ;;
  exports) v=$(cat "$S/$N.running" 2>/dev/null || true)
    id=00000000-0000-4000-8000-00000000000$( [ "$v" = 1.3 ] && echo 2 || echo 1)
    k=0; while [ "$k" -lt "$(cat "$S/$N.volumes" 2>/dev/null || echo 1)" ]; do k=$((k+1))
      printf 'nqn.test:%s:tank.v%s\t1\t/dev/zvol/tank/v%s\t%s\t%s\t1\n' "$N" $k $k "$id" "$id"
    done ;;
  stage) test "$(sha256sum -- "$1" | cut -d' ' -f1)" = "$2" ;;
  restart) echo "$2" >> "$S/$N.restarts"; echo "$2" > "$S/$N.installed"
    if grep -qx -- "$2" "$S/broken" 2>/dev/null || grep -qx -- "$2" "$S/$N.broken" 2>/dev/null
    then : > "$S/$N.running"; else echo "$2" > "$S/$N.running"; fi ;;
  *) echo "unknown op $OP" >&2; exit 2 ;;
esac
"""


def setup_nodes(tmp_path: Path, nodes: list[str], version: str = "1.0",
                mirror: str | None = None) -> Path:
    """Local nodes at `version` of the fake target daemon; the inventory's file (its mirror at
    `mirror`: an SQLite path or a PostgreSQL URL, by default tmp_path/m.db)."""
    state = tmp_path / "target"
    state.mkdir()
    script = tmp_path / "fake-target"
    script.write_text(FAKE)
    script.chmod(0o755)
    for n in nodes:
        (state / f"{n}.installed").write_text(version + "\n")
        (state / f"{n}.running").write_text(version + "\n")
    return write_inventory(tmp_path, nodes, mirror)


def write_inventory(tmp_path: Path, nodes: list[str], mirror: str | None = None) -> Path:
    s, f = tmp_path / "target", tmp_path / "fake-target"
    cmds = {
        "installed_version": [str(f), str(s), "{node}", "installed"],
        "running_version": [str(f), str(s), "{node}", "running"],
        "ready": [str(f), str(s), "{node}", "ready"],
        "exports": [str(f), str(s), "{node}", "exports"],
        "stage": [str(f), str(s), "{node}", "stage", "{path}", "{sha256}"],
        "restart": [str(f), str(s), "{node}", "restart", "{path}", "{version}"],
        "rollback": [str(f), str(s), "{node}", "restart", "{path}", "{version}"],
    }
    hosts = {n: {"kind": "local", "target": {"driver": "command",
                                             "stage_dir": str(tmp_path / "stage" / n), **cmds}}
             for n in nodes}
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps({"all": {"vars": {"mirror": mirror or str(tmp_path / "m.db"),
                                                "state_dir": str(tmp_path / "st")},
                                       "hosts": hosts}}))
    return inv


def make_packages(tmp_path: Path) -> dict[str, rollout.Package]:
    out = {}
    for v in ("1.0", "1.1", "1.2", "1.3"):
        p = tmp_path / f"target_{v}.pkg"
        p.write_text(f"package {v}\n")
        out[v] = rollout.package(f"{v}={p}")
    return out


def run_rollout(inv_path: Path, version: str, *, opts: rollout.Options | None = None,
         nodes: list[str] | None = None) -> tuple[rollout.Result, Any]:
    inv = inventory.load(inv_path)
    o = (opts or rollout.Options(soak=0, ready_timeout=2, skip=SKIP)).validate()
    pkgs = make_packages(inv_path.parent)
    targets = rollout.target_nodes(inv, nodes)
    rid = rollout.create(inv.mirror, version, targets, pkgs, o, selection=nodes)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = rollout.Runner(inv, inv.mirror, conns).run(rid)
    return res, inv


def node_state(tmp_path: Path, node: str, what: str) -> str:
    p = tmp_path / "target" / f"{node}.{what}"
    return p.read_text().strip() if p.exists() else ""


def rollouts_cli(inv_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xfleet", "--inventory", str(inv_path), *args],
                          capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def sim_fleet(tmp_path: Path, volumes: int = 200, mirror: str = "m.db") -> Any:
    from xfleet.ops.sync import sync

    p = tmp_path / "sim.yaml"
    p.write_text(f"all:\n  vars:\n    mirror: {mirror}\n    state_dir: st\n    kind: sim\n"
                 f"    target: {json.dumps(sim.TARGET)}\n"
                 + "  hosts:\n" + "".join(f"    n{i}: {{sim: {{seed: {i}, volumes: {volumes}}}}}\n"
                                          for i in (1, 2, 3)))
    inv = inventory.load(p)
    assert sync(inv).ok
    return inv


# The pause must reach the mirror while n1 soaks (a new `xfleet` process: ~1 s here, over 2 s
# on a loaded machine, where a 2 s soak let n2 start first); the test waits out the soak.
SOAK = 10
