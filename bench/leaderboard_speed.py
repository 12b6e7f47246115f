"""Leaderboard speed at the server: 500 entries evaluated over 20 suites.

Fills a fresh database (created for the benchmark and dropped after it, like a test database) with
one team, 400 single models and 100 three-member blends, and for each of 20 suites an older and a
newer finished run of all 500 entries (20,000 results). Then it requests pages through Django's
test client, in process, so the time is the server's: URL routing, middleware, queries, the
leaderboard's statistics, the plotly figure and the template. Each page is requested ``--repeats``
times after a warm-up; the table gives the median and the 95th percentile and the query count, and
the same pages with 50 entries show that the query count does not grow with the entries.

    DATABASE_URL=postgres://... .venv/bin/python bench/leaderboard_speed.py [--repeats 30]

Without DATABASE_URL it runs on SQLite, the embedded default.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
os.environ.setdefault("ARENA_DATA_DIR", tempfile.mkdtemp(prefix="arena-bench-"))

import django  # noqa: E402 - the settings module must be chosen first

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from arena.benchmarks.models import Suite  # noqa: E402
from arena.evaluations.models import Run, RunEntry  # noqa: E402
from arena.registry.models import BlendMember, Entry  # noqa: E402
from arena.teams.models import Membership, Role, Team  # noqa: E402

TARGET_MS = 150.0
SUITES = 20
SINGLES, BLENDS = 400, 100
STRATEGIES = ["majority_vote", "weighted_vote", "mi_selection", "cascade", "router", "stacking", "pair_ranker"]


def fill(team: Team, singles: int, blends: int, suites: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    models = Entry.objects.bulk_create(
        [
            Entry(team=team, name=f"model-{i:03d}", kind=rng.choice(["hf", "gguf", "openai", "merge"]))
            for i in range(singles)
        ]
    )
    mixes = Entry.objects.bulk_create(
        [Entry(team=team, name=f"blend-{i:03d}", kind="blend", strategy=rng.choice(STRATEGIES)) for i in range(blends)]
    )
    BlendMember.objects.bulk_create(
        [BlendMember(blend=b, member=m, position=p) for b in mixes for p, m in enumerate(rng.sample(models, 3))]
    )
    everyone = models + mixes
    skill = {e.pk: rng.uniform(0.2, 0.9) for e in everyone}
    now = timezone.now()
    for s in range(suites):
        suite = Suite.objects.create(
            team=team,
            name=f"suite-{s:02d}",
            version="1",
            content_hash=f"{s:064d}",
            task_type="generation",
            manifest={"name": f"suite-{s:02d}", "version": "1", "splits": ["test"]},
        )
        for age in (2, 1):  # an older and a newer run: the board must pick each entry's latest
            run = Run.objects.create(team=team, suite=suite, splits=["test"], state="done")
            Run.objects.filter(pk=run.pk).update(created_at=now - timezone.timedelta(days=age, minutes=s))
            rows = []
            for e in everyone:
                score = min(1.0, max(0.0, skill[e.pk] + rng.gauss(0, 0.05)))
                blend = e.is_blend
                rows.append(
                    RunEntry(
                        run=run,
                        entry=e,
                        state="done",
                        total_items=200,
                        done_items=200,
                        score=score,
                        ci_low=max(0.0, score - 0.06),
                        ci_high=min(1.0, score + 0.06),
                        n=200,
                        best_member=None,
                        lift=rng.uniform(-0.05, 0.08) if blend else None,
                        lift_low=-0.1 if blend else None,
                        lift_high=0.12 if blend else None,
                        member_calls=600 if blend else 200,
                        tokens=rng.randint(5_000, 60_000),
                        compute_s=rng.uniform(10, 400),
                        latency_p50=rng.uniform(0.1, 2.0),
                        latency_p95=rng.uniform(2.0, 6.0),
                        finished_at=now,
                    )
                )
            RunEntry.objects.bulk_create(rows, batch_size=1000)


def get(client: Client, url: str):
    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    return response


def measure(client: Client, url: str, repeats: int) -> tuple[float, float, int, int]:
    for _ in range(3):
        get(client, url)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        get(client, url)
        times.append((time.perf_counter() - start) * 1000)
    with CaptureQueriesContext(connection) as queries:
        size = len(get(client, url).content)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], len(queries), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        client = Client()
        client.force_login(user)
        pages = [
            ("one suite", "/t/{team}/leaderboard/suite-07/"),
            ("one suite, JSON", "/t/{team}/leaderboard/suite-07/?format=json"),
            ("one suite, blends by cost", "/t/{team}/leaderboard/suite-07/?kind=blend&sort=compute"),
            ("all suites", "/t/{team}/leaderboard/"),
        ]
        results = []
        for label, (singles, blends) in (("500 entries", (SINGLES, BLENDS)), ("50 entries", (40, 10))):
            team = Team.objects.create(name=label, slug=label.replace(" ", "-"))
            Membership.objects.create(team=team, user=user, role=Role.VIEWER)
            start = time.perf_counter()
            fill(team, singles, blends, SUITES)
            print(f"filled {label} x {SUITES} suites in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            for page, url in pages:
                results.append((label, page, *measure(client, url.format(team=team.slug), args.repeats)))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"\n{connection.vendor}, {args.repeats} requests per page after 3 warm-up requests\n")
    print("| entries | page | median ms | p95 ms | queries | bytes |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, page, median, p95, queries, size in results:
        print(f"| {label} | {page} | {median:.1f} | {p95:.1f} | {queries} | {size:,} |")
    worst = max(r[2] for r in results if r[0] == "500 entries" and r[1].startswith("one suite"))
    print(f"\nslowest one-suite median with 500 entries: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
