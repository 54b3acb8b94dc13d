"""`xfleet serve`: the always-on service (xfleet.serve; docs/serve.md)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from xfleet.cli.output import Ctx, pass_ctx
from xfleet.core.errors import UsageError


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {value!r} is not HOST:PORT",
                         hint="e.g. --listen 127.0.0.1:9733 (port 0: any free port)")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("serve")
@click.option("--listen", default="127.0.0.1:9733", show_default=True, metavar="HOST:PORT",
              help="Address to serve HTTP on. Loopback by default: put TLS and outside access "
              "behind a reverse proxy (docs/serve.md).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding a bearer token (mode 600); /metrics and /api need "
              "'Authorization: Bearer TOKEN'. The health probes never do.")
@click.option("--no-watch", is_flag=True,
              help="Only serve the mirror; do not keep it current (another process watches).")
@click.option("--refresh-interval", type=click.FloatRange(1.0), default=30.0,
              show_default=True, metavar="SECONDS",
              help="Seconds between incremental syncs of a watched node.")
@click.option("--reconcile-interval", type=click.FloatRange(60.0), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Seconds between structural reconciles of a node.")
@click.option("--volume-metrics", "volume_metrics", multiple=True, metavar="top:K|tenant:NAME",
              help="Per-volume series (off by default): the K largest volumes per node, or "
              "every volume of a tenant (repeatable).")
@click.option("--volume-metrics-cap", type=click.IntRange(1), default=1000, show_default=True,
              help="At most this many volumes per node get their own series.")
@click.option("--currency", default=None, metavar="CODE",
              help="Currency of price_per_gb_month (a metric label; default: the inventory's).")
@click.option("--access-log", is_flag=True, help="Log every HTTP request.")
@click.option("--snapshot-policy", type=click.Path(dir_okay=False, path_type=Path),
              help="Run this snapshot policy file on its schedules (and its replicate: "
              "targets after each snapshot run); read again at every tick.")
@click.option("--snapshot-spread", type=click.FloatRange(0), default=60.0, show_default=True,
              metavar="SECONDS", help="Shift each policy's ticks by a stable offset within "
              "this many seconds (at most half its period).")
@click.option("--max-prune", type=click.IntRange(0), default=100_000, show_default=True,
              help="Destroy at most this many snapshots per tick.")
@click.option("--no-replicate", is_flag=True,
              help="With --snapshot-policy: take and prune only, no replication rounds.")
@pass_ctx
def serve_cmd(c: Ctx, listen: str, token_file: Path | None, no_watch: bool,
              refresh_interval: float, reconcile_interval: float,
              volume_metrics: tuple[str, ...], volume_metrics_cap: int, currency: str | None,
              access_log: bool, snapshot_policy: Path | None, snapshot_spread: float,
              max_prune: int, no_replicate: bool) -> None:
    """Run the fleet service: keep the mirror current and serve metrics, probes and the API.

    Answers everything from the mirror (a scrape never runs zfs on a node):
    /metrics (Prometheus), /healthz, /readyz, and the read-only JSON API
    /api/v1/{datasets,nodes,pools,moves,rollouts,alerts}. SIGTERM stops it cleanly;
    SIGHUP re-reads the inventory and the token file. Run it as its own user under
    systemd (docs/serve.md has the unit).

    \b
    Examples:
      xfleet serve
      xfleet serve --listen 0.0.0.0:9733 --token-file /etc/xfleet/token
      xfleet serve --volume-metrics top:20 --volume-metrics tenant:acme
      xfleet serve --snapshot-policy /etc/xfleet/snapshots.yaml
      curl -s localhost:9733/api/v1/datasets?where=used%3E10G&sort=-used&limit=5
    """
    from xfleet.serve.metrics import VolumeMetrics  # lazy: keeps `xfleet --help` fast
    from xfleet.serve.service import Options, Service

    host, port = _listen(listen)
    volumes = VolumeMetrics.parse(volume_metrics, volume_metrics_cap)
    inv = c.inventory()
    if snapshot_policy is not None:
        from xfleet.ops.snapshots.policy import load_policies

        load_policies(snapshot_policy)  # a broken file is refused now, with its file:line
    # one line per event on stderr (journald adds the time when run under systemd)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # not a line per connection
    svc = Service(inv.path, c.mirror_override,
                  Options(host=host, port=port, token_file=token_file, watch=not no_watch,
                          refresh_interval=refresh_interval,
                          reconcile_interval=reconcile_interval, volumes=volumes,
                          currency=currency or inv.currency, access_log=access_log,
                          snapshot_policy=snapshot_policy, snapshot_spread=snapshot_spread,
                          max_prune=max_prune, replicate=not no_replicate))
    svc.run()
