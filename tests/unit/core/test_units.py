import pytest

from xfleet.core.errors import UsageError
from xfleet.core.units import format_age, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("1K", 1024), ("10G", 10 * 2**30), ("1.5T", int(1.5 * 2**40)),
     ("4KiB", 4096), ("2m", 2 * 2**20), (" 3 G ", 3 * 2**30)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "10X", "1..5G", "-1G"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_size(bad)
    assert "is not a size" in str(exc.value)


def test_format_size_like_zfs() -> None:
    assert format_size(None) == "-"
    assert format_size(100) == "100B"
    assert format_size(1536) == "1.50K"
    assert format_size(10 * 2**30) == "10.0G"
    assert format_size(123 * 2**40) == "123T"


def test_format_age() -> None:
    assert format_age(None) == "never"
    assert format_age(5) == "5s"
    assert format_age(125) == "2m05s"
    assert format_age(7300) == "2h01m"
    assert format_age(90000) == "1d01h"
