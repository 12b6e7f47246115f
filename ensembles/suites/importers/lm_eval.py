"""lm-evaluation-harness task YAMLs with their documents as JSONL; nothing in the YAML is run.

``doc_to_*`` may be field names or ``{{ field }}`` templates, filled without evaluating anything;
``!function`` hooks and ``include`` are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ensembles.errors import SuiteError
from ensembles.parsing import load_yaml
from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat, TextFile, seed_of
from ensembles.suites.importers.common import (
    DEV_RATIO,
    ItemBuilder,
    build_manifest,
    hash_split,
    json_lines,
    read_text,
    slug,
    yaml_mapping,
)
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, Suite, check_size

_PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD_PATH_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*")
_PATH_PART_RE = re.compile(r"[A-Za-z_]\w*|\[(\d+)\]")
_TRAILING_ANSWER_CUE_RE = re.compile(r"\s*Answer:\s*$", re.IGNORECASE)
# lm-eval metric names -> ours, for generate_until tasks; multiple choice is always exact match on the letter.
_LM_EVAL_METRICS = {
    "exact_match": "exact_match",
    "em": "exact_match",
    "f1": "f1",
    "bleu": "bleu",
    "chrf": "chrf",
    "rouge": "rouge_l",
    "rougeL": "rouge_l",
    "rougeLsum": "rouge_l",
}


def _lookup(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in _PATH_PART_RE.finditer(path):
        if part.group(1) is not None:
            index = int(part.group(1))
            if not isinstance(value, list) or index >= len(value):
                raise ValueError(f"field {path!r} has no element [{index}]")
            value = value[index]
        else:
            if not isinstance(value, dict) or part.group(0) not in value:
                raise ValueError(f"document has no field {path!r}")
            value = value[part.group(0)]
    return value


def render_template(template: str, doc: Mapping[str, Any]) -> Any:
    """Fill ``{{ field }}`` placeholders from ``doc``; dotted paths and ``[n]`` indexes are allowed.

    Nothing is evaluated: filters, expressions and ``{% %}`` statements raise ValueError. A
    template that is one placeholder alone returns the value itself, so a list stays a list.
    """
    if "{%" in template:
        raise ValueError("Jinja statements ({% ... %}) are not supported, only {{ field }} placeholders")

    def value_of(match: re.Match[str]) -> Any:
        path = match.group(1).strip()
        if not _FIELD_PATH_RE.fullmatch(path):
            raise ValueError(f"unsupported template expression {match.group(0)!r}: only {{{{ field }}}} is supported")
        return _lookup(doc, path)

    stripped = template.strip()
    whole = _PLACEHOLDER_RE.match(stripped)
    if whole is not None and whole.end() == len(stripped) and "{{" not in whole.group(1):
        return value_of(whole)
    return _PLACEHOLDER_RE.sub(lambda match: str(value_of(match)), template)


def _resolve(spec: Any, doc: Mapping[str, Any], key: str) -> Any:
    """lm-eval's doc_to_* rule: a template, a field name, or (targets and choices) a literal."""
    if isinstance(spec, str):
        if "{{" in spec or "{%" in spec:
            return render_template(spec, doc)
        if spec in doc:
            return doc[spec]
        # lm-eval would render an unknown name as literal text; here it is nearly always a typo.
        raise ValueError(f"{key} {spec!r} is neither a field of the document nor a {{{{ template }}}}")
    return spec


def _gold_index(target: Any, choices: list[str]) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str):
        if target in choices:
            return choices.index(target)
        if target.strip().isdigit():
            return int(target)
    raise ValueError(f"target {target!r} is neither a choice index nor one of the choices {choices}")


def _lm_eval_fields(config: Mapping[str, Any], doc: Mapping[str, Any], multiple_choice: bool) -> dict[str, Any]:
    text = _resolve(config["doc_to_text"], doc, "doc_to_text")
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        raise ValueError(f"doc_to_text gave {type(text).__name__}, not text")
    target = _resolve(config["doc_to_target"], doc, "doc_to_target")
    if multiple_choice:
        choices = _resolve(config["doc_to_choice"], doc, "doc_to_choice")
        if not isinstance(choices, list):
            raise ValueError(f"doc_to_choice gave {type(choices).__name__}, not a list")
        choices = [str(choice) for choice in choices]
        # The options and their own "Answer:" cue follow the question in this suite's template.
        question = _TRAILING_ANSWER_CUE_RE.sub("", str(text))
        return {"input": question, "choices": choices, "gold": _gold_index(target, choices)}
    if isinstance(target, list):
        if not target:
            raise ValueError("doc_to_target gave an empty list")
        target = target[0]
    if target is None or isinstance(target, dict | list):
        raise ValueError(f"doc_to_target gave {target!r}, not a reference answer")
    return {"input": str(text), "reference": str(target)}


def import_lm_eval(
    yaml_text: str,
    data: Mapping[str, str],
    *,
    yaml_file: str = "task.yaml",
    data_files: Mapping[str, str] | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """An lm-evaluation-harness task YAML with its documents as JSONL text per split name.

    ``data`` maps the YAML's split names (e.g. "validation", "test") to JSONL text and
    ``data_files`` those names to file names for messages. ``validation_split`` becomes dev and
    ``test_split`` test; with only one of them, splits come from ``hash_split``. Supported:
    ``output_type`` multiple_choice and generate_until, ``doc_to_text``/``doc_to_target``/
    ``doc_to_choice`` as field names or ``{{ field }}`` templates (see ``render_template``),
    ``generation_kwargs`` until and max_gen_toks, ``metric_list`` and ``description``.
    """
    check_size(yaml_text, yaml_file, max_bytes)
    config, key_lines = yaml_mapping(yaml_text, yaml_file)

    def config_error(message: str, key: str) -> SuiteError:
        return SuiteError(message, file=yaml_file, line=key_lines.get(key))

    if "include" in config:
        raise config_error("'include' is not supported: copy the base task's keys into this file", "include")
    output_type = config.get("output_type", "generate_until")
    if output_type not in ("multiple_choice", "generate_until"):
        raise config_error(
            f"output_type {output_type!r} is not supported; use multiple_choice or generate_until", "output_type"
        )
    multiple_choice = output_type == "multiple_choice"
    required = ["doc_to_text", "doc_to_target", *(["doc_to_choice"] if multiple_choice else [])]
    for key in required:
        if key not in config:
            raise SuiteError(f"missing {key!r}", file=yaml_file, line=1)
        if not isinstance(config[key], str | int | list) or isinstance(config[key], bool):
            raise config_error(f"{key} must be a field name, a {{{{ template }}}} or a literal", key)

    generation = config.get("generation_kwargs") or {}
    if not isinstance(generation, dict):
        raise config_error("generation_kwargs must be a mapping", "generation_kwargs")
    until = generation.get("until", ["\n"])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(stop, str) for stop in until):
        raise config_error("generation_kwargs.until must be a string or a list of strings", "generation_kwargs")
    max_tokens = generation.get("max_gen_toks", 8 if multiple_choice else 32)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise config_error("generation_kwargs.max_gen_toks must be an integer", "generation_kwargs")

    metric = "exact_match"
    if not multiple_choice:
        metric_list = config.get("metric_list") or []
        names = [entry.get("metric") for entry in metric_list if isinstance(entry, dict)]
        if names:
            if names[0] not in _LM_EVAL_METRICS:
                supported = ", ".join(sorted(_LM_EVAL_METRICS))
                raise config_error(f"metric {names[0]!r} is not supported; supported: {supported}", "metric_list")
            metric = _LM_EVAL_METRICS[names[0]]

    manifest = build_manifest(
        yaml_file,
        None,
        name=slug(str(config.get("task") or Path(yaml_file).stem)),
        version=str(config.get("version") or (config.get("metadata") or {}).get("version", "1")),
        task_type=output_type if multiple_choice else "generation",
        prompt_template="{input}\n{choices}\nAnswer:" if multiple_choice else "{input}",
        answer_extraction="letter" if multiple_choice else "first_line",
        metric=metric,
        description=str(config.get("description") or "").strip(),
        max_new_tokens=min(max(max_tokens, 1), 512),
        stop=until,
    )

    validation, test = config.get("validation_split"), config.get("test_split")
    if validation and test:
        sources: list[tuple[str, str, str | None]] = [
            (validation, "validation_split", "dev"),
            (test, "test_split", "test"),
        ]
    elif validation:
        sources = [(validation, "validation_split", None)]
    elif test:
        sources = [(test, "test_split", None)]
    else:
        raise SuiteError("needs a test_split or a validation_split", file=yaml_file, line=1)

    builder = ItemBuilder(manifest, yaml_file, max_items)
    index = 0
    for split_name, key, our_split in sources:
        if split_name not in data:
            raise config_error(f"no data given for split {split_name!r}; given: {sorted(data)}", key)
        file = (data_files or {}).get(split_name, f"{split_name}.jsonl")
        check_size(data[split_name], file, max_bytes)
        builder.file = file
        for lineno, doc in json_lines(data[split_name], file):
            try:
                fields = _lm_eval_fields(config, doc, multiple_choice)
            except ValueError as exc:
                raise SuiteError(str(exc), file=file, line=lineno) from None
            split = our_split or hash_split(index, seed=seed, dev_ratio=dev_ratio)
            builder.add(lineno, id=f"{split_name}-{lineno:05d}", split=split, **fields)
            index += 1
    return builder.suite()


def load_lm_eval_task(
    yaml_path: str | Path,
    *,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """``import_lm_eval`` on a YAML file whose ``dataset_kwargs.data_files`` name local JSONL files.

    Data files are resolved against the YAML's folder and must stay inside it.
    """
    yaml_path = Path(yaml_path)
    yaml_text = read_text(yaml_path, max_bytes)
    config, key_lines = yaml_mapping(yaml_text, str(yaml_path))
    data_files = (
        (config.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(config.get("dataset_kwargs"), dict)
        else None
    )
    if not isinstance(data_files, dict) or not all(isinstance(v, str) for v in data_files.values()):
        raise SuiteError(
            "needs dataset_kwargs.data_files mapping split names to local JSONL files",
            file=str(yaml_path),
            line=key_lines.get("dataset_kwargs", 1),
        )
    folder = yaml_path.parent.resolve()
    texts, names = {}, {}
    for split_name, relative in data_files.items():
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder):
            raise SuiteError(
                f"data file {relative!r} is outside the task's folder",
                file=str(yaml_path),
                line=key_lines.get("dataset_kwargs"),
            )
        texts[split_name], names[split_name] = read_text(path, max_bytes), str(path)
    return import_lm_eval(
        yaml_text,
        texts,
        yaml_file=str(yaml_path),
        data_files=names,
        seed=seed,
        dev_ratio=dev_ratio,
        max_bytes=max_bytes,
        max_items=max_items,
    )


def _split_names(config_text: str) -> dict[str, str]:
    """The split names the task YAML gives its dev and test documents (validation_split, test_split)."""
    try:
        config = load_yaml(config_text)
    except yaml.YAMLError:
        config = None  # import_lm_eval reports the YAML error with its line
    config = config if isinstance(config, dict) else {}
    return {
        "validation": str(config.get("validation_split") or "validation"),
        "test": str(config.get("test_split") or "test"),
    }


@FORMATS.register(
    "lm_eval",
    pretty_name="lm-evaluation-harness",
    reference_url="https://github.com/EleutherAI/lm-evaluation-harness/blob/main/docs/task_guide.md",
)
class LmEval(SuiteFormat):
    summary = "lm-evaluation-harness task YAML + JSONL documents"
    files = (
        FileKey("config", "lm-evaluation-harness task (YAML)", "task.yaml"),
        FileKey("validation", "dev documents (JSONL)", "validation.jsonl", required=False),
        FileKey("test", "test documents (JSONL)", "test.jsonl", required=False),
    )
    options = ("seed",)

    @classmethod
    def parse(
        cls, files: Mapping[str, TextFile], options: Mapping[str, Any], *, max_bytes: int, max_items: int
    ) -> Suite:
        docs = {key: files[key] for key in ("validation", "test") if key in files}
        if not docs:
            raise SuiteError("an lm_eval upload needs its documents: a validation and/or a test JSONL file")
        if sum(len(file.text) for file in docs.values()) > max_bytes:
            raise SuiteError(f"documents are larger than the limit of {max_bytes:,} bytes")
        config = files["config"]
        split_name = _split_names(config.text)
        return import_lm_eval(
            config.text,
            {split_name[key]: file.text for key, file in docs.items()},
            yaml_file=config.name,
            data_files={split_name[key]: file.name for key, file in docs.items()},
            seed=seed_of(options),
            max_bytes=max_bytes,
            max_items=max_items,
        )
