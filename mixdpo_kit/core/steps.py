"""The one step planner: how many optimiser steps a run takes and which positions of each epoch's
order every step trains, counted as ``transformers.Trainer`` under ``accelerate`` runs them.

With N processes each optimiser step takes ``per_device_batch × accumulation × N`` pairs: the epoch's
order is cut into per-device batches, batch ``b`` goes to process ``b mod N``, and accelerate (with
its default ``even_batches``) fills the last round with the epoch's first pairs so that every process
gets as many full batches as the others. One process runs the order as it is (its last batch may
be short). The curriculum timeline, the learning-rate mass, the cost line and the displacement
study's budget read their steps here, and the trainer checks the Trainer's count against it when
training begins (its sampler yields the epoch's order; accelerate shards it as modelled here).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass


def launched_processes() -> int:
    """The processes of this launch (``torchrun`` / ``accelerate launch`` set ``WORLD_SIZE``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class StepPlan:
    """The batch geometry of a run: pairs per device batch, accumulation, processes, epochs, step cap."""

    per_device_batch: int
    accumulation: int = 1
    processes: int = 1
    epochs: float = 1.0
    max_steps: int = -1

    @classmethod
    def of(cls, train_cfg, processes: int | None = None) -> "StepPlan":
        """The plan of a :class:`~mixdpo_kit.core.config.TrainConfig` over ``processes`` (default: this launch's)."""
        return cls(train_cfg.per_device_train_batch_size, train_cfg.gradient_accumulation_steps,
                   processes or launched_processes(), train_cfg.num_train_epochs, train_cfg.max_steps)

    @classmethod
    def of_arguments(cls, args) -> "StepPlan":
        """The plan of ``transformers.TrainingArguments`` (the processes they were made in)."""
        return cls(args.per_device_train_batch_size, args.gradient_accumulation_steps, args.world_size,
                   args.num_train_epochs, args.max_steps)

    @property
    def pairs_per_step(self) -> int:
        """Pairs in one full optimiser step, over every process (the effective batch)."""
        return self.per_device_batch * self.accumulation * self.processes

    def epoch_length(self, n_pairs: int) -> int:
        """Positions one epoch runs: ``n_pairs``, plus the repeated first pairs that even out the processes."""
        if self.processes == 1 or n_pairs == 0:
            return n_pairs
        return math.ceil(n_pairs / (self.per_device_batch * self.processes)) * self.per_device_batch * self.processes

    def steps_per_epoch(self, n_pairs: int) -> int:
        """Optimiser steps of one epoch (Trainer's count: each process's batches over the accumulation, rounded up)."""
        batches_per_process = math.ceil(math.ceil(n_pairs / self.per_device_batch) / self.processes)
        return max(math.ceil(batches_per_process / self.accumulation), 1)

    def total_steps(self, n_pairs: int) -> int:
        """Optimiser steps of the run (``max_steps > 0`` wins over epochs)."""
        return self.max_steps if self.max_steps > 0 else math.ceil(self.epochs * self.steps_per_epoch(n_pairs))

    def step_positions(self, n_pairs: int) -> list[tuple[int, int, int]]:
        """``(epoch, start, stop)`` of every optimiser step: the positions it trains in that epoch's
        order, extended by :meth:`epoch_positions` (a position ``>= n_pairs`` is pair ``position - n_pairs``
        of the order again)."""
        per_epoch, length = self.steps_per_epoch(n_pairs), self.epoch_length(n_pairs)
        size = self.pairs_per_step
        return [(s // per_epoch, (s % per_epoch) * size, min((s % per_epoch + 1) * size, length))
                for s in range(self.total_steps(n_pairs))]

    def epoch_positions(self, n_pairs: int) -> list[int]:
        """The positions of the order one epoch runs, in order: every pair, then the padding."""
        length = self.epoch_length(n_pairs)
        return [i % n_pairs for i in range(length)] if n_pairs else []
