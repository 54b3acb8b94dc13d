"""Space accounting facts: a thick zvol's refreservation and compression ratios, as real
OpenZFS 2.3 computes and prints them."""

from __future__ import annotations

from xfleet.sim.space import FS_REF, ZVOL_MIN_REF, ratio, reservation

from .simkit import REAL


def test_reservation_of_a_thick_volume_is_what_real_zfs_set() -> None:
    got = {(p[0], p[1]): p[2] for p in (line.split("\t") for line in
                                        (REAL / "zfs_get_all.txt").read_text().splitlines())}
    vol = "tank/vols/pg-main"
    volsize, vbs = int(got[(vol, "volsize")]), int(got[(vol, "volblocksize")])
    assert reservation(volsize, vbs) == int(got[(vol, "refreservation")]) == 278921216
    # the values `zfs set volsize` logs for a thick 64M, then 128M, 16K-block volume
    assert reservation(64 << 20, 16384) == 70254592
    assert reservation(128 << 20, 16384) == 138412032
    assert reservation(1 << 30, 16384, copies=2) > 2 * reservation(1 << 30, 16384) - (1 << 30)


def test_ratios_are_truncated_to_two_decimals_and_never_below_one() -> None:
    assert ratio(199, 100) == "1.99"  # truncated, not rounded
    assert ratio(12345, 4096) == "3.01"
    assert ratio(50, 100) == "1.00" and ratio(5, 0) == "1.00"
    assert ratio(FS_REF, FS_REF) == "1.00" and FS_REF > ZVOL_MIN_REF
