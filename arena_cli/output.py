"""What the commands print: tables for people, JSON or CSV for machines, progress on stderr."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from arena_cli.errors import CliError

TERMINAL_STATES = ("done", "partial", "failed")


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    # Logs of CI jobs: wide enough that tables do not wrap, and no colour codes.
    return Console(stderr=stderr, width=int(os.environ.get("COLUMNS") or 160), no_color=True, highlight=False)


def out() -> Console:
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def print_csv(rows: list[dict], columns: list[str], stream=None) -> None:
    writer = csv.DictWriter(stream or sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    print_csv(rows, columns, buffer)
    return buffer.getvalue()


def error(exc: CliError, as_json: bool) -> None:
    if as_json:
        payload = {"error": {"code": int(exc.code), "message": exc.message, "detail": exc.detail}}
        sys.stderr.write(json.dumps(payload) + "\n")
    else:
        err().print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)


def note(message: str) -> None:
    """A line for people on stderr, so stdout stays what the command answers."""
    err().print(message, soft_wrap=True, highlight=False)


# --- numbers ------------------------------------------------------------------------------


def num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


def interval(low: float | None, high: float | None, sign: bool = False) -> str:
    if low is None or high is None:
        return "-"
    fmt = signed if sign else num
    return f"[{fmt(low)}, {fmt(high)}]"


# --- tables -------------------------------------------------------------------------------


def entries_table(entries: list[dict]) -> Table:
    table = Table("name", "kind", "what", box=None, pad_edge=False)
    for e in entries:
        if e["kind"] == "blend":
            what = f"{e['strategy']} over {', '.join(e['members'])}"
        else:
            c = e["config"]
            what = c.get("path") or (f"{c.get('model')} at {c.get('base_url')}" if c.get("base_url") else "")
            if e["kind"] == "merge":
                what = f"{c.get('method')} of {', '.join(m['entry'] for m in c.get('members', []))}"
        table.add_row(escape(e["name"]), e["kind"], escape(str(what)))
    return table


def suites_table(suites: list[dict]) -> Table:
    table = Table("id", "name", "version", "task type", "items", box=None, pad_edge=False)
    for s in suites:
        table.add_row(str(s["id"]), escape(s["name"]), escape(s["version"]), s["task_type"], str(s["items"]))
    return table


LEADERBOARD_COLUMNS = [
    "rank_upper_bound",
    "entry",
    "kind",
    "is_blend",
    "members",
    "state",
    "score",
    "ci_low",
    "ci_high",
    "n",
    "lift",
    "lift_low",
    "lift_high",
    "best_member",
    "member_calls",
    "tokens",
    "compute_s",
    "latency_p50",
    "latency_p95",
    "suite_version",
    "run_id",
    "evaluated_at",
]


def leaderboard_table(board: dict) -> Table:
    table = Table(
        "rank", "entry", "kind", "score", "95% interval", "lift", "n", "version", "run", box=None, pad_edge=False
    )
    for r in board["rows"]:
        lift = f"{signed(r['lift'])} {interval(r['lift_low'], r['lift_high'], sign=True)}" if r["is_blend"] else ""
        table.add_row(
            str(r["rank_upper_bound"] or "-"),
            escape(r["entry"]),
            escape(r["kind"]),
            num(r["score"]),
            interval(r["ci_low"], r["ci_high"]),
            lift,
            str(r["n"]),
            escape(r["suite_version"]),
            str(r["run_id"]),
        )
    return table


RUN_COLUMNS = [
    "entry",
    "kind",
    "is_blend",
    "members",
    "state",
    "error",
    "done_items",
    "total_items",
    "score",
    "ci_low",
    "ci_high",
    "n",
    "lift",
    "lift_low",
    "lift_high",
    "best_member",
    "member_calls",
    "new_calls",
    "tokens",
    "compute_s",
    "latency_p50",
    "latency_p95",
    "previous_run_id",
    "previous_score",
    "delta",
    "delta_low",
    "delta_high",
    "regressed",
]


def run_rows(snapshot: dict) -> list[dict]:
    """Each entry of a run with its comparison to its previous result merged in."""
    compared = {r["entry"]: r for r in snapshot.get("regressions", [])}
    rows = []
    for e in snapshot["entries"]:
        c = compared.get(e["entry"], {})
        rows.append({**e, **{k: c.get(k) for k in RUN_COLUMNS[-6:]}})
    return rows


def run_table(snapshot: dict) -> Table:
    table = Table(
        "entry", "state", "score", "95% interval", "n", "previous", "change", "95% interval", box=None, pad_edge=False
    )
    for r in run_rows(snapshot):
        regressed = " [red]regressed[/]" if r["regressed"] else ""
        state = r["state"] if r["state"] != "failed" else f"[red]failed[/]: {escape(r['error'][:80])}"
        table.add_row(
            escape(r["entry"]),
            state,
            num(r["score"]),
            interval(r["ci_low"], r["ci_high"]),
            str(r["n"]),
            f"{num(r['previous_score'])} (run {r['previous_run_id']})" if r["previous_run_id"] else "-",
            signed(r["delta"]) + regressed,
            interval(r["delta_low"], r["delta_high"], sign=True),
        )
    return table


# --- following a run ----------------------------------------------------------------------


class Follower:
    """Shows a run's progress while it goes: bars on a terminal, a line per change in a CI log."""

    def __init__(self, run_id: int, quiet: bool = False, console: Console | None = None):
        self.run_id = run_id
        self.quiet = quiet
        self.console = console or err()
        self.live = not quiet and self.console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.last_line = ""
        self.last_time = 0.0

    def update(self, snapshot: dict) -> None:
        if self.quiet:
            return
        if self.live:
            self._bars(snapshot)
        else:
            self._line(snapshot)

    def _bars(self, snapshot: dict) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.progress.start()
        for e in snapshot["entries"]:
            total = e["total_items"] or 1
            done = total if e["state"] == "done" else min(e["done_items"], total)
            state = "[red]failed[/]" if e["state"] == "failed" else e["state"]
            if e["entry"] not in self.tasks:
                self.tasks[e["entry"]] = self.progress.add_task(escape(e["entry"]), total=total, state=state)
            self.progress.update(self.tasks[e["entry"]], completed=done, total=total, state=state)

    def _line(self, snapshot: dict) -> None:
        parts = []
        for e in snapshot["entries"]:
            done = e["total_items"] if e["state"] == "done" else e["done_items"]
            parts.append(f"{e['entry']} {done}/{e['total_items']}" + (" failed" if e["state"] == "failed" else ""))
        line = f"run {self.run_id} {snapshot['state']}: " + ", ".join(parts)
        # Print each change, and the same line again at most every 30 s so a long batch shows life.
        if line != self.last_line or time.monotonic() - self.last_time > 30:
            self.console.print(line, soft_wrap=True, highlight=False, markup=False)
            self.last_line, self.last_time = line, time.monotonic()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
