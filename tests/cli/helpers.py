"""Run the `arena` command as a subprocess, as a pipeline or a person would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from tests.helpers import ROOT


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def error(self) -> dict:
        """The JSON error a command prints on stderr under --json."""
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "arena_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)
