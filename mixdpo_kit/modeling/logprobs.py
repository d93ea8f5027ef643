"""Scoring responses: response-token log-probs of a :class:`~mixdpo_kit.modeling.pairbatch.ResponseBatch`,
summed per response, chosen split from rejected. One path for the trainer, its reference fallback,
the reference cache, the evaluation and the likelihood-gap margins; and the same batches' final
hidden states, summed per response, for the CHES margins."""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np
import torch

from mixdpo_kit.core.distributed import map_shared
from mixdpo_kit.core.progress import bar
from mixdpo_kit.modeling.pairbatch import ResponseBatch, pair_rows, prompt_sharing, unwrap_model
from mixdpo_kit.objectives.losses import PairLogps


# How many logits one chunk may hold. The LM head and its log-softmax run a chunk of response
# tokens at a time, in fp32, and the chunk buffer is reused in place, so about one fp32 buffer
# (plus a 16-bit copy under bf16/fp16) is alive at a time.
# - CPU: 2**26 (256 MiB): memory is rarely the limit there, and fewer, larger matmuls are faster.
# - GPU, 16-bit compute: 2**24 (64 MiB; 110 tokens at Qwen2.5's 151,936-token vocabulary), still
#   a large matmul for the card, and small beside a QLoRA model's 4-bit weights (about 1 GiB at 1.5B).
# - GPU, fp32 compute: 2**25; activations are twice as large there anyway.
# - Never more than 1/256 of the card's memory (a T4's 15 GiB gives about 60 MiB).
CPU_CHUNK_ELEMENTS = 2 ** 26
GPU_CHUNK_ELEMENTS = {torch.bfloat16: 2 ** 24, torch.float16: 2 ** 24, torch.float32: 2 ** 25}


def logits_chunk_elements(device: torch.device | str, dtype: torch.dtype, total_memory: int | None = None) -> int:
    """How many logits one chunk of :func:`token_logps` holds on ``device`` computing in ``dtype``.

    ``total_memory``: the card's memory in bytes (read from the device when not given). The
    chunk size changes memory and speed, never the numbers (``tests/modeling/test_logprobs.py``).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK_ELEMENTS
    if total_memory is None and torch.cuda.is_available():
        total_memory = torch.cuda.get_device_properties(device).total_memory
    budget = GPU_CHUNK_ELEMENTS.get(dtype, GPU_CHUNK_ELEMENTS[torch.float32])
    return int(min(budget, total_memory // 256 // 4)) if total_memory else budget


def token_logps(model, batch: ResponseBatch, chunk_elements: int | None = None):
    """Log-probs of each response's tokens and their mask, both ``[responses, longest response]``.

    The model runs its own forward with its output layer set aside, so it returns the final
    hidden states; the LM head and the log-softmax then run over the hidden states that predict a
    response token only (prompt and padding never reach the LM head), a chunk of tokens at a time
    (:class:`ChunkedTokenLogps`: a frozen head's gradient is formed in the same pass, a trained
    head's logits are recomputed chunk by chunk in the backward pass).
    Full-vocabulary logits never exist for the whole batch; a chunk holds ``chunk_elements``
    logits (default: :func:`logits_chunk_elements` for the hidden states' device and dtype).
    Models whose logits are not a plain linear map of the last hidden state (soft-capping,
    scaling, an adapted or quantised head) take :func:`plain_token_logps`, which gives the same numbers.
    """
    head_name, head = _plain_output_layer(model)
    if head is None:
        return plain_token_logps(model, batch)
    hidden = final_hidden_states(model, batch)
    if chunk_elements is None:
        chunk_elements = logits_chunk_elements(hidden.device, _compute_dtype(hidden))
    chunk = max(1, chunk_elements // head.out_features)
    scored = ChunkedTokenLogps.apply(hidden[batch.token_row, batch.source_col],
                                     batch.input_ids[batch.token_row, batch.token_col], head.weight, head.bias, chunk,
                                     torch.is_grad_enabled())
    return batch.per_response(scored)


def plain_token_logps(model, batch: ResponseBatch):
    """:func:`token_logps` the plain way: full logits for every position, then an fp32 log-softmax
    (the reference the chunked path is tested against, and the fallback for unusual heads)."""
    logits = model(**batch.model_inputs(model)).logits[batch.token_row, batch.source_col]
    labels = batch.input_ids[batch.token_row, batch.token_col]
    # log_softmax in fp32: bf16/fp16 logits lose the small differences DPO depends on.
    scored = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return batch.per_response(scored)


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model) -> threading.RLock:
    """The one lock of a model (whatever peft/DDP wrapper it is in): held while its output layer is
    set aside (:func:`head_set_aside`), for each training step (``RoutedPairTrainer.training_step``) and
    each generation batch, so a panel's background training and a foreground call on the same model
    take turns instead of seeing each other's half-changed model. Re-entrant: a training step sets
    the head aside inside its own hold."""
    owner = unwrap_model(model)
    with _LOCKS_GUARD:
        if owner not in _MODEL_LOCKS:
            _MODEL_LOCKS[owner] = threading.RLock()
        return _MODEL_LOCKS[owner]


@contextlib.contextmanager
def head_set_aside(model):
    """Within the block the model's plain linear output layer is ``nn.Identity``, so its forward
    returns the final hidden states as ``logits`` and no vocabulary-sized logits are made; yields
    the layer (None where the head is not plain: the model is then left as it is). The model's lock
    is held throughout, so no other thread's forward, generation or training step sees the swap."""
    head_name, head = _plain_output_layer(model)
    if head is None:
        yield None
        return
    owner = unwrap_model(model)
    with model_lock(model):
        setattr(owner, head_name, torch.nn.Identity())
        try:
            yield head
        finally:
            setattr(owner, head_name, head)


def final_hidden_states(model, batch: ResponseBatch) -> torch.Tensor:
    """The last layer's hidden states ``[B, W, hidden]``, the input of the LM head.

    Where the head is a plain linear layer, it is set aside for the forward (:func:`head_set_aside`),
    so no logits are made. Otherwise the model returns its hidden states alongside the logits.
    """
    with head_set_aside(model) as head:
        if head is not None:
            return model(**batch.model_inputs(model)).logits
    return model(**batch.model_inputs(model), output_hidden_states=True).hidden_states[-1]


def _plain_output_layer(model) -> tuple[str | None, torch.nn.Linear | None]:
    """(attribute name, layer) of an output layer that is exactly ``nn.Linear`` applied to the last
    hidden state, else (None, None)."""
    owner = unwrap_model(model)
    head = owner.get_output_embeddings() if hasattr(owner, "get_output_embeddings") else None
    config = getattr(owner, "config", None)
    scaled = any(getattr(config, key, None) for key in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    if type(head) is not torch.nn.Linear or scaled:  # exact type: quantised and LoRA-adapted heads are subclasses
        return None, None
    name = next((n for n, m in owner.named_children() if m is head), None)
    return (name, head) if name else (None, None)


class ChunkedTokenLogps(torch.autograd.Function):
    """``log_softmax(h @ W.T + b)[label]`` for T rows of hidden states, ``chunk`` rows at a time.

    Memory holds one chunk of logits at a time. Each output depends on its own row of ``h`` only,
    so d out_t / d h_t = (onehot(y_t) - softmax_t) @ W is a single row, whatever the loss above.
    - Frozen head (LoRA, QLoRA) under grad mode: forward computes that row for every token while the
      chunk's softmax is at hand, and backward only scales it by the incoming gradient. Two head
      matmuls per chunk, as a bare forward and backward has, instead of three.
    - Trained head (full fine-tuning): the head's own gradient needs the incoming gradient inside
      the vocabulary-sized product, so backward recomputes each chunk's logits.
    - No gradient wanted (no_grad, inputs that need none): forward computes the log-probs alone.
    """

    @staticmethod
    def forward(ctx, hidden, labels, weight, bias, chunk: int, grad_enabled: bool):
        # ``grad_enabled``: the caller's grad mode (forward always runs without one, and
        # needs_input_grad does not see torch.no_grad()).
        need_h, _, need_w, need_b, _, _ = ctx.needs_input_grad
        ctx.in_forward = grad_enabled and need_h and not (need_w or need_b)
        out = torch.empty(len(labels), dtype=torch.float32, device=hidden.device)
        row_grads = torch.empty_like(hidden) if ctx.in_forward else None
        for start in range(0, len(labels), chunk):
            y = labels[start: start + chunk]
            logits = _chunk_logits(hidden[start: start + chunk], weight, bias)
            picked = logits.gather(-1, y[:, None]).squeeze(-1)
            if ctx.in_forward:
                top = logits.amax(-1)
                total = _softmax_(logits, top)
                out[start: start + chunk] = picked - top - total.log()
                row_grads[start: start + chunk] = _onehot_minus_(logits, y).to(weight.dtype) @ weight
            else:
                out[start: start + chunk] = picked - _logsumexp_(logits)
            del logits, picked  # freed before the next chunk's buffer exists: one chunk alive, not two
        if ctx.in_forward:
            ctx.save_for_backward(row_grads)
        else:
            ctx.save_for_backward(hidden, labels, weight, bias)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.in_forward:
            (row_grads,) = ctx.saved_tensors
            return row_grads * grad_out[:, None].to(row_grads.dtype), None, None, None, None, None
        hidden, labels, weight, bias = ctx.saved_tensors
        need_h, _, need_w, need_b, _, _ = ctx.needs_input_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, len(labels), ctx.chunk):
            h, y, g = (t[start: start + ctx.chunk] for t in (hidden, labels, grad_out))
            # d log p_y / d logits = onehot(y) - softmax, built in the logits' own buffer.
            logits = _chunk_logits(h, weight, bias)
            _softmax_(logits, logits.amax(-1))
            grad_logits = _onehot_minus_(logits, y).mul_(g[:, None])
            if need_h:
                grad_h[start: start + ctx.chunk] = grad_logits.to(weight.dtype) @ weight
            if need_w:
                grad_w.addmm_(grad_logits.T, h.float())
            if need_b:
                grad_b += grad_logits.sum(0)
            del logits, grad_logits  # as in forward: one chunk of logits alive at a time
        return (grad_h, None, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None)


def _logsumexp_(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise logsumexp that overwrites ``logits`` (no second chunk-sized buffer)."""
    top = logits.amax(-1, keepdim=True)
    return logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))


def _softmax_(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax written into ``logits`` itself (``top``: each row's maximum); returns each
    row's sum of ``exp(logit - top)``, so that logsumexp = top + log(sum)."""
    total = logits.sub_(top[:, None]).exp_().sum(-1)
    logits.div_(total[:, None])
    return total


def _onehot_minus_(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``onehot(labels) - probs`` (d log p_label / d logits) written into ``probs`` itself."""
    probs.neg_()[torch.arange(len(labels), device=labels.device), labels] += 1
    return probs


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's on a GPU under it, else the hidden states'."""
    if hidden.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return hidden.dtype


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    # fp32 after the matmul: bf16/fp16 logits lose the small differences DPO depends on.
    return torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).float()


def sequence_logps(model, batch: ResponseBatch):
    """Sum of each response's token log-probs and its token count."""
    logps, mask = token_logps(model, batch)
    return logps.sum(-1), mask.sum(-1)


@contextlib.contextmanager
def eval_mode(model):
    """No gradients and eval mode inside; the model's training flag is restored on exit. The model's
    lock (:func:`model_lock`) is held throughout: a training step elsewhere waits, and is not
    switched to eval mode under its feet."""
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield model
        finally:
            model.train(was_training)


def score_pair_batch(model, prompts, chosen, rejected, pad_id: int, device=None, share_prompt: bool = True):
    """Summed response log-probs of the chosen and of the rejected response of each pair
    (``share_prompt``: one row per pair where the model allows, see :mod:`mixdpo_kit.modeling.pairbatch`)."""
    batch = pair_rows(prompts, chosen, rejected, pad_id, prompt_sharing(model, share_prompt))
    logps, _ = sequence_logps(model, batch if device is None else batch.to(device))
    return logps[: len(prompts)], logps[len(prompts):]


def policy_pair_logps(model, batch: ResponseBatch, with_preference: torch.Tensor, margin: torch.Tensor,
                      token_inputs=None) -> PairLogps:
    """A batch of pairs laid out by :func:`~mixdpo_kit.modeling.pairbatch.pair_rows` (every pair's
    chosen response, then the rejected response of the pairs in ``with_preference``) as the routed
    loss reads it: summed response log-probs and token counts per pair (NaN and 0 for a rejected
    response a pair did not send), the pairs' ``margin``, and the token statistics a loss asks for
    (``token_inputs``, e.g. ConfPO's). What the trainer's step and the worked pairs both compute."""
    n = len(with_preference)
    token_lp, mask = token_logps(model, batch)

    def per_pair(values, fill):  # chosen responses are 0..n-1; rejected follow, for preference pairs only
        return values[:n], torch.full_like(values[:n], fill).masked_scatter(with_preference, values[n:])

    chosen, rejected = per_pair(token_lp.sum(-1), float("nan"))
    chosen_tokens, rejected_tokens = per_pair(mask.sum(-1), 0.0)
    lp = PairLogps(chosen, rejected, chosen_tokens, rejected_tokens, margin=margin.to(chosen.dtype))
    if token_inputs is not None:
        for name, values in token_inputs(token_lp, mask).items():
            lp.extra[f"chosen_{name}"], lp.extra[f"rejected_{name}"] = per_pair(values, 0.0)
    return lp


def hidden_products_pair_batch(model, prompts, chosen, rejected, pad_id: int, device=None, share_prompt: bool = True):
    """Per pair, ``<H+, H->`` and ``<H+, H+>``, where ``H±`` sums the final hidden states that
    predict the chosen (+) or rejected (−) response's tokens, each seen after the prompt (what the
    CHES score of :mod:`mixdpo_kit.margins.scoring` is made of). Summed in fp32."""
    batch = pair_rows(prompts, chosen, rejected, pad_id, prompt_sharing(model, share_prompt))
    batch = batch if device is None else batch.to(device)
    hidden = final_hidden_states(model, batch)[batch.token_row, batch.source_col].float()
    sums = torch.zeros((len(batch.response_lengths), hidden.shape[-1]), device=hidden.device)
    sums.index_add_(0, batch.token_seq, hidden)
    plus, minus = sums[: len(prompts)], sums[len(prompts):]
    return (plus * minus).sum(-1), (plus * plus).sum(-1)


def score_pairs(model, prompt_ids, chosen_ids, rejected_ids, pad_id: int, batch_size: int, indices=None,
                device=None, sort_by_length: bool = True, desc: str = "scoring pairs", share_prompt: bool = True,
                pair_batch=score_pair_batch, shared: bool = False):
    """Chosen and rejected log-prob sums (numpy arrays) of the pairs at ``indices`` (default: all),
    in eval mode, in batches sorted by length (far less padding, same numbers). ``pair_batch``: what
    one batch computes, two numbers per pair (default :func:`score_pair_batch`; also
    :func:`hidden_products_pair_batch`). ``shared``: the pairs are split between the processes of
    ``accelerate launch`` / ``torchrun`` and the results gathered (call it on every process)."""
    idx = list(range(len(prompt_ids))) if indices is None else list(indices)

    def score(rows_idx: list[int]) -> list[tuple[float, float]]:
        order = sorted(range(len(rows_idx)), key=lambda k: len(prompt_ids[rows_idx[k]]) + max(
            len(chosen_ids[rows_idx[k]]), len(rejected_ids[rows_idx[k]]))) if sort_by_length else range(len(rows_idx))
        order = list(order)
        chosen, rejected = np.empty(len(rows_idx)), np.empty(len(rows_idx))
        with eval_mode(model):
            for start in bar(range(0, len(order), batch_size), desc):
                ks = order[start: start + batch_size]
                rows = [rows_idx[k] for k in ks]
                c, r = pair_batch(model, [prompt_ids[i] for i in rows], [chosen_ids[i] for i in rows],
                                  [rejected_ids[i] for i in rows], pad_id, device, share_prompt)
                chosen[ks], rejected[ks] = c.float().cpu().numpy(), r.float().cpu().numpy()
        return list(zip(chosen.tolist(), rejected.tolist()))

    scored = map_shared(score, idx) if shared else score(idx)
    return np.array([c for c, _ in scored], float), np.array([r for _, r in scored], float)
