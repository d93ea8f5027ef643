"""Executed copies of the notebooks under ``docs/notebooks/``, with every plotly figure also stored
as a PNG, so a reader on the code host sees the figures without running anything.

    python scripts/render_notebooks.py [NAME ...]

The notebooks in ``notebooks/`` stay without outputs (clean diffs; ``tests/interface/test_notebooks.py``
checks it). The copies are made on the CPU with the built-in task, so they show the same run a
learner gets; ``tests/interface/test_rendered_notebooks.py`` fails when a copy's code differs from its source.
Each panel shows as a line of text and its figure after Run All, as a PNG: the panel itself needs a live kernel.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "notebooks"


# Run in the kernel after the last cell: every panel's figure as it stands after Run All, as a PNG,
# keyed by the model id of the widget the panel displayed (panels shown without a name included).
PANEL_FIGURES = """
import base64 as _b64, gc as _gc, json as _json
from mixdpo_kit.interface.panel import Panel as _Panel
_pngs = {_p.widget.model_id: _b64.b64encode(_p.figure.to_image(format="png", width=900)).decode()
         for _p in _gc.get_objects() if issubclass(type(_p), _Panel) and getattr(_p, "figure", None) is not None}
print(_json.dumps(_pngs))
"""
PANEL_TEXT = "(an interactive panel: its figure after Run All is below; run the notebook to use it)"
NO_FIGURE_TEXT = "(an interactive panel with no figure: run the notebook to use it)"


def render(path: Path, work: Path) -> Path:
    """Execute ``path`` in ``work`` and write the executed copy to ``docs/notebooks/``: each panel
    is replaced by a line of text and its figure as a PNG, as it stood after Run All."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(work)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        probe = nbformat.v4.new_code_cell(PANEL_FIGURES)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
        nb.cells.pop()
    pngs = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream"))
    for cell in nb.cells:  # a bar's static text is its first frame ("0/125"): leave bars out
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not _is_progress_bar(o)]
        noise = [o.text for o in cell.outputs if o.output_type == "stream" and "Traceback" in o.text]
        if noise:  # e.g. the PNG exporter's browser talking on stderr: never store that as a result
            raise RuntimeError(f"{path.name}: a cell printed a traceback:\n{noise[0][:2000]}")
        for out in cell.outputs:
            view = out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
            if view is not None:
                png = pngs.get(view["model_id"])
                out["data"]["text/plain"] = PANEL_TEXT if png else NO_FIGURE_TEXT
                if png:
                    out["data"]["image/png"] = png
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
            start = time.time()
            target = render(Path(tmp) / path.name, Path(tmp))
            print(f"rendered {target.relative_to(ROOT)}: Run All took {time.time() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
