"""What a loaded playbook is: steps labelled by name or kind, places as file:line, and value
types named as the messages name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfleet import playbook


@pytest.mark.parametrize(("value", "name"), [
    (None, "nothing"), ([1], "a list"), ({}, "a mapping"), ("x", "a string"), (3, "a number"),
    (2.5, "a number"), (True, "true/false"), (b"x", "bytes"),
])
def test_typename_names_values_as_messages_do(value: object, name: str) -> None:
    assert playbook.typename(value) == name


def test_steps_and_playbooks_say_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text("name: two\nsteps:\n  - sync: {}\n  - name: look\n    query: {sql: SELECT 1}\n"
                    "    register: one\n")
    pb = playbook.load(path)
    assert pb.name == "two" and [s.label for s in pb.steps] == ["sync", "look"]
    assert [s.line for s in pb.steps] == [3, 5] and pb.where(5) == f"{path}:5"
    assert pb.steps[1].register == "one" and pb.steps[1].loop_var == "row"
    assert isinstance(pb.steps[0], playbook.Step) and isinstance(pb, playbook.Playbook)
