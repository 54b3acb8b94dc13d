"""`xfleet serve`'s command line (xfleet/cli/serve.py): bad options and a busy port are clear
errors, never tracebacks (the service itself: tests/unit/serve/)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

from unit.serve.servekit import serve, synced_fleet


def test_bad_listen_addresses_and_options_are_clear_errors(tmp_path: Path) -> None:
    db = str(tmp_path / "mirror.db")
    inv = synced_fleet(tmp_path, db, n1=5)
    for args, words in ((["--listen", "nowhere"], "HOST:PORT"),
                        (["--listen", "127.0.0.1:99999"], "HOST:PORT"),
                        (["--volume-metrics", "all"], "top:K"),
                        (["--token-file", str(tmp_path / "missing")], "cannot read the token"),
                        (["--listen", "no-such-host.invalid:1"], "cannot listen on")):
        r = run_cli("-i", str(inv), "serve", "--no-watch", *args)
        assert r.code != 0 and words in r.err, (args, r.err)
        assert "Traceback" not in r.err
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    r = run_cli("-i", str(inv), "serve", "--no-watch", "--token-file", str(short))
    assert r.code != 0 and "shorter than 16" in r.err and "Traceback" not in r.err
    with serve(inv, "--no-watch", mirror=db) as s:
        port = s.url.rsplit(":", 1)[1]
        r = run_cli("-i", str(inv), "serve", "--no-watch", "--listen", f"127.0.0.1:{port}")
        assert r.code != 0 and f"cannot listen on 127.0.0.1:{port}" in r.err, r.err
        assert "Traceback" not in r.err
