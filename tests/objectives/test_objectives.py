"""The objectives zoo: hand-computed values for each registered loss, routing rules, and a short
real training run of every registered objective."""
import math

import numpy as np
import pytest
import torch

from mixdpo_kit.core.config import LossConfig
from mixdpo_kit.margins.split import split_by_margin
from mixdpo_kit.objectives.losses import PREFERENCE_LOSSES, PairLogps, low_confidence_stats, make_loss, preference_loss
from mixdpo_kit.objectives.routing import OBJECTIVES, get_objective, resolve

sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
nls = lambda x: -math.log(sig(x))  # noqa: E731 (-log sigma)


def pairs(**kw):
    base = dict(chosen=torch.tensor([-10.0, -4.0, -6.0]), rejected=torch.tensor([-12.0, -3.0, -9.0]),
                chosen_tokens=torch.tensor([5.0, 2.0, 3.0]), rejected_tokens=torch.tensor([4.0, 3.0, 3.0]),
                ref_chosen=torch.tensor([-11.0, -4.0, -6.0]), ref_rejected=torch.tensor([-11.0, -4.0, -8.0]),
                margin=torch.tensor([0.0, 4.0, 2.0]))
    base.update(kw)
    return PairLogps(**base)


# z = (c - r) - (rc - rr) = [2, -1, 1]
Z = [2.0, -1.0, 1.0]


def test_beta_dpo_adapts_beta_from_running_gap_statistics():
    loss = make_loss("beta_dpo", {"beta": 0.1, "alpha": 0.6, "filter_rate": 0.0})
    out = loss(pairs())
    mean, std = np.mean(Z), np.std(Z, ddof=1)
    mu, sigma = 0.1 * mean, 0.1 * std  # running stats start at 0 with momentum 0.9
    beta_batch = 0.1 * (1 + 0.6 * (mean - mu))
    assert loss.gap_mean == pytest.approx(mu) and loss.gap_std == pytest.approx(sigma)
    assert out.tolist() == pytest.approx([nls(beta_batch * z) for z in Z], rel=1e-5)
    assert loss.metrics()["beta_dpo/beta"] == pytest.approx(beta_batch)
    # The statistics live in the loss object and carry over to its next call, not to a new one.
    loss(pairs())
    assert loss.gap_mean == pytest.approx(0.9 * mu + 0.1 * mean)
    assert make_loss("beta_dpo").gap_mean == 0.0
    # With filtering, (1 - rate) B pairs are kept and the rest contribute 0.
    filtering = make_loss("beta_dpo", {"beta": 0.1, "filter_rate": 0.3})
    out = filtering(pairs())
    assert int((out == 0).sum()) == 1 and filtering.metrics()["beta_dpo/kept_fraction"] == pytest.approx(2 / 3)


def test_amapo_margin_only_for_pairs_below_the_batch_mean():
    lp = pairs()
    d = [-10 / 5 + 12 / 4, -4 / 2 + 3 / 3, -6 / 3 + 9 / 3]  # [1, -1, 1]
    mu, sd = np.mean(d), np.std(d, ddof=1)
    gamma = [2.0 * math.exp((mu - x) / sd * mu) if x < mu else 0.0 for x in d]
    expect = [nls(2.0 * x - g) for x, g in zip(d, gamma)]
    assert preference_loss(lp, "amapo", beta=2.0).tolist() == pytest.approx(expect, rel=1e-5)
    assert gamma[0] == 0 and gamma[1] > 0


def test_madpo_gdpo_da_dpo_weights_from_margins():
    lp = pairs()
    # MADPO: w = 2 sigma(-(m - median)), median of [0, 4, 2] = 2
    w = [2 * sig(2.0), 2 * sig(-2.0), 1.0]
    assert preference_loss(lp, "madpo", beta=0.1).tolist() == pytest.approx([wi * nls(0.1 * z) for wi, z in zip(w, Z)],
                                                                         rel=1e-5)
    # GDPO: p = sigma(m), loss = -log sigma(beta (2p - 1) z); a tie (m = 0) gives log 2 whatever z is.
    expect = [nls(0.1 * (2 * sig(m) - 1) * z) for m, z in zip([0.0, 4.0, 2.0], Z)]
    assert preference_loss(lp, "gdpo", beta=0.1).tolist() == pytest.approx(expect, rel=1e-5)
    assert expect[0] == pytest.approx(math.log(2))
    # DA-DPO: difficulty by margin rank (hardest = 1): margins [0, 4, 2] -> d = [1, 0, 0.5]
    w = [1.5, 0.5, 1.0]
    assert preference_loss(lp, "da_dpo", beta=0.1, strength=0.5).tolist() == pytest.approx(
        [wi * nls(0.1 * z) for wi, z in zip(w, Z)], rel=1e-5)


def test_confpo_uses_low_confidence_tokens_only():
    logps = torch.log(torch.tensor([[0.9, 0.1, 0.5, 1.0], [0.2, 0.4, 1.0, 1.0]]))
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    stats = low_confidence_stats(logps * mask, mask)
    crit, n = stats["critical"], stats["critical_tokens"]
    # row 0: mean p = 0.5 -> only 0.1 is below; row 1: mean p = 0.3 -> only 0.2
    assert n.tolist() == [1, 1] and crit.tolist() == pytest.approx([math.log(0.1), math.log(0.2)])
    lp = pairs(extra={"chosen_critical": torch.tensor([-2.0, -1.0, 0.0]),
                      "chosen_critical_tokens": torch.tensor([2.0, 1.0, 0.0]),
                      "rejected_critical": torch.tensor([-3.0, -1.0, -1.0]),
                      "rejected_critical_tokens": torch.tensor([1.0, 2.0, 1.0])})
    out = preference_loss(lp, "confpo", beta=2.0, gamma=0.5).tolist()
    assert out == pytest.approx([nls(2.0 * (-1 + 3) - 0.5), nls(2.0 * (-1 + 0.5) - 0.5), 0.0], rel=1e-5)


def test_routings():
    m = np.array([0.0, 0.5, 1.0, 4.0])
    split = split_by_margin(m, tau=0.5)
    lc = LossConfig(params={"soft_temperature": 0.5, "nll_weight": 0.3})
    r = get_objective("mixdpo").route(m, split, lc)
    assert r.sft.tolist() == [1, 0, 0, 0] and r.preference.tolist() == [0, 1, 1, 1] and r.keep.all()
    r = get_objective("mixdpo_soft").route(m, split, lc)
    assert r.preference.tolist() == pytest.approx([sig(-1), 0.5, sig(1), sig(7)])
    assert (r.sft + r.preference).tolist() == pytest.approx([1, 1, 1, 1])
    r = get_objective("dpo_nll").route(m, split, lc)
    assert r.sft.tolist() == [0.3] * 4 and r.preference.tolist() == [1] * 4
    r = get_objective("filtered_dpo").route(m, split, lc)
    assert r.keep.tolist() == [False, True, True, True]
    for name, sft in (("hard_only_dpo", 0), ("hard_only_sft", 1)):  # the near-ties alone, by DPO or by SFT
        r = get_objective(name).route(m, split, lc)
        assert r.keep.tolist() == [True, False, False, False] and r.sft[0] == sft and r.preference[0] == 1 - sft
    r = get_objective("selective_dpo").route(m, split, lc, np.array([0.5, -1.0, 2.0, 0.1]))
    assert r.keep.tolist() == [True, False, True, True]  # drops n_hard = 1 pair with the smallest reference gap


def test_resolve_pins_what_each_objective_fixes(small_cfg):
    cfg = resolve(small_cfg.override(loss={"objective": "dpo"}))
    assert (cfg.loss.preference, cfg.loss.params["label_smoothing"], cfg.curriculum.order) == ("dpo", 0.0, "random")
    cfg = resolve(small_cfg.override(loss={"objective": "curriculum_dpo"}, curriculum={"order": "random"}))
    assert cfg.curriculum.order == "easy_to_hard"
    assert resolve(small_cfg.override(loss={"objective": "mixdpo"})).curriculum.order == "easy_to_hard"
    with pytest.raises(ValueError, match="registered"):
        resolve(small_cfg.override(loss={"objective": "magic"}))


def test_loss_parameters_are_typed_validated_and_resolved(tmp_path):
    from mixdpo_kit.core.config import RunConfig

    # Each loss runs with its own paper's parameters unless the config sets them.
    for objective, expect in [("simpo", {"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0}),
                              ("mixdpo", {"beta": 0.01, "label_smoothing": 0.1}),
                              ("cdpo", {"beta": 0.1, "label_smoothing": 0.1})]:
        assert resolve(RunConfig().override(loss={"objective": objective})).loss.params == expect
    cfg = resolve(RunConfig().override(loss={"objective": "simpo", "beta": 2.5}))
    assert cfg.loss.params["beta"] == 2.5 and cfg.loss.preference == "simpo"
    # The YAML keys users write keep loading, flat beside the objective, and round-trip.
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  objective: mixdpo\n  beta: 0.05\n  label_smoothing: 0.2\n")
    loaded = RunConfig.from_yaml(path)
    assert loaded.loss.params == {"beta": 0.05, "label_smoothing": 0.2}
    loaded.to_yaml(path)
    assert RunConfig.from_yaml(path) == loaded and "beta: 0.05" in path.read_text()
    # A parameter the chosen loss lacks is an error naming the real ones.
    path.write_text("loss:\n  objective: ipo\n  label_smoothing: 0.1\n")
    with pytest.raises(ValueError, match=r"\['label_smoothing'\] are not parameters of the 'ipo' loss.*'beta'"):
        RunConfig.from_yaml(path)
    for name in OBJECTIVES:  # every objective resolves to a registered loss with all its parameters
        lc = resolve(RunConfig().override(loss={"objective": name})).loss
        own = OBJECTIVES[name].own_defaults()
        assert set(lc.params) == set(PREFERENCE_LOSSES[lc.preference].defaults()) | set(own)


def test_an_objectives_own_settings_are_a_dataclass_resolved_beside_its_loss_parameters():
    from mixdpo_kit.core.config import RunConfig
    from mixdpo_kit.objectives.routing import NllParams, SoftRoutingParams, bound_loss

    cfg = resolve(RunConfig().override(loss={"objective": "mixdpo_soft"}))
    assert cfg.loss.params == {"beta": 0.01, "label_smoothing": 0.1, "soft_temperature": 0.5}
    assert SoftRoutingParams().soft_temperature == 0.5 and NllParams().nll_weight == 1.0
    m = np.array([1.5])
    warm = resolve(RunConfig().override(loss={"objective": "mixdpo_soft", "soft_temperature": 2.0}))
    r = get_objective("mixdpo_soft").route(m, split_by_margin(m, tau=0.5), warm.loss)
    assert r.preference[0] == pytest.approx(sig((1.5 - 0.5) / 2.0))
    assert bound_loss(warm.loss).params.beta == 0.01  # the loss is bound to its own parameters only
    with pytest.raises(ValueError, match=r"\['nll_weight'\] are not parameters of the 'dpo' loss"):
        RunConfig().override(loss={"objective": "mixdpo", "nll_weight": 0.5})  # dpo_nll's setting, not mixdpo's


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_trains(name, small_cfg, tmp_path):
    from mixdpo_kit.workflows.compare import variant_config
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.training.pipeline import analyze_data, build_trainer

    cfg = variant_config(small_cfg, {"loss": {"objective": name},  # the objective's own loss parameters
                                     "train": {"max_steps": 2, "save_steps": 1000, "learning_rate": 1e-2},
                                     "split": {"quantile": 0.3}})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy.tokenizer)
    trainer, kept = build_trainer(cfg, policy, prep, tmp_path)
    before = [p.detach().clone() for p in policy.model.parameters() if p.requires_grad]
    trainer.train()
    after = [p.detach() for p in policy.model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), f"{name} did not update the adapter"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    if name in ("filtered_dpo", "selective_dpo"):
        assert sum(kept.report.dropped.values()) == prep.split.n_hard > 0
    if name in ("hard_only_dpo", "hard_only_sft"):
        assert len(kept.dataset) == prep.split.n_hard > 0
