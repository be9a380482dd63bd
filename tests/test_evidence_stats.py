"""The evidence benchmarks' statistics: Kendall's tau-b and its bootstrap interval (benchmarks/evidence.py)."""

import math

import pytest

from benchmarks.evidence import bootstrap_tau, kendall_tau, mean_std


def test_kendall_tau_b_known_values():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # with ties in both lists: scipy.stats.kendalltau's documented example gives -0.47140452079103173
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173, abs=1e-12)
    # by hand: pairs (1,2) C, (1,3) C, (2,3) D -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_is_seeded_and_brackets_a_clear_rank_agreement():
    x = list(range(12))
    y = [v + (0.5 if v % 3 == 0 else 0) for v in x]  # the same order: tau 1
    lo, hi = bootstrap_tau(x, y)
    assert (lo, hi) == bootstrap_tau(x, y) and lo <= hi == 1.0
    noisy = [3, 1, 4, 1.5, 5, 9, 2, 6, 5.5, 3.5, 8, 7]
    lo, hi = bootstrap_tau(x, noisy)
    assert -1 <= lo < kendall_tau(x, noisy) < hi <= 1


def test_mean_std_skips_missing():
    assert mean_std([1.0, None, 3.0, float("nan")]) == (2.0, pytest.approx(math.sqrt(2)))
