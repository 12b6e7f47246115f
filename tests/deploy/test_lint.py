"""What CI cannot run, it validates: the compose file against the compose specification, the Dockerfiles with hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.helpers import COMPOSE, DOCKERFILES
from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_compose_file_follows_the_compose_specification():
    result = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfiles_pass_hadolint_with_no_finding_at_all():
    # Failure threshold "info": a style note fails the test as surely as an error does.
    result = run(str(BIN / "hadolint"), "--failure-threshold", "info", *map(str, DOCKERFILES))
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_the_checks_do_find_a_broken_compose_file_and_a_sloppy_dockerfile(tmp_path):
    # The same commands reject what they should, so a passing run above means something.
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  web:\n    image: arena\n    restart: sometimes-maybe\n    ports: 8000\n")
    assert run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)).returncode != 0
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python:latest\nRUN cd /app && pip install flask\nCMD python app.py\n")
    result = run(str(BIN / "hadolint"), "--failure-threshold", "info", str(sloppy))
    assert result.returncode != 0 and {"DL3007", "DL3003", "DL3013", "DL3025"} <= set(result.stdout.split())
