"""Work shared between the processes of ``accelerate launch`` / ``torchrun``, and the one that writes.

Training is a ``transformers.Trainer``, which shards its own batches. Every other stage that runs
a model over many items — reference log-probs, model-based margins, evaluation, generation —
calls :func:`map_shared`: each process computes every N-th item, and the results are gathered
through accelerate, in the items' order, on every process. Files are written by the main process
alone (:func:`on_main`), the others waiting until it has. A launched command ends with
:func:`end_processes`. In a single process all three are plain calls.
"""
from __future__ import annotations

import gc
from typing import Callable, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object


def process_state() -> PartialState:
    """accelerate's view of the processes this one belongs to (one, when not launched)."""
    # cpu=True where there is no GPU: accelerate then joins torchrun's processes over gloo
    # (by default it would see one process on a CPU machine).
    return PartialState(cpu=not torch.cuda.is_available())


def my_share(n_items: int) -> list[int]:
    """The positions this process computes: every N-th, from its rank. Every process gets the same
    count (the last padded with a repeat of an item), so each runs the same number of forward passes,
    which FSDP needs (a sharded model's forward is a collective call)."""
    state = process_state()
    mine = list(range(state.process_index, n_items, state.num_processes))
    per_process = -(-n_items // state.num_processes)
    return mine + [n_items - 1] * (per_process - len(mine)) if n_items else []


def map_shared(compute: Callable[[list], Sequence], items: Sequence) -> list:
    """``compute(items)`` — one result per item — shared between the processes: each computes its
    share (:func:`my_share`) and every process returns all results, in the items' order.
    Call it on every process."""
    state = process_state()
    if state.num_processes == 1:
        return list(compute(list(items)))
    mine = my_share(len(items))
    results = list(compute([items[i] for i in mine])) if mine else []
    out = [None] * len(items)
    for i, result in gather_object(list(zip(mine, results))):
        out[i] = result
    return out


def is_main_process() -> bool:
    """Whether this process writes the run's files."""
    return process_state().is_main_process


def on_main(write: Callable, *args, **kwargs):
    """``write(*args, **kwargs)`` on the main process only; the others wait for it and receive its
    result. Call it on every process."""
    state = process_state()
    result = write(*args, **kwargs) if state.is_main_process else None
    if state.num_processes == 1:
        return result
    state.wait_for_everyone()
    return broadcast_object_list([result])[0]


def end_processes() -> None:
    """Close a launch's process group once every process has reached this point, and stop its
    threads (a plain call in a single process). PyTorch asks for this before a process exits: left
    open, gloo's communication threads are still running while the interpreter shuts down."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        process_state().wait_for_everyone()
        torch.distributed.destroy_process_group()
        # The group's threads stop when its last reference goes; a trainer's reference cycles
        # (model wrapper, callbacks) keep it until the collector runs.
        gc.collect()
