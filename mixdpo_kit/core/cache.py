"""A small on-disk cache of JSON documents, and the one cache-or-compute step every cache uses
(reference log-probs, CHES products, reward-model scores).

Writes are atomic (a uniquely named temporary file, then ``os.replace``), so several processes —
DDP ranks, two notebooks — may read and write the same folder: a reader sees a whole file or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

from mixdpo_kit.core.distributed import map_shared, on_main


def digest(*parts) -> str:
    """A short hex digest of JSON-serialisable parts (a cache key)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:24]


class JsonCache:
    """JSON documents under ``directory``, one file per key."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored document, or None."""
        path = self.path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, key: str, document: dict) -> None:
        """Store ``document`` under ``key`` atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(document))
        os.replace(tmp, self.path(key))


def cached_items(store: JsonCache, key: str, items: Sequence[int], compute: Callable[[list[int]], Sequence]) -> dict:
    """``{str(item): value}`` for every item under ``key``: what is stored is read, the missing items
    are computed (``compute(items) -> one JSON value per item``), split between the processes of a
    launch (:func:`~mixdpo_kit.core.distributed.map_shared`), merged with whatever another process
    (a second notebook) stored meanwhile, and written once, by the main process. Call it on every process."""
    stored = store.get(key) or {}
    todo = [i for i in items if str(i) not in stored]
    if todo:
        computed = dict(zip(map(str, todo), map_shared(compute, todo)))
        stored = {**(store.get(key) or {}), **stored, **computed}
        on_main(store.put, key, stored)
    return stored
