"""Every command against a running arena (the live test server), with its exit code and message."""

from __future__ import annotations

import json

import pytest

from arena.benchmarks.models import Suite
from arena.evaluations.models import Run
from arena.registry.models import Entry
from arena.teams.models import ApiToken, Role
from arena_cli.errors import Exit
from tests.cli.helpers import run_cli

pytestmark = pytest.mark.django_db(transaction=True)

MANIFEST = """\
name: capitals
version: "1"
task_type: generation
prompt_template: "Q: {input}\\nA:"
answer_extraction: first_line
metric: exact_match
"""
ITEMS = "".join(
    json.dumps({"id": c, "input": f"Capital of {c}?", "reference": r, "split": suite}) + "\n"
    for c, r, suite in [("France", "Paris", "dev"), ("Italy", "Rome", "test"), ("Spain", "Madrid", "test")]
)


@pytest.fixture
def checkpoints(settings, tiny_variant, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return [tiny_variant(root / f"step-{i}", seed=i) for i in (1, 2)]


def test_an_entry_registers_lists_and_moves_to_a_new_checkpoint(arena, team, checkpoints):
    first, second = checkpoints
    registered = arena("entries", "register", "mine", "--kind", "hf", "--path", str(first))
    assert registered.code == 0, registered.stderr
    assert "registered hf entry mine" in registered.stderr

    again = arena("entries", "register", "mine", "--kind", "hf", "--path", str(first))
    assert again.code == Exit.USAGE
    assert "name: Red team already has an entry named 'mine'" in again.stderr

    updated = arena("entries", "register", "mine", "--kind", "hf", "--path", str(second), "--update", "--json")
    assert updated.code == 0, updated.stderr
    assert updated.json()["created"] is False and updated.json()["config"]["path"] == str(second)

    listed = arena("entries", "list", "--json")
    assert [(entry["name"], entry["config"]["path"]) for entry in listed.json()] == [("mine", str(second))]
    table = arena("entries", "list")
    assert "mine" in table.stdout and str(second) in table.stdout


def test_a_bad_model_path_prints_the_servers_field_message_and_stores_nothing(arena, team, checkpoints):
    result = arena("entries", "register", "ghost", "--kind", "gguf", "--path", str(checkpoints[0] / "none.gguf"))
    assert result.code == Exit.USAGE
    assert "config:" in result.stderr and "does not exist" in result.stderr
    assert not Entry.objects.exists()


def test_an_openai_entry_takes_its_key_from_the_environment_and_a_merge_its_recipe_from_a_file(
    arena, live_server, token, team, checkpoints, tmp_path, cli_env, serve
):
    env = {**cli_env, "ARENA_URL": live_server.url, "ARENA_TOKEN": token}
    endpoint = f"{serve().url}/v1"  # registration's one-token test call is answered here
    remote = run_cli(
        "entries", "register", "remote", "--kind", "openai", "--base-url", endpoint, "--model", "m",
        env={**env, "ARENA_ENTRY_API_KEY": "sk-test"},
    )  # fmt: skip
    assert remote.code == 0, remote.stderr
    assert Entry.objects.get(name="remote").secret  # stored, encrypted

    for i, path in enumerate(checkpoints):
        assert arena("entries", "register", f"m{i}", "--kind", "hf", "--path", str(path)).code == 0
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: slerp\nt: 0.5\nmembers:\n  - entry: m0\n  - entry: m1\n")
    merged = arena("entries", "register", "merged", "--kind", "merge", "--config", f"@{recipe}", "--json")
    assert merged.code == 0, merged.stderr
    assert merged.json()["config"]["method"] == "slerp"

    broken = arena("entries", "register", "x", "--kind", "merge", "--config", "{not json")
    assert broken.code == Exit.USAGE and "not valid JSON" in broken.stderr


def test_tokens_that_are_wrong_or_may_not_write_are_exit_3(arena, team, checkpoints):
    refused = arena("entries", "list", token="arena_not-a-token")
    assert refused.code == Exit.AUTH and "refused the token" in refused.stderr

    viewer = ApiToken.issue(team, "read", role=Role.VIEWER)[1]
    assert arena("entries", "list", token=viewer).code == 0
    denied = arena("entries", "register", "x", "--kind", "hf", "--path", str(checkpoints[0]), token=viewer)
    assert denied.code == Exit.AUTH and "needs member" in denied.stderr


def test_a_blend_of_an_unknown_entry_is_exit_4_with_a_suggestion(arena, team, checkpoints):
    for i, path in enumerate(checkpoints):
        assert arena("entries", "register", f"model-{i}", "--kind", "hf", "--path", str(path)).code == 0

    unknown = arena("blends", "register", "vote", "model-0", "modle-1", "--strategy", "majority_vote")
    assert unknown.code == Exit.NOT_FOUND
    assert "unknown entry: 'modle-1' (did you mean 'model-1'?)" in unknown.stderr

    bad_params = arena(
        "blends", "register", "vote", "model-0", "model-1", "--strategy", "majority_vote", "--params", '{"x": 1}'
    )
    assert bad_params.code == Exit.USAGE and "params:" in bad_params.stderr

    made = arena("blends", "register", "vote", "model-0", "model-1", "--strategy", "majority_vote", "--json")
    assert made.code == 0, made.stderr
    assert made.json()["members"] == ["model-0", "model-1"]


def test_suites_upload_from_files_and_the_same_content_again_changes_nothing(arena, team, tmp_path):
    (tmp_path / "capitals.yaml").write_text(MANIFEST)
    (tmp_path / "capitals.jsonl").write_text(ITEMS)
    files = [str(tmp_path / "capitals.yaml"), str(tmp_path / "capitals.jsonl")]

    first = arena("suites", "upload", *files)
    assert first.code == 0, first.stderr
    assert "added capitals v1, 3 items, generation" in first.stderr
    again = arena("suites", "upload", *files, "--json")
    assert again.code == 0 and again.json()["created"] is False
    assert Suite.objects.filter(team=team).count() == 1

    (tmp_path / "capitals.jsonl").write_text(ITEMS + "{not json\n")
    broken = arena("suites", "upload", *files, "--json")
    assert broken.code == Exit.USAGE
    assert broken.error["message"].startswith("capitals.jsonl:4: invalid JSON")
    assert broken.error["detail"]["line"] == 4


def test_csv_bigbench_and_lm_eval_files_upload_by_their_names(arena, team, tmp_path):
    (tmp_path / "doubles.csv").write_text("question,answer\n" + "".join(f"{i}+{i}?,{2 * i}\n" for i in range(8)))
    csv = arena(
        "suites", "upload", str(tmp_path / "doubles.csv"), "--name", "doubles",
        "--column", "input=question", "--column", "reference=answer", "--json",
    )  # fmt: skip
    assert csv.code == 0, csv.stderr
    assert (csv.json()["name"], csv.json()["items"]) == ("doubles", 8)

    task = {
        "name": "sums",
        "examples": [{"input": f"{i}+1=", "target_scores": {str(i + 1): 1, "0": 0}} for i in range(6)],
    }
    (tmp_path / "task.json").write_text(json.dumps(task))
    bigbench = arena("suites", "upload", str(tmp_path / "task.json"), "--json")
    assert bigbench.code == 0, bigbench.stderr
    assert bigbench.json()["task_type"] == "multiple_choice"

    (tmp_path / "boolq.yaml").write_text(
        "task: boolq_local\noutput_type: generate_until\nvalidation_split: validation\ntest_split: test\n"
        "doc_to_text: q\ndoc_to_target: a\n"
    )
    docs = "".join(json.dumps({"q": f"q{i}?", "a": "yes"}) + "\n" for i in range(3))
    (tmp_path / "validation.jsonl").write_text(docs)
    (tmp_path / "test.jsonl").write_text(docs)
    lm = arena("suites", "upload", *(str(tmp_path / n) for n in ("boolq.yaml", "test.jsonl", "validation.jsonl")))
    assert lm.code == 0, lm.stderr
    assert "boolq_local" in lm.stderr and "6 items" in lm.stderr

    listed = arena("suites", "list", "--json").json()
    assert sorted(suite["name"] for suite in listed) == ["boolq_local", "doubles", "sums"]


def test_an_unknown_builtin_suite_is_the_servers_message_with_a_suggestion(arena, team):
    result = arena("suites", "builtin", "arithmetc")
    assert result.code == Exit.USAGE and "did you mean 'arithmetic'" in result.stderr
    assert arena("suites", "builtin", "arithmetic", "--size", "8").code == 0


def test_unknown_suites_entries_and_runs_are_exit_4_and_start_nothing(arena, team, checkpoints):
    assert arena("suites", "builtin", "arithmetic", "--size", "8").code == 0
    assert arena("entries", "register", "mine", "--kind", "hf", "--path", str(checkpoints[0])).code == 0

    suite = arena("run", "arithmetik", "mine")
    assert suite.code == Exit.NOT_FOUND and "unknown suite 'arithmetik' (did you mean 'arithmetic'?)" in suite.stderr
    entry = arena("run", "arithmetic", "mine", "yours", "--json")
    assert entry.code == Exit.NOT_FOUND and entry.error["message"] == "unknown entry: 'yours'"
    assert not Run.objects.exists()

    assert arena("leaderboard", "arithmetik").code == Exit.NOT_FOUND
    empty = arena("leaderboard", "arithmetic")
    assert empty.code == 0 and "no results on arithmetic yet" in empty.stderr
    assert arena("export", "999999").code == Exit.NOT_FOUND
    assert arena("wait", "999999").code == Exit.NOT_FOUND


def test_a_run_started_without_waiting_prints_its_id_and_page(arena, live_server, team, checkpoints, clean_redis):
    assert arena("suites", "builtin", "arithmetic", "--size", "8").code == 0
    assert arena("entries", "register", "mine", "--kind", "hf", "--path", str(checkpoints[0])).code == 0

    started = arena("run", "arithmetic", "mine")

    assert started.code == 0, started.stderr
    run = Run.objects.get()
    assert started.stdout.strip() == str(run.pk)
    assert f"{live_server.url}/t/red/runs/{run.pk}/" in started.stderr
    # An entry in a run that has not finished keeps its checkpoint until the run is over.
    busy = arena("entries", "register", "mine", "--kind", "hf", "--path", str(checkpoints[1]), "--update")
    assert busy.code == Exit.USAGE and f"unfinished run {run.pk}" in busy.stderr
    # No worker here: waiting gives up after its timeout, saying how to follow on.
    late = arena("wait", str(run.pk), "--wait-timeout", "1", "--poll", "0.2")
    assert late.code == Exit.RUN_FAILED
    assert f"run {run.pk} has not finished after 1s; it goes on (arena wait {run.pk})" in late.stderr
    assert f"run {run.pk} queued: mine 0/4" in late.stderr


def test_a_config_file_gives_the_address_and_token_and_flags_override_it(live_server, token, cli_env, tmp_path):
    config = tmp_path / "config" / "arena" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{live_server.url}/api/v1/"\ntoken = "{token}"\n')

    assert run_cli("suites", "list", "--json", env=cli_env).json() == []
    overridden = run_cli("--token", "arena_wrong", "suites", "list", env=cli_env)
    assert overridden.code == Exit.AUTH
    from_env = run_cli("suites", "list", env={**cli_env, "ARENA_TOKEN": "arena_wrong"})
    assert from_env.code == Exit.AUTH


def test_entry_and_suite_names_complete_in_the_shell(arena, live_server, token, cli_env, team):
    assert arena("suites", "builtin", "arithmetic", "--size", "8").code == 0
    env = {
        **cli_env,
        "ARENA_URL": live_server.url,
        "ARENA_TOKEN": token,
        "_ARENA_COMPLETE": "complete_bash",
        "COMP_WORDS": "arena run ari",
        "COMP_CWORD": "2",
    }
    result = run_cli(env=env)
    assert "arithmetic" in result.stdout.split()
