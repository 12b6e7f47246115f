"""A new team with its own models, in a real browser: register a folder model picked from the models found,
see a broken folder refused, register an endpoint that answers its one-token test and then fails in the run,
see the run finish with errors, retry it once the endpoint is healthy, download the run's files, archive an
entry and delete the run.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.browser.helpers import add_builtin_suite, sign_up_with_a_team

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TEST_ITEMS = 4  # arithmetic of size 8: 4 dev and 4 test items; runs report the test split


def downloaded(page, selector: str) -> list[dict]:
    with page.expect_download() as download:
        page.click(selector)
    return list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))


def test_a_team_with_its_own_models_retries_a_failed_endpoint_and_cleans_up(
    arena_server, worker, browser_context, tiny_models, serve
):
    base = arena_server
    page = browser_context.new_page()
    folder = tiny_models[0]
    broken = shutil.copytree(folder, folder.parent / "broken")
    (broken / "config.json").write_text('{"model_type": "llama", ')
    endpoint = serve()  # answers every request with "4" until told otherwise

    # Sign up, make a team, add a small built-in suite.
    dashboard = sign_up_with_a_team(page, base, "grace", "Own models", "own-models")
    add_builtin_suite(page, "arithmetic", 8)

    # The folder model, picked from the models the form found in the allowed folders.
    page.goto(dashboard)
    form = page.locator("#register-model")
    form.locator("select[name=kind]").select_option("hf")
    assert form.locator("#guide-hf").is_visible() and not form.locator("#guide-openai").is_visible()
    assert "config.json" in form.locator("#guide-hf").inner_text()
    form.locator("#found-models-list summary").click()
    listed = form.locator("#found-models-list li code").all_inner_texts()
    assert str(folder) in listed and str(broken) in listed
    offered = form.locator("#found-models option").evaluate_all("options => options.map(o => o.value)")
    assert sorted(offered) == sorted(listed)  # the path field offers the same list
    form.locator("input[name=name]").fill("own-folder")
    form.locator("input[name=path]").fill(next(path for path in offered if path == str(folder)))
    form.locator("button").click()
    page.wait_for_selector("text=Registered own-folder.")
    assert page.inner_text("h1").startswith("own-folder")

    # A folder whose config.json is cut short is refused with the reason, and nothing is stored.
    page.goto(dashboard)
    form.locator("select[name=kind]").select_option("hf")
    form.locator("input[name=name]").fill("broken-folder")
    form.locator("input[name=path]").fill(str(broken))
    form.locator("button").click()
    page.wait_for_url(dashboard)
    refusal = page.inner_text(".messages")
    assert "config.json cannot be read" in refusal, refusal
    assert form.locator("input[name=name]").input_value() == "broken-folder"  # kept to correct
    assert page.locator("#start-run input[name=entries]").count() == 1

    # The endpoint passes its one-token test at registration, then answers 500 to the run.
    form.locator("select[name=kind]").select_option("openai")
    assert form.locator("#guide-openai").is_visible() and not form.locator("#guide-hf").is_visible()
    form.locator("input[name=name]").fill("own-endpoint")
    form.locator("input[name=path]").fill("")
    config = {"base_url": f"{endpoint.url}/v1", "model": "own", "max_retries": 0, "timeout_s": 10}
    form.locator("textarea[name=config]").fill(json.dumps(config))
    form.locator("button").click()
    page.wait_for_selector("text=Registered own-endpoint.")
    assert endpoint.paths == ["/v1/chat/completions"]
    endpoint.status, endpoint.body = 500, b'{"error": "the model is down"}'

    # A run of both finishes with errors: the endpoint's reason shown, the folder model scored and ranked.
    page.goto(dashboard)
    page.select_option("#start-run select[name=suite]", label="arithmetic v1")
    for box in page.query_selector_all("#start-run input[name=entries]"):
        box.check()
    page.click("#start-run button")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run_url = page.url
    run_id = int(run_url.rstrip("/").rsplit("/", 1)[1])
    page.wait_for_function("document.getElementById('run').dataset.renderedState === 'partial'", timeout=240_000)
    assert page.inner_text("#run-state") == "Finished with errors"
    assert "own-endpoint" in page.inner_text("#run-error")
    rows = {r.locator("td").first.inner_text(): r for r in page.locator("#run tbody tr").all()}
    assert set(rows) == {"own-folder", "own-endpoint"}
    assert "HTTP 500" in rows["own-endpoint"].locator("td.error").inner_text()
    assert re.match(r"\d\.\d{3} \[", rows["own-folder"].locator("td.num").first.inner_text())
    board = browser_context.new_page()
    board.goto(f"{base}/t/own-models/leaderboard/arithmetic/")
    ranked = board.locator("#board tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.entry, r.cells[0].innerText.trim(), r.cells[3].innerText.trim()])"
    )
    assert ranked[0][:2] == ["own-folder", "1"] and re.match(r"\d\.\d{3} \[", ranked[0][2]), ranked
    assert all(not re.match(r"\d\.\d{3} \[", score) for name, _, score in ranked if name == "own-endpoint")

    # Healthy again: retrying runs the failed entry, and the run finishes.
    endpoint.status, endpoint.body = 200, b'{"choices": [{"message": {"content": "4"}}]}'
    page.click("#retry-failed button")
    page.wait_for_selector("text=retrying 1 failed entry")
    page.wait_for_function("document.getElementById('run').dataset.renderedState === 'done'", timeout=240_000)
    assert page.inner_text("#run-state") == "Done"
    assert page.locator("#retry-failed").count() == 0

    # The run's files, from the run page: one row per entry, and one per item and entry.
    results = downloaded(page, f"#downloads a[href='/t/own-models/runs/{run_id}/?format=csv']")
    assert sorted(r["entry"] for r in results) == ["own-endpoint", "own-folder"]
    assert all(r["state"] == "done" and r["score"] and r["n"] == str(TEST_ITEMS) for r in results)
    assert all(not r["error"] for r in results)
    items = downloaded(page, f"#downloads a[href='/t/own-models/runs/{run_id}/items/?format=csv']")
    assert len(items) == 2 * TEST_ITEMS and {r["split"] for r in items} == {"test"}
    assert sorted(r["entry"] for r in items) == ["own-endpoint"] * TEST_ITEMS + ["own-folder"] * TEST_ITEMS
    assert {r["prediction"] for r in items if r["entry"] == "own-endpoint"} == {"4"}
    assert all(float(r["score"]) in (0.0, 1.0) for r in items)

    # Archiving the folder model takes it off the board; the run still shows it.
    board.reload()
    board.click("#board a:text-is('own-folder')")
    board.click("#lifecycle button:text-is('Archive')")
    board.wait_for_selector("text=Archived own-folder.")
    assert board.locator("#archived-note").is_visible()
    board.goto(f"{base}/t/own-models/leaderboard/arithmetic/")
    shown = board.locator("#board tbody tr").evaluate_all("rows => rows.map(r => r.dataset.entry)")
    assert shown == ["own-endpoint"]
    page.reload()
    assert "archived" in page.locator("#run tbody tr", has_text="own-folder").inner_text()

    # Deleting the run: its confirmation page says what goes with it, then it is gone.
    page.click("#lifecycle a:text-is('Delete run…')")
    page.wait_for_selector("#deletion")
    assert page.locator("#goes li").count() >= 1
    page.click("#deletion button[type=submit]")
    page.wait_for_url(dashboard)
    assert f"Deleted run #{run_id}" in page.inner_text(".messages")
    assert page.goto(run_url).status == 404
