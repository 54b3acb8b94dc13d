"""What xfleet does to a fleet: sync and watch, lifecycle, moves, compression, the NVMe-oF target,
initiators and rolling upgrades. Each operation takes connections and a mirror."""
