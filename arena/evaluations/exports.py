"""A run as files: its entries' results (CSV) and its items, each entry's prediction and score (CSV or JSON).

The run page and the API hand out the same files. Items are read a chunk at a time and written as
they are read (arena.core.export), so a run of many thousand items streams in bounded memory.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, StreamingHttpResponse

from arena.benchmarks.models import SuiteItem
from arena.core import export
from arena.evaluations.models import Run, Score
from arena.registry.models import Entry

# One row per entry, the columns of the run's snapshot (queries.entry_row) that a spreadsheet wants.
RUN_COLUMNS = (
    "entry",
    "kind",
    "members",
    "state",
    "score",
    "ci_low",
    "ci_high",
    "n",
    "lift",
    "lift_low",
    "lift_high",
    "lift_p",
    "best_member",
    "member_calls",
    "new_calls",
    "tokens",
    "compute_s",
    "latency_p50",
    "latency_p95",
    "done_items",
    "total_items",
    "error",
)
# One row per item and entry; an entry with no answer to an item (it failed first) has both blank.
ITEM_COLUMNS = ("item_id", "item", "split", "position", "entry", "prediction", "score")
FORMATS = ("json", "csv")
CHUNK = 500  # items read per query


def run_csv(request: HttpRequest, run: Run, snapshot: dict) -> StreamingHttpResponse:
    """The run's entries from its ``snapshot`` (arena.evaluations.snapshots.run_snapshot)."""
    rows = ([";".join(r[c]) if c == "members" else r[c] for c in RUN_COLUMNS] for r in snapshot["entries"])
    return export.download(request, export.csv_lines(RUN_COLUMNS, rows), export.CSV_TYPE, f"{_stem(run)}.csv")


def items_file(request: HttpRequest, run: Run, fmt: str) -> StreamingHttpResponse:
    """The run's items, each entry's prediction and score, as ``fmt`` (one of FORMATS)."""
    if fmt == "csv":
        parts = export.csv_lines(ITEM_COLUMNS, _item_csv_rows(run))
        return export.download(request, parts, export.CSV_TYPE, f"{_stem(run)}-items.csv")
    return export.download(request, export.json_array(item_records(run)), export.JSON_TYPE, f"{_stem(run)}-items.json")


def item_records(run: Run) -> Iterator[dict]:
    """Per item of the run's splits, in suite order: its fields and every entry's prediction and score."""
    entries = run_entries(run)
    items = SuiteItem.objects.filter(suite_id=run.suite_id, split__in=run.splits).order_by("position")
    last = -1
    while True:
        # Keyset pages on position: each chunk is one indexed query, however far into the suite.
        chunk = list(items.filter(position__gt=last).values("pk", "key", "split", "position", "data")[:CHUNK])
        if not chunk:
            return
        last = chunk[-1]["position"]
        answers = {
            (item_id, entry_id): (prediction, value)
            for item_id, entry_id, prediction, value in Score.objects.filter(
                run=run, item_id__in=[i["pk"] for i in chunk]
            ).values_list("item_id", "entry_id", "prediction", "value")
        }
        for item in chunk:
            scores = []
            for entry_id, name in entries:
                prediction, value = answers.get((item["pk"], entry_id), (None, None))
                scores.append({"entry": name, "prediction": prediction, "score": value})
            yield {
                "item_id": item["pk"],
                "item": item["key"],
                "split": item["split"],
                "position": item["position"],
                "data": item["data"],
                "scores": scores,
            }


def run_entries(run: Run) -> list[tuple[int, str]]:
    """(id, name) of the run's entries, as the item-by-item page orders them."""
    return list(
        Entry.objects.filter(run_entries__run=run).order_by("kind", "name").values_list("pk", "name").distinct()
    )


def _item_csv_rows(run: Run) -> Iterator[list]:
    for item in item_records(run):
        head = [item["item_id"], item["item"], item["split"], item["position"]]
        for s in item["scores"]:
            yield [*head, s["entry"], s["prediction"], s["score"]]


def _stem(run: Run) -> str:
    return f"{run.team.slug}-run-{run.pk}"
