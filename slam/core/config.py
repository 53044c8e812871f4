"""The strict base every config section derives from: a typo in a key is an error naming it, not a
setting silently ignored, and assignments (``--set``) are validated like loaded files."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """A config section: unknown keys are rejected and assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
