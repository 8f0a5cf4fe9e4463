"""The base of every settings model: frozen, and unknown keys are errors (a typo in YAML must not be
silently ignored). A base module, so config, transport and domain settings share it without cycles.
YAML files themselves are read by ``edged.yamlfile``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
