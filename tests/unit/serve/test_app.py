"""The HTTP application (xfleet/serve/app.py): the bearer token guards metrics and the API,
not the probes."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

from unit.serve.servekit import serve, synced_fleet


def test_a_token_guards_metrics_and_api_not_the_probes(tmp_path: Path) -> None:
    db = str(tmp_path / "mirror.db")
    inv = synced_fleet(tmp_path, db, n1=20)
    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123456789abcdef\n")
    token_file.chmod(0o644)
    r = run_cli("-i", str(inv), "serve", "--token-file", str(token_file), "--no-watch")
    assert r.code != 0 and "readable by other users" in r.err and "chmod 600" in r.err
    assert "Traceback" not in r.err
    token_file.chmod(0o600)
    with serve(inv, "--no-watch", "--token-file", str(token_file), mirror=db,
               token="0123456789abcdef0123456789abcdef") as s:
        for path in ("/metrics", "/api/v1/datasets"):
            assert s.get(path, auth=False).status == 401
            wrong = s.get(path, token="wrong-token")
            assert wrong.status == 401 and "Bearer" in wrong.headers.get("www-authenticate", "")
            assert s.get(path).status == 200
        assert s.get("/healthz", auth=False).status == 200
        assert s.get("/readyz", auth=False).status == 200
        assert "0123456789abcdef" not in s.logs()
