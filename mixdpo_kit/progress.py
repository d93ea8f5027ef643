"""How much a run prints. The CLI shows transformers' usual progress and logged metrics; in a
notebook (after :func:`mixdpo_kit.notebook.setup_notebook`) a run shows one progress bar per
training and nothing else, because the metrics appear as figures instead of logged tables."""
from __future__ import annotations

import contextlib

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

_STATE = {"quiet": False, "label": "training", "leave": True}


def set_quiet(on: bool = True) -> None:
    """Quiet mode on or off for every run started afterwards in this process."""
    _STATE["quiet"] = bool(on)


def is_quiet() -> bool:
    """Whether runs print only one bar per training."""
    return _STATE["quiet"]


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
    """A transient progress bar over ``iterable``, hidden in quiet mode."""
    return tqdm(iterable, desc=desc, **{"leave": False, **tqdm_kwargs}, disable=is_quiet())


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
