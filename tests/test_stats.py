"""The study's statistics on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from qhqcnn.study import stats


def test_wilcoxon_p_floor_is_the_exact_smallest_p():
    assert stats.wilcoxon_p_floor(5) == 0.0625
    assert stats.wilcoxon_p_floor(6) == 0.03125
    assert stats.wilcoxon_p_floor(10) == pytest.approx(2 / 1024)
    assert stats.min_pairs_to_reject(0.05) == 6
    for n in (5, 6, 10):  # all differences positive reaches the floor exactly
        test = stats.wilcoxon_signed_rank(np.arange(1, n + 1) * 0.01)
        assert test["method"] == "exact"
        assert test["p_value"] == pytest.approx(test["p_floor"])
    # a zero difference is dropped: 6 pairs with one zero have the floor of 5
    test = stats.wilcoxon_signed_rank([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    assert test["n_nonzero"] == 5 and test["p_floor"] == 0.0625


def test_holm_on_a_known_vector():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm([]) == []


def test_holm_floor_says_how_many_pairs_a_table_needs():
    # one test: 6 pairs; a table of 6 comparisons: 6 · 2/2**n ≤ 0.05 first at n = 8; of 8: n = 9
    assert stats.min_pairs_to_reject(0.05, family_size=1) == 6
    assert stats.min_pairs_to_reject(0.05, family_size=6) == 8
    assert stats.min_pairs_to_reject(0.05, family_size=8) == 9
    floors = [stats.wilcoxon_p_floor(6)] * 6
    assert stats.holm_p_floor(floors) == pytest.approx(0.1875)
    assert stats.holm_p_floor([]) == 1.0 and stats.holm_p_floor([0.5] * 4) == 1.0
    # the floor is attained: six comparisons with every pair of one sign
    p_values = [stats.wilcoxon_signed_rank(np.arange(1, 7) * 0.01)["p_value"]] * 6
    assert min(stats.holm(p_values)) == pytest.approx(stats.holm_p_floor(floors))
    # and is a true lower bound on random families
    rng = np.random.default_rng(0)
    for _ in range(50):
        tests = [stats.wilcoxon_signed_rank(rng.normal(0.01, 0.02, size=int(n)))
                 for n in rng.integers(3, 11, size=5)]
        adjusted = stats.holm([t["p_value"] for t in tests])
        assert min(adjusted) >= stats.holm_p_floor([t["p_floor"] for t in tests]) - 1e-12


def test_reading_names_the_holm_floor_when_the_correction_cannot_reject():
    first = {s: 0.80 + 0.001 * s for s in range(6)}
    comp = stats.paired_comparison(first, {s: 0.70 for s in range(6)})
    assert comp["p_value"] == pytest.approx(0.03125)
    comp.update(p_holm=0.1875, holm_floor=0.1875)
    text = stats.reading(comp)
    assert text.startswith("uncorrected p ≤ 0.05") and "0.1875" in text
    assert text.endswith("no detectable difference at this n after correction")
    # the table could reject, this comparison does not after correction: said so
    comp.update(p_holm=0.125, holm_floor=0.03125)
    text = stats.reading(comp)
    assert text.startswith("uncorrected p ≤ 0.05, not after Holm's correction")
    assert text.endswith("no detectable difference at this n after correction")
    comp.update(p_value=0.2, p_holm=0.9)  # not even uncorrected: the plain reading
    assert stats.reading(comp) == "no detectable difference at this n"


def test_effect_sizes():
    diff = [1.0, 2.0, 3.0, -0.5]
    d = np.array(diff)
    assert stats.cohens_dz(diff) == pytest.approx(d.mean() / d.std(ddof=1))
    # ranks of |d|: 0.5→1, 1→2, 2→3, 3→4; W+ = 9, W− = 1
    assert stats.rank_biserial(diff) == pytest.approx((9 - 1) / 10)
    assert stats.rank_biserial([0.1, 0.2]) == 1.0 and stats.cohens_dz([0.1, 0.1]) is None


def test_paired_bootstrap_ci_covers_the_truth_on_synthetic_data():
    rng = np.random.default_rng(1)
    truth, hits, runs = 0.03, 0, 100
    for i in range(runs):
        diff = truth + rng.normal(0.0, 0.02, size=10)
        low, high = stats.paired_bootstrap_ci(diff, n_boot=1000, seed=i)
        hits += low <= truth <= high
    # a percentile bootstrap with n = 10 under-covers slightly; 95 % nominal
    assert 0.85 <= hits / runs <= 0.99
    assert stats.paired_bootstrap_ci([0.1]) is None


def test_paired_comparison_and_its_reading():
    first = {s: 0.80 + 0.01 * s for s in range(5)}
    second = {s: 0.70 + 0.01 * s for s in range(5)}
    comp = stats.paired_comparison(first, second)
    assert comp["n_pairs"] == 5 and comp["mean_difference"] == pytest.approx(0.1)
    assert comp["p_value"] == pytest.approx(0.0625) and comp["p_floor"] == 0.0625
    assert comp["rank_biserial"] == 1.0
    assert "cannot reject at this n" in stats.reading(comp)
    assert "no detectable difference at this n" in stats.reading(comp)
    first10 = {s: 0.80 + 0.001 * s for s in range(10)}
    second10 = {s: 0.70 for s in range(10)}
    comp = stats.paired_comparison(first10, second10)
    assert stats.reading(comp).endswith("(p ≤ 0.05, one test, not corrected for others)")
    comp["p_holm"] = min(1.0, 3 * comp["p_value"])
    assert comp["p_value"] == pytest.approx(2 / 1024)
    assert stats.reading(comp).startswith("difference detected")
    assert stats.paired_comparison({0: 0.5}, {0: 0.4})["p_value"] is None


def test_test_set_bootstrap_interval_contains_the_point_estimate():
    from qhqcnn.training.metrics import medmnist_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, size=200), 0, 1)
    score = np.stack([1 - p1, p1], axis=1)
    point = medmnist_metrics(y, score, "binary-class")
    boot = stats.test_set_bootstrap(
        y, score, lambda t, s: medmnist_metrics(t, s, "binary-class"), n_boot=200
    )
    for key in ("acc", "auc"):
        low, high = boot[f"{key}_ci95"]
        assert low <= point[key] <= high and high - low < 0.3


def test_exact_p_agrees_with_scipy_without_ties_and_keeps_the_floor_with_ties():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(3)
    for _ in range(5):
        diff = rng.normal(0.01, 0.02, size=9)
        ours = stats.wilcoxon_signed_rank(diff)["p_value"]
        assert ours == pytest.approx(wilcoxon(diff, method="exact").pvalue)
    tied = stats.wilcoxon_signed_rank([0.1] * 5)  # equal differences: ties, still exact
    assert tied["p_value"] == pytest.approx(0.0625)
