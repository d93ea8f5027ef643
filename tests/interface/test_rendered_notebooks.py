"""The executed copies under docs/notebooks/ match their sources and carry a PNG for every figure."""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_rendered_copy_is_current_and_shows_its_figures(source):
    copy = ROOT / "docs" / "notebooks" / source.name
    assert copy.exists(), f"{copy} missing: run python scripts/render_notebooks.py {source.stem}"
    code = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]  # noqa: E731
    src, rendered = nbformat.read(source, as_version=4), nbformat.read(copy, as_version=4)
    assert code(rendered) == code(src), f"{copy} is stale: run python scripts/render_notebooks.py {source.stem}"
    outputs = [o for c in rendered.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert all("image/png" in o["data"] for o in figures)
    if source.stem in ("00_quickstart", "01_margins", "04_compare_objectives", "05_likelihood_displacement"):
        assert figures, source.name
    # Every panel with a figure (all but a bare form) is stored with that figure as a PNG, as after Run All.
    panels = [o for o in outputs if str(o.get("data", {}).get("text/plain", "")).startswith("(an interactive panel")]
    assert all("image/png" in o["data"] for o in panels if "with no figure" not in o["data"]["text/plain"]), source.name
    if source.stem not in ("00_quickstart", "04_compare_objectives"):  # the notebooks with panels
        assert panels and any("image/png" in o["data"] for o in panels), source.name
    # Nothing printed a traceback (e.g. the PNG exporter's browser on stderr).
    assert not [o for o in outputs if o.output_type == "stream" and "Traceback" in o.text], source.name
