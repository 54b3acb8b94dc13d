"""Advance replication cursors on a source node (xfleet/ops/replicate), run as `python3 -c`.

argv: TAG then triples VOLUME NEW OLD (OLD is "" for a replica's first cursor). For all the
triples at once, on this node, in this order:

1. `zfs hold TAG VOLUME@NEW...` in one command (atomic: all or none);
2. per triple `zfs bookmark VOLUME@NEW VOLUME#TAG_NEW` (an existing bookmark of that name,
   "bookmark exists", is success: a retried run);
3. `zfs release TAG VOLUME@OLD...` in one command, for the triples with an OLD (if it fails,
   each one alone: a snapshot destroyed by hand must not keep the others held);
4. per triple with an OLD `zfs destroy VOLUME#TAG_OLD`.

So a new cursor is held and bookmarked before the old one is let go: a failure at any point
leaves every replica with at least one held, bookmarked base. Prints one line per step that
did something: `STEP<TAB>OK|ERR<TAB>NAME<TAB>MESSAGE`; exits 1 when the hold failed (nothing
was changed), else 0 (a failed bookmark, release or destroy is reported, not fatal: the next
round retries it).
"""

import subprocess
import sys
from typing import Tuple  # the node's python3 may be older than 3.9

tag = sys.argv[1]
rest = sys.argv[2:]
triples = [rest[i:i + 3] for i in range(0, len(rest) - len(rest) % 3, 3)]


def zfs(*args: str) -> Tuple[int, str]:
    p = subprocess.run(["zfs", *args], capture_output=True, text=True)
    return p.returncode, " ".join(p.stderr.split())


def report(step: str, ok: bool, name: str, msg: str = "") -> None:
    print(step, "OK" if ok else "ERR", name, msg, sep="\t")


news = [f"{v}@{n}" for v, n, _ in triples]
if news:
    code, err = zfs("hold", tag, *news)
    if code != 0 and "tag already exists" not in err:
        report("hold", False, ",".join(news), err)
        sys.exit(1)
    report("hold", True, str(len(news)))
for v, n, _ in triples:
    code, err = zfs("bookmark", f"{v}@{n}", f"{v}#{tag}_{n}")
    report("bookmark", code == 0 or "exists" in err, f"{v}#{tag}_{n}", err)
olds = [f"{v}@{o}" for v, _, o in triples if o]
if olds:
    code, err = zfs("release", tag, *olds)
    if code != 0 and len(olds) > 1:  # one that fails may keep the others: one by one
        for old in olds:
            c, e = zfs("release", tag, old)
            report("release", c == 0 or "no such tag" in e or "does not exist" in e, old, e)
    else:
        report("release", code == 0 or "no such tag" in err or "does not exist" in err,
               str(len(olds)), err)
for v, _, o in triples:
    if o:
        code, err = zfs("destroy", f"{v}#{tag}_{o}")
        report("destroy", code == 0 or "does not exist" in err or "could not find" in err,
               f"{v}#{tag}_{o}", err)
