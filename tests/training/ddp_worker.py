"""One rank of the two-process (gloo, CPU) DDP check; run by tests/training/test_distributed.py via torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py MODEL_DIR OUT_DIR PER_DEVICE_BATCH
"""
import json
import os
import sys
from pathlib import Path

import torch

from mixdpo_kit.core.config import preset
from mixdpo_kit.core.distributed import end_processes
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.modeling.refcache import ReferenceCache
from mixdpo_kit.training.pipeline import analyze_data, build_trainer


def main(model_dir: str, out_dir: str, per_device_batch: int) -> None:
    rank = int(os.environ.get("RANK", 0))
    out = Path(out_dir)
    cfg = preset("demo").override(
        model={"name_or_path": model_dir, "mode": "lora"}, sft_warmup={"enabled": False},
        data={"max_rows": 48}, split={"quantile": 0.25},
        loss={"beta": 0.5},
        train={"per_device_train_batch_size": per_device_batch, "max_steps": 4, "learning_rate": 1e-2,
               "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "logging_steps": 1, "seed": 0},
        cache={"dir": str(out / "cache")})
    torch.manual_seed(0)
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    # SGD, not Adam: an SGD step is proportional to the gradient, so one and two processes agree up
    # to float reduction order; Adam's early steps are ±lr and flip on near-zero gradients.
    cache, writes = ReferenceCache(cfg.cache.dir), []
    put = cache.store.put
    cache.store.put = lambda key, doc: (writes.append(key), put(key, doc))
    trainer, _ = build_trainer(cfg, policy, prep, out / f"rank{rank}", cache=cache, save_strategy="no",
                               disable_tqdm=True, optim="sgd")
    seen = []
    original = trainer.compute_loss

    def recording(model, inputs, *a, **kw):
        seen.append(inputs["row_index"].tolist())
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = recording
    init = {n: p.detach().tolist() for n, p in policy.model.named_parameters() if p.requires_grad}
    trainer.train()
    params = {n: p.detach().tolist() for n, p in policy.model.named_parameters() if p.requires_grad}
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rows": seen, "plan_rows": [int(r) for r in prep.dataset.select(prep.plan.indices(0))["row_id"]],
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "params": params, "init": init,
        "world_size": trainer.args.world_size, "reference_computed": cache.computed, "cache_writes": len(writes),
        "ref_chosen": list(trainer.train_dataset["ref_chosen_logps"]),
        "ref_rejected": list(trainer.train_dataset["ref_rejected_logps"])}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    end_processes()
