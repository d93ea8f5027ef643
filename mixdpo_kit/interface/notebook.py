"""The first cell of every notebook: quiet output, and on Colab a working widget manager and a
clear note when an install upgraded a package the running kernel had already loaded. Also what
notebook 03 trains on a GPU, overridable from the environment (a machine without the hub)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from dataclasses import dataclass

from mixdpo_kit.core.errors import UserError

WATCHED = ("torch", "transformers", "peft", "datasets", "accelerate", "plotly", "ipywidgets", "numpy")


def setup_notebook() -> None:
    """Quiet the libraries (errors still show), switch runs to one progress bar, and on Colab turn
    on the widget manager. Prints a restart note when an install upgraded a loaded package."""
    from mixdpo_kit.core import progress

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


@dataclass(frozen=True)
class GpuRunSettings:
    """What notebook 03 trains and evaluates on a GPU. Each field can be replaced by an environment
    variable, named in ``GPU_RUN_VARIABLES``, e.g. a local model folder on a machine with no hub."""

    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    data: str | None = None  # preference data for training and held-out evaluation; None: the preset's (the hub's)
    max_rows: int = 1000  # the capped first run
    prompts: str = "alpaca_eval"  # a prompt-set name or file (e.g. AlpacaEval's model_outputs.json)
    max_prompts: int = 100
    reward_model: str = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"  # any one-output sequence classifier; fits a T4
    max_new_tokens: int = 512

    def data_overrides(self) -> dict:
        """The ``data:`` section for ``RunConfig.override``: the cap, and the source when one is set
        (held-out evaluation then reads the same source)."""
        return {"max_rows": self.max_rows, **({"source": self.data, "eval_source": self.data} if self.data else {})}


GPU_RUN_VARIABLES = {f.name: f"MIXDPO_KIT_{f.name.upper()}" for f in dataclasses.fields(GpuRunSettings)}
GPU_BRANCH_VARIABLE = "MIXDPO_KIT_GPU_BRANCH"


def gpu_run_settings(environ=None) -> GpuRunSettings:
    """Notebook 03's GPU settings: the defaults, each replaced by its ``MIXDPO_KIT_*`` variable
    (``MIXDPO_KIT_MODEL``, ``MIXDPO_KIT_DATA``, ``MIXDPO_KIT_MAX_ROWS``, ...) when it is set."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in dataclasses.fields(GpuRunSettings):
        raw = environ.get(GPU_RUN_VARIABLES[field.name])
        if raw:
            try:
                values[field.name] = int(raw) if isinstance(field.default, int) else raw
            except ValueError:
                raise UserError(f"{GPU_RUN_VARIABLES[field.name]}={raw!r}: expected a whole number") from None
    return GpuRunSettings(**values)


def gpu_branch(environ=None) -> bool:
    """Whether notebook 03 takes its GPU branch: on a CUDA GPU, or where ``MIXDPO_KIT_GPU_BRANCH=1``
    asks for it (the branch's code checked on a CPU, with a small local model)."""
    import torch

    environ = os.environ if environ is None else environ
    return torch.cuda.is_available() or environ.get(GPU_BRANCH_VARIABLE) == "1"
