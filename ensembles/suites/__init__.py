"""Evaluation suites: a manifest (prompting and scoring recipe) plus items."""

from ensembles.suites.builtin import BUILTIN_SUITES, get_builtin
from ensembles.suites.model import (
    FewShot,
    Item,
    Suite,
    SuiteManifest,
    dump_suite,
    load_suite,
)

__all__ = [
    "BUILTIN_SUITES",
    "FewShot",
    "Item",
    "Suite",
    "SuiteManifest",
    "dump_suite",
    "get_builtin",
    "load_suite",
]
