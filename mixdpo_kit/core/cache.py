"""A small on-disk cache of JSON documents, shared by the reference log-probs and reward scores.

Writes are atomic (a uniquely named temporary file, then ``os.replace``), so several processes —
DDP ranks, two notebooks — may read and write the same folder: a reader sees a whole file or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


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
