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


def test_paired_difference_by_hand_and_its_coverage():
    import numpy as np

    from spnas.search.stats import paired_difference, t975

    # by hand: differences 1..5, mean 3, sd sqrt(2.5), half-width 2.776 * sqrt(2.5) / sqrt(5)
    r = paired_difference([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert r["mean"] == 3 and r["ci95"] == [round(3 - half, 4), round(3 + half, 4)] and r["verdict"] == "a better"
    assert paired_difference([0.40, 0.41, 0.39], [0.41, 0.39, 0.40])["verdict"] == "no difference"
    assert paired_difference([1, 2, 3], [3, 4.1, 5.2])["verdict"] == "b better"
    assert paired_difference([1, 2], [3, 5])["verdict"] == "no difference"  # 2 seeds: t(1) = 12.7 makes the interval wide
    assert paired_difference([0.5], [0.4])["verdict"] == "too few seeds"  # one seed: no spread to judge by
    assert t975(4) == 2.776 and t975(11) == 2.228 and t975(1000) == 1.96
    # the interval covers the true mean difference about 95 % of the time (5 seeds, normal noise)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        a, b = rng.normal(0.3, 0.05, 5), rng.normal(0.0, 0.05, 5)
        lo, hi = paired_difference(a, b)["ci95"]
        hits += lo <= 0.3 <= hi
    assert 0.935 <= hits / 4000 <= 0.965
