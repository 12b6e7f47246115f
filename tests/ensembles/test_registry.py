import pytest
from pydantic import BaseModel, Field, ValidationError

from ensembles.errors import (
    DuplicateNameError,
    EnsembleError,
    ParamsError,
    SuiteError,
    UnknownNameError,
)
from ensembles.registry import Registry


def make_registry() -> Registry:
    registry: Registry = Registry("widget")

    @registry.register(
        "majority_vote",
        pretty_name="Majority vote",
        reference_url="https://example.org",
    )
    class MajorityVote:
        pass

    @registry.register("weighted_vote", pretty_name="Weighted vote")
    def weighted_vote() -> str:
        return "weighted"

    return registry


def test_register_sets_descriptive_attributes_on_classes_and_functions():
    registry = make_registry()
    cls = registry.get("majority_vote")
    func = registry.get("weighted_vote")
    assert (cls.name, cls.pretty_name, cls.reference_url) == (
        "majority_vote",
        "Majority vote",
        "https://example.org",
    )
    assert (func.name, func.pretty_name, func.reference_url) == (
        "weighted_vote",
        "Weighted vote",
        "",
    )
    assert func() == "weighted"


def test_names_are_sorted_and_membership_works():
    registry = make_registry()
    assert registry.names() == ["majority_vote", "weighted_vote"]
    assert "majority_vote" in registry
    assert "nope" not in registry
    assert dict(registry.items()).keys() == {"majority_vote", "weighted_vote"}
    assert list(registry) == registry.names()
    assert registry["weighted_vote"] is registry.get("weighted_vote")


def test_unknown_name_suggests_closest_name():
    registry = make_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.get("majority_vot")
    assert str(info.value) == "unknown widget 'majority_vot'; did you mean 'majority_vote'?"


def test_unknown_name_without_close_match_lists_known_names():
    registry = make_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.get("xyzzy")
    assert "majority_vote, weighted_vote" in str(info.value)


def test_unknown_name_error_is_a_key_error_and_an_ensemble_error():
    registry = make_registry()
    with pytest.raises(KeyError):
        registry.get("xyzzy")
    with pytest.raises(EnsembleError):
        registry.get("xyzzy")


def test_registering_a_name_twice_raises_duplicate_name_error():
    registry = make_registry()
    with pytest.raises(DuplicateNameError):

        @registry.register("majority_vote", pretty_name="Again")
        class Again:
            pass


def test_params_error_from_validation_names_the_field_and_the_allowed_range():
    class Params(BaseModel):
        k: int = Field(3, ge=1, le=5)

    with pytest.raises(ValidationError) as info:
        Params(k=9)
    error = ParamsError.from_validation("top_k", info.value)
    assert isinstance(error, ValueError)
    assert "top_k" in str(error)
    assert "k: must be <= 5" in str(error)


def test_suite_error_includes_file_and_line_in_its_message():
    error = SuiteError("bad gold", file="items.jsonl", line=7)
    assert (error.file, error.line) == ("items.jsonl", 7)
    assert str(error) == "items.jsonl:7: bad gold"
    assert str(SuiteError("plain")) == "plain"
