"""The detector a review needs to build new reference banks, loaded once on first use.

Viewing the console never needs it; "mark normal" does (a new registry version's bank is built with the
same checkpoint the Serve app scores with, or its features would not match). Loading a CLIP checkpoint
takes seconds and hundreds of MB, so it happens on the first review, not at start-up.
"""
from __future__ import annotations

import threading

from model import InCTRLv2
from services.storage.object_store import ObjectStore
from services.serving.checkpoint_source import load_detector


class LazyDetector:
    """Callable returning the checkpoint's detector; thread-safe, loads at most once."""

    def __init__(self, checkpoint_uri: str, store: ObjectStore) -> None:
        self.checkpoint_uri = checkpoint_uri
        self._store = store
        self._lock = threading.Lock()
        self._detector: InCTRLv2 | None = None

    def __call__(self) -> InCTRLv2:
        with self._lock:
            if self._detector is None:
                # The torch search: a review builds one bank and scores its calibration images, no FAISS index.
                self._detector, _ = load_detector(self.checkpoint_uri, self._store, "torch")
            return self._detector
