"""Playbooks: YAML runbooks of steps over the fleet, run as journaled jobs (docs/playbooks.md).

`xfleet.playbook` is the playbook API: the engine (xfleet/playbook/engine.py: loading,
validation, the step-kind registry, the run loop), templates (template.py), the run journal
(journal.py), and every step kind (xfleet/playbook/steps/, registered on import here)."""

from xfleet.playbook import steps as steps
from xfleet.playbook.engine import (
    BUILTINS as BUILTINS,
)
from xfleet.playbook.engine import (
    COMMON_KEYS as COMMON_KEYS,
)
from xfleet.playbook.engine import (
    KINDS as KINDS,
)
from xfleet.playbook.engine import (
    PENDING_KINDS as PENDING_KINDS,
)
from xfleet.playbook.engine import (
    Field as Field,
)
from xfleet.playbook.engine import (
    Player as Player,
)
from xfleet.playbook.engine import (
    PlayReport as PlayReport,
)
from xfleet.playbook.engine import (
    Say as Say,
)
from xfleet.playbook.engine import (
    StepCtx as StepCtx,
)
from xfleet.playbook.engine import (
    StepKind as StepKind,
)
from xfleet.playbook.engine import (
    StepReport as StepReport,
)
from xfleet.playbook.engine import (
    load as load,
)
from xfleet.playbook.engine import (
    play as play,
)
from xfleet.playbook.engine import (
    step_kind as step_kind,
)
from xfleet.playbook.journal import (
    Journal as Journal,
)
from xfleet.playbook.journal import (
    claim as claim,
)
from xfleet.playbook.journal import (
    runs as runs,
)
from xfleet.playbook.journal import (
    show as show,
)
from xfleet.playbook.journal import (
    start as start,
)
from xfleet.playbook.model import (
    Playbook as Playbook,
)
from xfleet.playbook.model import (
    PlaybookError as PlaybookError,
)
from xfleet.playbook.model import (
    Step as Step,
)
from xfleet.playbook.model import (
    typename as typename,
)
from xfleet.playbook.steps.sync import (
    DEFAULT_MAX_ROWS as DEFAULT_MAX_ROWS,
)
from xfleet.playbook.template import (
    bind as bind,
)
from xfleet.playbook.template import (
    condition as condition,
)
from xfleet.playbook.template import (
    lookup as lookup,
)
from xfleet.playbook.template import (
    render as render,
)
