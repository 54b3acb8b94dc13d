"""Space accounting facts of OpenZFS 2.3 that the simulator reproduces: what an empty dataset
references, a thick zvol's refreservation, compression ratios as `zfs get -p` prints them."""

from __future__ import annotations

FS_REF = 98304  # an empty filesystem references 96K ...
FS_LREF = 43008  # ... of which 42K logical (OpenZFS 2.3)
ZVOL_MIN_REF = 57344  # an empty zvol references 56K ...
ZVOL_MIN_LREF = 28672  # ... 28K logical
CLONE_REF = 8192  # a fresh clone has written 8K of its own (4K logical)
ASHIFT = 12


def ratio(logical: int, physical: int) -> str:
    """A compression ratio as `zfs get -p` prints it: truncated to two decimals, at least 1.00."""
    if physical <= 0:
        return "1.00"
    v = logical * 100 // physical
    if v < 100:
        v = 100
    return f"{v // 100}.{v % 100:02d}"


def reservation(volsize: int, volblocksize: int, copies: int = 1) -> int:
    """The refreservation of a thick zvol (libzfs zvol_volsize_to_reservation, no raidz)."""
    nblocks = volsize // volblocksize
    numdb = 7
    while nblocks > 1:
        nblocks += 1023
        nblocks //= 1024
        numdb += nblocks
    numdb *= min(3, copies + 1)
    return volsize * copies + numdb * 131072
