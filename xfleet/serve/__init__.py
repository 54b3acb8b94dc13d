"""`xfleet serve`: the always-on fleet service (docs/serve.md).

The service keeps the mirror current (xfleet.ops.watch) and answers HTTP from the mirror alone:
Prometheus metrics (`metrics`), health probes and a read-only JSON API (`api`), in one
Starlette application (`app`) on uvicorn, run by `service.Service` (signals, reload)."""
