"""Pure loss functions over per-pair log-probabilities: tensors in, tensors out.

Inputs are sums of response-token log-probs (prompt tokens excluded) for the policy and the
reference, plus response token counts. Nothing here touches a model, a tokenizer or a config.

MixDPO (arXiv 2602.00954) routes each pair: ``hard * sft + (1 - hard) * preference``, averaged
over the batch, where ``sft`` is the length-normalised NLL of the chosen response.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class PairLogps:
    """Per-pair tensors, all of shape [B]. Reference fields may be None for reference-free losses."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    def subset(self, mask: torch.Tensor) -> "PairLogps":
        """The pairs where ``mask`` is True."""
        pick = lambda t: None if t is None else t[mask]  # noqa: E731
        return PairLogps(*(pick(getattr(self, f)) for f in
                           ("chosen", "rejected", "chosen_tokens", "rejected_tokens", "ref_chosen", "ref_rejected")))


@dataclass(frozen=True)
class PreferenceLoss:
    """A registered preference objective."""

    name: str
    fn: Callable[..., torch.Tensor]
    needs_reference: bool
    params: tuple[str, ...]


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}


def register_preference_loss(name: str, needs_reference: bool, params: tuple[str, ...]):
    """Decorator: register ``fn(logps: PairLogps, **params) -> per-pair loss`` under ``name``."""
    def wrap(fn):
        PREFERENCE_LOSSES[name] = PreferenceLoss(name, fn, needs_reference, params)
        return fn
    return wrap


def _log_ratio_margin(lp: PairLogps) -> torch.Tensor:
    """z = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l))."""
    return (lp.chosen - lp.rejected) - (lp.ref_chosen - lp.ref_rejected)


@register_preference_loss("dpo", needs_reference=True, params=("beta", "label_smoothing"))
def dpo_loss(lp: PairLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) with conservative label smoothing eps (cDPO):
    ``-(1-eps) log sigma(beta z) - eps log sigma(-beta z)``."""
    z = _log_ratio_margin(lp)
    return -(1 - label_smoothing) * F.logsigmoid(beta * z) - label_smoothing * F.logsigmoid(-beta * z)


@register_preference_loss("ipo", needs_reference=True, params=("beta",))
def ipo_loss(lp: PairLogps, beta: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17) on summed log-probs: ``(z - 1/(2 beta))^2``."""
    return (_log_ratio_margin(lp) - 1.0 / (2.0 * beta)) ** 2


@register_preference_loss("hinge", needs_reference=True, params=("beta",))
def hinge_loss(lp: PairLogps, beta: float = 0.1) -> torch.Tensor:
    """SLiC-style hinge on the DPO log-ratio margin: ``max(0, 1 - beta z)``."""
    return torch.relu(1.0 - beta * _log_ratio_margin(lp))


@register_preference_loss("simpo", needs_reference=False, params=("beta", "simpo_gamma"))
def simpo_loss(lp: PairLogps, beta: float = 2.0, simpo_gamma: float = 0.5) -> torch.Tensor:
    """SimPO (Meng et al. 2024), reference-free and length-normalised:
    ``-log sigma(beta (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma)``."""
    avg_c = lp.chosen / lp.chosen_tokens.clamp(min=1)
    avg_r = lp.rejected / lp.rejected_tokens.clamp(min=1)
    return -F.logsigmoid(beta * (avg_c - avg_r) - simpo_gamma)


def sft_loss(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Length-normalised NLL of the chosen response: ``-sum log pi(y_w) / |y_w|``."""
    return -chosen_logps / chosen_tokens.clamp(min=1)


def preference_loss(lp: PairLogps, name: str = "dpo", **params) -> torch.Tensor:
    """Per-pair loss of the registered preference objective ``name``; extra params are ignored."""
    if name not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown preference loss {name!r}; registered: {sorted(PREFERENCE_LOSSES)}")
    spec = PREFERENCE_LOSSES[name]
    if spec.needs_reference and (lp.ref_chosen is None or lp.ref_rejected is None):
        raise ValueError(f"preference loss {name!r} needs reference log-probs")
    return spec.fn(lp, **{k: v for k, v in params.items() if k in spec.params})


@dataclass
class RoutedLoss:
    """Per-pair losses and metrics of a routed batch.

    ``metrics`` maps a name to ``(sum, count)`` over the pairs it is defined on, so callers can
    average across steps without mixing routes; a route absent from the batch has no entries.
    """

    per_pair: torch.Tensor
    metrics: dict[str, tuple[float, int]]

    @property
    def loss(self) -> torch.Tensor:
        return self.per_pair.mean()


def routed_loss(lp: PairLogps, hard: torch.Tensor, preference: str = "dpo", sft_weight: float = 1.0,
                preference_weight: float = 1.0, **params) -> RoutedLoss:
    """MixDPO: SFT on hard pairs, the preference loss on the others, per pair.

    Fields of ``lp`` that hard pairs never needed (rejected and reference log-probs) may hold
    anything, NaN included: only the easy pairs' values are read.
    """
    hard = hard.bool()
    easy = ~hard
    per_pair = torch.zeros_like(lp.chosen)
    metrics: dict[str, tuple[float, int]] = {}
    n_hard, n_easy = int(hard.sum()), int(easy.sum())
    metrics["route/sft_fraction"] = (float(n_hard), n_hard + n_easy)
    metrics["logps/chosen"] = (float(lp.chosen.detach().sum()), n_hard + n_easy)
    if n_hard:
        sft = sft_loss(lp.chosen[hard], lp.chosen_tokens[hard])
        per_pair = per_pair.masked_scatter(hard, sft_weight * sft)
        metrics["loss/sft"] = (float(sft.detach().sum()), n_hard)
    if n_easy:
        sub = lp.subset(easy)
        pref = preference_loss(sub, preference, **params)
        per_pair = per_pair.masked_scatter(easy, preference_weight * pref)
        metrics["loss/preference"] = (float(pref.detach().sum()), n_easy)
        metrics["logps/rejected"] = (float(sub.rejected.detach().sum()), n_easy)
        if sub.ref_chosen is not None:
            beta = params.get("beta", 0.1)
            r_c = (beta * (sub.chosen - sub.ref_chosen)).detach()
            r_r = (beta * (sub.rejected - sub.ref_rejected)).detach()
            metrics["rewards/chosen"] = (float(r_c.sum()), n_easy)
            metrics["rewards/rejected"] = (float(r_r.sum()), n_easy)
            metrics["rewards/margin"] = (float((r_c - r_r).sum()), n_easy)
            metrics["rewards/accuracy"] = (float((r_c > r_r).float().sum()), n_easy)
    return RoutedLoss(per_pair, metrics)
