"""One measured training step for the memory-estimator test, in its own process:

    python tests/memory_worker.py HIDDEN LAYERS VOCAB SEQ_LEN BATCH_PAIRS

A randomly initialised Llama of that shape with LoRA (r 16, all linear layers), fp32 on the CPU,
one forward + backward + AdamW step over chosen and rejected sequences through the kit's
log-prob path. Prints JSON: the peak of tensor memory allocated while the model existed (the
CPU's counterpart of ``torch.cuda.max_memory_allocated``), from torch's profiler. Unlike the
process's peak RSS it does not depend on the C library's allocator or on the machine.
"""
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from mixdpo_kit.modeling.logprobs import token_logps
from mixdpo_kit.modeling.pairbatch import separate_rows


def step(hidden: int, layers: int, vocab: int, seq_len: int, pairs: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=seq_len,
                         tie_word_embeddings=False)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (2 * pairs, seq_len)).tolist()
    # About a third prompt, the rest response; one row per sequence, as the estimate assumes.
    batch = separate_rows([row[: seq_len // 3] for row in ids], [row[seq_len // 3:] for row in ids], 0)
    logps, mask = token_logps(model, batch)
    (-(logps.sum(-1) / mask.sum(-1)).mean()).backward()
    opt.step()


def allocations(node):
    """Every allocation event under a profiler event-tree node, the node included."""
    if type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
        yield node.extra_fields
    for child in node.children:
        yield from allocations(child)


def main(*shape: int) -> None:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(*shape)
    # total_allocated: the bytes of CPU tensors alive at each allocation since profiling began.
    events = [a for root in prof.profiler.kineto_results.experimental_event_tree() for a in allocations(root)]
    print(json.dumps({"peak_mib": max(a.total_allocated for a in events) / 2**20, "allocations": len(events)}))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:6]))
