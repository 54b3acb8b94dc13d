"""The lab's pool `tank` on each storage node: ensured on boot, recreated for a clean slate, in
one remote script per node (xfleet/lab/programs/pool.sh)."""

from __future__ import annotations

from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.programs import program_text
from xfleet.lab.state import DATA_DEVICE, POOL, LabState, NodeInfo


def ensure_pool(lab: LabState, node: NodeInfo) -> None:
    """Pool `tank` on `node`: the one it has, or the one on its data disk (imported), or a new
    one on a blank disk (one round trip: POOL_SCRIPT)."""
    _pool_script(lab.endpoint(node), "ensure")


CREATE_ATTEMPTS = 4

# Pool `tank` on a lab node, in one round trip (each command costs ~0.3-0.8 s of SSH and guest
# CPU under TCG; a reset used to be 7 of them per node). `ensure` keeps a pool it has, or
# imports the one on the data disk, or creates one if the disk is blank; a disk that holds
# anything else is never overwritten. Its guest may have been restored from a saved boot
# that saw another disk (saved boots hold no data disk), so it first forgets what it cached
# of the disk, its partitions included. `recreate` destroys the pool first, after stopping whatever
# keeps it busy: zfs send/receive left behind by a killed test, any process holding a zvol
# open (dd, a probe, a shell; it would make the destroy wait in the kernel, uninterruptibly,
# for as long as it holds it: seen `zpool export` in D state until the holder died), the lab
# NVMe target exporting zvols. Then it clears the event queue.
#
# Creating the pool relabels the disk, and udev then removes and re-adds the disk's by-id links
# (more than once under TCG, where udev is slow): when the kernel opens the new partition in
# such a window, the create fails with "no such pool or dataset" (ENOENT) and leaves nothing
# behind. So the script waits for udev and the device link, and tries again.
# Exit 0: the pool is there; 3: it could not be destroyed; 4: it could not be created; 5: no
# pool to import. Each failure prints what the node shows on stdout.
POOL_SCRIPT = program_text("pool.sh")  # xfleet/lab/programs/pool.sh


def _pool_script(ep: ssh.Endpoint, mode: str) -> None:
    res = ssh.run(ep, ["sh", "-c", POOL_SCRIPT, "sh", mode, POOL, DATA_DEVICE,
                       str(CREATE_ATTEMPTS)], check=False, timeout=600)
    if res.ok:
        return
    what = {3: f"cannot destroy pool {POOL}",
            4: f"zpool create {POOL} failed {CREATE_ATTEMPTS} times",
            5: f"no pool {POOL} to import on its data disk"}.get(
                res.exit_status, f"pool {POOL} script exited {res.exit_status}")
    raise LabError(f"{ep.name}: {what}: {res.stderr.strip()[-2000:]}",
                   hint=f"what the node shows:\n{res.stdout.strip()[-3000:]}")


def recreate_pool(lab: LabState, node: str | NodeInfo) -> None:
    """Destroy pool `tank` on one node (if any), create it empty, clear the event queue (one
    round trip: POOL_SCRIPT)."""
    _pool_script(lab.endpoint(node), "recreate")
