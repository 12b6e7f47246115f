from django.conf import settings
from django.core.management.base import BaseCommand

from arena.deployment.demo import export_demo_models, install_model_files


class Command(BaseCommand):
    help = "Place the offline demo models in the data directory and convert them once."

    def handle(self, *args, **options):
        for path in install_model_files(settings.MODELS_DIR):
            self.stdout.write(f"model file: {path}")
        export_demo_models(settings.MODELS_DIR)
        self.stdout.write(self.style.SUCCESS("models ready"))
