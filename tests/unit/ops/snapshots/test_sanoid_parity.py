"""Side by side with sanoid (#20): the same policy and snapshot history pruned by real sanoid
(Debian's 2.1.0, unpacked by scripts/test-deps.sh into .venv/opt/sanoid) and by
xfleet.ops.snapshots.retention.decide, and every difference in what they keep asserted with
its reason (docs/snapshots.md, "Compared with sanoid").

The policy: hourly 36, daily 30, weekly 4, monthly 3 (frequently and yearly 0). sanoid takes one
snapshot per type (`autosnap_<time>_hourly`, `_daily`, ...) and prunes each type on its own;
xfleet takes one series (one snapshot per schedule slot, here every hour at :00) and keeps the
newest snapshot of each of the N newest hours, days, ISO weeks and months.

The history is 400 days of what sanoid itself takes with this policy when run every hour at
:00 (`take_snapshots`: a type is taken when its newest snapshot is older than the type's latest
preferred time: every hour at :00, days at 00:00, Mondays at 00:00, the 1st at 00:00), with an
outage in one case (sanoid then catches up with one snapshot per type, as xfleet does).

How sanoid sees it: `zfs` on its PATH is a fake (a fixture of sanoid's input, not a test of ZFS
behaviour) that prints the history for `zfs get -Hrpt snapshot creation` and records and fails
any other command; sanoid runs `--prune-snapshots --readonly --verbose --force-prune` in
temporary config, cache and run directories, TZ=UTC, and what it prunes are its `INFO: pruning
<snapshot> ...` lines (the list it would `zfs destroy`: --readonly skips only that call, not
the decision; --force-prune skips a `ps` per snapshot looking for a send/receive). Debian's
sanoid reads its defaults from the fixed /usr/share/sanoid/sanoid.defaults.conf (upstream reads
them from --configdir); the test runs a copy of the script with that one line pointed back at
--configdir, into which the package's own defaults file is copied.

The clock: sanoid's pruning compares only creation times with its own time() (prune_snapshots:
`maxage = time() - count * period`, pruned when `ctime < maxage` and more than `count` of the
type remain, oldest first); the calendar appears only in the names, whose type suffix is all
it reads. So the history is laid out on a fixed calendar ending at VNOW (a case's "now", at :30)
and its creation times are shifted by time.time() - VNOW at the test's start: sanoid sees the
ages it would see at VNOW, whatever today's date. Every age is a whole number of hours plus
30 minutes, and every sanoid period is a whole number of hours, so the result only changes if
sanoid runs 30 minutes after the test started (asserted not to have happened).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from xfleet.ops.snapshots.retention import Keep, Snap, decide

SANOID_ROOT = ROOT / ".venv" / "opt" / "sanoid"
SANOID = SANOID_ROOT / "usr" / "sbin" / "sanoid"
SANOID_DEFAULTS = SANOID_ROOT / "usr" / "share" / "sanoid" / "sanoid.defaults.conf"
DEBIAN_DEFAULTS_LINE = 'my $default_conf_file = "/usr/share/sanoid/sanoid.defaults.conf";'
UPSTREAM_DEFAULTS_LINE = "my $default_conf_file = \"$args{'configdir'}/sanoid.defaults.conf\";"

UTC = dt.UTC
HOUR = 3600
DAY = 86400
HISTORY_DAYS = 400
POLICY = {"hourly": 36, "daily": 30, "weekly": 4, "monthly": 3}
# sanoid's prune periods (prune_snapshots): a "month" is 31 days
PERIOD = {"hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": 31 * DAY}
GRANULARITIES = tuple(POLICY)  # the order sanoid's names and xfleet's grid share

SANOID_CONF = """\
[tank/db]
\tuse_template = parity

[template_parity]
\tfrequently = 0
\thourly = 36
\tdaily = 30
\tweekly = 4
\tmonthly = 3
\tyearly = 0
\tautosnap = yes
\tautoprune = yes
\thourly_min = 0
\tdaily_hour = 0
\tdaily_min = 0
\tweekly_wday = 1
\tweekly_hour = 0
\tweekly_min = 0
\tmonthly_mday = 1
\tmonthly_hour = 0
\tmonthly_min = 0
"""

FAKE_ZFS = """\
#!/bin/sh
# sanoid's input: the snapshot history; any other zfs command is recorded and fails
case "$*" in
  "get -Hrpt snapshot creation") exec cat '{history}' ;;
  *) echo "$*" >> '{unexpected}'; exit 1 ;;
esac
"""
PRUNING = re.compile(r"^INFO: pruning (\S+) \.\.\. $", re.M)  # prune_snapshots, --verbose

Bucket = tuple[int, ...]


def bucket(g: str, t: int) -> Bucket:
    """xfleet's bucket of granularity g (retention._bucket), in UTC."""
    d = dt.datetime.fromtimestamp(t, UTC)
    if g == "hourly":
        return (d.year, d.month, d.day, d.hour)
    if g == "daily":
        return (d.year, d.month, d.day)
    if g == "weekly":
        iso = d.isocalendar()
        return (iso.year, iso.week)
    return (d.year, d.month)


def preferred(g: str, t: int) -> int:
    """sanoid's latest preferred time of type g at or before slot t (take_snapshots, UTC)."""
    d = dt.datetime.fromtimestamp(t, UTC).replace(minute=0, second=0)
    if g == "daily":
        d = d.replace(hour=0)
    elif g == "weekly":
        d = d.replace(hour=0) - dt.timedelta(days=d.weekday())  # Monday (weekly_wday = 1)
    elif g == "monthly":
        d = d.replace(hour=0, day=1)
    return int(d.timestamp())


@dataclass(frozen=True)
class Case:
    vnow: dt.datetime  # the calendar's "now" (at :30)
    outage: tuple[dt.datetime, dt.datetime] | None  # no run strictly between these slots
    sanoid_months: int  # 3, or 4 while the 4th newest 1st-of-month is at most 93 days old
    xfleet_kept: int  # the union of xfleet's grid (see each case)


CASES = {
    # A Monday after December, January and February (90 days): sanoid's monthly of Dec 1 is
    # 91.5 days old, within 3 x 31 days, so sanoid keeps 4 monthlies. xfleet keeps 36 hours
    # (Mar 1 01:00 .. Mar 2 12:00, which hold the picks of Mar 2 and Mar 1, of this ISO week
    # and the last, and of March), 28 more days (Feb 1 .. Feb 28 at 23:00, which hold the picks
    # of the two weeks before and of February) and January's newest (Jan 31 23:00):
    # 36 + 28 + 1 = 65.
    "monday-after-short-months": Case(
        vnow=dt.datetime(2026, 3, 2, 12, 30, tzinfo=UTC), outage=None,
        sanoid_months=4, xfleet_kept=65),
    # A Sunday night, with an outage over the previous weekend: no run from Sat Jul 4 20:00 to
    # Mon Jul 6 08:00, so no daily of Jul 5, and Jul 6's daily and the week's weekly are the
    # catch-up taken at 09:00. Both keep the 30 newest days that have a snapshot (back to
    # Jun 19). sanoid's May 1 monthly is 80 days old, Apr 1 110: 3 monthlies. xfleet keeps 36
    # hours (Jul 18 12:00 .. Jul 19 23:00: the picks of both days, of this week and of July),
    # 28 more days (Jun 19 .. Jul 17 but Jul 5, holding the picks of the three weeks before:
    # Jul 12 23:00, Jul 4 19:00 before the outage, Jun 28 23:00; and June's: Jun 30 23:00) and
    # May's newest (May 31 23:00): 36 + 28 + 1 = 65.
    "sunday-night-after-an-outage": Case(
        vnow=dt.datetime(2026, 7, 19, 23, 30, tzinfo=UTC),
        outage=(dt.datetime(2026, 7, 4, 19, 0, tzinfo=UTC),
                dt.datetime(2026, 7, 6, 9, 0, tzinfo=UTC)),
        sanoid_months=3, xfleet_kept=65),
}


def slots(case: Case) -> list[int]:
    """The times sanoid ran (every hour at :00, HISTORY_DAYS days back, none in the outage)."""
    newest = int(case.vnow.timestamp()) - 30 * 60
    out = []
    for t in range(newest - HISTORY_DAYS * DAY + HOUR, newest + 1, HOUR):
        if case.outage and case.outage[0].timestamp() < t < case.outage[1].timestamp():
            continue
        out.append(t)
    return out


def sanoid_history(runs: Iterable[int]) -> list[tuple[str, str, int]]:
    """(name, type, time) of every snapshot sanoid takes at these runs, oldest first."""
    newest: dict[str, int] = {}
    out = []
    for t in runs:
        stamp = dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d_%H:%M:%S")
        for g in reversed(GRANULARITIES):  # sanoid's order: yearly, monthly, ..., hourly
            if newest.get(g, -1) < preferred(g, t):
                newest[g] = t
                out.append((f"autosnap_{stamp}_{g}", g, t))
    return out


def require_sanoid() -> None:
    hint = "run scripts/test-deps.sh (`make test` runs it first)"
    assert SANOID.is_file() and SANOID_DEFAULTS.is_file(), (
        f"sanoid is not unpacked in {SANOID_ROOT}: {hint}, which unpacks Debian's `sanoid` "
        "package there without installing it (its timer would start snapshotting)")
    p = subprocess.run(["perl", "-MConfig::IniFiles", "-MCapture::Tiny", "-e1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"sanoid's Perl modules are missing: {hint}\n{p.stderr}"


def run_sanoid(tmp: Path, history: list[tuple[str, str, int]], shift: int) -> set[str]:
    """Let sanoid prune `history` (creation times shifted by `shift`); the names it destroys."""
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "sanoid.conf").write_text(SANOID_CONF)
    shutil.copy(SANOID_DEFAULTS, conf / "sanoid.defaults.conf")
    script = SANOID.read_text()
    assert script.count(DEBIAN_DEFAULTS_LINE) == 1, "sanoid's defaults path line changed"
    patched = tmp / "sanoid"
    patched.write_text(script.replace(DEBIAN_DEFAULTS_LINE, UPSTREAM_DEFAULTS_LINE))
    listing = tmp / "history.tsv"
    listing.write_text("".join(f"tank/db@{name}\tcreation\t{t + shift}\t-\n"
                               for name, _, t in history))
    unexpected = tmp / "unexpected"
    fake = tmp / "bin" / "zfs"
    fake.parent.mkdir()
    fake.write_text(FAKE_ZFS.format(history=listing, unexpected=unexpected))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "TZ": "UTC"}
    p = subprocess.run(
        ["perl", str(patched), f"--configdir={conf}", f"--cache-dir={tmp / 'cache'}",
         f"--run-dir={tmp / 'run'}", "--prune-snapshots", "--force-prune", "--readonly",
         "--verbose"],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"sanoid exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert not unexpected.exists(), f"sanoid ran other zfs commands: {unexpected.read_text()}"
    names = PRUNING.findall(p.stdout)
    assert all(n.startswith("tank/db@") for n in names)
    return {n.removeprefix("tank/db@") for n in names}


def newest_buckets(ts: Iterable[int], g: str, n: int) -> list[Bucket]:
    """The n newest distinct buckets of granularity g of times ts, newest first."""
    out: dict[Bucket, None] = {}
    for t in sorted(ts, reverse=True):
        out.setdefault(bucket(g, t))
        if len(out) == n:
            break
    return list(out)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sanoid_and_xfleet_keep_the_same_buckets(case: Case, tmp_path: Path) -> None:
    require_sanoid()
    started = time.time()
    shift = int(started) - int(case.vnow.timestamp())
    runs = slots(case)
    history = sanoid_history(runs)
    destroyed = run_sanoid(tmp_path, history, shift)
    assert time.time() - started < 25 * 60, "sanoid ran too late: ages moved by half an hour"

    kept_by_type: dict[str, set[int]] = {g: set() for g in GRANULARITIES}
    for name, g, t in history:
        if name not in destroyed:
            kept_by_type[g].add(t)
    assert destroyed <= {name for name, _, _ in history}

    series = [Snap(f"xfleet_hot_{t}", t) for t in runs]  # xfleet's one series: every run
    picks: dict[str, set[int]] = {}  # what each granularity alone keeps
    for g, n in POLICY.items():
        alone = decide(series, Keep(**{g: n}, at_least=0)).keep
        picks[g] = {int(s.creation) for s in series if s.name in alone}
    first: dict[str, dict[Bucket, int]] = {g: {} for g in GRANULARITIES}  # bucket's first run
    last: dict[str, dict[Bucket, int]] = {g: {} for g in GRANULARITIES}  # and its newest
    for t in runs:  # oldest first
        for g in GRANULARITIES:
            first[g].setdefault(bucket(g, t), t)
            last[g][bucket(g, t)] = t

    # Hourly: the same snapshots, the 36 newest runs (sanoid: the ones at most 36 h old).
    assert kept_by_type["hourly"] == picks["hourly"] == set(runs[-36:])

    # Daily and weekly: the same buckets, the N newest that have a snapshot (after the outage
    # both reach back past it), one snapshot each; but sanoid's is the bucket's first (taken
    # at its preferred time, 00:00 / Monday 00:00, or at the catch-up after an outage) and
    # xfleet's the bucket's newest (its last hour, or the newest snapshot for the current one).
    for g in ("daily", "weekly"):
        buckets = newest_buckets(runs, g, POLICY[g])
        assert sorted(bucket(g, t) for t in kept_by_type[g]) == sorted(buckets), g
        assert sorted(bucket(g, t) for t in picks[g]) == sorted(buckets), g
        assert kept_by_type[g] == {first[g][b] for b in buckets}, g
        assert picks[g] == {last[g][b] for b in buckets}, g

    # Monthly: sanoid's "month" is 31 days (prune_snapshots), so it keeps the monthly of the
    # 4th newest month too while that one's 1st is at most 3 x 31 = 93 days old.
    months = newest_buckets(runs, "monthly", 4)
    fourth_age = case.vnow.timestamp() - first["monthly"][months[3]]
    assert (fourth_age <= 3 * PERIOD["monthly"]) == (case.sanoid_months == 4)
    assert sorted(bucket("monthly", t) for t in kept_by_type["monthly"]) == sorted(
        months[:case.sanoid_months])
    assert sorted(bucket("monthly", t) for t in picks["monthly"]) == sorted(months[:3])
    assert kept_by_type["monthly"] == {first["monthly"][b] for b in months[:case.sanoid_months]}
    assert picks["monthly"] == {last["monthly"][b] for b in months[:3]}

    # In all: sanoid keeps one snapshot per type and slot (36 + 30 + 4 + 3 or 4); xfleet one
    # per slot, the union of its picks, which overlap (the newest snapshot is this hour's,
    # day's, week's and month's), so it keeps fewer for the same buckets.
    full = decide(series, Keep(**POLICY))
    xfleet_kept = {int(s.creation) for s in series if s.name in full.keep}
    assert xfleet_kept == set().union(*picks.values())
    sanoid_kept = sum(len(ts) for ts in kept_by_type.values())
    assert sanoid_kept == 36 + 30 + 4 + case.sanoid_months
    assert len(xfleet_kept) == case.xfleet_kept
    assert len(full.prune) == len(runs) - case.xfleet_kept
