"""The policy files' shared loader (xfleet/ops/policyfile.py), through a minimal kind of policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xfleet.core.yamlsrc import Val
from xfleet.ops.policyfile import PolicyError, PolicyFile, match_sql


class TierError(PolicyError):
    pass


@dataclass
class Tier:
    name: str
    line: int
    match: dict[str, Any] = field(default_factory=dict)


class Tiers(PolicyFile[Tier]):
    error = TierError
    kind = "tier policy"
    missing_hint = "write one"
    key = "tiers"
    shape = "a tier policy is a mapping with a 'tiers:' list"
    shape_hint = "see the docs"
    noun = "tier"

    def entry(self, i: int, item: Val) -> Tier:
        body = self.body(i, item, ("name", "match"), "name and match")
        name = str(body["name"].value)
        return Tier(name, item.line, self.match(name, body.get("match")))


def test_entries_in_order_with_their_match_as_sql() -> None:
    text = "tiers:\n  - {name: hot, match: {volsize: '>=1T', node: [n1, n2]}}\n  - {name: rest}\n"
    hot, rest = Tiers(Path("t.yaml")).parse(text)
    assert (hot.name, hot.line, rest.name, rest.line, rest.match) == ("hot", 2, "rest", 3, {})
    sql, params = match_sql(hot.match, None, "xfleet:tenant")
    assert sql == "(node IN (?, ?) AND volsize >= ?)" and params == ["n1", "n2", 1 << 40]


@pytest.mark.parametrize(("text", "where", "words"), [
    ("x: 1\n", "t.yaml:1", "a tier policy is a mapping with a 'tiers:' list"),
    ("tiers: []\n", "t.yaml:1", "tiers must be a non-empty list, got a list"),
    ("tiers:\n  - {name: a}\n  - {name: a, match: {node: n}}\n", "t.yaml:3",
     "tier name 'a' is used twice (first at line 2)"),
    ("tiers:\n  - {name: a}\n  - {name: b}\n", "t.yaml:3",
     "tier 'b' can never match: tier 'a' (line 2) has no 'match'"),
    ("tiers:\n  - {name: a, colour: red}\n", "t.yaml:2", "unknown key 'colour' in tier 1"),
    ("tiers:\n  - {name: a, match: {colour: red}}\n", "t.yaml:2", "unknown match key 'colour'"),
    ("tiers:\n  - [\n", "t.yaml:3", "YAML syntax error"),
])
def test_mistakes_raise_the_kinds_error_at_file_and_line(text: str, where: str,
                                                         words: str) -> None:
    with pytest.raises(TierError) as e:
        Tiers(Path("t.yaml")).parse(text)
    assert e.value.where == where and words in e.value.message


def test_a_missing_file_says_which_kind(tmp_path: Path) -> None:
    with pytest.raises(TierError, match="tier policy .* does not exist") as e:
        Tiers(tmp_path / "none.yaml").load()
    assert e.value.hint == "write one"
