"""plotly.js from the installed plotly package, served as static/vendor/plotly.min.js.

The Python package ships the matching plotly.js bundle, so the pages never reach a CDN and the
4 MB file is neither committed nor out of step with the figures the server builds.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage
from whitenoise.storage import CompressedManifestStaticFilesStorage

PREFIX = "vendor"
FILES = ("plotly.min.js",)


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.root = Path(plotly.__file__).parent / "package_data"
        self.storage = FileSystemStorage(location=self.root)
        self.storage.prefix = PREFIX

    def check(self, **kwargs) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        name = path.removeprefix(f"{PREFIX}/")
        match = str(self.root / name) if name != path and name in FILES else None
        if find_all or not match:
            return [match] if match else []  # what Django's finders answer for "not here"
        return match

    def list(self, ignore_patterns):
        for name in FILES:
            yield name, self.storage


class CollectedStaticStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's hashed, compressed storage, with hashed URLs even when DEBUG is on.

    Django writes plain names under DEBUG; `manage.py up` runs with collected files whether or not
    ARENA_DEBUG=1 turns DEBUG on, and only a hashed name lets WhiteNoise cache a file (plotly.min.js
    is 4.8 MB) for a year.
    """

    def url(self, name, force=False):
        return super().url(name, force=True)
