"""Lab errors: what was wrong and what to do about it."""

from __future__ import annotations

from xfleet.core.errors import XfleetError


class LabError(XfleetError):
    """The lab could not be built, started, reached or stopped."""
