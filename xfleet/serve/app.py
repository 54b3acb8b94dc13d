"""The service's HTTP application (Starlette, served by uvicorn): `/metrics`, `/healthz`,
`/readyz` and the JSON API under `/api/v1/` (docs/serve.md).

Handlers are plain functions run in Starlette's thread pool, each reading the mirror on its
thread's connection (serve.readers). With a bearer token configured, `/metrics` and the API
need `Authorization: Bearer TOKEN`; the health probes never do (they reveal nothing)."""

from __future__ import annotations

import hmac
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from xfleet.core.errors import UsageError, XfleetError
from xfleet.mirror.backend import DatabaseError
from xfleet.serve import api
from xfleet.serve.readers import Readers

OPEN_PATHS = ("/healthz", "/readyz")


@dataclass
class Context:
    """What the handlers need; the service owns it and may swap `nodes`/`token` on reload."""

    readers: Readers
    registry: CollectorRegistry
    nodes: Callable[[], Sequence[str]]  # the inventory's nodes, in order
    token: Callable[[], str | None] = lambda: None
    tenant_property: str = "xfleet:tenant"
    health: Callable[[], tuple[bool, dict[str, Any]]] = lambda: (True, {})
    ready: Callable[[], tuple[bool, dict[str, Any]]] = lambda: (True, {})
    clock: Callable[[], float] = time.time
    started: float = field(default_factory=time.time)


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, default=str, indent=None) + "\n", status_code=status,
                    media_type="application/json")


def _error(status: int, message: str, hint: str | None = None) -> Response:
    return _json({"error": message, **({"hint": hint} if hint else {})}, status)


class BearerAuth:
    """Refuses requests without the configured bearer token (401), except the probes."""

    def __init__(self, app: ASGIApp, token: Callable[[], str | None]) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        expected = self.token()
        if scope["type"] != "http" or expected is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value.decode("latin-1")
        scheme, _, supplied = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(),
                                                              expected.encode()):
            await self.app(scope, receive, send)
            return
        response = _error(401, "a bearer token is required" if not given else
                          "the bearer token is not the service's",
                          hint="send 'Authorization: Bearer TOKEN' with the token in the "
                          "service's --token-file")
        response.headers["WWW-Authenticate"] = 'Bearer realm="xfleet"'
        await response(scope, receive, send)


def build(ctx: Context) -> ASGIApp:
    def guarded(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            try:
                return fn(request)
            except api.NotFound as exc:
                return _error(404, exc.message, exc.hint)
            except UsageError as exc:
                return _error(400, exc.message, exc.hint)
            except XfleetError as exc:
                return _error(503, exc.message, exc.hint)
            except (sqlite3.Error, DatabaseError) as exc:
                return _error(503, f"the mirror cannot answer: {exc}",
                              "see the service's log; is the mirror reachable?")
        return handler

    def params(request: Request) -> api.Params:
        out: api.Params = {}
        for k, v in request.query_params.multi_items():
            out.setdefault(k, []).append(v)
        return out

    def metrics(request: Request) -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        ok, detail = ctx.health()
        return _json({"status": "ok" if ok else "failing", **detail}, 200 if ok else 503)

    def readyz(request: Request) -> Response:
        ok, detail = ctx.ready()
        if ok:
            try:
                with ctx.readers.read() as conn:
                    conn.execute("SELECT count(*) FROM nodes").fetchone()
            except (XfleetError, sqlite3.Error, DatabaseError) as exc:
                ok, detail = False, {**detail, "mirror": str(exc)}
        return _json({"status": "ready" if ok else "not ready", **detail}, 200 if ok else 503)

    def datasets(request: Request) -> Response:
        with ctx.readers.read() as conn:
            return _json(api.datasets(conn, params(request),
                                      tenant_property=ctx.tenant_property))

    def dataset(request: Request) -> Response:
        with ctx.readers.read() as conn:
            return _json(api.dataset(conn, request.path_params["node"],
                                     request.path_params["name"]))

    def nodes(request: Request) -> Response:
        with ctx.readers.read() as conn:
            return _json({"items": api.nodes(conn, ctx.nodes(), ctx.clock())})

    def pools(request: Request) -> Response:
        with ctx.readers.read() as conn:
            return _json({"items": api.pools(conn, ctx.nodes(), ctx.clock())})

    def job_list(table: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            with ctx.readers.read() as conn:
                return _json({"items": api.job_rows(conn, table, params(request))})
        return handler

    def alert_list(request: Request) -> Response:
        with ctx.readers.read() as conn:
            return _json({"items": api.alert_list(conn, ctx.nodes(), ctx.clock())})

    def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such path: {request.url.path}",
                      "see docs/serve.md for the endpoints")

    routes = [
        Route("/metrics", guarded(metrics)),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/v1/datasets", guarded(datasets)),
        Route("/api/v1/datasets/{node}/{name:path}", guarded(dataset)),
        Route("/api/v1/nodes", guarded(nodes)),
        Route("/api/v1/pools", guarded(pools)),
        Route("/api/v1/moves", guarded(job_list("moves"))),
        Route("/api/v1/rollouts", guarded(job_list("rollouts"))),
        Route("/api/v1/alerts", guarded(alert_list)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    return BearerAuth(app, ctx.token)
