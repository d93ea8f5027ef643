"""One rank of the step-plan check: trains with a batch geometry that leaves a short last round
(padding under several processes), accumulation and a warm-up + cosine schedule, recording every
micro-batch's pairs and learning rate; run by tests/training/test_distributed.py via torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/steps_worker.py MODEL_DIR OUT_DIR
"""
import json
import os
import sys
from pathlib import Path

import torch

from mixdpo_kit.core.config import preset
from mixdpo_kit.core.distributed import end_processes
from mixdpo_kit.core.steps import StepPlan
from mixdpo_kit.margins.curriculum import lr_mass_by_route, optimizer_steps
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.training.pipeline import analyze_data, build_trainer
from mixdpo_kit.training.trainer import route_sft_share


def main(model_dir: str, out_dir: str) -> None:
    rank = int(os.environ.get("RANK", 0))
    out = Path(out_dir)
    cfg = preset("demo").override(
        model={"name_or_path": model_dir, "mode": "lora"}, sft_warmup={"enabled": False},
        data={"max_rows": 45}, split={"quantile": 0.4},
        train={"per_device_train_batch_size": 3, "gradient_accumulation_steps": 2, "num_train_epochs": 1.5,
               "max_steps": -1, "learning_rate": 1e-3, "warmup_ratio": 0.2, "lr_scheduler_type": "cosine",
               "logging_steps": 1, "seed": 0},
        cache={"dir": str(out / "cache")})
    torch.manual_seed(0)
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    trainer, prep = build_trainer(cfg, policy, prep, out / f"rank{rank}", save_strategy="no", disable_tqdm=True)
    micro = []
    original = trainer.compute_loss

    def recording(model, inputs, *a, **kw):
        if model.training:
            micro.append({"step": trainer.state.global_step, "rows": inputs["row_index"].tolist(),
                          "lr": trainer.optimizer.param_groups[0]["lr"]})
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = recording
    trainer.train()
    share = route_sft_share(trainer.train_dataset)
    row_ids = list(trainer.train_dataset["row_index"])
    planned = optimizer_steps(prep.plan, StepPlan.of(cfg.train, trainer.args.world_size))
    routes = [{k: v for k, v in h.items() if k.startswith(("loss/", "logps/", "rewards/"))}
              for h in trainer.state.log_history if "loss" in h]
    (out / f"rank{rank}.json").write_text(json.dumps({
        "micro": micro, "steps_trained": trainer.state.global_step, "world_size": trainer.args.world_size,
        "planned_rows": [[row_ids[i] for i in step] for step in planned],
        "planned_steps": StepPlan.of(cfg.train, trainer.args.world_size).total_steps(len(row_ids)),
        "one_process_steps": StepPlan.of(cfg.train, 1).total_steps(len(row_ids)),
        "sft_share": dict(zip(map(int, row_ids), share.tolist())),
        "lr_mass": lr_mass_by_route(prep.plan, share, cfg.train, steps_done=trainer.state.global_step,
                                    processes=trainer.args.world_size),
        "routes": routes}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    end_processes()
