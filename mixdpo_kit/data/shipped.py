"""Files that ship with the kit: the top-level ``data/`` folder, installed as the package
``mixdpo_kit.shipped_data`` (pyproject.toml maps it), read through ``importlib.resources`` so that
a source checkout, an editable install and a wheel installed anywhere (Colab) read the same files,
offline."""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from mixdpo_kit.core.errors import MissingFile

# Real data that ships with the kit, by name: its file inside data/ (licence and source beside it).
SAMPLES = {"ultrafeedback-sample": "ultrafeedback-sample/ultrafeedback-binarized-sample.jsonl.gz"}


def shipped_file(relative: str) -> Path:
    """The path of ``data/<relative>`` as installed; ``FileNotFoundError`` names it when missing."""
    resource = importlib.resources.files("mixdpo_kit.shipped_data").joinpath(relative)
    if not resource.is_file():
        raise MissingFile(f"{relative}: not among the files shipped with mixdpo-kit "
                          f"({importlib.resources.files('mixdpo_kit.shipped_data')})")
    return Path(os.fspath(resource))  # installed packages are folders, not zips: a real path


def sample_path(name: str) -> Path:
    """A shipped sample's file, by its name in :data:`SAMPLES`."""
    return shipped_file(SAMPLES[name])
