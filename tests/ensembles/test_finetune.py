"""Fine-tuning a tiny random llama on a suite's dev split: it learns, and writes safetensors whole or not at all."""

from __future__ import annotations

import json

import pytest
import torch

from ensembles.backends import make_backend
from ensembles.finetune import PROVENANCE_FILE, FinetuneError, finetune, training_pairs
from ensembles.suites import get_builtin

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two shared cores: one thread per process keeps a tiny model's step in milliseconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def arithmetic():
    return get_builtin("arithmetic", size=24)


def test_the_training_pairs_are_the_dev_items_prompts_and_answers(arithmetic):
    pairs = training_pairs(arithmetic)
    dev = arithmetic.split("dev")
    assert len(pairs) == len(dev)
    assert pairs[0] == (arithmetic.render_prompt(dev[0]), dev[0].reference)
    assert not {p for p, _ in pairs} & {arithmetic.render_prompt(i) for i in arithmetic.split("test")}


def test_multiple_choice_pairs_learn_the_letter_or_the_options_text_as_the_suite_scores():
    suite = get_builtin("mc_knowledge", size=8)
    item = suite.split("dev")[0]
    assert training_pairs(suite)[0][1] == suite.reference_answer(item)  # the gold letter
    suite.manifest.scoring = "loglikelihood"
    assert training_pairs(suite)[0][1] == item.choices[item.gold]


def test_a_full_fine_tune_lowers_the_loss_and_writes_a_safetensors_directory(tiny_llama_dir, arithmetic, tmp_path):
    out = tmp_path / "variant"
    result = finetune(tiny_llama_dir, training_pairs(arithmetic), out, steps=40, learning_rate=1e-2, seed=1)

    assert result.path == out and len(result.losses) == 40
    assert result.last_loss < 0.8 * result.first_loss
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", PROVENANCE_FILE} <= names
    assert not [n for n in names if n.endswith(PICKLES)]
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert (record["steps"], record["method"], record["examples"]) == (40, "full", len(arithmetic.split("dev")))
    # A model like any other: the hf backend loads it, and its weights moved from the base's.
    assert (
        make_backend("hf", {"path": str(out)}).fingerprint()
        != make_backend("hf", {"path": str(tiny_llama_dir)}).fingerprint()
    )


def test_lora_is_folded_into_plain_weights_that_merge_like_a_full_fine_tune(tiny_llama_dir, arithmetic, tmp_path):
    out = tmp_path / "lora"
    result = finetune(
        tiny_llama_dir, training_pairs(arithmetic), out, steps=30, learning_rate=5e-2, method="lora", seed=1
    )

    assert result.last_loss < result.first_loss
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not [n for n in names if "adapter" in n]
    from safetensors.torch import load_file

    assert not [k for k in load_file(out / "model.safetensors") if "lora" in k]


def test_a_target_that_exists_is_left_as_it_is_and_nothing_else_is_written(tiny_llama_dir, arithmetic, tmp_path):
    out = tmp_path / "variant"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    with pytest.raises(FinetuneError, match="exists already"):
        finetune(tiny_llama_dir, training_pairs(arithmetic), out, steps=2)

    assert [p.name for p in tmp_path.iterdir()] == ["variant"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_judge_suite_has_no_answers_to_learn():
    from ensembles.suites.model import Item, Suite, SuiteManifest

    manifest = SuiteManifest(
        name="chat",
        version="1",
        task_type="judge",
        prompt_template="{input}",
        answer_extraction="first_line",
        metric="judge",
    )
    with pytest.raises(FinetuneError, match="judge suite"):
        training_pairs(Suite(manifest, [Item(id="1", input="Say hi", split="dev")]))
