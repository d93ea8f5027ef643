"""Teaching aids for the notebooks: one pair worked through the routed loss, step by step.

The library computes the loss exactly as training does (:func:`mixdpo_kit.objectives.losses.routed_loss`
on the objective's routing); alongside it, the same number is computed by hand from the four
log-probs with the formulas the notebooks print, so a learner can check each step.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mixdpo_kit.core.units import comparison, percent, threshold
from mixdpo_kit.data.chat import as_text
from mixdpo_kit.margins.sources import MarginContext, compute_margins
from mixdpo_kit.modeling.logprobs import eval_mode, policy_pair_logps, score_pair_batch
from mixdpo_kit.modeling.pairbatch import pair_rows, prompt_sharing
from mixdpo_kit.objectives.losses import routed_loss
from mixdpo_kit.objectives.routing import bound_loss, get_objective
from mixdpo_kit.reports.results import LearningRateMass, RunSummary, as_mass, as_summary

ROUTED_LOSS_MARKDOWN = r"""
For a pair (prompt $x$, chosen $y_w$, rejected $y_l$) with margin $m$ (how much better $y_w$ was
rated) and threshold $\tau$, MixDPO trains

$$\ell(x, y_w, y_l) = h \cdot \ell_{\text{SFT}} + (1 - h) \cdot \ell_{\text{cDPO}}, \qquad h = [\,m < \tau\,]$$

$$\ell_{\text{SFT}} = -\frac{1}{|y_w|} \log \pi_\theta(y_w \mid x), \qquad
\ell_{\text{cDPO}} = -(1-\varepsilon)\log\sigma(z) - \varepsilon \log\sigma(-z)$$

$$z = \beta\Big[\big(\log\pi_\theta(y_w|x) - \log\pi_{\text{ref}}(y_w|x)\big) - \big(\log\pi_\theta(y_l|x) - \log\pi_{\text{ref}}(y_l|x)\big)\Big]$$

$\pi_\theta$ is the policy being trained, $\pi_{\text{ref}}$ the frozen reference (here: the same
model with its LoRA adapter switched off), $\log\pi(y|x)$ the summed log-probability of the
response tokens, $|y_w|$ the number of chosen tokens, $\sigma$ the logistic function, $\beta$ the
strength of the preference (0.01 in the paper) and $\varepsilon$ cDPO's label smoothing (0.1 in the
paper: the chosen label is trusted with probability $1-\varepsilon$). Pairs are sorted by margin,
easiest first, and trained in that order for one epoch.
"""


def worked_pair(cfg, policy, prep, index: int) -> dict:
    """Pair ``index`` of prepared pairs through the configured objective: its margin, τ, route,
    the four summed log-probs (policy and reference, chosen and rejected), the loss the library
    computes for it, and the same loss by hand from the printed formulas (DPO-family losses).

    ``cfg``: a resolved config (``objectives.resolve``); ``policy``: a :class:`~mixdpo_kit.modeling.model.Policy`.
    """
    row = prep.dataset[int(index)]
    lc, tau = cfg.loss, prep.split.tau
    margin, hard = float(prep.margins[index]), bool(prep.split.hard[index])
    objective = get_objective(lc.objective)
    # Selective DPO routes by the reference's likelihood gap: the same gap training used (cached).
    gap = compute_margins(prep.dataset, "likelihood_gap", MarginContext(cfg, policy)) \
        if objective.needs_reference_gap else None
    routing = objective.route(prep.margins, prep.split, lc, gap)
    a, b = float(routing.sft[index]), float(routing.preference[index])
    pad = policy.tokenizer.pad_token_id
    device = next(policy.model.parameters()).device
    pair = ([row["prompt_ids"]], [row["chosen_ids"]], [row["rejected_ids"]])
    loss = bound_loss(lc)
    # The trainer's own assembly of a pair for the routed loss (both responses shown, whatever the route).
    batch = pair_rows(*pair, pad, prompt_sharing(policy.model, policy.config.share_prompt)).to(device)
    with eval_mode(policy.model):
        lp = policy_pair_logps(policy.model, batch, torch.tensor([True], device=device),
                               torch.tensor([margin], device=device), loss.spec.token_inputs)
        with policy.reference() as ref:
            lp.ref_chosen, lp.ref_rejected = score_pair_batch(ref, *pair, pad, device, policy.config.share_prompt)
    library = float(routed_loss(lp, loss, torch.tensor([a], device=device), torch.tensor([b], device=device)).per_pair[0])
    n_c = len(row["chosen_ids"])
    values = {k: float(v[0]) for k, v in (("pc", lp.chosen), ("pr", lp.rejected), ("rc", lp.ref_chosen),
                                          ("rr", lp.ref_rejected))}
    out = {
        "prompt": _text(row["prompt"]), "chosen": _text(row["chosen"]), "rejected": _text(row["rejected"]),
        "margin m": margin, "tau": tau, "hard (m < tau)": hard, "objective": lc.objective,
        "SFT weight a": a, "preference weight b": b,
        "log pi(chosen)": values["pc"], "log pi(rejected)": values["pr"],
        "log pi_ref(chosen)": values["rc"], "log pi_ref(rejected)": values["rr"], "chosen tokens": n_c,
        "SFT loss (by hand)": -values["pc"] / n_c,
        "loss (library)": library,
    }
    params = lc.params
    if lc.preference == "dpo":  # the printed formula; other losses: docs/objectives.md
        beta, eps = params["beta"], params["label_smoothing"]
        z = beta * ((values["pc"] - values["rc"]) - (values["pr"] - values["rr"]))
        cdpo = -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
        out.update({"beta": beta, "epsilon": eps, "z": z, "cDPO loss (by hand)": cdpo,
                    "loss (by hand)": a * out["SFT loss (by hand)"] + b * cdpo})
    return out


def worked_pairs(cfg, policy, prep) -> list[dict]:
    """:func:`worked_pair` for the two pairs nearest τ (:func:`example_indices`), as runs store them."""
    return [worked_pair(cfg, policy, prep, i) for i in example_indices(prep)]


def worked_pairs_table(pairs: list[dict]) -> list[dict]:
    """Worked pairs side by side: one row per quantity, one column per pair (numbers to 4 digits)."""
    names = [("hard pair" if p["hard (m < tau)"] else "easy pair") + f" (m = {p['margin m']:g})" for p in pairs]
    keys = list(dict.fromkeys(k for p in pairs for k in p))
    return [{"quantity": k, **{n: _fmt(p.get(k, "")) for n, p in zip(names, pairs)}} for k in keys]


def result_lines(summary: RunSummary) -> list[str]:
    """The headline numbers of a finished run as plain sentences (for notebooks and panels)."""
    summary = as_summary(summary)
    ev, lines = summary.evaluation, []
    if ev.true_reward_after is not None:
        b, a = ev.true_reward_before, ev.true_reward_after
        lines.append(f"ground-truth reward on {a.n} held-out prompts: {b.mean_reward:.3f} before (the reference) "
                     f"-> {a.mean_reward:.3f} after ({a.mean_reward - b.mean_reward:+.3f})")
    if ev.preference is not None:
        p = ev.preference
        lines.append(f"held-out pairs where the policy moved chosen above rejected (z > 0): {percent(p.reward_accuracy)} "
                     f"of {p.pairs}; mean log p(chosen) {p.logps_chosen_before:.2f} -> {p.logps_chosen_after:.2f}")
    if summary.lr_mass is not None:
        lines.append(lr_mass_line(summary.lr_mass))
    return lines


def difference_line(a: RunSummary, b: RunSummary, name_a: str, name_b: str, noise: float,
                    noise_source: str) -> str:
    """Two finished runs' ground-truth rewards and their difference, read against a seed noise: how
    far one seed's paired difference varies (95 % half-width) as ``noise_source`` measured it (e.g.
    a notebook quoting the five-seed study). The verdict is :func:`~mixdpo_kit.core.units.comparison`'s,
    the one every comparison the kit prints uses."""
    ra, rb = (as_summary(s).evaluation.true_reward_after.mean_reward for s in (a, b))
    d = ra - rb
    word = comparison(d, noise)
    reading = (f"{name_a} is {word} {name_b} against the seed noise {noise_source} measured (±{noise} for one "
               "difference)")
    if word != "not distinguishable from":
        reading += "; one seed is one draw: more seeds are the test"
    return f"{name_a} − {name_b} = {d:+.3f} ground-truth reward ({ra:.3f} vs {rb:.3f}): {reading}"


def level_line(value: float, study_value: float, what: str, study: str,
               why: str = "training is not bit-for-bit reproducible across CPUs") -> str:
    """Your ``value`` of ``what`` against the ``study``'s: equal at three decimals, or how far apart,
    with ``why`` levels differ across machines and what to compare instead."""
    if f"{value:.3f}" == f"{study_value:.3f}":
        return f"{what}: {value:.3f}, the same as {study}'s {study_value:.3f} at three decimals"
    return (f"{what}: {value:.3f}, {study}'s {study_value:.3f} ({value - study_value:+.3f}): {why}, "
            "so compare differences, not levels")


def settings_lines(config: dict) -> list[str]:
    """The settings a run used (``summary["config"]``), as the few lines a learner checks first:
    objective and loss parameters, split, order, optimiser schedule and batch."""
    loss, split, t = config["loss"], config["split"], config["train"]
    own = get_objective(loss["objective"]).own_defaults()
    skip = {"objective", "preference", "sft_weight", "preference_weight", *own}
    values = lambda keys: ", ".join(f"{k} = {loss[k]:g}" if isinstance(loss[k], float) else f"{k} = {loss[k]}"  # noqa: E731
                                    for k in keys if loss.get(k) is not None)
    params = values(k for k in loss if k not in skip)
    settings = f"{values(own)}; " if own else ""
    rule = (f"quantile {split['quantile']:g}" if split.get("quantile") is not None else f"margin < τ = {split['tau']:g}")
    return [f"objective {loss['objective']} ({settings}{loss['preference']} loss: {params})",
            f"hard pairs: {rule} on {config['margins']['source']} margins; order {config['curriculum']['order']}",
            f"learning rate {t['learning_rate']:g}, {t['lr_scheduler_type']} schedule, warm-up {t['warmup_ratio']:g}; "
            f"batch {t['per_device_train_batch_size']} × {t['gradient_accumulation_steps']} accumulation"]


def report_lines(report: dict) -> list[str]:
    """A data report (:func:`mixdpo_kit.training.pipeline.data_report`) as sentences: rows kept and dropped
    by reason, the margins, the split."""
    dropped = report.get("dropped", {})
    drops = "; ".join(f"{n} {reason}" for reason, n in dropped.items() if n) or "none"
    truncated = f"; {report['truncated']:,} truncated to fit the length limits" if report.get("truncated") else ""
    read = f"{report['rows_read']:,} rows read, {report['rows_kept']:,} pairs kept; dropped: {drops}{truncated}"
    if report.get("margins") is None:  # data with no margin of its own, analysed without a model
        return [read]
    m, split = report["margins"], report["split"]
    rule = (f"quantile {split['quantile']:g} of the margins, τ = {threshold(split['tau'])}"
            if split.get("quantile") is not None else f"margin < τ = {threshold(split['tau'])}")
    return [read,
            f"margins: median {m['median']:g}, from {m['min']:g} to {m['max']:g}; {m['ties']:,} exact ties (margin 0)",
            f"hard pairs ({rule}): {split['n_hard']:,} of {split['n_pairs']:,} ({percent(split['hard_fraction'])})"] + \
        ([split["grid_note"]] if split.get("grid_note") else [])


def lr_mass_line(mass: LearningRateMass) -> str:
    """The SFT route's share of the pairs and of the learning-rate mass, as one sentence; for a run
    that stopped early, of what it actually trained."""
    mass = as_mass(mass)
    pairs, lr = percent(mass.sft_share_of_pairs), percent(mass.sft, 2)
    done, planned = mass.steps if mass.steps_trained is None else mass.steps_trained, mass.steps
    if mass.sft_share_of_pairs == 0 and mass.sft_share_of_data:  # the hard pairs come after what was trained
        hard = f"the hard pairs (SFT route, {percent(mass.sft_share_of_data)} of the pairs)"
        if mass.stopped_early:
            return (f"stopped at step {done} of {planned}, before {hard} came: all of the learning-rate mass applied "
                    "went to the preference loss")
        return f"the {done} steps trained end before {hard} come: all of the learning-rate mass went to the preference loss"
    if mass.sft_share_of_pairs == 0 and done == planned:
        return "no pair is routed to SFT: all of the learning-rate mass goes to the preference loss"
    if mass.stopped_early:
        return (f"stopped at step {done} of {planned}: the hard pairs (SFT route) were {pairs} of the "
                f"{mass.pairs_trained:,} pairs trained and got {lr} of the learning-rate mass applied")
    return f"hard pairs (SFT route): {pairs} of the pairs, {lr} of the learning-rate mass"


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def example_indices(prep, n_each: int = 1) -> list[int]:
    """The pairs closest to τ on each side (the hard one just below, the easy one just above)."""
    m, hard = np.asarray(prep.margins, float), prep.split.hard
    below = [int(i) for i in np.argsort(-m, kind="stable") if hard[i]][:n_each]
    above = [int(i) for i in np.argsort(m, kind="stable") if not hard[i]][:n_each]
    return below + above


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _text(value, limit: int = 80) -> str:
    """A prompt or response (plain or chat) as one short line."""
    value = " ".join(as_text(value, last_turn=True).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"
