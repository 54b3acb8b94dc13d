"""A real `xfleet serve` process on loopback for the service's tests: started on a free port,
read over HTTP, stopped by PID (SIGTERM, then SIGKILL) even when the test fails. A failing
request shows the service's log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import PATIENCE, ROOT, wait_for, write_sim_inventory
from prometheus_client.parser import text_string_to_metric_families

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.sync import sync

LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]  # names in lower case

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str = ""
    log: list[str] = field(default_factory=list)
    token: str | None = None

    def logs(self) -> str:
        return "".join(self.log)

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
    argv = [sys.executable, "-m", "xfleet", "-i", str(inventory),
            *(["--mirror", mirror] if mirror else []), "serve", "--listen", "127.0.0.1:0",
            *args]
    env = {k: v for k, v in os.environ.items() if k not in ("XFLEET_INVENTORY", "XFLEET_MIRROR")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    s = Served(proc, token=token)

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            s.log.append(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        def started() -> str | None:
            m = LISTENING.search(s.logs())
            if m is None and proc.poll() is not None:
                raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{s.logs()}")
            return m.group(1) if m else None

        s.url = wait_for(started, f"the service to listen ({' '.join(argv)})") or ""
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
