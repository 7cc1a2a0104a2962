"""The one strict pydantic base of every config model in the project (library, training jobs, Serve app)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a YAML file fails where it is read, naming the key), and field names
    may start with ``model_`` (``model_path``, ``model_name``) without pydantic's protected-namespace warning."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
