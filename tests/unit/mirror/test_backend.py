"""Where the mirror is (xfleet/mirror/backend.py): a path is SQLite, a URL PostgreSQL, and a URL
never carries a password."""

from pathlib import Path

import pytest

from xfleet.core.errors import MirrorError
from xfleet.mirror.backend import PgUrl, is_url, location


def test_a_path_is_an_sqlite_file_relative_to_its_base(tmp_path: Path) -> None:
    assert location("m.db", base=tmp_path) == tmp_path / "m.db"
    assert location("/abs/m.db", base=tmp_path) == Path("/abs/m.db")
    assert location(tmp_path / "x.db") == tmp_path / "x.db"


@pytest.mark.parametrize("url", [
    "postgresql://xfleet@db.example:5432/fleet",
    "postgres://xfleet@/fleet?host=/run/postgresql",
    "postgresql:///fleet?service=fleet&sslmode=verify-full",
])
def test_a_url_is_postgresql_and_kept_as_written(url: str) -> None:
    loc = location(url, base=Path("/ignored"))
    assert isinstance(loc, PgUrl) and str(loc) == url and is_url(url)


@pytest.mark.parametrize("url", [
    "postgresql://xfleet:s3cret-pw@db.example/fleet",
    "postgresql://xfleet@db.example/fleet?password=s3cret-pw",
])
def test_a_password_in_the_url_is_refused_and_never_shown(url: str) -> None:
    with pytest.raises(MirrorError) as exc:
        location(url)
    text = f"{exc.value} {exc.value.hint}"
    assert "s3cret-pw" not in text
    assert "carries a password" in text and ".pgpass" in text


def test_a_bad_port_is_a_clear_error() -> None:
    with pytest.raises(MirrorError) as exc:
        location("postgresql://xfleet@db:notaport/fleet")
    assert "not valid" in str(exc.value) and "postgresql://USER@HOST" in str(exc.value.hint)
