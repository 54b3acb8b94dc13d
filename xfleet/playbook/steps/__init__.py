"""The step kinds, one module per feature family: where the features (xfleet.ops) meet the
playbook engine. Each module registers its kinds with `@step_kind` when imported; importing
this package registers them all (`xfleet.playbook` does).

A new step kind: a function in the module of its feature family (or a new module imported
here), registered with `@step_kind(name, fields)`, and a `### \\`name\\`` section in
docs/playbooks.md (tests/unit/playbook/test_steps.py checks both)."""

from xfleet.playbook.steps import compression as compression
from xfleet.playbook.steps import flow as flow
from xfleet.playbook.steps import lifecycle as lifecycle
from xfleet.playbook.steps import moves as moves
from xfleet.playbook.steps import sync as sync
from xfleet.playbook.steps import target as target
