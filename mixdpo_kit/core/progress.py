"""How much a run prints. Three modes:

- verbose (the library's default, ``mixdpo-kit --verbose``): transformers' usual progress and logged metrics;
- terminal (the CLI): one transient bar per long stage (warm-up, reference log-probs, training,
  generation, scoring), no logged dicts; the command ends with a short summary of its own;
- notebook (:func:`mixdpo_kit.interface.notebook.setup_notebook`): one bar per training and nothing else,
  because the metrics appear as figures.

:func:`quiet_libraries` turns the libraries' own logs, warnings and bars down for the last two."""
from __future__ import annotations

import contextlib
import logging
import warnings

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

_STATE = {"quiet": False, "stage_bars": False, "label": "training", "leave": True}


def set_quiet(on: bool = True, stage_bars: bool = False) -> None:
    """Quiet mode on or off for every run started afterwards in this process; ``stage_bars``: in
    quiet mode, also show a bar for each long stage besides training (the terminal does)."""
    _STATE["quiet"], _STATE["stage_bars"] = bool(on), bool(on and stage_bars)


def is_quiet() -> bool:
    """Whether runs print bars only, no logged dicts or tables."""
    return _STATE["quiet"]


def stage_bars() -> bool:
    """Whether the stages besides training (warm-up, reference log-probs, ...) show bars."""
    return not _STATE["quiet"] or _STATE["stage_bars"]


def quiet_libraries() -> None:
    """transformers, datasets and bitsandbytes at error level, their bars off, their Future- and
    UserWarnings filtered: what a notebook and the terminal show is the kit's own output."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|peft|bitsandbytes|accelerate)")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


@contextlib.contextmanager
def label(text: str, leave: bool = False):
    """Name the training bars started inside this block (e.g. which run of a comparison is going);
    ``leave``: keep each bar when its training ends (off: only the running one shows)."""
    old = dict(_STATE)
    _STATE.update(label=text, leave=leave)
    try:
        yield
    finally:
        _STATE.update(label=old["label"], leave=old["leave"])


def bar(iterable, desc: str, **tqdm_kwargs):
    """A transient progress bar over ``iterable`` for a stage besides training (hidden in a notebook)."""
    return tqdm(iterable, desc=desc, **{"leave": False, **tqdm_kwargs}, disable=not stage_bars())


class TrainingBar(TrainerCallback):
    """One bar over the optimiser steps, with no logged dicts or tables."""

    def __init__(self, desc: str | None = None):
        self.desc, self.bar = desc or _STATE["label"], None

    def on_train_begin(self, args, state, control, **kw):
        self.bar = tqdm(total=state.max_steps, desc=self.desc, initial=state.global_step, leave=_STATE["leave"])

    def on_step_end(self, args, state, control, **kw):
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kw):
        self.bar.close()


def configure(trainer, show_bar: bool = True) -> None:
    """In quiet mode, replace the trainer's printers with :class:`TrainingBar` (or nothing when
    ``show_bar`` is off, or when one of its callbacks has ``shows_progress``, e.g. a panel's bar)."""
    if not is_quiet():
        return
    from transformers.utils.notebook import NotebookProgressCallback  # needs IPython: imported only here

    for printer in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(printer)
    has_own = any(getattr(cb, "shows_progress", False) for cb in trainer.callback_handler.callbacks)
    if show_bar and not has_own:
        trainer.add_callback(TrainingBar())
