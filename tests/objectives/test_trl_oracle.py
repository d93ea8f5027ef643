"""Our DPO loss on a real model and batch equals TRL's DPOTrainer loss (TRL is a test-only oracle)."""
import copy

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixdpo_kit.data.loading import normalise
from mixdpo_kit.data.tokenization import TokenizationSettings, tokenize_pairs
from mixdpo_kit.modeling.logprobs import sequence_logps
from mixdpo_kit.modeling.pairbatch import shared_rows
from mixdpo_kit.objectives.losses import PairLogps, preference_loss

trl = pytest.importorskip("trl")


def test_dpo_loss_matches_trl(tiny_llama, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # make policy and reference differ so z != 0
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    rows = [{"prompt": [{"role": "user", "content": f"sort {a}"}],
             "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}]}
            for a, c, r in [("3 1 2", "1 2 3", "3 2 1"), ("5 4", "4 5", "so 5 4 ."), ("9 0 7 1", "0 1 7 9", "0 1")]]
    raw = datasets.Dataset.from_list(rows)

    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=3,
                         bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                         max_length=None)
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=raw, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

    ds, _ = normalise(raw)
    ds, _ = tokenize_pairs(ds, tok, TokenizationSettings(max_length=64, max_prompt_length=32))
    n = len(ds)
    p, c, r = (list(ds[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
    batch = shared_rows(p, c, r, tok.pad_token_id)  # the kit's default layout: one row per pair
    with torch.no_grad():
        pol, ntok = sequence_logps(model, batch)
        refl, _ = sequence_logps(ref, batch)
    lp = PairLogps(pol[:n], pol[n:], ntok[:n], ntok[n:], refl[:n], refl[n:])
    ours = preference_loss(lp, "dpo", beta=0.1).mean().item()
    assert abs(ours - trl_loss) < 1e-5, (ours, trl_loss)
    assert abs(ours - 0.6931) > 1e-3  # the models really differ: the test can fail
