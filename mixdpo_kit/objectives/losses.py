"""Pure loss functions over per-pair log-probabilities: tensors in, tensors out.

Inputs are sums of response-token log-probs (prompt tokens excluded) for the policy and the
reference, response token counts, each pair's data margin and any per-sequence statistics a loss
asks for (see ``token_inputs``). Nothing here touches a model, a tokenizer or a config.

Every preference loss is registered with a small frozen dataclass of its parameters whose
defaults are its paper's; ``make_loss(name, params)`` binds them. A loss that keeps state across
steps (β-DPO's running statistics) is a class whose instances hold that state. ``docs/objectives.md``
records the choices a paper leaves open.

MixDPO (arXiv 2602.00954) routes each pair: ``hard * sft + (1 - hard) * preference``, averaged
over the batch, where ``sft`` is the length-normalised NLL of the chosen response.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mixdpo_kit.core.errors import UserError


@dataclass
class PairLogps:
    """Per-pair tensors, all of shape [B]. Optional fields are None when not computed; ``extra``
    holds what a loss's ``token_inputs`` hook produced, as ``chosen_<name>`` / ``rejected_<name>``."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    margin: torch.Tensor | None = None  # the data margin (larger = easier), for margin-aware losses
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def subset(self, mask: torch.Tensor) -> "PairLogps":
        """The pairs where ``mask`` is True."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return PairLogps(**{k: None if v is None else v[mask] for k, v in values.items()},
                         extra={k: v[mask] for k, v in self.extra.items()})


@dataclass(frozen=True)
class PreferenceLoss:
    """A registered preference loss: its function (or stateful class), parameters and needs."""

    name: str
    impl: Callable  # fn(lp, params) -> per-pair loss, or a class built as cls(params) and called as obj(lp)
    params: type  # frozen dataclass; its defaults are the paper's
    paper: str
    needs_reference: bool
    needs_margin: bool = False
    # Per-sequence statistics computed from token log-probs, fn(token_logps, mask) -> {name: [N]}.
    token_inputs: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None

    def defaults(self) -> dict[str, Any]:
        """The parameters and their default values."""
        return dataclasses.asdict(self.params())

    def bind(self, params: dict[str, Any] | None = None):
        """This loss with ``params`` (missing ones take the defaults), as ``callable(lp) -> per-pair``."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.defaults()))
        if unknown:
            raise UserError(f"preference loss {self.name!r} has no parameter(s) {unknown}; "
                            f"its parameters are {self.defaults()}")
        p = self.params(**given)
        bound = self.impl(p) if isinstance(self.impl, type) else BoundLoss(self.impl, p)
        bound.spec = self
        return bound


class BoundLoss:
    """A stateless loss function with its parameters bound."""

    def __init__(self, fn: Callable, params):
        self.fn, self.params = fn, params

    def __call__(self, lp: PairLogps) -> torch.Tensor:
        return self.fn(lp, self.params)

    def metrics(self) -> dict[str, float]:
        """Per-step values to log (none for a stateless loss)."""
        return {}


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}


def register_preference_loss(name: str, params: type, paper: str, needs_reference: bool, **needs):
    """Decorator: register ``fn(lp: PairLogps, p: params) -> per-pair loss`` (or a stateful class
    built with ``cls(p)`` and called with ``obj(lp)``) under ``name``."""
    def wrap(impl):
        PREFERENCE_LOSSES[name] = PreferenceLoss(name, impl, params, paper, needs_reference, **needs)
        return impl
    return wrap


def get_loss(name: str) -> PreferenceLoss:
    """The registered preference loss ``name`` (a clear error lists the others)."""
    if name not in PREFERENCE_LOSSES:
        raise UserError(f"unknown preference loss {name!r}; registered: {sorted(PREFERENCE_LOSSES)}")
    return PREFERENCE_LOSSES[name]


def make_loss(name: str, params: dict[str, Any] | None = None):
    """The registered loss ``name`` bound to ``params``: ``callable(lp) -> per-pair loss``."""
    return get_loss(name).bind(params)


def log_ratio_margin(lp: PairLogps) -> torch.Tensor:
    """z = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l))."""
    return (lp.chosen - lp.rejected) - (lp.ref_chosen - lp.ref_rejected)


def _length_normalised_gap(lp: PairLogps) -> torch.Tensor:
    """log pi(y_w)/|y_w| - log pi(y_l)/|y_l|."""
    return lp.chosen / lp.chosen_tokens.clamp(min=1) - lp.rejected / lp.rejected_tokens.clamp(min=1)


def _smoothed_sigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@dataclass(frozen=True)
class DPOParams:
    beta: float = 0.1
    label_smoothing: float = 0.0  # cDPO's eps; 0 is plain DPO


@register_preference_loss("dpo", DPOParams, "Rafailov et al. 2023 (cDPO: Mitchell 2023)", needs_reference=True)
def dpo_loss(lp: PairLogps, p: DPOParams) -> torch.Tensor:
    """DPO with conservative label smoothing eps (cDPO):
    ``-(1-eps) log sigma(beta z) - eps log sigma(-beta z)``."""
    return _smoothed_sigmoid_loss(p.beta * log_ratio_margin(lp), p.label_smoothing)


@dataclass(frozen=True)
class IPOParams:
    beta: float = 0.1  # IPO's tau


@register_preference_loss("ipo", IPOParams, "Azar et al. 2023", needs_reference=True)
def ipo_loss(lp: PairLogps, p: IPOParams) -> torch.Tensor:
    """IPO (eq. 17) on summed log-probs: ``(z - 1/(2 beta))^2``."""
    return (log_ratio_margin(lp) - 1.0 / (2.0 * p.beta)) ** 2


@dataclass(frozen=True)
class HingeParams:
    beta: float = 0.1


@register_preference_loss("hinge", HingeParams, "Zhao et al. 2023 (SLiC-HF)", needs_reference=True)
def hinge_loss(lp: PairLogps, p: HingeParams) -> torch.Tensor:
    """SLiC-style hinge on the DPO log-ratio margin: ``max(0, 1 - beta z)``."""
    return torch.relu(1.0 - p.beta * log_ratio_margin(lp))


@dataclass(frozen=True)
class SimPOParams:
    beta: float = 2.0  # the paper's Llama-3-8B-Base setting: beta 2.0, gamma 1.0
    gamma: float = 1.0
    label_smoothing: float = 0.0


@register_preference_loss("simpo", SimPOParams, "Meng et al. 2024", needs_reference=False)
def simpo_loss(lp: PairLogps, p: SimPOParams) -> torch.Tensor:
    """SimPO, reference-free and length-normalised:
    ``-log sigma(beta (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma)``."""
    return _smoothed_sigmoid_loss(p.beta * _length_normalised_gap(lp) - p.gamma, p.label_smoothing)


@dataclass(frozen=True)
class BetaDPOParams:
    beta: float = 0.1
    alpha: float = 0.6  # how strongly the batch's gap moves beta
    filter_rate: float = 0.2  # share of each batch dropped by the beta-guided filter
    momentum: float = 0.9  # of the running gap statistics


@register_preference_loss("beta_dpo", BetaDPOParams, "Wu et al., NeurIPS 2024", needs_reference=True)
class BetaDPOLoss:
    """β-DPO: batch-adaptive beta plus beta-guided filtering, with running statistics kept here.

    With running mean/std (mu, sigma) of the gap z (momentum ``momentum``), each pair is kept with
    probability proportional to ``exp(-(z - mu)^2 / (2 sigma^2))``, ``(1 - filter_rate) B`` pairs
    drawn without replacement; ``beta_batch = beta (1 + alpha (mean z_kept - mu))``, clamped at
    1e-3 and detached; the loss is ``-log sigma(beta_batch z)`` on kept pairs (rescaled so the batch
    mean is the mean over kept pairs; dropped pairs contribute 0).
    """

    def __init__(self, params: BetaDPOParams):
        self.params = params
        # The authors' running statistics start at zero.
        self.gap_mean, self.gap_std = 0.0, 0.0
        self.generator = torch.Generator().manual_seed(0)
        self._last: dict[str, float] = {}

    def __call__(self, lp: PairLogps) -> torch.Tensor:
        p = self.params
        z = log_ratio_margin(lp)
        zd = z.detach()
        n = len(z)
        batch_std = float(zd.std()) if n > 1 else 0.0
        self.gap_mean = p.momentum * self.gap_mean + (1 - p.momentum) * float(zd.mean())
        self.gap_std = p.momentum * self.gap_std + (1 - p.momentum) * batch_std
        mu, sigma = self.gap_mean, max(self.gap_std, 1e-6)
        weights = torch.exp(-0.5 * ((zd - mu) / sigma) ** 2).clamp(min=1e-12)
        n_keep = max(1, int(n * (1 - p.filter_rate)))
        keep_idx = torch.multinomial(weights.cpu(), n_keep, replacement=False, generator=self.generator).to(z.device)
        keep = torch.zeros(n, dtype=torch.bool, device=z.device)
        keep[keep_idx] = True
        beta_batch = max(p.beta * (1 + p.alpha * (float(zd[keep].mean()) - mu)), 1e-3)
        self._last = {"beta_dpo/beta": beta_batch, "beta_dpo/kept_fraction": n_keep / n}
        return -F.logsigmoid(beta_batch * z) * keep * (n / n_keep)

    def metrics(self) -> dict[str, float]:
        """The batch beta and the kept share of the last call."""
        return dict(self._last)


@dataclass(frozen=True)
class AMaPOParams:
    beta: float = 2.0
    label_smoothing: float = 0.0


@register_preference_loss("amapo", AMaPOParams, "Deng et al., AAAI 2026, arXiv 2511.09385", needs_reference=False)
def amapo_loss(lp: PairLogps, p: AMaPOParams) -> torch.Tensor:
    """AMaPO: reference-free, length-normalised log-ratio ``d`` with an instance-wise margin from
    the batch: ``gamma_i = beta exp(mu (mu - d_i) / sigma)`` for pairs below the batch mean mu
    (misranked relative to the batch; sigma the batch std), 0 otherwise, detached;
    loss ``-log sigma(beta d - gamma)`` (with optional label smoothing).
    """
    d = _length_normalised_gap(lp)
    dd = d.detach()
    mu = dd.mean()
    sigma = dd.std().clamp(min=1e-6) if len(d) > 1 else torch.ones((), device=d.device)
    # Z-normalised distance below the mean, scaled by the mean as in the authors' code; the
    # exponent is clamped so a batch with one extreme pair cannot overflow.
    gamma = torch.where(dd < mu, p.beta * torch.exp((((mu - dd) / sigma) * mu).clamp(max=20.0)), torch.zeros_like(dd))
    return _smoothed_sigmoid_loss(p.beta * d - gamma, p.label_smoothing)


@dataclass(frozen=True)
class MADPOParams:
    beta: float = 0.1
    kappa: float = 1.0  # steepness of the weight in the margin
    center: float | None = None  # None: the batch median margin


def madpo_weights(margin: torch.Tensor, kappa: float, center: float | None) -> torch.Tensor:
    """MADPO's per-pair weight from a reward margin: ``w = 2 sigma(-kappa (m - c))``.

    Continuous, in (0, 2), equal to 1 at the centre c (None: the batch median), above 1 for
    hard pairs (small margin) and below 1 for easy ones.
    """
    c = torch.quantile(margin, 0.5) if center is None else torch.as_tensor(center, dtype=margin.dtype)
    return 2.0 * torch.sigmoid(-kappa * (margin - c))


@register_preference_loss("madpo", MADPOParams, "Rho, arXiv 2510.05342", needs_reference=True, needs_margin=True)
def madpo_loss(lp: PairLogps, p: MADPOParams) -> torch.Tensor:
    """MADPO: a reward-model margin gives each pair a continuous weight on its DPO loss,
    ``-w(m) log sigma(beta z)``, amplified for hard pairs and damped for easy ones. The weight
    function is :func:`madpo_weights` (see docs/objectives.md)."""
    w = madpo_weights(lp.margin.to(lp.chosen.dtype), p.kappa, p.center)
    return -w * F.logsigmoid(p.beta * log_ratio_margin(lp))


@dataclass(frozen=True)
class GDPOParams:
    beta: float = 0.1
    temperature: float = 1.0  # of the soft label, on the margin's scale


@register_preference_loss("gdpo", GDPOParams, "Furuta et al. 2024", needs_reference=True, needs_margin=True)
def gdpo_loss(lp: PairLogps, p: GDPOParams) -> torch.Tensor:
    """GDPO (soft preference labels): the weighted geometric average of likelihoods turns DPO into
    ``-log sigma(beta (2 p - 1) z)``, where p in [0.5, 1] is the soft label. Here
    ``p = sigma(margin / T)``, the Bradley–Terry probability of the score gap."""
    soft = torch.sigmoid(lp.margin.to(lp.chosen.dtype) / p.temperature)
    return -F.logsigmoid(p.beta * (2 * soft - 1) * log_ratio_margin(lp))


@dataclass(frozen=True)
class DADPOParams:
    beta: float = 0.1
    strength: float = 0.5  # how far weights move from 1


@register_preference_loss("da_dpo", DADPOParams, "Qiu et al., arXiv 2601.00623", needs_reference=True,
                          needs_margin=True)
def da_dpo_loss(lp: PairLogps, p: DADPOParams) -> torch.Tensor:
    """DA-DPO-style difficulty re-weighting: easy pairs are down-weighted and hard ones emphasised.
    Difficulty is the pair's margin rank within the batch (1 = smallest margin = hardest);
    ``w = 1 + s (2 d - 1)``, which keeps the mean weight at 1."""
    n = len(lp.margin)
    ranks = torch.argsort(torch.argsort(-lp.margin.to(torch.float64))).to(lp.chosen.dtype)  # 0 = easiest
    difficulty = ranks / max(n - 1, 1)
    w = 1.0 + p.strength * (2 * difficulty - 1)
    return -w * F.logsigmoid(p.beta * log_ratio_margin(lp))


def low_confidence_stats(logps: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """ConfPO's critical tokens: log-prob sum (``critical``) and count (``critical_tokens``) over
    response tokens whose log-prob is below the log of the response's mean token probability
    (the selection is not differentiated)."""
    with torch.no_grad():
        mean_prob = (logps.exp() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        critical = (logps < mean_prob.clamp(min=1e-30).log().unsqueeze(-1)) & (mask > 0)
    critical = critical.to(logps.dtype)
    return {"critical": (logps * critical).sum(-1), "critical_tokens": critical.sum(-1)}


@dataclass(frozen=True)
class ConfPOParams:
    beta: float = 2.0  # SimPO's settings, which ConfPO builds on
    gamma: float = 1.0
    label_smoothing: float = 0.0


@register_preference_loss("confpo", ConfPOParams, "Yoon et al., ICML 2025", needs_reference=False,
                          token_inputs=low_confidence_stats)
def confpo_loss(lp: PairLogps, p: ConfPOParams) -> torch.Tensor:
    """ConfPO: SimPO restricted to low-confidence tokens — those whose log-prob is below the log of
    the response's mean token probability. Uses the mean log-prob over those tokens of each
    response; pairs where either response has none contribute 0."""
    n_c, n_r = lp.extra["chosen_critical_tokens"], lp.extra["rejected_critical_tokens"]
    avg_c = lp.extra["chosen_critical"] / n_c.clamp(min=1)
    avg_r = lp.extra["rejected_critical"] / n_r.clamp(min=1)
    loss = _smoothed_sigmoid_loss(p.beta * (avg_c - avg_r) - p.gamma, p.label_smoothing)
    return loss * ((n_c > 0) & (n_r > 0))


def sft_loss(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Length-normalised NLL of the chosen response: ``-sum log pi(y_w) / |y_w|``."""
    return -chosen_logps / chosen_tokens.clamp(min=1)


def preference_loss(lp: PairLogps, name: str, **params) -> torch.Tensor:
    """Per-pair loss of the registered preference loss ``name`` with ``params`` (a one-off call;
    training binds the loss once with :func:`make_loss`). Unknown parameters are an error."""
    spec = get_loss(name)
    _check_inputs(spec, lp)
    return spec.bind(params)(lp)


def _check_inputs(spec: PreferenceLoss, lp: PairLogps) -> None:
    if spec.needs_reference and (lp.ref_chosen is None or lp.ref_rejected is None):
        raise ValueError(f"preference loss {spec.name!r} needs reference log-probs")
    if spec.needs_margin and lp.margin is None:
        raise ValueError(f"preference loss {spec.name!r} needs each pair's margin")


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


def routed_loss(lp: PairLogps, loss, sft_weights: torch.Tensor, preference_weights: torch.Tensor) -> RoutedLoss:
    """Per pair: ``a_i * sft_i + b_i * preference_i`` with ``loss`` a bound preference loss
    (:func:`make_loss`).

    MixDPO: a = hard, b = 1 - hard. Soft routing or DPO+NLL: other per-pair weights. A loss is
    computed only on the pairs whose weight for it is non-zero, so fields those pairs never
    needed (e.g. rejected and reference log-probs of SFT-routed pairs) may hold anything.
    """
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
        _check_inputs(loss.spec, sub)
        pref = loss(sub)
        per_pair = per_pair + torch.zeros_like(per_pair).masked_scatter(on_pref, b[on_pref] * pref)
        k = int(on_pref.sum())
        metrics["loss/preference"] = (float(pref.detach().sum()), k)
        metrics["logps/rejected"] = (float(sub.rejected.detach().sum()), k)
        beta = getattr(loss.params, "beta", None)
        if sub.ref_chosen is not None and beta is not None:  # implicit rewards at the loss's own beta
            r_c = (beta * (sub.chosen - sub.ref_chosen)).detach()
            r_r = (beta * (sub.rejected - sub.ref_rejected)).detach()
            metrics["rewards/chosen"] = (float(r_c.sum()), k)
            metrics["rewards/rejected"] = (float(r_r.sum()), k)
            metrics["rewards/margin"] = (float((r_c - r_r).sum()), k)
            metrics["rewards/accuracy"] = (float((r_c > r_r).float().sum()), k)
        for key, value in loss.metrics().items():
            metrics[key] = (float(value), 1)
    return RoutedLoss(per_pair, metrics)
