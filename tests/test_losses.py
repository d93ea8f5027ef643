import math

import pytest
import torch

from mixdpo_kit.losses import PairLogps, dpo_loss, hinge_loss, ipo_loss, preference_loss, routed_loss, sft_loss, simpo_loss


def pairs(**kw):
    base = dict(chosen=torch.tensor([-10.0, -4.0]), rejected=torch.tensor([-12.0, -3.0]),
                chosen_tokens=torch.tensor([5.0, 2.0]), rejected_tokens=torch.tensor([4.0, 3.0]),
                ref_chosen=torch.tensor([-11.0, -4.0]), ref_rejected=torch.tensor([-11.0, -4.0]))
    base.update(kw)
    return PairLogps(**base)


def test_dpo_and_cdpo_match_hand_computed_values():
    # z = (-10 - -12) - (-11 - -11) = 2 ; pair 2: (-4 - -3) - 0 = -1
    lp = pairs()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expect = [-math.log(sig(0.1 * 2)), -math.log(sig(0.1 * -1))]
    assert torch.allclose(dpo_loss(lp, beta=0.1), torch.tensor(expect), atol=1e-6)
    eps = 0.1
    expect_c = [-(1 - eps) * math.log(sig(0.01 * z)) - eps * math.log(sig(-0.01 * z)) for z in (2, -1)]
    assert torch.allclose(dpo_loss(lp, beta=0.01, label_smoothing=eps), torch.tensor(expect_c), atol=1e-6)


def test_ipo_hinge_simpo_sft_hand_values():
    lp = pairs()
    assert torch.allclose(ipo_loss(lp, beta=0.5), torch.tensor([(2 - 1.0) ** 2, (-1 - 1.0) ** 2]))
    assert torch.allclose(hinge_loss(lp, beta=0.25), torch.tensor([0.5, 1.25]))
    # SimPO: beta*(avg_c - avg_r) - gamma; pair 1: 2*(-2 - -3) - 0.5 = 1.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert torch.allclose(simpo_loss(lp, beta=2.0, simpo_gamma=0.5)[0], torch.tensor(-math.log(sig(1.5))), atol=1e-6)
    assert torch.allclose(sft_loss(lp.chosen, lp.chosen_tokens), torch.tensor([2.0, 2.0]))


def test_routed_loss_all_easy_is_preference_all_hard_is_sft():
    lp = pairs()
    easy = routed_loss(lp, torch.tensor([False, False]), preference="dpo", beta=0.1, label_smoothing=0.1)
    assert torch.allclose(easy.per_pair, preference_loss(lp, "dpo", beta=0.1, label_smoothing=0.1))
    hard = routed_loss(lp, torch.tensor([True, True]), preference="dpo", beta=0.1)
    assert torch.allclose(hard.per_pair, sft_loss(lp.chosen, lp.chosen_tokens))
    assert "loss/preference" not in hard.metrics and "rewards/accuracy" not in hard.metrics
    assert "loss/sft" not in easy.metrics


def test_routed_loss_mixed_ignores_nan_of_sft_pairs_in_value_and_gradient():
    chosen = torch.tensor([-10.0, -4.0], requires_grad=True)
    lp = pairs(chosen=chosen, rejected=torch.tensor([-12.0, float("nan")]),
               ref_chosen=torch.tensor([-11.0, float("nan")]), ref_rejected=torch.tensor([-11.0, float("nan")]))
    out = routed_loss(lp, torch.tensor([False, True]), preference="dpo", beta=0.1, label_smoothing=0.0)
    expect_pref = dpo_loss(pairs(), beta=0.1)[0]
    assert torch.allclose(out.per_pair, torch.stack([expect_pref, torch.tensor(2.0)]))
    out.loss.backward()
    assert torch.isfinite(chosen.grad).all()
    assert out.metrics["route/sft_fraction"] == (1.0, 2)
    assert out.metrics["loss/sft"] == (2.0, 1)


def test_weights_scale_each_route():
    lp = pairs()
    out = routed_loss(lp, torch.tensor([False, True]), beta=0.1, sft_weight=3.0, preference_weight=0.5)
    assert torch.allclose(out.per_pair[1], torch.tensor(6.0))
    assert torch.allclose(out.per_pair[0], 0.5 * dpo_loss(pairs(), beta=0.1)[0])


def test_unknown_loss_and_missing_reference_are_clear_errors():
    with pytest.raises(ValueError, match="registered"):
        preference_loss(pairs(), "nope")
    with pytest.raises(ValueError, match="reference"):
        preference_loss(pairs(ref_chosen=None), "dpo")
