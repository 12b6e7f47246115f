"""A merge recipe: method, base, members and their parameters, validated before anything runs."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


@cache
def merge_method_names() -> tuple[str, ...]:
    """Every merge method mergekit registers (linear, slerp, ties, dare_ties, passthrough...)."""
    from mergekit.merge_methods import registered_methods  # slow import: only when validating

    return tuple(sorted(m.spec.name for m in registered_methods()))


class MergeMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: str = Field(min_length=1, description="name of a registered model entry")
    weight: float | None = Field(default=None, ge=-10, le=10)
    density: float | None = Field(default=None, gt=0, le=1)
    layer_range: tuple[int, int] | None = Field(default=None, description="passthrough slices: [start, end)")


class MergeRecipe(BaseModel):
    """What mergekit needs to build one merged model."""

    model_config = ConfigDict(extra="forbid")

    method: str
    base: str | None = Field(default=None, description="base entry for task-vector methods")
    members: list[MergeMember] = Field(min_length=1)
    t: float | None = Field(default=None, ge=0, le=1, description="SLERP interpolation factor")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        names = merge_method_names()
        if value not in names:
            raise ValueError(f"unknown merge method {value!r}; mergekit offers {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> MergeRecipe:
        if self.method == "slerp" and (len(self.members) != 2 or self.t is None):
            raise ValueError("slerp merges exactly 2 members and needs t")
        needs_base = {"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "della"}
        if self.method in needs_base and not self.base:
            raise ValueError(f"{self.method} needs a base entry")
        if len({m.entry for m in self.members}) != len(self.members):
            raise ValueError("a member appears twice")
        return self

    def entry_names(self) -> list[str]:
        names = [m.entry for m in self.members]
        return ([self.base] if self.base and self.base not in names else []) + names
