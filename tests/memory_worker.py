"""One measured training step for the memory-estimator test, in its own process:

    python tests/memory_worker.py HIDDEN LAYERS VOCAB SEQ_LEN BATCH_PAIRS

A randomly initialised Llama of that shape with LoRA (r 16, all linear layers), fp32 on the CPU,
one forward + backward + AdamW step over chosen and rejected sequences through the kit's
log-prob path. Prints JSON: the peak RSS of the process and its RSS before the model existed.
"""
import json
import resource
import sys

import torch

from mixdpo_kit.logprobs import token_logps


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def main(hidden: int, layers: int, vocab: int, seq_len: int, pairs: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    baseline = rss_mib()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=seq_len,
                         tie_word_embeddings=False)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (2 * pairs, seq_len))
    attention = torch.ones_like(ids)
    response = torch.zeros_like(ids)
    response[:, seq_len // 3:] = 1  # about a third prompt, the rest response
    logps, mask = token_logps(model, ids, attention, response)
    (-(logps.sum(-1) / mask.sum(-1)).mean()).backward()
    opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"baseline_mib": baseline, "peak_mib": peak}))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:6]))
