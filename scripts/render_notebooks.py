"""Executed copies of the notebooks under ``docs/notebooks/``, with every plotly figure also stored
as a PNG, so a reader on the code host sees the figures without running anything.

    python scripts/render_notebooks.py [NAME ...]

The notebooks in ``notebooks/`` stay without outputs (clean diffs; ``tests/interface/test_notebooks.py``
checks it). The copies are made on the CPU with the built-in task, so they show the same run a
learner gets; ``tests/interface/test_rendered_notebooks.py`` fails when a copy's code differs from its source.
Widgets (the panels) show as text there: they need a live kernel.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "notebooks"


def render(path: Path, work: Path) -> Path:
    """Execute ``path`` in ``work`` and write the executed copy to ``docs/notebooks/``."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(work)}}).execute()
    for cell in nb.cells:  # a panel needs a live kernel: say so instead of a widget stub
        if cell.cell_type == "code":  # a bar's static text is its first frame ("0/125"): leave bars out
            cell.outputs = [o for o in cell.outputs if not _is_progress_bar(o)]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if data.pop("application/vnd.jupyter.widget-view+json", None) is not None:
                data["text/plain"] = "(an interactive panel: run the notebook to use it)"
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / path.name
    nbformat.write(nb, target)
    return target


def _is_progress_bar(output) -> bool:
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data and re.search(r"\d+/\d+ \[", str(data.get("text/plain")))


def main(names: list[str]) -> None:
    os.environ["MIXDPO_KIT_STATIC_FIGURES"] = "1"  # read by setup_notebook() in the kernel
    os.environ["MIXDPO_KIT_BLOCKING_RUNS"] = "1"  # no one presses Stop here: a launcher's run ends before the next cell
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    paths = [p for p in paths if not names or p.stem in names or p.name in names]
    with tempfile.TemporaryDirectory() as tmp:  # one working folder: 01 and 02 reuse 00's demo run
        for path in paths:
            shutil.copy(path, tmp)
            print("rendered", render(Path(tmp) / path.name, Path(tmp)).relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1:])
