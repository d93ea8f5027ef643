"""The split: hard = margin < tau (strict), or below a quantile."""
import numpy as np
import pytest

from mixdpo_kit.margins.split import split_by_margin


MARGINS = np.array([0.0, 3.0, 0.5, 9.0, 0.0, 1.5, 3.0, 6.0])


def test_split_tau_is_strict_and_quantile_works():
    s = split_by_margin(MARGINS, tau=0.5)
    assert s.hard.tolist() == [True, False, False, False, True, False, False, False] and s.n_hard == 2
    q = split_by_margin(MARGINS, quantile=0.5)
    assert q.tau == pytest.approx(2.25) and q.n_hard == 4
    with pytest.warns(UserWarning, match="no hard pairs"):
        split_by_margin(MARGINS, tau=-1)
    with pytest.warns(UserWarning, match="no easy pairs"):
        split_by_margin(MARGINS, tau=100)
