"""The client without an arena: fast start, settings, telling suite formats from files, error messages."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from arena_cli.client import detail_message
from arena_cli.errors import CliError, Exit
from arena_cli.output import Follower
from arena_cli.suites import detect, parse_columns, upload_body
from tests.cli.helpers import run_cli
from tests.helpers import ROOT, free_port


def test_importing_the_client_loads_neither_django_nor_torch():
    code = "import sys, arena_cli.main; print(sorted({'django', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_help_documents_the_exit_codes(cli_env):
    result = run_cli("--help", env=cli_env)
    assert result.code == 0
    for line in ("1  an entry regressed", "3  no token", "4  unknown suite, entry or run", "5  network failure"):
        assert line in result.stdout


def test_an_unreachable_arena_is_exit_5_with_the_address(cli_env):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("entries", "list", env={**cli_env, "ARENA_URL": url, "ARENA_TOKEN": "arena_x"})
    assert result.code == Exit.UNAVAILABLE
    assert f"cannot reach the arena at {url}" in result.stderr


def test_without_a_token_it_says_where_to_put_one(cli_env):
    result = run_cli("entries", "list", env={**cli_env, "ARENA_URL": "http://127.0.0.1:1"})
    assert result.code == Exit.AUTH
    assert "set ARENA_TOKEN" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('url = "http://x"\ntokn = "y"\n', "unknown keys tokn"),
        ("url = http://x\n", "cannot read config file"),
        ("url = 5\n", "url must be a string"),
    ],
)
def test_a_bad_config_file_is_a_usage_error(cli_env, tmp_path, text, message):
    config = tmp_path / "arena.toml"
    config.write_text(text)
    result = run_cli("--config", str(config), "entries", "list", env=cli_env)
    assert result.code == Exit.USAGE
    assert message in result.stderr


def test_a_named_config_file_that_does_not_exist_is_a_usage_error(cli_env, tmp_path):
    result = run_cli("--config", str(tmp_path / "missing.toml"), "suites", "list", env=cli_env)
    assert result.code == Exit.USAGE and "does not exist" in result.stderr


def test_a_bad_option_is_exit_2(cli_env):
    assert run_cli("run", env=cli_env).code == 2
    result = run_cli("export", "7", "--format", "xml", env={**cli_env, "ARENA_URL": "http://x", "ARENA_TOKEN": "t"})
    assert result.code == 2


# --- suite files --------------------------------------------------------------------------


def write(tmp_path, name: str, text: str = "{}\n"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_manifest_and_items_are_the_arenas_own_format(tmp_path):
    manifest = write(tmp_path, "suite.yaml", "name: s\ntask_type: generation\nmetric: exact_match\n")
    items = write(tmp_path, "items.jsonl")
    fmt, files = detect([manifest, items])
    assert fmt == "suite" and {k: v.name for k, v in files.items()} == {
        "manifest": "suite.yaml",
        "items": "items.jsonl",
    }


def test_an_lm_eval_task_is_told_by_its_keys_and_its_documents_by_their_names(tmp_path):
    config = write(tmp_path, "boolq.yaml", "task: boolq\ndoc_to_text: q\ntest_split: eval\n")
    dev, test = write(tmp_path, "boolq-validation.jsonl"), write(tmp_path, "boolq-eval.jsonl")
    fmt, files = detect([config, test, dev])
    assert fmt == "lm_eval"
    assert {k: v.name for k, v in files.items()} == {
        "config": "boolq.yaml",
        "validation": "boolq-validation.jsonl",
        "test": "boolq-eval.jsonl",
    }


def test_documents_whose_names_do_not_tell_need_roles(tmp_path):
    config = write(tmp_path, "task.yaml", "task: t\ndoc_to_text: q\n")
    a, b = write(tmp_path, "a.jsonl"), write(tmp_path, "b.jsonl")
    with pytest.raises(CliError, match="validation=PATH test=PATH") as info:
        detect([config, a, b])
    assert info.value.code == Exit.USAGE
    fmt, files = detect([f"config={config}", f"validation={a}", f"test={b}"])
    assert fmt == "lm_eval" and files["validation"].name == "a.jsonl"


def test_one_json_file_is_bigbench_and_one_csv_file_is_csv(tmp_path):
    assert detect([write(tmp_path, "task.json")])[0] == "bigbench"
    assert detect([write(tmp_path, "rows.csv", "a,b\n")])[0] == "csv"


@pytest.mark.parametrize("names", [["a.txt"], ["a.csv", "b.csv"], ["a.yaml"], ["a.jsonl"]])
def test_files_that_fit_no_format_are_a_usage_error_naming_the_formats(tmp_path, names):
    paths = [write(tmp_path, n, "x: 1\n") for n in names]
    with pytest.raises(CliError, match="cannot tell the suite format|exactly one items file"):
        detect(paths)


def test_a_named_format_takes_one_file_of_any_name(tmp_path):
    body = upload_body([write(tmp_path, "sums.txt", '{"name": "x"}')], "bigbench", {"name": "sums", "seed": 3})
    assert body == {
        "format": "bigbench",
        "files": {"task": '{"name": "x"}'},
        "filenames": {"task": "sums.txt"},
        "name": "sums",
        "seed": 3,
    }


def test_a_missing_or_binary_file_is_a_usage_error(tmp_path):
    with pytest.raises(CliError, match="no such file"):
        upload_body([str(tmp_path / "nope.csv")], None, {})
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CliError, match="not UTF-8"):
        upload_body([str(binary)], None, {})


def test_column_mappings_read_choices_as_a_list():
    assert parse_columns(["input=q", "choices=A, B,C", "gold=label"]) == {
        "input": "q",
        "choices": ["A", "B", "C"],
        "gold": "label",
    }
    with pytest.raises(CliError, match="KEY=COLUMN"):
        parse_columns(["input"])


# --- the server's errors, one line per problem --------------------------------------------


def test_server_errors_read_as_field_messages():
    assert detail_message({"name": ["taken"], "config": ["bad path"]}) == "name: taken\nconfig: bad path"
    assert detail_message({"error": "items.jsonl:4: invalid JSON", "line": 4}) == "items.jsonl:4: invalid JSON"
    assert detail_message([{"loc": ["body", "body", "kind"], "msg": "Input should be 'hf'"}]) == (
        "kind: Input should be 'hf'"
    )


# --- progress -----------------------------------------------------------------------------


def snapshot(state: str, *entries: tuple[str, str, int]) -> dict:
    return {
        "state": state,
        "entries": [
            {"entry": name, "state": entry_state, "done_items": done, "total_items": 8}
            for name, entry_state, done in entries
        ],
    }


def test_on_a_terminal_progress_is_a_bar_per_entry():
    screen = io.StringIO()
    follower = Follower(7, console=Console(file=screen, force_terminal=True, width=100, no_color=True))
    follower.update(snapshot("running", ("tiny", "running", 3), ("vote", "queued", 0)))
    follower.update(snapshot("failed", ("tiny", "done", 8), ("vote", "failed", 0)))
    follower.close()
    # The final frame: each entry's last drawn line.
    lines = screen.getvalue().splitlines()
    tiny = [line for line in lines if "tiny" in line][-1]
    vote = [line for line in lines if "vote" in line][-1]
    assert "8/8" in tiny and "done" in tiny
    assert "0/8" in vote and "failed" in vote


def test_in_a_log_progress_is_a_line_per_change():
    log = io.StringIO()
    follower = Follower(7, console=Console(file=log, width=200))
    for done in (0, 0, 4, 8):
        follower.update(snapshot("running", ("tiny", "running", done)))
    assert log.getvalue().splitlines() == [
        "run 7 running: tiny 0/8",
        "run 7 running: tiny 4/8",
        "run 7 running: tiny 8/8",
    ]
