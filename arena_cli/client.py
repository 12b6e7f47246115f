"""The JSON API over httpx; every failure becomes a CliError with its exit code and the server's message."""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import quote

import httpx

from arena_cli.config import Settings
from arena_cli.errors import CliError, Exit


def detail_message(detail: Any) -> str:
    """The server's error detail in one line per problem, field first."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}]
        lines = []
        for err in detail:
            if not isinstance(err, dict):
                lines.append(str(err))
                continue
            loc = [str(p) for p in err.get("loc", []) if p not in ("body", "query", "path")]
            lines.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', err)}")
        return "\n".join(lines)
    if isinstance(detail, dict):
        if isinstance(detail.get("error"), str):  # a suite file problem: "file:line: message"
            return detail["error"]
        lines = []
        for field, messages in detail.items():
            for message in messages if isinstance(messages, list) else [messages]:
                lines.append(message if field == "__all__" else f"{field}: {message}")
        return "\n".join(lines)
    return str(detail)


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Arena:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.http = httpx.Client(
            base_url=settings.api_url,
            headers={"Authorization": f"Bearer {settings.token}", "User-Agent": "arena-cli"},
            timeout=settings.timeout,
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CliError(
                f"the arena at {self.settings.url} did not answer within {self.settings.timeout:g}s", Exit.UNAVAILABLE
            ) from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the arena at {self.settings.url}: {exc}", Exit.UNAVAILABLE) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return response.status_code, data
        raise self._error(response, data)

    def _error(self, response: httpx.Response, data: Any) -> CliError:
        status = response.status_code
        detail = data.get("detail") if isinstance(data, dict) else None
        message = detail_message(detail) if detail is not None else ""
        if response.is_success or (data is None and status != 401):
            # Not the arena's JSON: a wrong address, a proxy's page, or a server crash.
            return CliError(
                f"{self.settings.url} answered {status} without the arena's JSON API at {response.request.url.path}"
                " (is the address right?)",
                Exit.UNAVAILABLE,
            )
        if status == 401:
            return CliError("the arena refused the token (401): check ARENA_TOKEN or --token", Exit.AUTH, detail)
        if status == 403:
            return CliError(f"not allowed (403): {message}", Exit.AUTH, detail)
        if status == 404:
            return CliError(message or "not found", Exit.NOT_FOUND, detail)
        if status >= 500:
            return CliError(f"the arena failed ({status}): {message or 'server error'}", Exit.UNAVAILABLE, detail)
        return CliError(message or f"the arena refused the request ({status})", Exit.USAGE, detail)

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("PUT", path, body)

    # --- names, checked here so an unknown one is exit code 4 with a suggestion ---------------

    def entries(self) -> list[dict]:
        return self.get("/entries")

    def suites(self) -> list[dict]:
        return self.get("/suites")

    def check_entries(self, names: list[str]) -> None:
        known = [e["name"] for e in self.entries()]
        missing = [n for n in names if n not in known]
        if missing:
            hints = "; ".join(f"{n!r}{did_you_mean(n, known)}" for n in missing)
            raise CliError(f"unknown entr{'y' if len(missing) == 1 else 'ies'}: {hints}", Exit.NOT_FOUND)

    def check_suite(self, name: str) -> None:
        suites = self.suites()
        if any(s["name"] == name or str(s["id"]) == name for s in suites):
            return
        known = sorted({s["name"] for s in suites})
        raise CliError(f"unknown suite {name!r}{did_you_mean(name, known)}", Exit.NOT_FOUND)

    def run(self, run_id: int) -> dict:
        return self.get(f"/runs/{run_id}")

    def leaderboard(self, suite: str) -> dict:
        return self.get(f"/leaderboard/{quote(suite, safe='')}")

    def put_entry(self, name: str, body: dict) -> tuple[int, dict]:
        return self.put(f"/entries/{quote(name, safe='')}", body)
