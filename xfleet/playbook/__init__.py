"""Playbooks: YAML runbooks of steps over the fleet, run as journaled jobs (docs/playbooks.md).

`xfleet.playbook` is the engine's API (xfleet/playbook/engine.py)."""

from xfleet.playbook.engine import (
    BUILTINS as BUILTINS,
)
from xfleet.playbook.engine import (
    COMMON_KEYS as COMMON_KEYS,
)
from xfleet.playbook.engine import (
    DEFAULT_MAX_ROWS as DEFAULT_MAX_ROWS,
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
    Journal as Journal,
)
from xfleet.playbook.engine import (
    Playbook as Playbook,
)
from xfleet.playbook.engine import (
    PlaybookError as PlaybookError,
)
from xfleet.playbook.engine import (
    PlayReport as PlayReport,
)
from xfleet.playbook.engine import (
    Say as Say,
)
from xfleet.playbook.engine import (
    Step as Step,
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
    bind as bind,
)
from xfleet.playbook.engine import (
    claim as claim,
)
from xfleet.playbook.engine import (
    condition as condition,
)
from xfleet.playbook.engine import (
    load as load,
)
from xfleet.playbook.engine import (
    lookup as lookup,
)
from xfleet.playbook.engine import (
    play as play,
)
from xfleet.playbook.engine import (
    render as render,
)
from xfleet.playbook.engine import (
    runs as runs,
)
from xfleet.playbook.engine import (
    show as show,
)
from xfleet.playbook.engine import (
    start as start,
)
from xfleet.playbook.engine import (
    step_kind as step_kind,
)
from xfleet.playbook.engine import (
    typename as typename,
)
