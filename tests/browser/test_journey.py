"""What a person does on a first morning, in a real browser: sign up, make a team, register two models and
a blend, start a run, watch the leaderboard fill in without reloading, drill into an item, export the
leaderboard as CSV, compare two entries, look at every suite at once.

Set ARENA_SCREENSHOTS to a folder to keep a screenshot of each main page there.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest

from tests.browser.helpers import add_builtin_suite, sign_up_with_a_team

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def shoot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("ARENA_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_a_first_morning_in_the_arena(arena_server, worker, browser_context, tiny_models, tmp_path):
    base = arena_server
    page = browser_context.new_page()

    # Sign up, then make a team.
    dashboard = sign_up_with_a_team(page, base, "ada", "Morning team", "morning-team")

    # A small built-in suite: 4 dev and 4 test items.
    add_builtin_suite(page, "arithmetic", 8)

    # Two models and a majority vote over them.
    for name, path in zip(("tiny-a", "tiny-b"), tiny_models, strict=True):
        page.goto(dashboard)
        page.fill("#register-model input[name=name]", name)
        page.select_option("#register-model select[name=kind]", "openai")
        assert page.is_visible("#guide-openai") and not page.is_visible("#guide-hf")
        page.select_option("#register-model select[name=kind]", "hf")
        assert page.is_visible("#guide-hf") and not page.is_visible("#guide-openai")
        page.fill("#register-model input[name=path]", str(path))  # the list offers what the folders hold
        page.click("#register-model button")
        page.wait_for_selector(f"text=Registered {name}.")
    page.goto(dashboard)
    page.fill("#register-blend input[name=name]", "vote")
    page.select_option("#register-blend select[name=strategy]", "majority_vote")
    page.check("#register-blend input[value=tiny-a]")
    page.check("#register-blend input[value=tiny-b]")
    page.click("#register-blend button")
    page.wait_for_selector("text=Registered vote.")

    # The leaderboard, open in a second tab before anything ran, and never reloaded.
    board = browser_context.new_page()
    board.goto(f"{base}/t/morning-team/leaderboard/arithmetic/")
    board.wait_for_selector("#live.on")
    assert "Nothing evaluated" in board.inner_text("#board")
    board.evaluate("window.arenaNotReloaded = true")

    # Start the run from the dashboard; the run page shows it live.
    page.goto(dashboard)
    page.select_option("#start-run select[name=suite]", label="arithmetic v1")
    for box in page.query_selector_all("#start-run input[name=entries]"):
        box.check()
    page.click("#start-run button")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    page.wait_for_selector("#live.on")
    # When the run ends the page reloads itself once, so the finished-run sections appear.
    page.wait_for_function("document.getElementById('run').dataset.renderedState === 'done'", timeout=240_000)
    assert page.locator("#run tbody tr").count() == 3
    assert "Available once the run has finished" not in page.content()
    assert "4 of 4 items" in page.inner_text("#run")

    # Meanwhile the leaderboard filled in by itself: every entry scored, the chart drawn, no reload.
    board.wait_for_function(
        """() => {
          const rows = [...document.querySelectorAll('#board tbody tr')];
          return rows.length === 3 && rows.every(r => /^\\d\\.\\d{3} \\[/.test(r.cells[3].innerText));
        }"""
    )
    assert board.evaluate("window.arenaNotReloaded") is True
    shown = board.locator("#board tbody tr").evaluate_all("rows => rows.map(r => r.dataset.entry)")
    assert sorted(shown) == ["tiny-a", "tiny-b", "vote"]
    board.wait_for_function("document.getElementById('chart-cost-quality').dataset.drawn")
    assert board.locator("#chart-cost-quality .main-svg").count() >= 1
    # The rows the server renders read the same as the ones the page rendered live (JavaScript off).
    server = browser_context.browser.new_context(
        java_script_enabled=False, storage_state=browser_context.storage_state()
    )
    static = server.new_page()
    static.goto(board.url)
    assert static.inner_text("#board tbody") == board.inner_text("#board tbody")
    server.close()
    shoot(board, "leaderboard", tmp_path)

    # Export what is shown: the CSV has the same entries in the same order.
    with board.expect_download() as download:
        board.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["entry"] for r in rows] == shown
    assert all(r["score"] and r["ci_low"] and r["ci_high"] for r in rows)
    assert next(r for r in rows if r["entry"] == "vote")["members"] == "tiny-a;tiny-b"

    # The finished run page, then one item: the prompt as sent, every output, the votes, the reference.
    page.reload()
    shoot(page, "run", tmp_path)
    page.click("text=Item by item")
    page.locator("table.items tbody tr td a").first.click()
    page.wait_for_selector("#prompt")
    assert page.inner_text("#prompt").strip() and page.inner_text("#reference").strip()
    outputs = page.inner_text("table")
    assert "tiny-a" in outputs and "tiny-b" in outputs and "vote" in outputs
    assert "Tally: votes per answer" in page.inner_text(".decision")
    shoot(page, "item", tmp_path)

    # The blend's card, and from it a comparison with one of its members.
    page.goto(f"{base}/t/morning-team/leaderboard/arithmetic/")
    page.click("#board a:text-is('vote')")
    page.wait_for_selector("#provenance")
    assert page.inner_text("#git-revision").strip()
    page.select_option("#compare-with select[name=b]", label="tiny-a")
    page.click("#compare-with button")
    page.wait_for_selector("#compare-summary")
    assert f"run #{run_id}" in page.inner_text("#compare-summary")
    shoot(page, "compare", tmp_path)

    # Every suite at once, with the heat map drawn.
    page.goto(dashboard)
    page.click("#all-suites-board")
    page.wait_for_function("document.getElementById('chart-heatmap').dataset.drawn")
    assert page.locator("#across tbody tr").count() == 3
    shoot(page, "all-suites", tmp_path)
