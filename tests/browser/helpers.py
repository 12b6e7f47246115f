"""Steps the browser tests take the way a newcomer does, through the pages."""

from __future__ import annotations


def sign_up_with_a_team(page, base: str, username: str, team: str, slug: str) -> str:
    """Sign up as ``username`` and make the team ``team``; returns its dashboard's URL."""
    page.goto(f"{base}/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", f"a-long-browser-password-{username}")
    page.fill("input[name=password2]", f"a-long-browser-password-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/teams/new/")
    page.fill("input[name=name]", team)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/t/{slug}/")
    return page.url


def add_builtin_suite(page, name: str, size: int) -> None:
    """Add a built-in suite of ``size`` items from the dashboard."""
    page.select_option("#add-suite select[name=name]", name)
    page.fill("#add-suite input[name=size]", str(size))
    page.click("#add-suite button")
    page.wait_for_selector(f"text=Added {name}")
