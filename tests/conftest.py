"""Shared fixtures: tiny local models and small preference datasets (no hub access)."""
from __future__ import annotations

import logging

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional-kernels notice, before anything imports it

import datasets  # noqa: E402
import pytest  # noqa: E402

from mixdpo_kit.core.config import preset
from mixdpo_kit.modeling.tiny import build_tiny_model
from mixdpo_kit.objectives.routing import resolve


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", arch="llama"))


@pytest.fixture
def chat_pairs():
    """Six conversational pairs with ratings, margins 0..5 (two hard at tau=0.5)."""
    rows = []
    for i, (c, r, sc, sr) in enumerate([
        ("1 2 3", "3 2 1", 9.0, 9.0), ("4 5", "5 4", 8.0, 3.0), ("7", "7 7", 6.0, 5.0),
        ("0 1", "1 0 .", 7.5, 7.5), ("2 2", "so 2", 9.0, 5.0), ("9 8", "8", 10.0, 8.0),
    ]):
        prompt = [{"role": "user", "content": f"sort {r}"}]
        rows.append({"prompt": prompt[0]["content"],
                     "chosen": prompt + [{"role": "assistant", "content": c}],
                     "rejected": prompt + [{"role": "assistant", "content": r}],
                     "score_chosen": sc, "score_rejected": sr})
    return datasets.Dataset.from_list(rows)


@pytest.fixture
def small_cfg(tiny_llama, tmp_path):
    """The demo config shrunk to a few steps on the tiny Llama, caches under tmp_path."""
    return resolve(preset("demo").override(
        model={"name_or_path": tiny_llama}, sft_warmup={"enabled": False},
        data={"max_rows": 48}, eval={"max_pairs": 16, "reward_prompts": 8, "n_generations": 2, "max_new_tokens": 6},
        train={"per_device_train_batch_size": 4, "max_steps": 6, "logging_steps": 1, "save_steps": 3,
               "output_dir": str(tmp_path / "run")},
        cache={"dir": str(tmp_path / "cache")},
    ))
