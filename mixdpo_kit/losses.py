"""Pure loss functions over per-pair log-probabilities: tensors in, tensors out.

Inputs are sums of response-token log-probs (prompt tokens excluded) for the policy and the
reference, response token counts, and — for the difficulty-aware objectives — each pair's data
margin and its low-confidence-token statistics. Nothing here touches a model, a tokenizer or a
config. Every preference loss is a small registered function with its formula and paper in the
docstring; ``docs/objectives.md`` records the choices a paper leaves open.

MixDPO (arXiv 2602.00954) routes each pair: ``hard * sft + (1 - hard) * preference``, averaged
over the batch, where ``sft`` is the length-normalised NLL of the chosen response.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class PairLogps:
    """Per-pair tensors, all of shape [B]. Optional fields are None when not computed."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    margin: torch.Tensor | None = None  # the data margin (larger = easier), for margin-aware losses
    # ConfPO: log-prob sums and counts over each response's low-confidence tokens
    chosen_critical: torch.Tensor | None = None
    rejected_critical: torch.Tensor | None = None
    chosen_critical_tokens: torch.Tensor | None = None
    rejected_critical_tokens: torch.Tensor | None = None

    def subset(self, mask: torch.Tensor) -> "PairLogps":
        """The pairs where ``mask`` is True."""
        return PairLogps(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[mask]
                            for f in fields(self)})


@dataclass(frozen=True)
class PreferenceLoss:
    """A registered preference loss and what it needs."""

    name: str
    fn: Callable[..., torch.Tensor]
    needs_reference: bool
    params: tuple[str, ...]
    needs_margin: bool = False
    needs_token_confidence: bool = False
    stateful: bool = False  # receives a persistent ``state`` dict (e.g. running statistics)


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}


def register_preference_loss(name: str, needs_reference: bool, params: tuple[str, ...], **needs):
    """Decorator: register ``fn(logps: PairLogps, **params) -> per-pair loss`` under ``name``."""
    def wrap(fn):
        PREFERENCE_LOSSES[name] = PreferenceLoss(name, fn, needs_reference, params, **needs)
        return fn
    return wrap


def _log_ratio_margin(lp: PairLogps) -> torch.Tensor:
    """z = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l))."""
    return (lp.chosen - lp.rejected) - (lp.ref_chosen - lp.ref_rejected)


def _smoothed_sigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@register_preference_loss("dpo", needs_reference=True, params=("beta", "label_smoothing"))
def dpo_loss(lp: PairLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) with conservative label smoothing eps (cDPO):
    ``-(1-eps) log sigma(beta z) - eps log sigma(-beta z)``."""
    return _smoothed_sigmoid_loss(beta * _log_ratio_margin(lp), label_smoothing)


@register_preference_loss("ipo", needs_reference=True, params=("beta",))
def ipo_loss(lp: PairLogps, beta: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17) on summed log-probs: ``(z - 1/(2 beta))^2``."""
    return (_log_ratio_margin(lp) - 1.0 / (2.0 * beta)) ** 2


@register_preference_loss("hinge", needs_reference=True, params=("beta",))
def hinge_loss(lp: PairLogps, beta: float = 0.1) -> torch.Tensor:
    """SLiC-style hinge on the DPO log-ratio margin: ``max(0, 1 - beta z)``."""
    return torch.relu(1.0 - beta * _log_ratio_margin(lp))


@register_preference_loss("simpo", needs_reference=False, params=("beta", "simpo_gamma", "label_smoothing"))
def simpo_loss(lp: PairLogps, beta: float = 2.0, simpo_gamma: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """SimPO (Meng et al. 2024), reference-free and length-normalised:
    ``-log sigma(beta (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma)``."""
    avg_c = lp.chosen / lp.chosen_tokens.clamp(min=1)
    avg_r = lp.rejected / lp.rejected_tokens.clamp(min=1)
    return _smoothed_sigmoid_loss(beta * (avg_c - avg_r) - simpo_gamma, label_smoothing)


@register_preference_loss("beta_dpo", needs_reference=True, stateful=True,
                          params=("beta", "beta_dpo_alpha", "beta_dpo_filter_rate", "beta_dpo_momentum", "state"))
def beta_dpo_loss(lp: PairLogps, beta: float = 0.1, beta_dpo_alpha: float = 0.6, beta_dpo_filter_rate: float = 0.2,
                  beta_dpo_momentum: float = 0.9, state: dict | None = None) -> torch.Tensor:
    """beta-DPO (Wu et al., NeurIPS 2024): batch-adaptive beta plus beta-guided filtering.

    With running mean/std (mu, sigma) of the gap z (momentum ``beta_dpo_momentum``), each pair is
    kept with probability proportional to ``exp(-(z - mu)^2 / (2 sigma^2))``, ``(1 - rate) B``
    pairs drawn without replacement; ``beta_batch = beta (1 + alpha (mean z_kept - mu))``,
    clamped at 1e-3 and detached; the loss is ``-log sigma(beta_batch z)`` on kept pairs
    (rescaled so the batch mean is the mean over kept pairs; dropped pairs contribute 0).
    """
    state = {} if state is None else state
    z = _log_ratio_margin(lp)
    zd = z.detach()
    n = len(z)
    batch_mean, batch_std = zd.mean(), (zd.std() if n > 1 else torch.zeros(()))
    m = beta_dpo_momentum
    # The authors' running statistics start at zero and move with momentum 0.9.
    state["gap_mean"] = m * state.get("gap_mean", 0.0) + (1 - m) * float(batch_mean)
    state["gap_std"] = m * state.get("gap_std", 0.0) + (1 - m) * float(batch_std)
    mu, sigma = state["gap_mean"], max(state["gap_std"], 1e-6)
    weights = torch.exp(-0.5 * ((zd - mu) / sigma) ** 2).clamp(min=1e-12)
    n_keep = max(1, int(n * (1 - beta_dpo_filter_rate)))
    generator = state.setdefault("generator", torch.Generator().manual_seed(0))
    keep_idx = torch.multinomial(weights.cpu(), n_keep, replacement=False, generator=generator).to(z.device)
    keep = torch.zeros(n, dtype=torch.bool, device=z.device)
    keep[keep_idx] = True
    beta_batch = max(beta * (1 + beta_dpo_alpha * (float(zd[keep].mean()) - mu)), 1e-3)
    state["log"] = {"beta_dpo/beta": beta_batch, "beta_dpo/kept_fraction": n_keep / n}
    return -F.logsigmoid(beta_batch * z) * keep * (n / n_keep)


@register_preference_loss("amapo", needs_reference=False, params=("beta", "label_smoothing"))
def amapo_loss(lp: PairLogps, beta: float = 2.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """AMaPO (Deng et al., AAAI 2026, arXiv 2511.09385): reference-free, length-normalised
    log-ratio ``d = log pi(y_w)/|y_w| - log pi(y_l)/|y_l|`` with an instance-wise margin from the
    batch: ``gamma_i = beta exp(mu (mu - d_i) / sigma)`` for pairs below the batch mean mu
    (misranked relative to the batch; sigma the batch std), 0 otherwise, detached;
    loss ``-log sigma(beta d - gamma)`` (with optional label smoothing).
    """
    d = lp.chosen / lp.chosen_tokens.clamp(min=1) - lp.rejected / lp.rejected_tokens.clamp(min=1)
    dd = d.detach()
    mu = dd.mean()
    sigma = dd.std().clamp(min=1e-6) if len(d) > 1 else torch.ones((), device=d.device)
    # Z-normalised distance below the mean, scaled by the mean as in the authors' code; the
    # exponent is clamped so a batch with one extreme pair cannot overflow.
    gamma = torch.where(dd < mu, beta * torch.exp((((mu - dd) / sigma) * mu).clamp(max=20.0)), torch.zeros_like(dd))
    return _smoothed_sigmoid_loss(beta * d - gamma, label_smoothing)


def madpo_weights(margin: torch.Tensor, madpo_kappa: float = 1.0, madpo_center: float | None = None) -> torch.Tensor:
    """MADPO's per-pair weight from a reward margin: ``w = 2 sigma(-kappa (m - c))``.

    Continuous, in (0, 2), equal to 1 at the centre c (default: the batch median), above 1 for
    hard pairs (small margin) and below 1 for easy ones.
    """
    center = torch.quantile(margin, 0.5) if madpo_center is None else torch.as_tensor(madpo_center, dtype=margin.dtype)
    return 2.0 * torch.sigmoid(-madpo_kappa * (margin - center))


@register_preference_loss("madpo", needs_reference=True, needs_margin=True,
                          params=("beta", "madpo_kappa", "madpo_center"))
def madpo_loss(lp: PairLogps, beta: float = 0.1, madpo_kappa: float = 1.0, madpo_center: float | None = None
               ) -> torch.Tensor:
    """MADPO (Rho, arXiv 2510.05342): a reward-model margin gives each pair a continuous weight
    on its DPO loss, ``-w(m) log sigma(beta z)``, amplified for hard pairs and damped for easy
    ones. The weight function is :func:`madpo_weights` (see docs/objectives.md)."""
    w = madpo_weights(lp.margin.to(lp.chosen.dtype), madpo_kappa, madpo_center)
    return -w * F.logsigmoid(beta * _log_ratio_margin(lp))


@register_preference_loss("gdpo", needs_reference=True, needs_margin=True, params=("beta", "gdpo_temperature"))
def gdpo_loss(lp: PairLogps, beta: float = 0.1, gdpo_temperature: float = 1.0) -> torch.Tensor:
    """GDPO (Furuta et al. 2024, soft preference labels): the weighted geometric average of
    likelihoods turns DPO into ``-log sigma(beta (2 p - 1) z)``, where p in [0.5, 1] is the soft
    label. Here ``p = sigma(margin / T)``, the Bradley–Terry probability of the score gap."""
    p = torch.sigmoid(lp.margin.to(lp.chosen.dtype) / gdpo_temperature)
    return -F.logsigmoid(beta * (2 * p - 1) * _log_ratio_margin(lp))


@register_preference_loss("da_dpo", needs_reference=True, needs_margin=True, params=("beta", "da_dpo_strength"))
def da_dpo_loss(lp: PairLogps, beta: float = 0.1, da_dpo_strength: float = 0.5) -> torch.Tensor:
    """DA-DPO-style difficulty re-weighting (Qiu et al., arXiv 2601.00623): easy pairs are
    down-weighted and hard ones emphasised. Difficulty is the pair's margin rank within the batch
    (1 = smallest margin = hardest); ``w = 1 + s (2 d - 1)``, which keeps the mean weight at 1."""
    n = len(lp.margin)
    ranks = torch.argsort(torch.argsort(-lp.margin.to(torch.float64))).to(lp.chosen.dtype)  # 0 = easiest
    difficulty = ranks / max(n - 1, 1)
    w = 1.0 + da_dpo_strength * (2 * difficulty - 1)
    return -w * F.logsigmoid(beta * _log_ratio_margin(lp))


@register_preference_loss("confpo", needs_reference=False, needs_token_confidence=True,
                          params=("beta", "simpo_gamma", "label_smoothing"))
def confpo_loss(lp: PairLogps, beta: float = 2.0, simpo_gamma: float = 0.5, label_smoothing: float = 0.0
                ) -> torch.Tensor:
    """ConfPO (Yoon et al., ICML 2025): SimPO restricted to low-confidence tokens — those whose
    log-prob is below the log of the response's mean token probability. Uses the mean log-prob
    over those tokens of each response; pairs where either response has none contribute 0."""
    n_c, n_r = lp.chosen_critical_tokens, lp.rejected_critical_tokens
    avg_c = lp.chosen_critical / n_c.clamp(min=1)
    avg_r = lp.rejected_critical / n_r.clamp(min=1)
    loss = _smoothed_sigmoid_loss(beta * (avg_c - avg_r) - simpo_gamma, label_smoothing)
    return loss * ((n_c > 0) & (n_r > 0))


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
    if spec.needs_margin and lp.margin is None:
        raise ValueError(f"preference loss {name!r} needs each pair's margin")
    if spec.needs_token_confidence and lp.chosen_critical is None:
        raise ValueError(f"preference loss {name!r} needs low-confidence token statistics")
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


def routed_loss(lp: PairLogps, hard: torch.Tensor | None = None, preference: str = "dpo", sft_weight: float = 1.0,
                preference_weight: float = 1.0, *, sft_weights: torch.Tensor | None = None,
                preference_weights: torch.Tensor | None = None, **params) -> RoutedLoss:
    """Per pair: ``a_i * sft_i + b_i * preference_i``.

    MixDPO: pass the ``hard`` mask (a = sft_weight * hard, b = preference_weight * (1 - hard)).
    Soft routing or DPO+NLL: pass per-pair ``sft_weights`` / ``preference_weights`` instead.
    A loss is computed only on the pairs whose weight for it is non-zero, so fields those pairs
    never needed (e.g. rejected and reference log-probs of SFT-routed pairs) may hold anything.
    """
    if hard is not None:
        hard = hard.bool()
        sft_weights = sft_weight * hard.to(lp.chosen.dtype)
        preference_weights = preference_weight * (~hard).to(lp.chosen.dtype)
    if sft_weights is None or preference_weights is None:
        raise ValueError("routed_loss needs either `hard` or both `sft_weights` and `preference_weights`")
    a, b = sft_weights.to(lp.chosen.dtype), preference_weights.to(lp.chosen.dtype)
    on_sft, on_pref = a > 0, b > 0
    n = len(a)
    per_pair = torch.zeros_like(lp.chosen)
    share = torch.where(a + b > 0, a / (a + b).clamp(min=1e-12), torch.zeros_like(a))
    metrics: dict[str, tuple[float, int]] = {
        "route/sft_fraction": (float(share.sum()), n),
        "logps/chosen": (float(lp.chosen.detach().sum()), n),
    }
    if on_sft.any():
        sft = sft_loss(lp.chosen[on_sft], lp.chosen_tokens[on_sft])
        per_pair = per_pair + torch.zeros_like(per_pair).masked_scatter(on_sft, a[on_sft] * sft)
        metrics["loss/sft"] = (float(sft.detach().sum()), int(on_sft.sum()))
    if on_pref.any():
        sub = lp.subset(on_pref)
        pref = preference_loss(sub, preference, **params)
        per_pair = per_pair + torch.zeros_like(per_pair).masked_scatter(on_pref, b[on_pref] * pref)
        k = int(on_pref.sum())
        metrics["loss/preference"] = (float(pref.detach().sum()), k)
        metrics["logps/rejected"] = (float(sub.rejected.detach().sum()), k)
        if sub.ref_chosen is not None:
            beta = params.get("beta", 0.1)
            r_c = (beta * (sub.chosen - sub.ref_chosen)).detach()
            r_r = (beta * (sub.rejected - sub.ref_rejected)).detach()
            metrics["rewards/chosen"] = (float(r_c.sum()), k)
            metrics["rewards/rejected"] = (float(r_r.sum()), k)
            metrics["rewards/margin"] = (float((r_c - r_r).sum()), k)
            metrics["rewards/accuracy"] = (float((r_c > r_r).float().sum()), k)
        for key, value in (params.get("state") or {}).pop("log", {}).items():
            metrics[key] = (float(value), 1)
    return RoutedLoss(per_pair, metrics)

