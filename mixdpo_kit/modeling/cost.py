"""What a run will cost before it starts: pairs, optimiser steps and an estimated time.

A real preference set (UltraFeedback: ~61k pairs) takes hours on a small GPU, and the reference
log-probs of every pair are computed before the first step. The launcher asks for a cap
(``data.max_rows`` or ``train.max_steps``) on real data and quotes this estimate when it refuses.

The time is arithmetic, not a measurement: matmul FLOPs per pair (reference forward 2·N·T, policy
forward 2·N·T, backward through frozen 4-bit weights ~2·N·T, checkpoint recompute 2·N·T — so
about 8·N·T for N parameters and T = prompt + chosen + rejected tokens) over an assumed
*effective* throughput. The default, 8 TFLOP/s, is about an eighth of a T4's fp16 peak, a usual
utilisation for small-batch QLoRA with on-the-fly 4-bit dequantisation; pass your own.
"""
from __future__ import annotations

import math

from mixdpo_kit.core.config import RunConfig

T4_EFFECTIVE_FLOPS = 8e12


class RunTooLarge(ValueError):
    """A real-data run with no cap on pairs or steps."""


def count_pairs(source, split: str | None = None) -> int | None:
    """Rows in a data source before validation; for a hub dataset from its metadata only (no
    download). ``None`` when the hub does not say."""
    import datasets

    from mixdpo_kit.data.loading import read_source

    if isinstance(source, datasets.Dataset) or source == "builtin" or not _looks_like_hub_id(source):
        return len(read_source(source, split))
    try:
        info = datasets.load_dataset_builder(source).info
        return int(info.splits[split or "train"].num_examples)
    except Exception:  # offline, gated or no split metadata: the caller says "unknown"
        return None


def _looks_like_hub_id(source: str) -> bool:
    from pathlib import Path

    return not Path(source).exists() and "/" in source and not Path(source).suffix


def model_parameters(name_or_path: str) -> int:
    """Parameter count from the model's ``config.json`` only (layers' linear weights + embeddings)."""
    from transformers import AutoConfig

    from mixdpo_kit.modeling.shape import ModelShape
    from mixdpo_kit.modeling.model import resolve_model_path

    shape = ModelShape.from_config(AutoConfig.from_pretrained(resolve_model_path(name_or_path)))
    return shape.layers * shape.linear_params_per_layer() + shape.embedding_params()


def estimate_run(cfg: RunConfig, n_pairs: int, n_params: int, flops_per_second: float = T4_EFFECTIVE_FLOPS) -> dict:
    """Pairs trained, optimiser steps and estimated hours for ``n_pairs`` available pairs under
    ``cfg`` (its row cap, step cap, epochs and batch), at ``flops_per_second`` effective."""
    t = cfg.train
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    pairs = min(n_pairs, cfg.data.max_rows or n_pairs)
    steps = math.ceil(pairs / per_step) * t.num_train_epochs
    if t.max_steps and t.max_steps > 0:
        steps = min(steps, t.max_steps)
    trained = min(steps * per_step, pairs * t.num_train_epochs)
    tokens = cfg.data.max_length * 2  # prompt + chosen and prompt + rejected, at the length cap
    seconds = 8 * n_params * tokens * trained / flops_per_second + 2 * n_params * tokens * pairs / flops_per_second
    return {"pairs": pairs, "pairs_trained": trained, "optimizer_steps": steps, "hours": seconds / 3600,
            "assumed_flops_per_second": flops_per_second}


def cost_line(cfg: RunConfig, on_gpu: bool) -> str:
    """What the configured run trains and, on a GPU, about how long it takes on a T4. On a CPU the
    FLOP estimate says nothing about the machine at hand, so the line says so instead of a number."""
    from mixdpo_kit.core.units import duration

    n_pairs = count_pairs(cfg.data.source, cfg.data.split) or 0
    est = estimate_run(cfg, n_pairs, model_parameters(cfg.model.name_or_path))
    head = f"{est['pairs_trained']:,} of {n_pairs:,} pairs in {est['optimizer_steps']} optimiser steps"
    t4 = duration(3600 * est["hours"])
    if on_gpu:
        return f"{head}; on a T4 about {t4} (an estimate from FLOPs, see mixdpo_kit/modeling/cost.py)"
    return (f"{head}. The FLOP estimate is for a T4 GPU ({t4}) and says little about this CPU: the launcher "
            "reports the measured time when the run ends.")


def check_run_size(cfg: RunConfig, n_params: int | None = None) -> None:
    """Refuse a real-data run with neither ``data.max_rows`` nor ``train.max_steps``; the message
    says what the full run would cost. The built-in task and the shipped samples are always allowed."""
    from mixdpo_kit.data.loading import SAMPLES

    capped = bool(cfg.data.max_rows) or (cfg.train.max_steps or 0) > 0
    if cfg.data.source == "builtin" or cfg.data.source in SAMPLES or capped:
        return
    n_pairs = count_pairs(cfg.data.source, cfg.data.split)
    if n_pairs is None:
        cost = "an unknown number of pairs (the hub gave no row count)"
    else:
        est = estimate_run(cfg, n_pairs, n_params or model_parameters(cfg.model.name_or_path))
        cost = (f"{n_pairs:,} pairs in {est['optimizer_steps']:,} optimiser steps, about {est['hours']:.1f} h on a "
                f"T4 (at an assumed {est['assumed_flops_per_second'] / 1e12:.0f} TFLOP/s effective), with the "
                "reference log-probs of every pair computed before the first step")
    raise RunTooLarge(f"{cfg.data.source}: no cap on this run. The full run would train {cost}. "
                      "Set data.max_rows (e.g. 1000) or train.max_steps to try it first.")
