"""The `arena` command: entries, blends, suites, runs and leaderboards from scripts and CI pipelines."""

import functools
import json
import time
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from arena_cli import output
from arena_cli.client import Arena
from arena_cli.config import resolve
from arena_cli.errors import EXIT_CODES_HELP, CliError, Exit
from arena_cli.suites import parse_columns, upload_body

app = typer.Typer(
    name="arena",
    help="Evaluate models and blends on an Ensemble Arena from the command line.\n\n"
    "Set ARENA_URL and ARENA_TOKEN (a team API token), or put url and token in ~/.config/arena/config.toml.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
entries_app = typer.Typer(help="Model entries: list them, register one, or point one at a new checkpoint.")
blends_app = typer.Typer(help="Blends: ensembles of entries combined by a strategy.")
suites_app = typer.Typer(help="Benchmark suites: list, upload from files, or add a built-in one.")
app.add_typer(entries_app, name="entries", no_args_is_help=True)
app.add_typer(blends_app, name="blends", no_args_is_help=True)
app.add_typer(suites_app, name="suites", no_args_is_help=True)

# Consecutive failed polls tolerated while waiting for a run: a restarting server is not a failed run.
POLL_RETRIES = 10

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"arena {version('ensemble-arena')}")
        except PackageNotFoundError:
            typer.echo("arena (not installed)")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(envvar="ARENA_URL", help="The arena's address, e.g. http://127.0.0.1:8000.")
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="ARENA_TOKEN", help="A team API token.", show_envvar=True)] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar="ARENA_CONFIG", help="Config file (TOML: url, token); default ~/.config/arena/config.toml."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each answer of the arena.")] = 30.0,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = {"url": url, "token": token, "config": config, "timeout": timeout}


def connect(ctx: typer.Context) -> Arena:
    o = ctx.find_root().obj
    return Arena(resolve(o["url"], o["token"], o["config"], o["timeout"]))


def handled(fn):
    """Report a CliError as a message (JSON on stderr with --json) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            output.error(exc, as_json)
            raise typer.Exit(int(exc.code)) from None
        except KeyboardInterrupt:
            output.error(CliError("interrupted", Exit.INTERRUPTED), as_json)
            raise typer.Exit(int(Exit.INTERRUPTED)) from None

    return wrapper


def load_object(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object given inline, or @FILE holding JSON or YAML."""
    if text is None:
        return {}
    source = what
    try:
        if text.startswith("@"):
            path = Path(text[1:])
            source = str(path)
            raw = path.read_text(encoding="utf-8")
            data = yaml.safe_load(raw) if path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
        else:
            data = json.loads(text)
    except OSError as exc:
        raise CliError(f"{what}: cannot read {text[1:]}: {exc.strerror}", Exit.USAGE) from None
    except (ValueError, yaml.YAMLError) as exc:
        raise CliError(f"{what}: {source} is not valid JSON/YAML: {exc}", Exit.USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{what} must be an object (a mapping), not {type(data).__name__}", Exit.USAGE)
    return data


# --- shell completion of names ------------------------------------------------------------


def _names(ctx: typer.Context, path: str) -> list[str]:
    params = ctx.find_root().params
    try:
        arena = Arena(resolve(params.get("url"), params.get("token"), params.get("config"), 3.0))
        return [x["name"] for x in arena.get(path)]
    except (CliError, KeyError, TypeError):
        return []


def complete_entry(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _names(ctx, "/entries") if n.startswith(incomplete)]


def complete_suite(ctx: typer.Context, incomplete: str) -> list[str]:
    return sorted({n for n in _names(ctx, "/suites") if n.startswith(incomplete)})


# --- entries ------------------------------------------------------------------------------


class ModelKind(StrEnum):
    hf = "hf"
    gguf = "gguf"
    openai = "openai"
    merge = "merge"


@entries_app.command("list")
@handled
def entries_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the team's entries, single models and blends."""
    entries = connect(ctx).entries()
    if as_json:
        output.print_json(entries)
    else:
        output.out().print(output.entries_table(entries))


@entries_app.command("register")
@handled
def entries_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The entry's name.", autocompletion=complete_entry)],
    kind: Annotated[ModelKind, typer.Option(help="hf directory, gguf file, openai endpoint or merge recipe.")],
    path: Annotated[str | None, typer.Option(help="hf/gguf: the model's path on the arena's machine.")] = None,
    chat_template: Annotated[
        str | None, typer.Option(help="hf/gguf: auto (use the tokenizer's template) or off.")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: the endpoint, e.g. http://host:8000/v1.")] = None,
    model: Annotated[str | None, typer.Option(help="openai: the model name the endpoint serves.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ARENA_ENTRY_API_KEY", help="openai: the endpoint's key (stored encrypted)."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(help="The whole config as JSON, or @FILE (JSON/YAML), e.g. a merge recipe; flags override."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="A line about the entry.")] = None,
    update: Annotated[
        bool, typer.Option("--update", help="If the entry exists, point it at this config (a new checkpoint).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register a model entry, or with --update change an existing one (its kind stays)."""
    body_config = load_object(config, "--config")
    flags = {"path": path, "chat_template": chat_template, "base_url": base_url, "model": model}
    body_config.update({k: v for k, v in flags.items() if v is not None})
    body: dict[str, Any] = {"kind": kind.value, "config": body_config, "api_key": api_key or ""}
    if description is not None:
        body["description"] = description
    arena = connect(ctx)
    if update:
        status, entry = arena.put_entry(name, body)
    else:
        status, entry = arena.post("/entries", {"name": name, **body})
    created = status == 201
    if as_json:
        output.print_json({**entry, "created": created})
    else:
        output.note(
            f"{'registered' if created else 'updated'} {entry['kind']} entry {entry['name']} (id {entry['id']})"
        )


# --- blends -------------------------------------------------------------------------------


@blends_app.command("register")
@handled
def blends_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The blend's name.")],
    members: Annotated[list[str], typer.Argument(help="Two or more entries.", autocompletion=complete_entry)],
    strategy: Annotated[str, typer.Option(help="e.g. majority_vote, weighted_vote, router, stacking.")],
    params: Annotated[str | None, typer.Option(help="Strategy parameters as JSON, or @FILE (JSON/YAML).")] = None,
    description: Annotated[str, typer.Option(help="A line about the blend.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Register a blend of existing entries."""
    body = {
        "name": name,
        "strategy": strategy,
        "params": load_object(params, "--params"),
        "members": members,
        "description": description,
    }
    arena = connect(ctx)
    arena.check_entries(members)
    _, entry = arena.post("/blends", body)
    if as_json:
        output.print_json(entry)
    else:
        output.note(f"registered blend {entry['name']}: {entry['strategy']} over {', '.join(entry['members'])}")


# --- suites -------------------------------------------------------------------------------


@suites_app.command("list")
@handled
def suites_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the team's suites, every version."""
    suites = connect(ctx).suites()
    if as_json:
        output.print_json(suites)
    else:
        output.out().print(output.suites_table(suites))


def _suite_done(suite: dict, created: bool, as_json: bool) -> None:
    if as_json:
        output.print_json({**suite, "created": created})
        return
    what = "added" if created else "unchanged (the team has this content already):"
    output.note(f"{what} {suite['name']} v{suite['version']}, {suite['items']} items, {suite['task_type']}")


@suites_app.command("upload")
@handled
def suites_upload(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            help="suite.yaml + items.jsonl, task.json (BIG-bench), an lm-eval task.yaml + JSONL, or a .csv; "
            "ROLE=PATH where the name does not tell (ROLE: one of the format's file keys, e.g. test=docs.jsonl)."
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="An upload format (default: told from the files); a wrong one lists them all."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The suite's name (BIG-bench, CSV).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the dev/test split where the data has none.")] = 0,
    column: Annotated[
        list[str] | None,
        typer.Option(help="CSV: KEY=COLUMN, for input, reference, choices (A,B,C), gold, gold_kind, split, id."),
    ] = None,
    metric: Annotated[str | None, typer.Option(help="CSV: the metric (default exact_match).")] = None,
    prompt_template: Annotated[str | None, typer.Option(help="CSV: the prompt, with {input}.")] = None,
    answer_extraction: Annotated[str | None, typer.Option(help="CSV: how the answer is read from the output.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a suite from files; the same content again changes nothing, other content is a new version."""
    options = {
        "name": name,
        "seed": seed,
        "columns": parse_columns(column) if column else None,
        "metric": metric,
        "prompt_template": prompt_template,
        "answer_extraction": answer_extraction,
    }
    body = upload_body(files, fmt, options)
    status, suite = connect(ctx).post("/suites", body)
    _suite_done(suite, status == 201, as_json)


@suites_app.command("builtin")
@handled
def suites_builtin(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="arithmetic, mc_knowledge, date_reasoning, unit_conversion, logic...")],
    seed: Annotated[int, typer.Option(min=0, help="Generator seed; the same seed gives the same suite.")] = 0,
    size: Annotated[int | None, typer.Option(min=2, help="Number of items (half dev, half test).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add one of the arena's generated suites to the team."""
    status, suite = connect(ctx).post("/suites/builtin", {"name": name, "seed": seed, "size": size})
    _suite_done(suite, status == 201, as_json)


# --- runs ---------------------------------------------------------------------------------


WaitTimeout = Annotated[
    float, typer.Option(min=0, help="With --wait: give up after this many seconds (exit 6); 0 waits for ever.")
]
Poll = Annotated[float, typer.Option(min=0.1, help="Seconds between progress checks.")]
FailOnRegression = Annotated[
    bool,
    typer.Option(
        "--fail-on-regression",
        help="Exit 1 when an entry's score is below its previous one with 95% confidence (implies --wait).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress while waiting.")]


def follow(arena: Arena, run_id: int, *, poll: float, timeout: float, quiet: bool) -> dict:
    """Poll the run until it finishes, showing progress; transient network trouble is retried."""
    deadline = time.monotonic() + timeout if timeout else None
    follower = output.Follower(run_id, quiet=quiet)
    failures = 0
    try:
        while True:
            try:
                snapshot = arena.run(run_id)
                failures = 0
            except CliError as exc:
                failures += 1
                if exc.code != Exit.UNAVAILABLE or failures > POLL_RETRIES:
                    raise
                time.sleep(min(poll * 2**failures, 15))
                continue
            follower.update(snapshot)
            if snapshot["state"] in output.TERMINAL_STATES:
                return snapshot
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"run {run_id} has not finished after {timeout:g}s; it goes on (arena wait {run_id})",
                    Exit.RUN_FAILED,
                )
            time.sleep(poll)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; run {run_id} goes on (arena wait {run_id})", Exit.INTERRUPTED) from None
    finally:
        follower.close()


def report(snapshot: dict, *, fail_on_regression: bool, as_json: bool) -> None:
    """Print a finished run; exit 6 when it failed or finished with errors, 1 on a regression with
    --fail-on-regression."""
    if as_json:
        output.print_json(snapshot)
    else:
        output.out().print(output.run_table(snapshot))
    regressed = [r for r in snapshot.get("regressions", []) if r["regressed"]]
    lines = [
        f"{r['entry']} regressed on {snapshot['suite']}: {output.num(r['score'])} now, "
        f"{output.num(r['previous_score'])} in run {r['previous_run_id']} "
        f"(change {output.signed(r['delta'])}, 95% interval {output.interval(r['delta_low'], r['delta_high'], True)})"
        for r in regressed
    ]
    if snapshot["state"] in ("failed", "partial"):
        failed = [f"{e['entry']}: {e['error']}" for e in snapshot["entries"] if e["state"] == "failed"]
        how = (
            "failed"
            if snapshot["state"] == "failed"
            else "finished with errors (retry the failed entries from its page)"
        )
        message = f"run {snapshot['id']} {how}: " + ("; ".join(failed) or snapshot["error"] or "see its page")
        raise CliError("\n".join([message, *lines]), Exit.RUN_FAILED, snapshot["error"])
    if regressed and fail_on_regression:
        raise CliError("\n".join(lines), Exit.REGRESSION, regressed)
    if lines and not as_json:
        output.note("\n".join(lines))


@app.command("run")
@handled
def run(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help="Suite name (latest version) or id.", autocompletion=complete_suite)],
    entries: Annotated[list[str], typer.Argument(help="Entries to evaluate.", autocompletion=complete_entry)],
    split: Annotated[list[str] | None, typer.Option(help="Splits to run (default: test).")] = None,
    judge: Annotated[
        str | None, typer.Option(help="Judge suites: the entry that compares answers.", autocompletion=complete_entry)
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run to its end, with progress.")] = False,
    fail_on_regression: FailOnRegression = False,
    wait_timeout: WaitTimeout = 0,
    poll: Poll = 1.0,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a run of entries on a suite; with --wait follow it and report each entry against its previous score."""
    arena = connect(ctx)
    arena.check_suite(suite)
    arena.check_entries([*entries, judge] if judge else entries)
    body: dict[str, Any] = {"suite": suite, "entries": entries, "splits": split or None}
    if judge:
        body["judge"] = judge
    _, snapshot = arena.post("/runs", body)
    run_id = snapshot["id"]
    page = f"{arena.settings.url}/t/{snapshot['team']}/runs/{run_id}/"
    if not (wait or fail_on_regression):
        if as_json:
            output.print_json(snapshot)
        else:
            output.note(f"started run {run_id} on {snapshot['suite']} v{snapshot['suite_version']}: {page}")
            typer.echo(run_id)
        return
    if not quiet:
        output.note(f"run {run_id} on {snapshot['suite']} v{snapshot['suite_version']}: {page}")
    snapshot = follow(arena, run_id, poll=poll, timeout=wait_timeout, quiet=quiet)
    report(snapshot, fail_on_regression=fail_on_regression, as_json=as_json)


@app.command("wait")
@handled
def wait_for(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id.")],
    fail_on_regression: FailOnRegression = False,
    wait_timeout: WaitTimeout = 0,
    poll: Poll = 1.0,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Follow a run that is under way (or show a finished one) and report it like run --wait."""
    snapshot = follow(connect(ctx), run_id, poll=poll, timeout=wait_timeout, quiet=quiet)
    report(snapshot, fail_on_regression=fail_on_regression, as_json=as_json)


# --- results ------------------------------------------------------------------------------


@app.command("leaderboard")
@handled
def leaderboard(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help="Suite name.", autocompletion=complete_suite)],
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every entry's latest result on a suite, best first, with 95% intervals and blends' lift."""
    arena = connect(ctx)
    board = arena.leaderboard(suite)
    if not board["rows"]:
        arena.check_suite(suite)  # an unknown suite is exit 4; a known one may have no results yet
    if as_json:
        output.print_json(board)
    elif as_csv:
        output.print_csv(board["rows"], output.LEADERBOARD_COLUMNS)
    elif board["rows"]:
        output.out().print(output.leaderboard_table(board))
    else:
        output.note(f"no results on {suite} yet")


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"


@app.command("export")
@handled
def export(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="json: the whole run; csv: a row per entry.")] = (
        ExportFormat.json
    ),
    output_path: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Export a run's results: scores, intervals, cost, and each entry against its previous result."""
    snapshot = connect(ctx).run(run_id)
    if fmt is ExportFormat.json:
        text = json.dumps(snapshot, indent=2) + "\n"
    else:
        text = output.csv_text(output.run_rows(snapshot), output.RUN_COLUMNS)
    if output_path is None:
        typer.echo(text, nl=False)
        return
    try:
        output_path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output_path}: {exc.strerror}", Exit.USAGE) from None
    output.note(f"wrote run {run_id} to {output_path}")


def main() -> None:
    app(prog_name="arena")
