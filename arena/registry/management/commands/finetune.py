from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from arena.registry.finetunes import finetune_entry
from arena.teams.models import Team


class Command(BaseCommand):
    help = (
        "Fine-tune a team's model on a suite's dev split and register the result as an hf entry, "
        "so the team can merge base and task variants."
    )

    def add_arguments(self, parser):
        parser.add_argument("team", help="team slug")
        parser.add_argument("member", help="the entry to start from (hf, gguf or a materialized merge)")
        parser.add_argument("suite", help="suite name: its latest version's dev split is the training data")
        parser.add_argument("--name", required=True, help="name of the new hf entry")
        parser.add_argument("--steps", type=int, default=300)
        parser.add_argument("--learning-rate", type=float, default=5e-5)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument(
            "--method", choices=["full", "lora"], default="full", help="lora is folded into the weights"
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options):
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"no team with the slug {options['team']!r}")
        if options["steps"] < 1 or options["batch_size"] < 1 or options["learning_rate"] <= 0:
            raise CommandError("--steps and --batch-size must be at least 1, --learning-rate above 0")
        try:
            entry, result = finetune_entry(
                team,
                member=options["member"],
                suite=options["suite"],
                name=options["name"],
                steps=options["steps"],
                learning_rate=options["learning_rate"],
                batch_size=options["batch_size"],
                method=options["method"],
                seed=options["seed"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {m}" for k, msgs in exc.message_dict.items() for m in msgs)) from None
        self.stdout.write(f"loss {result.first_loss:.4f} -> {result.last_loss:.4f} over {len(result.losses)} steps")
        self.stdout.write(self.style.SUCCESS(f"registered {entry.name} (hf) at {result.path}"))
