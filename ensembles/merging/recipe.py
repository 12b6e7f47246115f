"""A merge recipe: method, base, members and their parameters, validated before anything runs.

The methods and their parameters come from mergekit's registry (``MergeMethodSpec``): a recipe
names a method mergekit registers, sets only parameters that method declares, with values its
own validators accept, and has the inputs its contract asks for (a base or none, how many).
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

# What a parameter may be in a recipe: mergekit's scalars (gradients over layers are left out);
# the method's own validator then checks the type it wants.
Scalar = StrictBool | int | float | str

# Parameters with a field of their own on the recipe or a member; the rest go in ``parameters``.
OWN_FIELDS = ("t", "weight", "density")


def _spec(method: str) -> Any:
    from mergekit.merge_methods import get  # slow import (torch): only when validating

    return get(method).spec


@cache
def merge_method_names() -> tuple[str, ...]:
    """Every merge method mergekit registers (linear, slerp, ties, dare_ties, passthrough...)."""
    from mergekit.merge_methods import registered_methods

    return tuple(sorted(m.spec.name for m in registered_methods()))


def merge_methods() -> list[dict[str, Any]]:
    """Each method's name, pretty name, reference and parameters, as mergekit describes them."""
    from mergekit.merge_methods import registered_methods

    out = []
    for method in sorted(registered_methods(), key=lambda m: m.spec.name):
        spec = method.spec
        out.append(
            {
                "name": spec.name,
                "pretty_name": spec.pretty_name or spec.name,
                "reference_url": spec.reference_url or "",
                "base": spec.contract.base.value,
                "parameters": {p.name: {"scope": p.scope.value, "required": p.required} for p in spec.parameters},
            }
        )
    return out


class MergeMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: str = Field(min_length=1, description="name of a registered model entry")
    weight: float | None = Field(default=None, ge=-10, le=10, description="defaults to 1 where the method weighs")
    density: float | None = Field(default=None, gt=0, le=1)
    layer_range: tuple[int, int] | None = Field(default=None, description="passthrough slices: [start, end)")
    parameters: dict[str, Scalar] = Field(default_factory=dict, description="other per-member mergekit parameters")

    @field_validator("layer_range")
    @classmethod
    def _range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(f"layer_range must be [start, end) with 0 <= start < end, not {list(value)}")
        return value

    @model_validator(mode="after")
    def _own_fields_once(self) -> MergeMember:
        for name in OWN_FIELDS:
            if name in self.parameters:
                raise ValueError(f"parameters.{name}: set {name} as the member's own field")
        return self

    def given_parameters(self) -> dict[str, Scalar]:
        """The per-member parameters this member sets, its own fields included."""
        own = {"weight": self.weight, "density": self.density}
        return {**self.parameters, **{k: v for k, v in own.items() if v is not None}}


class MergeRecipe(BaseModel):
    """What mergekit needs to build one merged model."""

    model_config = ConfigDict(extra="forbid")

    method: str
    base: str | None = Field(default=None, description="base entry for task-vector methods")
    members: list[MergeMember] = Field(min_length=1, max_length=16)
    t: float | None = Field(default=None, ge=0, le=1, description="SLERP interpolation factor")
    parameters: dict[str, Scalar] = Field(default_factory=dict, description="other shared mergekit parameters")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds the random drops of DARE and DELLA")
    chat_template: Literal["auto", "off"] = Field(default="auto", description="how the merged model is prompted")

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        names = merge_method_names()
        if value not in names:
            close = difflib.get_close_matches(value, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown merge method {value!r}; {hint}mergekit offers {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _fits_the_method(self) -> MergeRecipe:
        spec = _spec(self.method)
        self._check_inputs(spec)
        self._check_parameters(spec)
        return self

    @property
    def is_slices(self) -> bool:
        """Passthrough stacks layer slices of its members (a "frankenmerge") instead of mixing weights."""
        return self.method == "passthrough"

    def base_entry(self) -> str | None:
        """The base mergekit is given: the named one, or, for two-input methods that need one
        (slerp, nearswap), the first member, which ``t = 0`` returns."""
        if self.base or self.is_slices:
            return self.base
        spec = _spec(self.method)
        if spec.contract.base.value == "required" and spec.contract.max_inputs == 2:
            return self.members[0].entry
        return None

    def _check_inputs(self, spec: Any) -> None:
        policy = spec.contract.base.value
        if self.base and policy in ("ignored", "forbidden"):
            raise ValueError(f"{self.method} takes no base; leave base out")
        names = [m.entry for m in self.members]
        if self.is_slices:
            if len(self.members) > 1 and any(m.layer_range is None for m in self.members):
                raise ValueError("passthrough stacks layer slices: give every member a layer_range")
            return  # the same slice may come twice: repeating layers is what some frankenmerges do
        if any(m.layer_range is not None for m in self.members):
            raise ValueError("layer_range is for passthrough slices only")
        if len(set(names)) != len(names):
            raise ValueError("a member appears twice")
        if policy == "required" and not self.base_entry():
            raise ValueError(f"{self.method} needs a base entry")
        base = self.base_entry()
        inputs = list(dict.fromkeys([*names, *([base] if base else [])]))
        try:
            spec.contract.validate_ids(inputs, base)
        except ValueError as exc:  # mergekit's words: "requires exactly 2 inputs; got 3"
            raise ValueError(f"{self.method}: {exc}") from None

    def _check_parameters(self, spec: Any) -> None:
        shared = {p.name: p for p in spec.shared_parameters}
        per_input = {p.name: p for p in spec.input_parameters}
        if "t" in self.parameters:
            raise ValueError("parameters.t: set t as its own field")
        given_shared = self.mergekit_parameters()
        for name, value in given_shared.items():
            where = name if name == "t" else f"parameters.{name}"
            if name not in shared:
                raise ValueError(f"{where}: not a parameter of {self.method}{_known(shared, 'shared')}")
            _validate(shared[name], value, where)
        missing = [name for name, p in shared.items() if p.required and name not in given_shared]
        if missing:
            raise ValueError(f"{self.method} needs {', '.join(missing)}")
        base = self.base_entry()
        for i, member in enumerate(self.members):
            for name, value in member.given_parameters().items():
                where = f"members.{i}.{name}"
                if name not in per_input:
                    raise ValueError(f"{where}: not a per-member parameter of {self.method}{_known(per_input, '')}")
                if member.entry == base and per_input[name].scope.value == "non_base":
                    raise ValueError(f"{where}: the base takes no {name} in {self.method}")
                _validate(per_input[name], value, where)

    def mergekit_parameters(self) -> dict[str, Scalar]:
        """The shared parameters as mergekit takes them."""
        return {**self.parameters, **({"t": self.t} if self.t is not None else {})}

    def member_parameters(self, member: MergeMember) -> dict[str, Scalar]:
        """A member's parameters as mergekit takes them; a required weight defaults to 1."""
        values = member.given_parameters()
        is_base = member.entry == self.base_entry()
        for p in _spec(self.method).input_parameters:
            if p.name == "weight" and p.required and "weight" not in values:
                if not (is_base and p.scope.value == "non_base"):
                    values["weight"] = 1.0
        return values

    def entry_names(self) -> list[str]:
        """Every entry the recipe reads, the base first, each once."""
        names = [m.entry for m in self.members]
        return list(dict.fromkeys(([self.base] if self.base else []) + names))


def _known(params: dict[str, Any], scope: str) -> str:
    if not params:
        return f" (it takes no {scope + ' ' if scope else ''}parameters)"
    return f"; it takes {', '.join(sorted(params))}"


def _validate(spec: Any, value: Any, where: str) -> None:
    try:
        spec.validate(value)
    except ValidationError as exc:
        raise ValueError(f"{where}: {exc.errors()[0]['msg']} (got {value!r})") from None
