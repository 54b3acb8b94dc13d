"""`xfleet serve` watching the real lab nodes over real SSH (issue #19): a new snapshot shows in
the API and the dataset-count metric within seconds (the latency is logged: docs/lab.md); a
pool filled on purpose raises the capacity alert in `/api/v1/alerts` and `xfleet status`, and
its health and error counters come from the node's real `zpool status`."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import wait_for
from unit.serve.servekit import serve

from xfleet import mirror

from .labkit import Lab, figure
from .test_moves_real import DST, SRC

pytestmark = pytest.mark.lab

FILL_POOL = "xfleetfill"
FILL_FILE = "/var/tmp/xfleet-fill.img"  # 768 MiB: ZFS keeps >= 128 MiB (slop) free, so a
# smaller pool could not be filled past 80 % (a 256 MiB one stopped at 50 %)


def inventory_with_fill_pool(lab: Lab) -> Path:
    """The lab's inventory, with the small pool FILL_POOL on DST as well."""
    text = lab.inventory.read_text()
    head, sep, tail = text.partition(f"    {DST}:\n")
    assert sep, f"{DST} not in {lab.inventory}"
    tail = tail.replace("pools: [tank]", f"pools: [tank, {FILL_POOL}]", 1)
    path = lab.inventory.with_name("lab-serve.yaml")  # beside it: the same relative paths
    path.write_text(head + sep + tail)
    return path


def test_serve_follows_real_nodes_and_raises_the_capacity_alert(lab: Lab,
                                                                 tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    inv = inventory_with_fill_pool(lab)
    try:
        lab.run(DST, ["sh", "-c", 'truncate -s 768M "$0" && zpool create -O compression=off '
                      '"$1" "$0"', FILL_FILE, FILL_POOL])
        res = lab.xfleet("sync", "--json", inventory=inv, mirror=db)
        assert res.code == 0, res.explain()
        with serve(inv, "--refresh-interval", "5", mirror=str(db)) as s:
            wait_for(lambda: s.get("/readyz").status == 200, f"ready; log:\n{s.logs()}",
                     timeout=300)
            wait_for(lambda: s.metrics().get(("xfleet_node_watch_following",
                                              (("node", SRC),))) == 1,
                     f"{SRC} followed; log:\n{s.logs()}", timeout=300)
            key = ("xfleet_pool_datasets", (("node", SRC), ("pool", "tank"),
                                            ("type", "snapshot")))
            before = s.metrics()[key]
            snap = "tank@served now:1"
            t0 = time.monotonic()
            lab.run(SRC, ["zfs", "snapshot", snap])
            made = time.monotonic()

            def in_api() -> bool:
                q = urllib.parse.quote(snap)
                return [i["name"] for i in s.ok(f"/api/v1/datasets?node={SRC}&name={q}")[
                    "items"]] == [snap]

            wait_for(in_api, f"{snap!r} in the API; log:\n{s.logs()}", timeout=120,
                     interval=0.05)
            shown = time.monotonic()
            wait_for(lambda: s.metrics()[key] == before + 1, "the snapshot count metric",
                     timeout=120, interval=0.05)
            counted = time.monotonic()
            figure(f"serve: snapshot command {made - t0:.2f} s; in /api/v1/datasets "
                f"{shown - made:.2f} s and in the metric {counted - made:.2f} s after it "
                "returned (target 3 s)")
            # fill the small pool on purpose: the capacity alert condition must be raised
            # (zeros are stored as written: compression is off; dd stops at "no space left",
            # when what is left is the pool's slop space: 128 MiB, 17 % of 768 MiB)
            lab.run(DST, ["sh", "-c", f'dd if=/dev/zero of="/{FILL_POOL}/blob" bs=1M '
                          'status=none; sync; zpool sync'], check=False)

            capacity_alerts = {"XfleetPoolCapacityCritical", "XfleetPoolCapacityHigh"}

            def alerted() -> list[dict[str, object]]:
                return [a for a in s.ok("/api/v1/alerts")["items"] if a["pool"] == FILL_POOL
                        and a["node"] == DST and a["name"] in capacity_alerts]

            wait_for(alerted, f"the capacity alert; log:\n{s.logs()}", timeout=120)
            ratio = s.metrics()[("xfleet_pool_capacity_ratio",
                                 (("node", DST), ("pool", FILL_POOL)))]
            assert ratio > 0.8
            health = s.metrics()[("xfleet_pool_health", (("node", DST), ("pool", FILL_POOL),
                                                         ("state", "ONLINE")))]
            assert health == 1
        status = lab.xfleet("status", "--json", inventory=inv, mirror=db)
        assert status.code == 0, status.explain()
        assert any(a["pool"] == FILL_POOL and a["name"] in capacity_alerts
                   for a in status.json()["alerts"]), status.out
        conn = mirror.connect(db, readonly=True)
        try:
            vdevs = [tuple(r) for r in conn.execute(
                "SELECT path, state FROM vdevs WHERE node = ? AND pool = ? AND path IS NOT "
                "NULL", (DST, FILL_POOL))]
        finally:
            conn.close()
        assert vdevs == [(FILL_FILE, "ONLINE")], vdevs
    finally:
        lab.run(DST, ["sh", "-c", 'zpool destroy -f "$1"; rm -f "$0"', FILL_FILE, FILL_POOL],
                check=False)
        lab.run(SRC, ["zfs", "destroy", "tank@served now:1"], check=False)
        inv.unlink(missing_ok=True)
