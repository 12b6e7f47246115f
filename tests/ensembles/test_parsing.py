"""Untrusted YAML and JSON: ordinary parse errors for bombs, loops and depth; ordinary documents unchanged."""

from __future__ import annotations

import json

import pytest
import yaml

from ensembles.parsing import MAX_ALIAS_EXPANSION, MAX_DEPTH, compose_yaml, load_json, load_yaml

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_anchors_used_for_reuse_still_load():
    text = "base: &base {metric: exact_match, stop: ['\\n']}\nfirst: *base\nsecond: {<<: *base, metric: f1}\n"
    assert load_yaml(text) == yaml.safe_load(text)


def test_a_billion_laughs_is_a_yaml_error_at_once():
    with pytest.raises(yaml.YAMLError, match="aliases expand the document"):
        load_yaml(LAUGHS)


def test_expansion_up_to_the_budget_loads():
    # Ten copies of a list of (budget / 10 - 1) values: just inside the budget.
    width = MAX_ALIAS_EXPANSION // 10 - 1
    text = f"a: &a [{', '.join(['x'] * width)}]\nb: [{', '.join(['*a'] * 10)}]\n"
    assert len(load_yaml(text)["b"]) == 10


def test_a_recursive_alias_is_a_yaml_error():
    with pytest.raises(yaml.YAMLError, match="contains it"):
        load_yaml("a: &a [1, *a]\n")


def test_nesting_deeper_than_the_limit_is_a_yaml_error_not_a_recursion_error():
    deep = "[" * 10_000 + "]" * 10_000
    with pytest.raises(yaml.YAMLError, match=f"nested more than {MAX_DEPTH} levels"):
        load_yaml(deep)
    with pytest.raises(yaml.YAMLError):
        compose_yaml(deep)
    assert load_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None


def test_python_tags_stay_refused():
    with pytest.raises(yaml.YAMLError):
        load_yaml("x: !!python/object/apply:os.system ['true']\n")


def test_deep_json_is_a_decode_error_and_ordinary_json_loads():
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        load_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        load_json(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert load_json('{"a": [1, 2, {"b": null}]}') == {"a": [1, 2, {"b": None}]}
