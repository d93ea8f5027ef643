"""The first cell of every notebook: quiet output, and on Colab a working widget manager and a
clear note when an install upgraded a package the running kernel had already loaded."""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys

WATCHED = ("torch", "transformers", "peft", "datasets", "accelerate", "plotly", "ipywidgets", "numpy")


def setup_notebook() -> None:
    """Quiet the libraries (errors still show), switch runs to one progress bar, and on Colab turn
    on the widget manager. Prints a restart note when an install upgraded a loaded package."""
    # Before anything imports bitsandbytes (see progress.silence_bitsandbytes).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from mixdpo_kit import progress

    progress.quiet_libraries()
    import pandas as pd

    pd.set_option("display.max_colwidth", None)  # tables of descriptions and answers show them whole
    progress.set_quiet(True)
    if os.environ.get("MIXDPO_KIT_STATIC_FIGURES"):  # scripts/render_notebooks.py: PNGs the code host can show
        import plotly.io as pio

        pio.renderers.default = "plotly_mimetype+png"
        pio.renderers["png"].width = 900  # the height comes from each figure's layout
    stale = upgraded_while_loaded()
    if "google.colab" in sys.modules:
        from google.colab import output

        output.enable_custom_widget_manager()
    if stale:
        print("Restart the runtime (Runtime > Restart session), then run all cells again: the install "
              f"upgraded {', '.join(stale)}, and this kernel still runs the old version it had loaded.")


def upgraded_while_loaded(names=WATCHED) -> list[str]:
    """Packages whose loaded module is older or newer than what is now installed, as
    ``name old -> new``: a pip install changed them under the running kernel."""
    stale = []
    for name in names:
        module = sys.modules.get(name)
        loaded = getattr(module, "__version__", None)
        if module is None or loaded is None:
            continue
        installed = importlib.metadata.version(name)
        if loaded.split("+")[0] != installed.split("+")[0]:
            stale.append(f"{name} {loaded} -> {installed}")
    return stale
