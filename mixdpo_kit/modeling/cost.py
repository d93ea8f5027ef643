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
from dataclasses import dataclass

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.steps import StepPlan

T4_EFFECTIVE_FLOPS = 8e12


class RunTooLarge(UserError):
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
    plan = StepPlan.of(cfg.train)
    pairs = min(n_pairs, cfg.data.max_rows or n_pairs)
    steps = plan.total_steps(pairs)
    trained = min(steps * plan.pairs_per_step, math.ceil(pairs * plan.epochs))
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
    from mixdpo_kit.data.shipped import SAMPLES

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


# Each stage of a run at scale, on several GPUs, with and without the stages' shared work.
A100_EFFECTIVE_FLOPS = 125e12  # an assumption: 40 % of an A100's bf16 dense peak, a usual full fine-tune figure


@dataclass(frozen=True)
class RunScale:
    """What sets a run's FLOPs. Defaults: the paper's (61,135 UltraFeedback pairs of which 53,748 go to
    DPO, Llama-3-8B fully fine-tuned, max_length 1024, an 8B reward model for reward-model margins,
    and the kit's default 500 held-out pairs)."""

    pairs: int = 61_135
    preference_pairs: int = 53_748
    params: float = 8.0e9
    max_length: int = 1024
    reward_params: float = 8.0e9
    eval_pairs: int = 500
    full_finetune: bool = True
    gradient_checkpointing: bool = True

    def training_flops(self) -> float:
        """One epoch: a preference pair runs both responses, an SFT pair its chosen response only.
        Per token: forward 2N, backward 4N (2N when the base weights are frozen), recompute 2N."""
        per_token = 2 + (4 if self.full_finetune else 2) + (2 if self.gradient_checkpointing else 0)
        sft_pairs = self.pairs - self.preference_pairs
        return per_token * self.params * self.max_length * (2 * self.preference_pairs + sft_pairs)

    def stage_flops(self) -> dict[str, float]:
        """FLOPs of each stage besides training: the reference pass over the preference pairs (the
        likelihood-gap margin reads the same cache), reward-model margins over every pair, and held-out
        evaluation (policy and reference over both responses)."""
        forward = lambda n, pairs: 2 * n * self.max_length * 2 * pairs  # noqa: E731  both responses
        return {"reference log-probs": forward(self.params, self.preference_pairs),
                "reward-model margins": forward(self.reward_params, self.pairs),
                "held-out evaluation": 2 * forward(self.params, self.eval_pairs)}


def stage_hours(scale: RunScale, gpus: int, shared: bool, flops_per_second: float = A100_EFFECTIVE_FLOPS
                ) -> dict[str, float]:
    """Wall-clock hours of each stage on ``gpus`` GPUs. Training is always split by the Trainer; the
    other stages are split when ``shared`` (this kit) and run whole on every GPU otherwise."""
    hours = {"training (one epoch)": scale.training_flops() / (gpus * flops_per_second) / 3600}
    for name, flops in scale.stage_flops().items():
        hours[name] = flops / ((gpus if shared else 1) * flops_per_second) / 3600
    return hours


def scale_table(scale: RunScale = RunScale(), gpus: int = 8, flops_per_second: float = A100_EFFECTIVE_FLOPS) -> str:
    """A markdown table of each stage's hours on one GPU and on ``gpus``, whole on every GPU (before)
    and shared (after), with the totals of a run that uses the reference pass and evaluation, and of
    one that also scores margins with a reward model."""
    one = stage_hours(scale, 1, True, flops_per_second)
    before, after = (stage_hours(scale, gpus, s, flops_per_second) for s in (False, True))
    rows = [f"| stage | 1 GPU | {gpus} GPUs, whole on every GPU (before) | {gpus} GPUs, shared (after) |",
            "|---|---|---|---|"]
    rows += [f"| {name} | {one[name]:.2f} h | {before[name]:.2f} h | {after[name]:.2f} h |" for name in one]
    for label, names in (("run (training + reference + evaluation)", [n for n in one if "reward" not in n]),
                         ("run with reward-model margins", list(one))):
        t = [sum(h[n] for n in names) for h in (one, before, after)]
        rows.append(f"| **{label}** | {t[0]:.2f} h | {t[1]:.2f} h ({t[1] / t[2]:.1f}× after) | {t[2]:.2f} h |")
    return "\n".join(rows)
