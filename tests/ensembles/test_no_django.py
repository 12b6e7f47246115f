import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so other tests (or pytest plugins) cannot have imported Django first.
SCRIPT = r"""
import importlib
import importlib.abc
import pkgutil
import sys

attempts = []

class DjangoTripwire(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            attempts.append(name)
            raise ImportError("ensembles must not import django")
        return None

sys.meta_path.insert(0, DjangoTripwire())

import ensembles

skipped = []
for module in pkgutil.walk_packages(ensembles.__path__, "ensembles."):
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as exc:
        # Optional third-party dependencies (e.g. a backend's SDK) may be absent here.
        if exc.name and exc.name.split(".")[0] == "django":
            raise
        skipped.append(module.name)

print("attempts", attempts)
print("django_loaded", any(m == "django" or m.startswith("django.") for m in sys.modules))
"""


def test_importing_every_ensembles_module_leaves_django_out_of_sys_modules():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "attempts []" in result.stdout
    assert "django_loaded False" in result.stdout
