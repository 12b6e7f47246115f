"""Merges with mergekit on tiny random llamas: every method it registers, the checks before, the writes after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ensembles.backends import DecodingParams, make_backend
from ensembles.merging import (
    PROVENANCE_FILE,
    RECIPE_FILE,
    MergeError,
    MergeRecipe,
    is_complete,
    materialize,
    merge_method_names,
    read_provenance,
)

REQUIRED = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "passthrough")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two cores shared by many test processes: OpenMP threads spinning against each other make a
    # tiny model's step a hundred times slower than one thread does.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def family(tiny_llama_dir, tiny_variant, tmp_path_factory) -> dict[str, Path]:
    """A base and two variants of it: the same architecture and vocabulary, other weights."""
    root = tmp_path_factory.mktemp("family")
    return {
        "base": tiny_llama_dir,
        "v1": tiny_variant(root / "v1", seed=1),
        "v2": tiny_variant(root / "v2", seed=2),
    }


def recipe_for(method: str) -> dict:
    """A recipe of the base and its two variants that fits ``method``'s contract in mergekit."""
    from mergekit.merge_methods import get

    if method == "passthrough":
        return {
            "method": method,
            "members": [{"entry": "v1", "layer_range": [0, 2]}, {"entry": "v2", "layer_range": [1, 2]}],
        }
    spec = get(method).spec
    recipe: dict = {"method": method, "members": [{"entry": "v1"}, {"entry": "v2"}]}
    base = spec.contract.base.value
    if base == "optional" or (base == "required" and spec.contract.max_inputs != 2):
        recipe["base"] = "base"
    if any(p.name == "t" and p.required for p in spec.shared_parameters):
        recipe["t"] = 0.5
    return recipe


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_every_method_the_issue_names_is_in_mergekits_registry():
    assert set(REQUIRED) <= set(merge_method_names())


@pytest.mark.parametrize("method", merge_method_names())
def test_each_mergekit_method_merges_the_tiny_family_into_a_model_that_loads_and_generates(method, family, tmp_path):
    recipe = MergeRecipe.model_validate(recipe_for(method))

    out = materialize(recipe, family, tmp_path / "merged")

    assert is_complete(out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", RECIPE_FILE, PROVENANCE_FILE} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    merged = weights(out)
    assert all(torch.isfinite(t).all() for t in merged.values())
    backend = make_backend("hf", {"path": str(out), "chat_template": "off"})
    [generation] = backend.generate(["What is 2 + 3 ?"], DecodingParams(max_new_tokens=2))
    assert generation.completion_tokens >= 1


def test_linear_is_the_weighted_average_of_the_members(family, tmp_path):
    recipe = MergeRecipe.model_validate(
        {"method": "linear", "members": [{"entry": "v1", "weight": 1}, {"entry": "v2", "weight": 3}]}
    )
    merged = weights(materialize(recipe, family, tmp_path / "m"))
    a, b = weights(family["v1"]), weights(family["v2"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (a[name] + 3 * b[name]) / 4)


def test_slerp_at_t_zero_is_its_base_the_first_member(family, tmp_path):
    recipe = MergeRecipe.model_validate({"method": "slerp", "t": 0.0, "members": [{"entry": "v1"}, {"entry": "v2"}]})
    merged = weights(materialize(recipe, family, tmp_path / "m"))
    first = weights(family["v1"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, first[name])


def test_task_arithmetic_adds_each_variants_difference_from_the_base(family, tmp_path):
    recipe = MergeRecipe.model_validate(
        {"method": "task_arithmetic", "base": "base", "members": [{"entry": "v1", "weight": 0.5}, {"entry": "v2"}]}
    )
    merged = weights(materialize(recipe, family, tmp_path / "m"))
    base, a, b = weights(family["base"]), weights(family["v1"]), weights(family["v2"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, base[name] + 0.5 * (a[name] - base[name]) + (b[name] - base[name]))


def test_passthrough_stacks_the_layer_slices_in_order(family, tmp_path):
    recipe = MergeRecipe.model_validate(recipe_for("passthrough"))
    out = materialize(recipe, family, tmp_path / "m")
    merged, a, b = weights(out), weights(family["v1"]), weights(family["v2"])

    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    key = "model.layers.{}.mlp.down_proj.weight"
    torch.testing.assert_close(merged[key.format(0)], a[key.format(0)])
    torch.testing.assert_close(merged[key.format(1)], a[key.format(1)])
    torch.testing.assert_close(merged[key.format(2)], b[key.format(1)])


def test_the_directory_holds_the_recipe_and_provenance_with_member_fingerprints(family, tmp_path):
    recipe = MergeRecipe.model_validate(recipe_for("ties"))
    out = materialize(recipe, family, tmp_path / "m", fingerprints={"v1": "hf:given"})

    provenance = read_provenance(out)
    assert provenance["mergekit"] == "0.1.5"
    assert provenance["recipe"]["method"] == "ties"
    assert provenance["members"]["v1"]["fingerprint"] == "hf:given"
    # Not given: computed as the hf backend fingerprints the directory.
    assert provenance["members"]["v2"]["fingerprint"] == make_backend("hf", {"path": str(family["v2"])}).fingerprint()
    import yaml

    assert MergeRecipe.model_validate(yaml.safe_load((out / RECIPE_FILE).read_text())) == recipe


def test_a_finished_merge_is_not_built_twice(family, tmp_path):
    recipe = MergeRecipe.model_validate(recipe_for("linear"))
    out = materialize(recipe, family, tmp_path / "m")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert materialize(recipe, family, tmp_path / "m") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_merge_that_fails_mid_write_leaves_no_directory_behind(family, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(family["v2"], broken)
    tensors = weights(broken)
    tensors.pop("model.layers.1.mlp.up_proj.weight")  # mergekit finds it missing half way through
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    recipe = MergeRecipe.model_validate(recipe_for("linear"))

    with pytest.raises(MergeError, match="mergekit could not merge"):
        materialize(recipe, {**family, "v2": broken}, tmp_path / "out" / "m")

    assert list((tmp_path / "out").iterdir()) == []


def test_a_member_fixed_after_a_failed_merge_is_read_afresh_by_the_same_process(family, tmp_path):
    member = tmp_path / "member"
    shutil.copytree(family["v2"], member)
    intact = weights(member)
    save_file({k: v for k, v in intact.items() if "layers.1" not in k}, member / "model.safetensors")
    recipe = MergeRecipe.model_validate(recipe_for("linear"))
    with pytest.raises(MergeError):
        materialize(recipe, {**family, "v2": member}, tmp_path / "m")

    save_file(intact, member / "model.safetensors", metadata={"format": "pt"})

    # mergekit's process-wide loader cache would still hold the broken file's tensor index.
    assert is_complete(materialize(recipe, {**family, "v2": member}, tmp_path / "m"))


def test_leftovers_of_a_killed_merge_never_look_complete_and_are_cleared(family, tmp_path):
    out = tmp_path / "m"
    leftover = tmp_path / ".m.abc123"  # what a SIGKILL during the write leaves: a hidden sibling
    shutil.copytree(family["v1"], leftover)
    assert not is_complete(out)

    materialize(MergeRecipe.model_validate(recipe_for("linear")), family, out)

    assert is_complete(out) and not leftover.exists()


def test_a_member_with_pickle_weights_only_is_refused_before_mergekit_reads_it(family, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(family["v2"], pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")

    with pytest.raises(MergeError, match="'v2' holds pickle weights"):
        materialize(MergeRecipe.model_validate(recipe_for("linear")), {**family, "v2": pickled}, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- Members that cannot be merged ----------------------------------------------------------


def _resaved(source: Path, target: Path, config_class: str, **changes) -> Path:
    """A tiny model of another architecture or shape, with ``source``'s tokenizer."""
    import transformers

    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    config = getattr(transformers, config_class)(
        **{**transformers.AutoConfig.from_pretrained(source).to_dict(), **changes, "architectures": None}
    )
    torch.manual_seed(5)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(target, safe_serialization=True)
    return target


def test_members_of_different_architectures_are_refused_naming_both(family, tmp_path):
    qwen = _resaved(family["base"], tmp_path / "qwen", "Qwen2Config", model_type="qwen2")
    recipe = MergeRecipe.model_validate(recipe_for("linear"))

    with pytest.raises(MergeError, match="architecture differs: 'v1' has LlamaForCausalLM, 'v2' has Qwen2ForCausalLM"):
        materialize(recipe, {**family, "v2": qwen}, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_members_with_other_vocabularies_are_refused(family, tmp_path):
    wider = tmp_path / "wider"
    shutil.copytree(family["v2"], wider)
    tokenizer = json.loads((wider / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["Paris"] = len(tokenizer["model"]["vocab"])
    (wider / "tokenizer.json").write_text(json.dumps(tokenizer))
    recipe = MergeRecipe.model_validate(recipe_for("linear"))

    with pytest.raises(MergeError, match="tokenizer vocabulary size differs: 'v1' has 212, 'v2' has 213"):
        materialize(recipe, {**family, "v2": wider}, tmp_path / "m")

    # Same size, other ids: the hash of the token -> id map tells them apart.
    vocab = tokenizer["model"]["vocab"]
    del vocab["Paris"]
    vocab["1"], vocab["2"] = vocab["2"], vocab["1"]
    (wider / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(MergeError, match=r"tokenizer \(vocabulary hash\) differs: 'v1' has \w{12}, 'v2' has"):
        materialize(recipe, {**family, "v2": wider}, tmp_path / "m")


def test_hidden_size_and_layer_count_must_match_except_for_passthrough_slices(family, tmp_path):
    wide = _resaved(family["base"], tmp_path / "wide", "LlamaConfig", hidden_size=32, head_dim=16)
    deep = _resaved(family["base"], tmp_path / "deep", "LlamaConfig", num_hidden_layers=4)
    linear = MergeRecipe.model_validate(recipe_for("linear"))

    with pytest.raises(MergeError, match="hidden size differs: 'v1' has 16, 'v2' has 32"):
        materialize(linear, {**family, "v2": wide}, tmp_path / "m")
    with pytest.raises(MergeError, match="layer count differs: 'v1' has 2, 'v2' has 4"):
        materialize(linear, {**family, "v2": deep}, tmp_path / "m")

    slices = MergeRecipe.model_validate(
        {
            "method": "passthrough",
            "members": [{"entry": "v1", "layer_range": [0, 2]}, {"entry": "v2", "layer_range": [2, 4]}],
        }
    )
    out = materialize(slices, {**family, "v2": deep}, tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    past = MergeRecipe.model_validate(
        {
            "method": "passthrough",
            "members": [{"entry": "v1", "layer_range": [0, 3]}, {"entry": "v2", "layer_range": [0, 1]}],
        }
    )
    with pytest.raises(MergeError, match=r"layer_range \[0, 3\] of 'v1' goes past its 2 layers"):
        materialize(past, family, tmp_path / "m2")


# --- Recipes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"method": "lnear", "members": [{"entry": "a"}]}, "did you mean 'linear'?"),
        ({"method": "slerp", "members": [{"entry": "a"}, {"entry": "b"}]}, "slerp needs t"),
        (
            {"method": "slerp", "t": 0.5, "members": [{"entry": "a"}, {"entry": "b"}, {"entry": "c"}]},
            "exactly 2 inputs",
        ),
        ({"method": "linear", "base": "x", "members": [{"entry": "a"}]}, "linear takes no base"),
        ({"method": "ties", "members": [{"entry": "a"}]}, "ties needs a base entry"),
        ({"method": "linear", "t": 0.5, "members": [{"entry": "a"}]}, "t: not a parameter of linear"),
        ({"method": "linear", "members": [{"entry": "a", "density": 0.5}]}, "members.0.density: not a per-member"),
        ({"method": "ties", "base": "x", "members": [{"entry": "a"}], "parameters": {"lamda": 1}}, "parameters.lamda"),
        (
            {"method": "ties", "base": "x", "members": [{"entry": "a"}], "parameters": {"normalize": "maybe"}},
            "parameters.normalize: Input should be a valid boolean",
        ),
        ({"method": "model_stock", "base": "x", "members": [{"entry": "a"}]}, "at least 3 inputs"),
        ({"method": "passthrough", "members": [{"entry": "a", "layer_range": [0, 2]}, {"entry": "b"}]}, "layer_range"),
        ({"method": "linear", "members": [{"entry": "a", "layer_range": [0, 2]}]}, "for passthrough slices only"),
        ({"method": "linear", "members": [{"entry": "a"}, {"entry": "a"}]}, "a member appears twice"),
    ],
)
def test_a_recipe_that_does_not_fit_its_mergekit_method_is_refused_with_the_reason(recipe, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        MergeRecipe.model_validate(recipe)


def test_weights_default_to_one_and_the_base_takes_none_in_task_vector_methods():
    recipe = MergeRecipe.model_validate(
        {"method": "task_arithmetic", "base": "b", "members": [{"entry": "b"}, {"entry": "v", "density": 0.5}]}
    )
    assert [recipe.member_parameters(m) for m in recipe.members] == [{}, {"density": 0.5, "weight": 1.0}]
    assert recipe.entry_names() == ["b", "v"]
