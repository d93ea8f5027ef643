"""CHES margins: the formula by hand, and the batched, cached source against a pair-by-pair computation."""
import numpy as np
import pytest
import torch

from mixdpo_kit.margins.scoring import ches_scores
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.training.pipeline import analyze_data


def test_ches_formula_by_hand():
    # H+ = (1, 2), H- = (3, 0): <H+, H-> = 3, ||H+||² = 5; |y+| = 2, |y-| = 3.
    assert ches_scores([3.0], [5.0], [2], [3], length_normalized=False).tolist() == [-2.0]
    assert ches_scores([3.0], [5.0], [2], [3]).tolist() == pytest.approx([3 / 6 - 5 / 4])


def pair_by_pair_ches(ref, ds, length_normalized: bool) -> np.ndarray:
    """CHES the plain way: each response in its own row, the model's own hidden-state output, the
    positions from the prompt's last token to the response's second-to-last one."""
    out = []
    with torch.no_grad():
        for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]):
            sums = []
            for y in (c, r):
                hidden = ref(input_ids=torch.tensor([p + y]), output_hidden_states=True).hidden_states[-1][0]
                sums.append(hidden[len(p) - 1: len(p) + len(y) - 1].double().sum(0))
            plus, minus = sums
            if length_normalized:
                out.append(float(plus @ minus / (len(c) * len(r)) - plus @ plus / len(c) ** 2))
            else:
                out.append(float(plus @ minus - plus @ plus))
    return np.array(out)


def test_ches_source_matches_a_pair_by_pair_computation_and_is_cached(small_cfg, monkeypatch):
    import mixdpo_kit.modeling.logprobs as logprobs

    cfg = small_cfg.override(margins={"source": "ches"}, data={"max_rows": 12})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    with policy.reference() as ref:
        ref.eval()
        want = pair_by_pair_ches(ref, prep.dataset, length_normalized=True)
        want_raw = pair_by_pair_ches(ref, prep.dataset, length_normalized=False)
    assert np.ptp(want) > 0  # the pairs differ: a constant would not test the ranking
    np.testing.assert_allclose(prep.margins, -want, rtol=1e-4, atol=1e-4)
    assert prep.margin_unit.startswith("−CHES")
    # Separate rows and a head the kit cannot set aside (hidden states from the model's own output)
    # give the same numbers; a fresh cache folder makes both compute again.
    monkeypatch.setattr(logprobs, "_plain_output_layer", lambda model: (None, None))
    raw = analyze_data(cfg.override(margins={"source": "ches:raw"}, model={"share_prompt": False},
                                    cache={"dir": cfg.cache.dir + "-2"}), policy=policy).margins
    np.testing.assert_allclose(raw, -want_raw, rtol=1e-4, atol=1e-3)
    # The second call on the same data and model reads the cache: the model does not run.
    monkeypatch.setattr(logprobs, "final_hidden_states", lambda *a: (_ for _ in ()).throw(AssertionError("ran")))
    np.testing.assert_array_equal(analyze_data(cfg, policy=policy).margins, prep.margins)
    with pytest.raises(ValueError, match="ches:raw"):
        analyze_data(cfg.override(margins={"source": "ches:other"}), policy=policy)
