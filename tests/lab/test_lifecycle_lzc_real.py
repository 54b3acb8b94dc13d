"""libzfs_core inside a lab node: xfleet's core runs ON the storage node (`kind: local`) with
OpenZFS's Python bindings (Debian python3-pyzfs from bookworm-backports, copied into the node
with its dependencies: the lab VMs have no network), so snapshot, clone, release and snapshot
destroys go through libzfs_core (one atomic lzc_snapshot for many snapshots); without the module
the same code falls back to the zfs command line."""

from __future__ import annotations

import base64
import importlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .labkit import ROOT, Lab

pytestmark = pytest.mark.lab

NODE = "lab1"
BACKPORTS = "deb http://deb.debian.org/debian bookworm-backports contrib\n"  # zfs is contrib
# python3-pyzfs and what it needs, plus PyYAML for xfleet's inventory loader
FROM_BOOKWORM = ("python3-cffi", "python3-cffi-backend", "python3-pycparser", "python3-ply",
                 "python3-yaml", "libyaml-0-2")

SCRIPT = r"""
import json, sys
sys.path.insert(0, "/root/xfleet-src")
from pathlib import Path
from xfleet.fleet import inventory
from xfleet.ops import lifecycle
from xfleet import mirror
from xfleet.mirror import query
from xfleet.ops.sync import sync
from xfleet.fleet.connections import Connections

work = Path(sys.argv[1])
work.mkdir(exist_ok=True)
(work / "inv.yaml").write_text("all:\n  vars: {mirror: m.db, state_dir: st}\n"
                               "  hosts:\n    self: {kind: local, pools: [tank]}\n")
inv = inventory.load(work / "inv.yaml")
assert sync(inv).ok
conn = mirror.connect(inv.mirror)
vols = lifecycle.targets_from_rows(query.ls(conn, query.Selection(
    pattern="tank/lzc/*", types=["volume"], columns=query.COLUMNS)))
out = {"volumes": len(vols)}
with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
    snap = lifecycle.execute(inv, inv.mirror, lifecycle.plan_snapshot(
        conn, vols, sys.argv[2], properties={"xfleet:why": "lab"}), conns)
    out["snapshot"] = snap.to_dict()
    (src,) = lifecycle.resolve(conn, [f"{vols[0].name}@{sys.argv[2]}"])
    clone = lifecycle.execute(inv, inv.mirror, lifecycle.plan_clone(
        conn, src, f"tank/lzc/branch-{sys.argv[2]}", properties={"xfleet:env": "qa"}), conns)
    out["clone"] = clone.to_dict()
    conns.get("self").run(["zfs", "hold", "keep", f"{vols[1].name}@{sys.argv[2]}"])
    targets = lifecycle.resolve(conn, [f"{v.name}@{sys.argv[2]}" for v in vols[1:]])
    destroy = lifecycle.execute(inv, inv.mirror, lifecycle.plan_destroy(
        conn, targets, release=True, holds=lifecycle.RemoteHolds(conns)), conns)
    out["destroy"] = destroy.to_dict()
out["mirror_snapshots"] = conn.execute(
    "SELECT count(*) FROM datasets WHERE name GLOB ?", (f"tank/lzc/*@{sys.argv[2]}",)
).fetchone()[0]
print(json.dumps(out))
"""


def _debs(tmp: Path) -> list[Path]:
    """`apt-get download` of the packages (a private package list for bookworm-backports, so
    the host's apt configuration is left alone)."""
    lists = tmp / "lists"
    (lists / "partial").mkdir(parents=True)
    (tmp / "bp.list").write_text(BACKPORTS)
    opts = ["-o", f"Dir::Etc::SourceList={tmp / 'bp.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null", "-o", f"Dir::State::Lists={lists}",
            "-o", "APT::Sandbox::User=root"]  # pytest's temporary directories are private
    debs = tmp / "debs"
    debs.mkdir()
    for argv in (["apt-get", *opts, "update"], ["apt-get", *opts, "download", "python3-pyzfs"],
                 ["apt-get", "-o", "APT::Sandbox::User=root", "download", *FROM_BOOKWORM]):
        res = subprocess.run(argv, cwd=debs, capture_output=True, text=True, timeout=600,
                             check=False)
        assert res.returncode == 0, f"{' '.join(argv)}: {res.stderr[-2000:]}"
    return sorted(debs.glob("*.deb"))


def _cached_debs(tmp: Path) -> list[Path]:
    """The packages, downloaded once per machine (like the lab image, cached under
    ~/.cache/xfleet) so later runs need no network."""
    cache = Path.home() / ".cache" / "xfleet" / "pyzfs-debs"
    if not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for deb in _debs(tmp):
            shutil.copy2(deb, cache / deb.name)
        (cache / "complete").write_text("")
    return sorted(cache.glob("*.deb"))


def _put(lab: Lab, path: str, data: bytes) -> None:
    lab.run(NODE, ["python3", "-c", "import base64, sys; open(sys.argv[1], 'wb').write("
                   "base64.b64decode(sys.stdin.read()))", path],
            input=base64.b64encode(data).decode())


# Pure-Python packages xfleet's core imports that Debian's python3 on the node lacks (a
# `kind: local` node runs xfleet with its dependencies installed, as pip would)
CORE_DEPS = ("tenacity",)


def _source_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted((ROOT / "xfleet").rglob("*.py")):
            rel = p.relative_to(ROOT)
            if rel.parts[1] in ("tui", "lab") or rel.name.startswith("cli"):
                continue  # the core only
            tar.add(p, arcname=str(rel))
        for dep in CORE_DEPS:
            pkg = Path(importlib.import_module(dep).__file__ or "").parent
            for p in sorted(pkg.rglob("*.py")):
                tar.add(p, arcname=str(Path(dep) / p.relative_to(pkg)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def node(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab.run(NODE, ["mkdir", "-p", "/root/pyzfs", "/root/xfleet-src"])
    for deb in _cached_debs(tmp_path_factory.mktemp("pyzfs")):
        _put(lab, f"/root/pyzfs/{deb.name}", deb.read_bytes())
    lab.run(NODE, ["sh", "-c", "dpkg -i /root/pyzfs/*.deb"], timeout=900)
    _put(lab, "/root/xfleet-src.tgz", _source_tar())
    lab.run(NODE, ["tar", "-xzf", "/root/xfleet-src.tgz", "-C", "/root/xfleet-src"])
    lab.run(NODE, ["zfs", "create", "-p", "tank/lzc"])
    for i in range(6):
        lab.run(NODE, ["zfs", "create", "-s", "-V", "16M", f"tank/lzc/v{i}"])
    return lab


def _core(lab: Lab, work: str, snap: str, *, hide_pyzfs: bool) -> dict[str, Any]:
    argv = ["python3", "-", f"/root/{work}", snap]
    if hide_pyzfs:  # an importable libzfs_core.py that fails, shadowing the real one
        lab.run(NODE, ["mkdir", "-p", "/root/nolzc"])
        lab.run(NODE, ["sh", "-c", "echo 'raise ImportError(\"hidden\")' > "
                       "/root/nolzc/libzfs_core.py"])
        argv = ["env", "PYTHONPATH=/root/nolzc", *argv]
    res = lab.run(NODE, argv, input=SCRIPT, timeout=900)
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])  # JSON
    return out


def test_the_module_imports_in_the_node(node: Lab) -> None:
    res = node.run(NODE, ["python3", "-c", "import libzfs_core; print(libzfs_core.__name__)"])
    assert res.stdout.strip() == "libzfs_core"


def test_changes_go_through_libzfs_core_and_fall_back_to_the_cli(node: Lab) -> None:
    out = _core(node, "with", "lzc1", hide_pyzfs=False)
    assert out["volumes"] == 6
    (snap,) = out["snapshot"]["nodes"]
    assert snap["ok"] and snap["backend"] == "libzfs_core"
    # one lzc_snapshot; the commands are the re-fetch's (the listing, the user properties)
    assert snap["lzc_calls"] == 1 and snap["commands"] == 2
    (clone,) = out["clone"]["nodes"]
    assert clone["ok"] and clone["lzc_calls"] == 1
    (destroy,) = out["destroy"]["nodes"]
    assert destroy["ok"], destroy
    assert destroy["lzc_calls"] == 6  # one release, five one-snapshot destroys
    assert out["mirror_snapshots"] == 1  # v0@lzc1 stays (the clone's origin)
    listed = node.run(NODE, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                             "tank/lzc"]).stdout.split()
    assert listed == ["tank/lzc/v0@lzc1"]
    props = node.run(NODE, ["zfs", "get", "-H", "-o", "value", "origin,xfleet:env",
                            "tank/lzc/branch-lzc1"]).stdout.split()
    assert props == ["tank/lzc/v0@lzc1", "qa"]
    # the same core without the module: the zfs command line, same result
    cli = _core(node, "without", "cli1", hide_pyzfs=True)
    (snap,) = cli["snapshot"]["nodes"]
    assert snap["ok"] and snap["backend"] == "zfs" and snap["lzc_calls"] == 0
    assert snap["commands"] == 3
    assert cli["mirror_snapshots"] == 1
