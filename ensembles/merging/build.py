"""Build a recipe's merged weights with mergekit's runner, into a directory that appears whole or not at all.

mergekit's ``run_merge`` fits most of the job: it plans the merge tensor by tensor, works out of
core on models larger than memory, and writes the config and tokenizer. Where it does not fit:

- it writes into its output directory as it goes, so a crash leaves a directory with a
  ``config.json`` and some shards: it is given a hidden temporary sibling, renamed into place
  once ``provenance.json`` (written last) is there;
- its model card and ``mergekit_config.yml`` name those temporary paths, so they are turned off
  and the recipe (YAML) and a provenance record are written beside the weights instead;
- it parses a model given as a string ``a+b`` as a model plus a LoRA adapter, so members are given
  as ``ModelPath`` objects, and it falls back to ``pytorch_model.bin`` (pickle) when a directory has
  no ``model.safetensors``, so members are checked here first and pickles never reach it;
- its loader cache lives as long as the process, so it is emptied around each merge (below);
- its in-memory ``merge_state_dicts`` would hold every member in memory at once, which is why the
  YAML runner is used even for small models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from ensembles.merging.members import MergeError, check_members, describe_directory
from ensembles.merging.recipe import MergeRecipe

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
PROVENANCE_FILE = "provenance.json"  # written last: a directory without it is not a finished merge
WEIGHT_INDEXES = ("model.safetensors", "model.safetensors.index.json")  # the names mergekit reads
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished merge (its provenance record is written last)."""
    return (directory / PROVENANCE_FILE).is_file()


def read_provenance(directory: Path) -> dict[str, Any]:
    """The provenance record of a finished merge."""
    data: dict[str, Any] = json.loads((directory / PROVENANCE_FILE).read_text())
    return data


def mergekit_config(recipe: MergeRecipe, dirs: Mapping[str, Path]) -> Any:
    """The ``MergeConfiguration`` mergekit runs for ``recipe``, with each entry at its directory."""
    from mergekit.config import MergeConfiguration

    def ref(name: str) -> dict[str, Any]:
        return {"model": {"path": str(dirs[name])}}

    data: dict[str, Any] = {"merge_method": recipe.method, "dtype": recipe.dtype, "out_dtype": recipe.dtype}
    if recipe.is_slices and any(m.layer_range for m in recipe.members):
        data["slices"] = [
            {
                "sources": [
                    {
                        "model": ref(m.entry),
                        "layer_range": list(m.layer_range or ()),
                        "parameters": recipe.member_parameters(m) or None,
                    }
                ]
            }
            for m in recipe.members
        ]
    else:
        data["models"] = [
            {"model": ref(m.entry), "parameters": recipe.member_parameters(m) or None} for m in recipe.members
        ]
        base = recipe.base_entry()
        if base:
            data["base_model"] = ref(base)
    if recipe.mergekit_parameters():
        data["parameters"] = recipe.mergekit_parameters()
    return MergeConfiguration.model_validate(data)


def check_member_directory(name: str, directory: Path) -> None:
    """A member must be a directory with ``config.json`` and safetensors weights under a name mergekit reads."""
    if not directory.is_dir():
        raise MergeError(f"member {name!r}: {directory} is not a directory")
    if not (directory / "config.json").is_file():
        raise MergeError(f"member {name!r}: {directory} has no config.json")
    if not any((directory / index).is_file() for index in WEIGHT_INDEXES):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise MergeError(
                f"member {name!r} holds pickle weights ({', '.join(pickles)}); only safetensors are merged, "
                "since pickle files can run code"
            )
        raise MergeError(f"member {name!r}: {directory} has no model.safetensors (or its index)")


def materialize(
    recipe: MergeRecipe,
    dirs: Mapping[str, Path],
    target: Path,
    *,
    fingerprints: Mapping[str, str] | None = None,
) -> Path:
    """Merge ``recipe``'s members (entry name -> model directory) into ``target``; returns ``target``.

    The members are checked against each other first (architecture, shapes, layers, vocabulary).
    ``target`` appears only once complete, with ``recipe.yaml`` and ``provenance.json`` (member
    fingerprints, mergekit version) beside the safetensors; a finished ``target`` is returned as it
    is. One materialization per target at a time: leftovers of an earlier crash are removed.
    """
    target = Path(target)
    if is_complete(target):
        return target
    names = recipe.entry_names()
    missing = [n for n in names if n not in dirs]
    if missing:
        raise MergeError(f"no directory given for {', '.join(missing)}")
    paths = {n: Path(dirs[n]).resolve() for n in names}
    for name, directory in paths.items():
        check_member_directory(name, directory)
    check_members(recipe, {n: describe_directory(n, d) for n, d in paths.items()})
    config = mergekit_config(recipe, paths)

    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        device = _run_mergekit(recipe, config, tmp)
        _check_output(tmp)
        (tmp / RECIPE_FILE).write_text(yaml.safe_dump(_recipe_data(recipe), sort_keys=False))
        provenance = {
            "recipe": _recipe_data(recipe),
            "members": {
                n: {"path": str(d), "fingerprint": (fingerprints or {}).get(n) or _fingerprint(d)}
                for n, d in paths.items()
            },
            "mergekit": version("mergekit"),
            "transformers": version("transformers"),
            "torch": version("torch"),
            "device": device,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):  # not a concurrent merge of the same target finishing first
                raise MergeError(f"{target} exists and is not a finished merge; remove it first") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("merged %s (%s) into %s", ", ".join(names), recipe.method, target)
    return target


def _run_mergekit(recipe: MergeRecipe, config: Any, out: Path) -> str:
    import torch
    from mergekit.merge import MergeOptions, run_merge

    cuda = torch.cuda.is_available()
    options = MergeOptions(
        cuda=cuda,
        copy_tokenizer=True,
        lazy_unpickle=False,
        safe_serialization=True,
        trust_remote_code=False,
        write_model_card=False,
        random_seed=recipe.seed,
        quiet=True,
    )
    _forget_loaded_members()
    try:
        run_merge(config, str(out), options)
    except Exception as exc:
        # mergekit reports shape, contract and I/O problems as RuntimeError, ValueError, KeyError or
        # AssertionError; any of them means this recipe cannot be merged as given.
        raise MergeError(f"mergekit could not merge: {type(exc).__name__}: {exc}") from exc
    finally:
        _forget_loaded_members()
    return "cuda" if cuda else "cpu"


def _forget_loaded_members() -> None:
    """Empty mergekit's loader cache, a dict on the class shared by the whole process.

    In a long-lived worker it would keep every member ever merged open, and keep the tensor index
    a member had when first read even after its files change (a fixed or updated checkpoint).
    """
    from mergekit.io.tasks import LoaderCache

    LoaderCache().flush_all()
    LoaderCache.loaders.clear()


def _check_output(directory: Path) -> None:
    if not (directory / "config.json").is_file() or not any((directory / i).is_file() for i in WEIGHT_INDEXES):
        raise MergeError("mergekit finished without writing config.json and model.safetensors")
    pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise MergeError(f"mergekit wrote pickle files ({', '.join(pickles)}); only safetensors are kept")


def _recipe_data(recipe: MergeRecipe) -> dict[str, Any]:
    data: dict[str, Any] = recipe.model_dump(mode="json", exclude_none=True)
    return data


def _fingerprint(directory: Path) -> str:
    from ensembles.backends import make_backend

    return make_backend("hf", {"path": str(directory)}).fingerprint()
