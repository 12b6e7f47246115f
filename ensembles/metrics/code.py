"""Scoring generated code by running it against tests in a resource-limited subprocess.

What the sandbox does: a fresh interpreter (``sys.executable -I``) in a new session, an empty
environment, a fresh temporary working directory that is deleted afterwards, a wall-clock
limit (the whole process group is killed), and ``setrlimit`` limits on address space, CPU
time, written file size, open files and core dumps.

What it does NOT do: it does not block the network (no network namespace is available
here), does not hide the rest of the file system, and cannot stop a hostile program from
faking a pass (e.g. ``os._exit(0)`` before the tests run). It is meant for grading model
output on benchmarks such as HumanEval, not for running code from untrusted people; do that
in a container without network.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ensembles.metrics.base import METRICS, Metric

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
# Output beyond this is cut off by RLIMIT_FSIZE (the process gets SIGXFSZ and fails).
_MAX_OUTPUT_BYTES = 1024 * 1024
_MAX_OPEN_FILES = 64
_OUTPUT_TAIL_CHARS = 2000

Status = Literal["passed", "failed", "timeout"]


@dataclass(frozen=True)
class CodeResult:
    """Outcome of one sandboxed run; ``output`` is the tail of stdout and stderr."""

    status: Status
    returncode: int | None
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        """True when the program and its tests exited with status 0 in time."""
        return self.status == "passed"


def build_test_code(tests: str, entry_point: str | None = None) -> str:
    """The code run after a candidate: its tests, then ``check(entry_point)`` when one is named.

    Naming an entry point follows the HumanEval convention: ``tests`` define
    ``check(candidate)`` and are called with the candidate function.
    """
    if entry_point is None:
        return tests
    return f"{tests}\n\ncheck({entry_point})\n"


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    """Runs in the child between fork and exec: cap what the program may use."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_MAX_OUTPUT_BYTES, _MAX_OUTPUT_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (_MAX_OPEN_FILES, _MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_tests(
    program: str,
    tests: str = "",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> CodeResult:
    """Run ``program`` followed by ``tests`` in a sandboxed interpreter; passed means exit status 0."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    source = f"{program}\n\n{tests}\n" if tests else f"{program}\n"
    cpu_seconds = max(1, math.ceil(timeout_s)) + 1
    with tempfile.TemporaryDirectory(prefix="arena-code-") as workdir:
        script = Path(workdir, "candidate.py")
        script.write_text(source, encoding="utf-8")
        output_path = Path(workdir, "output.txt")
        started = time.monotonic()
        with output_path.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603 - fixed argv; the program is data in a file
                [sys.executable, "-I", str(script)],
                cwd=workdir,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _limit_resources(memory_bytes, cpu_seconds),
            )
            try:
                returncode: int | None = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                # Kill the whole session so children the program started die with it.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        seconds = time.monotonic() - started
        text = output_path.read_bytes()[-_OUTPUT_TAIL_CHARS * 4 :].decode("utf-8", "replace")
    if returncode is None:
        status: Status = "timeout"
    else:
        status = "passed" if returncode == 0 else "failed"
    return CodeResult(status=status, returncode=returncode, seconds=seconds, output=text[-_OUTPUT_TAIL_CHARS:])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021, "Codex" paper).

    Equals 1 - C(n - c, k) / C(n, k), computed as a product to stay exact for large n.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    failing_draws = 1.0
    for i in range(n - c + 1, n + 1):
        failing_draws *= 1.0 - k / i
    return 1.0 - failing_draws


@METRICS.register(
    "code_pass",
    pretty_name="Tests pass",
    reference_url="https://arxiv.org/abs/2107.03374",
)
class CodePass(Metric):
    """1 if the program (``prediction``) passes the test code (``reference``) in the sandbox, else 0.

    Code suites pass the item's test program (see ``build_test_code``) as the reference.
    """

    binary = True

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes

    def score(self, prediction: str, reference: str) -> float:
        result = run_tests(prediction, reference, timeout_s=self.timeout_s, memory_bytes=self.memory_bytes)
        return float(result.passed)
