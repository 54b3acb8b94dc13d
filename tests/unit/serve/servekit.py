"""A real `xfleet serve` process on loopback for the service's tests: started on a free port,
read over HTTP, stopped by PID (SIGTERM, then SIGKILL) even when the test fails (the process:
xfleet.serve.child, which the benchmarks use too). A failing request shows the service's
log."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import PATIENCE, ROOT, write_sim_inventory
from prometheus_client.parser import text_string_to_metric_families

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.sync import sync
from xfleet.serve.child import ServeChild, served


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]  # names in lower case

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    child: ServeChild
    token: str | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.proc

    @property
    def url(self) -> str:
        return self.child.url

    def logs(self) -> str:
        return self.child.logs()

    def get(self, path: str, *, token: str | None = None, auth: bool = True) -> Reply:
        req = urllib.request.Request(self.url + path)
        tok = token if token is not None else (self.token if auth else None)
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=PATIENCE) as r:
                return Reply(r.status, r.read(), {k.lower(): v for k, v in r.headers.items()})
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()})

    def ok(self, path: str) -> Any:
        r = self.get(path)
        assert r.status == 200, (f"GET {path}: HTTP {r.status} {r.body[:2000]!r}\n"
                                 f"service log:\n{self.logs()}")
        return r.json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics by (name, sorted labels)."""
        r = self.get("/metrics")
        assert r.status == 200, f"GET /metrics: HTTP {r.status}\nservice log:\n{self.logs()}"
        out = {}
        for fam in text_string_to_metric_families(r.body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the service did not stop within {PATIENCE:g} s\n"
                                 f"service log:\n{self.logs()}") from None


@contextmanager
def serve(inventory: Path, *args: str, mirror: str | None = None,
          token: str | None = None) -> Iterator[Served]:
    with served(inventory, *args, mirror=mirror, cwd=ROOT, start_timeout=PATIENCE,
                stop_timeout=PATIENCE) as child:
        yield Served(child, token=token)


def synced_fleet(tmp_path: Path, mirror_at: str, **nodes: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {
        name: {"seed": i + 1, "volumes": n} for i, (name, n) in enumerate(nodes.items())})
    assert sync(inventory.load(inv_path), mirror_at).ok
    return inv_path


def select(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = mirror.connect(db, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
