"""The editable policy map: policy label -> model (a name in llm_data, or the role "small" / "large").

Change the JSON and reload (``PolicyRouter.reload_policy_map`` or the Serve app's ``reconfigure``) to
move a policy to another model; the router model needs no retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routers.errors import ConfigError
from routers.policy.matrix import PolicyLabel

ROLES = ("small", "large")


class PolicyMap(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    standard: str = Field(alias="Standard_Query", min_length=1)
    complex: str = Field(alias="Complex_Query", min_length=1)
    ambiguous: str = Field(alias="Ambiguous_Query", min_length=1)

    @field_validator("standard", "complex", "ambiguous")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a policy must map to a model name or a role")
        return value.strip()

    def target(self, policy: PolicyLabel) -> str:
        return {PolicyLabel.STANDARD: self.standard, PolicyLabel.COMPLEX: self.complex,
                PolicyLabel.AMBIGUOUS: self.ambiguous}[policy]

    def to_json(self) -> dict[str, str]:
        return self.model_dump(by_alias=True)


DEFAULT_POLICY_MAP = PolicyMap.model_validate(
    {"Standard_Query": "small", "Complex_Query": "large", "Ambiguous_Query": "small"})


def load_policy_map(path: str | Path) -> PolicyMap:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"policy map {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    try:
        return PolicyMap.model_validate(raw)
    except ValidationError as exc:
        keys = [p.value for p in PolicyLabel]
        raise ConfigError(f"{path}: invalid policy map (keys must be exactly {keys}):\n{exc}") from exc
