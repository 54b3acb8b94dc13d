"""The lifecycle step kinds: `set` and `resize` over a selection, checked then for real. (Also
in test_engine.py: `clone` in a loop; in test_journal.py: `snapshot` not taken twice.)"""

from __future__ import annotations

from pathlib import Path

from unit.playbook.plays import only3_fleet, play_file, write
from xfleet import mirror


def test_set_and_resize_steps(tmp_path: Path) -> None:
    inv, _ = only3_fleet(tmp_path, tenant="m")
    path = write(tmp_path, """
steps:
  - set: {select: {tenant: m}, properties: {compression: zstd, "xfleet:tier": free}}
  - resize: {select: {tenant: m}, size: +1G}
""")
    check = play_file(inv, path, check=True)
    assert check.ok, check.to_dict()
    assert check.steps[0].commands == [
        "n3: zfs set compression=zstd xfleet:tier=free tank/only3/v0 tank/only3/v1 "
        "tank/only3/v2"]
    assert check.steps[1].commands == [
        f"n3: zfs set volsize={2 << 30} tank/only3/v0 tank/only3/v1 tank/only3/v2"]
    real = write(tmp_path, """
steps:
  - set: {select: {tenant: m}, properties: {compression: zstd}}
  - resize: {select: {tenant: m}, size: +1G}
""", "real.yaml")
    assert play_file(inv, real).ok
    conn = mirror.connect(inv.mirror)
    assert {tuple(r) for r in conn.execute(
        "SELECT compression, volsize FROM datasets WHERE tenant = 'm'")} == {("zstd", 2 << 30)}
