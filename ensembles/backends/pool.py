"""Keep loaded models in a worker process between batches."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable

from ensembles.backends.base import Backend


class ModelPool:
    """Loaded backends keyed by fingerprint; the least recently used unloads first.

    A GPU worker serves batches of the same model back to back, so loading once per process
    rather than once per batch is what makes batching pay.
    """

    def __init__(self, max_models: int = 2) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self._models: OrderedDict[str, Backend] = OrderedDict()
        self._lock = threading.Lock()
        # What loaded() reports, replaced whole under the lock: a reader (a heartbeat thread)
        # never waits for a load, which can hold the lock for minutes.
        self._held: tuple[str, ...] = ()

    def get(self, fingerprint: str, make: Callable[[], Backend]) -> Backend:
        """The loaded backend for ``fingerprint``, loading it with ``make`` when absent."""
        with self._lock:
            backend = self._models.get(fingerprint)
            if backend is not None:
                self._models.move_to_end(fingerprint)
                self._held = tuple(self._models)
                return backend
            while len(self._models) >= self.max_models:
                _, evicted = self._models.popitem(last=False)
                self._held = tuple(self._models)
                evicted.unload()
                gc.collect()
            backend = make()
            backend.load()
            self._models[fingerprint] = backend
            self._held = tuple(self._models)
            return backend

    def loaded(self) -> list[str]:
        """Fingerprints currently held, least recently used first; never waits for a load."""
        return list(self._held)
