"""The JSON API (xfleet/serve/api.py) from a real `xfleet serve`: pages equal `xfleet ls`,
errors are the CLI's."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from unit.serve.servekit import select, serve, synced_fleet
from xfleet.core.errors import UsageError
from xfleet.serve import api

Q = urllib.parse.quote


def test_api_datasets_pages_through_what_ls_prints(tmp_path: Path, mirror_at: str) -> None:
    inv = synced_fleet(tmp_path, mirror_at, n1=300, n2=200)
    where = "used>1M"
    ls = run_cli("-i", str(inv), "--mirror", mirror_at, "ls", "--type", "volume", "--where",
                 where, "--json", "--limit", "0")
    assert ls.code == 0, ls.err
    expected = json.loads(ls.out)
    assert len(expected) > 100
    with serve(inv, "--no-watch", mirror=mirror_at) as s:
        got: list[dict[str, Any]] = []
        after = ""
        pages = 0
        while True:
            page = s.ok(f"/api/v1/datasets?type=volume&where={Q(where)}&limit=37{after}")
            got += page["items"]
            pages += 1
            if page["next"] is None:
                break
            after = f"&after={page['next']}"
        assert got == expected and pages == -(-len(expected) // 37)
        # descending by used, as `ls --sort -used` (ties in any order: compare the values)
        top = s.ok(f"/api/v1/datasets?type=volume&where={Q(where)}&sort=-used&limit=10")[
            "items"]
        assert [r["used"] for r in top] == sorted((r["used"] for r in expected),
                                                  reverse=True)[:10]
        name = expected[0]["name"]
        detail = s.ok(f"/api/v1/datasets/{expected[0]['node']}/{name}")
        assert detail["row"]["name"] == name and detail["node"]["name"] == expected[0]["node"]


def test_api_errors_are_the_cli_s(tmp_path: Path) -> None:
    db = str(tmp_path / "mirror.db")
    inv = synced_fleet(tmp_path, db, n1=20)
    bad = "used>>1"
    cli = run_cli("-i", str(inv), "ls", "--where", bad)
    assert cli.code != 0
    message = cli.err.splitlines()[0].removeprefix("error: ")
    with serve(inv, "--no-watch", mirror=db) as s:
        r = s.get(f"/api/v1/datasets?where={Q(bad)}")
        assert r.status == 400 and r.json()["error"] == message, (r.body, cli.err)
        assert r.json().get("hint")
        assert s.get("/api/v1/datasets?sort=nonsense").status == 400
        assert s.get("/api/v1/datasets?after=garbage").status == 400
        assert s.get("/api/v1/datasets?limit=100000").status == 400
        r = s.get("/api/v1/datasets/n1/tank/no-such-volume")
        assert r.status == 404 and "no dataset" in r.json()["error"]
        assert s.get("/api/v1/nothing-here").status == 404
        nodes = s.ok("/api/v1/nodes")["items"]
        assert [n["node"] for n in nodes] == ["n1"] and nodes[0]["labels"] == {"zone": "a"}
        pools = s.ok("/api/v1/pools")["items"]
        assert {p["pool"] for p in pools} == {r[0] for r in select(db, "SELECT name FROM pools")}
        assert s.ok("/api/v1/moves") == {"items": []}
        assert s.ok("/api/v1/rollouts") == {"items": []}
        assert isinstance(s.ok("/api/v1/alerts")["items"], list)


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    key = ("n1", "tank/a b:c@x")
    assert api.decode_cursor(api.encode_cursor(key), 2) == key
    for bad in ("", "!!!", api.encode_cursor(["n1"]), api.encode_cursor([{"x": 1}, 2])):
        with pytest.raises(UsageError, match="cursor"):
            api.decode_cursor(bad, 2)
