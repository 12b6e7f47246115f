from django.core.management.base import BaseCommand

from arena.deployment.demo import seed_demo
from arena.evaluations.services import requeue_unfinished


class Command(BaseCommand):
    help = "Create the demo team, models and first run (once); put back unfinished work."

    def add_arguments(self, parser):
        parser.add_argument("--no-run", action="store_true", help="register everything but start no run")
        parser.add_argument("--suite-size", type=int, default=None)
        parser.add_argument("--requeue", action="store_true", help="re-queue work left by stopped workers")

    def handle(self, *args, **options):
        kwargs = {"start_run": not options["no_run"]}
        if options["suite_size"]:
            kwargs["suite_size"] = options["suite_size"]
        if options["requeue"]:
            # Before seeding, so a run created just now is queued once, not twice.
            requeue_unfinished()
        info = seed_demo(**kwargs)
        self.stdout.write(f"demo team: {info['team']}")
