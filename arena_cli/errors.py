"""Exit codes and the one error type every command turns into a message and its code."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    OK = 0
    REGRESSION = 1
    USAGE = 2  # bad options or files, or the server's 422 with its field messages
    AUTH = 3  # no token, a refused token (401) or a role that may not do this (403)
    NOT_FOUND = 4  # an unknown suite, entry or run
    UNAVAILABLE = 5  # the arena cannot be reached, timed out, or answered 5xx
    RUN_FAILED = 6  # an entry of the run failed, or the run did not finish within --wait-timeout
    INTERRUPTED = 130


EXIT_CODES_HELP = "\n\n".join(
    [
        "Exit codes:",
        "0  done",
        "1  an entry regressed (with --fail-on-regression)",
        "2  usage or validation error (the server's message says which field)",
        "3  no token, a refused token, or a role that may not do this",
        "4  unknown suite, entry or run",
        "5  network failure or server error",
        "6  the run failed, or did not finish within --wait-timeout",
    ]
)


class CliError(Exception):
    """A problem to report in one or two lines, never as a traceback."""

    def __init__(self, message: str, code: Exit, detail: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
