import math

import pytest
import torch

from mixdpo_kit.objectives.losses import PairLogps, make_loss, preference_loss, routed_loss, sft_loss


def route(hard, sft_weight=1.0, preference_weight=1.0):
    """MixDPO's per-pair weights from a hard mask."""
    return sft_weight * hard.float(), preference_weight * (~hard).float()


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
    assert torch.allclose(preference_loss(lp, "dpo", beta=0.1), torch.tensor(expect), atol=1e-6)
    eps = 0.1
    expect_c = [-(1 - eps) * math.log(sig(0.01 * z)) - eps * math.log(sig(-0.01 * z)) for z in (2, -1)]
    assert torch.allclose(preference_loss(lp, "dpo", beta=0.01, label_smoothing=eps), torch.tensor(expect_c), atol=1e-6)


def test_ipo_hinge_simpo_sft_hand_values():
    lp = pairs()
    assert torch.allclose(preference_loss(lp, "ipo", beta=0.5), torch.tensor([(2 - 1.0) ** 2, (-1 - 1.0) ** 2]))
    assert torch.allclose(preference_loss(lp, "hinge", beta=0.25), torch.tensor([0.5, 1.25]))
    # SimPO: beta*(avg_c - avg_r) - gamma; pair 1: 2*(-2 - -3) - 0.5 = 1.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert torch.allclose(preference_loss(lp, "simpo", beta=2.0, gamma=0.5)[0], torch.tensor(-math.log(sig(1.5))), atol=1e-6)
    assert torch.allclose(sft_loss(lp.chosen, lp.chosen_tokens), torch.tensor([2.0, 2.0]))


def test_routed_loss_all_easy_is_preference_all_hard_is_sft():
    lp = pairs()
    dpo = make_loss("dpo", {"beta": 0.1, "label_smoothing": 0.1})
    easy = routed_loss(lp, dpo, *route(torch.tensor([False, False])))
    assert torch.allclose(easy.per_pair, preference_loss(lp, "dpo", beta=0.1, label_smoothing=0.1))
    hard = routed_loss(lp, dpo, *route(torch.tensor([True, True])))
    assert torch.allclose(hard.per_pair, sft_loss(lp.chosen, lp.chosen_tokens))
    assert "loss/preference" not in hard.metrics and "rewards/accuracy" not in hard.metrics
    assert "loss/sft" not in easy.metrics


def test_routed_loss_mixed_ignores_nan_of_sft_pairs_in_value_and_gradient():
    chosen = torch.tensor([-10.0, -4.0], requires_grad=True)
    lp = pairs(chosen=chosen, rejected=torch.tensor([-12.0, float("nan")]),
               ref_chosen=torch.tensor([-11.0, float("nan")]), ref_rejected=torch.tensor([-11.0, float("nan")]))
    out = routed_loss(lp, make_loss("dpo", {"beta": 0.1}), *route(torch.tensor([False, True])))
    expect_pref = preference_loss(pairs(), "dpo", beta=0.1)[0]
    assert torch.allclose(out.per_pair, torch.stack([expect_pref, torch.tensor(2.0)]))
    out.loss.backward()
    assert torch.isfinite(chosen.grad).all()
    assert out.metrics["route/sft_fraction"] == (1.0, 2)
    assert out.metrics["loss/sft"] == (2.0, 1)


def test_weights_scale_each_route():
    lp = pairs()
    out = routed_loss(lp, make_loss("dpo", {"beta": 0.1}), *route(torch.tensor([False, True]), 3.0, 0.5))
    assert torch.allclose(out.per_pair[1], torch.tensor(6.0))
    assert torch.allclose(out.per_pair[0], 0.5 * preference_loss(pairs(), "dpo", beta=0.1)[0])


def test_unknown_loss_parameter_and_missing_reference_are_clear_errors():
    with pytest.raises(ValueError, match="registered"):
        preference_loss(pairs(), "nope")
    with pytest.raises(ValueError, match="reference"):
        preference_loss(pairs(ref_chosen=None), "dpo")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['betta'\].*'beta': 0.1"):
        make_loss("dpo", {"betta": 0.1})


def test_reward_metrics_use_the_losss_own_beta():
    lp = pairs()  # log-ratio margins z = [2, -1]; chosen log-ratio [1, 0]
    for beta in (0.1, 2.0):
        out = routed_loss(lp, make_loss("dpo", {"beta": beta}), *route(torch.tensor([False, False])))
        assert out.metrics["rewards/margin"][0] == pytest.approx(beta * (2 - 1))
        assert out.metrics["rewards/chosen"][0] == pytest.approx(beta * (1 + 0))
