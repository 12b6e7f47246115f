"""Turn suite files on disk into the upload body of POST /suites, telling the format from the files.

- ``suite.yaml`` + ``items.jsonl``: the arena's own format (manifest + items)
- ``task.json``: a BIG-bench task
- ``task.yaml`` + ``*.jsonl``: an lm-evaluation-harness task and its documents
- ``items.csv``: a table, with ``--column`` mappings

Any file may be given as ``ROLE=PATH`` (e.g. ``test=docs.jsonl``) where the name does not tell. The
formats and their roles are the library's registry, so ``--format`` with ``ROLE=PATH`` sends any of
them; only telling a format from bare file names needs a rule in ``detect``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from arena_cli.errors import CliError, Exit


@functools.cache
def format_roles() -> dict[str, tuple[str, ...]]:
    """The file roles each upload format takes, as the library registers them (the server reads the same)."""
    # Imported on first use: the library loads pydantic and numpy, which only an upload needs.
    from ensembles.suites.importers import upload_formats

    return {fmt.name: fmt.file_keys() for fmt in upload_formats()}


def _all_roles() -> set[str]:
    return {role for keys in format_roles().values() for role in keys}


# Keys only an lm-evaluation-harness task YAML has; a suite manifest has name/task_type/metric.
LM_EVAL_KEYS = {"task", "doc_to_text", "doc_to_target", "doc_to_choice", "output_type", "dataset_path", "test_split"}
DEV_HINTS = ("validation", "valid", "val", "dev")


def _usage(message: str) -> CliError:
    return CliError(message, Exit.USAGE)


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise _usage(f"{path}: no such file") from None
    except IsADirectoryError:
        raise _usage(f"{path}: is a directory; name the files") from None
    except UnicodeDecodeError as exc:
        raise _usage(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise _usage(f"{path}: {exc.strerror}") from None


def _split_role(arg: str) -> tuple[str | None, Path]:
    role, sep, rest = arg.partition("=")
    if sep and role in _all_roles():
        return role, Path(rest)
    return None, Path(arg)


def _parse_args(args: list[str]) -> tuple[dict[str, Path], list[Path]]:
    """Files given as ROLE=PATH, and the plain ones."""
    explicit: dict[str, Path] = {}
    plain: list[Path] = []
    for arg in args:
        role, path = _split_role(arg)
        if role is None:
            plain.append(path)
        elif role in explicit:
            raise _usage(f"{role}= is given twice")
        else:
            explicit[role] = path
    return explicit, plain


def _yaml_keys(text: str) -> set[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()  # the server reports the YAML error with its line
    return set(data) if isinstance(data, dict) else set()


def _lm_eval_roles(config_text: str, docs: list[Path]) -> dict[str, Path]:
    """Which JSONL file holds the dev documents and which the test ones, from the names."""
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        config = None
    config = config if isinstance(config, dict) else {}
    names = {
        "validation": str(config.get("validation_split") or "validation"),
        "test": str(config.get("test_split") or "test"),
    }
    if len(docs) == 1:
        stem = docs[0].stem.lower()
        dev = names["validation"] in stem or any(h in stem for h in DEV_HINTS)
        return {"validation" if dev and "test" not in stem else "test": docs[0]}
    if len(docs) != 2:
        raise _usage("an lm-eval task takes one or two JSONL files (validation and test documents)")
    roles: dict[str, Path] = {}
    for doc in docs:
        stem = doc.stem.lower()
        if names["test"] in stem or "test" in stem:
            roles.setdefault("test", doc)
        elif names["validation"] in stem or any(h in stem for h in DEV_HINTS):
            roles.setdefault("validation", doc)
    if len(roles) != 2:
        raise _usage(
            "cannot tell the validation from the test documents by their names; give them as validation=PATH test=PATH"
        )
    return roles


def detect(args: list[str]) -> tuple[str, dict[str, Path]]:
    """(format, {role: path}) from the file arguments."""
    explicit, plain = _parse_args(args)
    if explicit and not plain:
        formats = [f for f, keys in format_roles().items() if set(explicit) <= set(keys)]
        if len(formats) != 1:
            raise _usage(f"these roles do not belong to one format: {', '.join(sorted(explicit))}")
        return formats[0], explicit
    by_ext: dict[str, list[Path]] = {}
    for path in plain:
        by_ext.setdefault(path.suffix.lower(), []).append(path)
    exts = set(by_ext)
    if exts == {".csv"} and len(plain) == 1 and not explicit:
        return "csv", {"csv": plain[0]}
    if exts == {".json"} and len(plain) == 1 and not explicit:
        return "bigbench", {"task": plain[0]}
    yamls = by_ext.get(".yaml", []) + by_ext.get(".yml", [])
    if len(yamls) == 1 and exts <= {".yaml", ".yml", ".jsonl"}:
        config = yamls[0]
        docs = by_ext.get(".jsonl", [])
        if _yaml_keys(read_text(config)) & LM_EVAL_KEYS:
            if not docs and not explicit:
                raise _usage(f"{config} is an lm-eval task: give its documents (JSONL) too")
            roles = explicit or _lm_eval_roles(read_text(config), docs)
            return "lm_eval", {"config": config, **roles}
        if len(docs) == 1 and not explicit:
            return "suite", {"manifest": config, "items": docs[0]}
        raise _usage(f"{config} is a suite manifest: give it with exactly one items file (JSONL)")
    raise _usage(
        "cannot tell the suite format from these files; expected suite.yaml + items.jsonl, task.json "
        "(BIG-bench), an lm-eval task.yaml + JSONL documents, or one .csv (or pass --format and ROLE=PATH)"
    )


def parse_columns(pairs: list[str]) -> dict[str, Any]:
    """--column input=question --column choices=A,B,C,D --column gold=answer -> the CSV column mapping."""
    columns: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise _usage(f"--column takes KEY=COLUMN, got {pair!r}")
        key, value = key.strip(), value.strip()
        columns[key] = [v.strip() for v in value.split(",")] if key == "choices" else value
    return columns


def _assign(args: list[str], fmt: str) -> dict[str, Path]:
    """{role: path} for a format the user named."""
    explicit, plain = _parse_args(args)
    if not plain:
        return explicit
    keys = format_roles()[fmt]
    if len(keys) == 1 and len(plain) == 1 and not explicit:
        return {keys[0]: plain[0]}
    detected, files = detect(args)
    if detected != fmt:
        raise _usage(f"these files look like a {detected} upload, not {fmt}; give them as ROLE=PATH")
    return files


def upload_body(args: list[str], fmt: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of POST /suites for these files (``fmt`` overrides the detected format)."""
    if fmt is None:
        fmt, files = detect(args)
    elif fmt in format_roles():
        files = _assign(args, fmt)
    else:
        raise _usage(f"--format must be one of {', '.join(format_roles())}")
    unknown = sorted(set(files) - set(format_roles()[fmt]))
    if unknown:
        raise _usage(f"{fmt} uploads take {', '.join(format_roles()[fmt])}; not {', '.join(unknown)}")
    body: dict[str, Any] = {
        "format": fmt,
        "files": {role: read_text(path) for role, path in files.items()},
        "filenames": {role: path.name for role, path in files.items()},
    }
    body.update({k: v for k, v in options.items() if v is not None})
    return body
