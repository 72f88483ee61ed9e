"""Statistics of the reproduction study: paired comparisons that say what they can detect.

A comparison of two models on one dataset pairs their test metric by seed and reports

* the mean paired difference with a 95 % **paired bootstrap** confidence interval (seeds resampled
  with replacement, percentile interval);
* two effect sizes: Cohen's **d_z** (mean difference / SD of the differences) and the
  **matched-pairs rank-biserial** correlation (``(W+ − W−) / (W+ + W−)``, in [−1, 1]);
* the two-sided **Wilcoxon signed-rank** test (exact null distribution when there are no ties
  or zeros) together with its **p floor**: with n non-zero pairs the smallest two-sided p the
  exact test can ever return is ``2 / 2**n`` (0.0625 for n = 5, 0.03125 for n = 6), so below
  n = 6 it cannot reject at α = 0.05 whatever the models do;
* the **Holm**-adjusted p over every comparison of one table (family-wise error α), and that
  family's **Holm floor**: Holm multiplies the smallest p by the number m of comparisons, so no
  adjusted p of the table can fall below ``m · 2 / 2**n`` (n: the most non-zero pairs of any of
  its comparisons). With m = 6 and n = 6 that is 0.1875: six seeds can reject one test, not a
  table of six (:func:`min_pairs_to_reject` with ``family_size``).

The wording follows from these: a non-rejection is "no detectable difference at this n", never
"no difference". :func:`test_set_bootstrap` gives one run's own uncertainty from its test images
(images resampled with replacement, the metric recomputed with medmnist's definition).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Significance level of the study's tests (before Holm's correction).
ALPHA = 0.05
#: Bootstrap resamples of the paired (over seeds) and the per-run (over test images) intervals.
SEED_BOOTSTRAPS = 10_000
TEST_BOOTSTRAPS = 1_000


def wilcoxon_p_floor(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can return with ``n``
    non-zero paired differences: all differences of one sign gives ``2 · (1/2)**n``."""
    if n < 1:
        return 1.0
    return min(1.0, 2.0 / 2**n)


def min_pairs_to_reject(alpha: float = ALPHA, family_size: int = 1) -> int:
    """The smallest n whose exact two-sided Wilcoxon test can reach p ≤ ``alpha`` (6 at 0.05),
    or, with ``family_size`` m, a Holm-adjusted p ≤ ``alpha`` in a family of m tests
    (``m · 2 / 2**n ≤ alpha``: 8 for m = 6, 9 for m = 8)."""
    n = 1
    while max(1, family_size) * wilcoxon_p_floor(n) > alpha:
        n += 1
    return n


def holm_p_floor(p_floors: Sequence[float]) -> float:
    """The smallest Holm-adjusted p any test of a family can reach, from each test's own p floor:
    Holm's first step multiplies the family's smallest p by its size m, and every adjusted p is
    at least that (``m · min(floors)``, at most 1)."""
    if not p_floors:
        return 1.0
    return min(1.0, len(p_floors) * min(p_floors))


#: Up to this many non-zero pairs the p-value is exact: every one of the 2**n sign patterns of
#: the (average, for ties) ranks is enumerated, so ties never fall back to an approximation.
EXACT_MAX_PAIRS = 16


def _signed_rank_exact_p(nonzero: np.ndarray) -> tuple[float, float]:
    """``(W+, two-sided p)`` by enumerating all sign flips of the ranks of ``|nonzero|``."""
    from scipy.stats import rankdata

    ranks = rankdata(np.round(np.abs(nonzero), 12))
    n = ranks.size
    w_plus = float(ranks[nonzero > 0].sum())
    signs = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    null = signs @ ranks
    centre = ranks.sum() / 2.0
    extreme = np.abs(null - centre) >= abs(w_plus - centre) - 1e-9
    return w_plus, float(extreme.mean())


def wilcoxon_signed_rank(diff: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired differences ``diff`` (zeros dropped, as in
    Wilcoxon's original test): exact permutation p up to :data:`EXACT_MAX_PAIRS` non-zero pairs
    (ties included), scipy's normal approximation above. ``p_floor`` is the smallest p
    attainable at this n."""
    d = np.asarray(diff, dtype=float)
    nonzero = d[~np.isclose(d, 0.0, atol=1e-12)]
    n = int(nonzero.size)
    result: dict[str, Any] = {"n": int(d.size), "n_nonzero": n, "p_floor": wilcoxon_p_floor(n)}
    if n == 0:
        return {**result, "statistic": 0.0, "p_value": 1.0, "method": "all differences zero"}
    if n <= EXACT_MAX_PAIRS:
        statistic, p_value = _signed_rank_exact_p(nonzero)
        return {**result, "statistic": statistic, "p_value": p_value, "method": "exact"}
    from scipy.stats import wilcoxon

    test = wilcoxon(nonzero, zero_method="wilcox", method="approx")
    return {**result, "statistic": float(test.statistic), "p_value": float(test.pvalue),
            "method": "approx"}  # fmt: skip


def cohens_dz(diff: Sequence[float]) -> float | None:
    """Cohen's d_z: mean paired difference over the SD (ddof=1) of the differences; ``None``
    when undefined (fewer than 2 pairs, or all differences equal)."""
    d = np.asarray(diff, dtype=float)
    if d.size < 2:
        return None
    sd = float(d.std(ddof=1))
    return None if sd == 0.0 else float(d.mean() / sd)


def rank_biserial(diff: Sequence[float]) -> float | None:
    """Matched-pairs rank-biserial correlation ``(W+ − W−) / (W+ + W−)`` of the non-zero
    differences (average ranks for ties); +1 when every pair favours the first model."""
    from scipy.stats import rankdata

    d = np.asarray(diff, dtype=float)
    d = d[~np.isclose(d, 0.0, atol=1e-12)]
    if d.size == 0:
        return None
    ranks = rankdata(np.abs(d))
    positive, negative = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((positive - negative) / (positive + negative))


def paired_bootstrap_ci(
    diff: Sequence[float],
    *,
    n_boot: int = SEED_BOOTSTRAPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean paired difference (pairs resampled with
    replacement); ``None`` with fewer than 2 pairs."""
    d = np.asarray(diff, dtype=float)
    if d.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (``None`` entries are skipped and stay ``None``)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_comparison(
    first: dict[int, float],
    second: dict[int, float],
    *,
    n_boot: int = SEED_BOOTSTRAPS,
    seed: int = 0,
) -> dict[str, Any]:
    """``first − second`` over the seeds both have: mean, bootstrap CI, d_z, rank-biserial,
    Wilcoxon (with its p floor). Fewer than 2 common seeds: only ``n_pairs`` and ``seeds``."""
    seeds = sorted(set(first) & set(second))
    base: dict[str, Any] = {"n_pairs": len(seeds), "seeds": seeds}
    if len(seeds) < 2:
        return {**base, "p_value": None, "p_floor": wilcoxon_p_floor(len(seeds))}
    diff = np.array([first[s] - second[s] for s in seeds])
    test = wilcoxon_signed_rank(diff)
    return {
        **base,
        "mean_difference": float(diff.mean()),
        "ci95": paired_bootstrap_ci(diff, n_boot=n_boot, seed=seed),
        "cohens_dz": cohens_dz(diff),
        "rank_biserial": rank_biserial(diff),
        "wilcoxon_statistic": test["statistic"],
        "wilcoxon_method": test["method"],
        "p_value": test["p_value"],
        "p_floor": test["p_floor"],
        "n_nonzero": test["n_nonzero"],
    }


def reading(comparison: dict[str, Any], alpha: float = ALPHA) -> str:
    """What a comparison lets one say, in words (uses ``p_holm`` when present, and the family's
    ``holm_floor`` to say when the correction, not the data, is what cannot reject)."""
    n = comparison["n_pairs"]
    if comparison.get("p_value") is None:
        return f"not tested ({n} common seed(s); at least 2 needed)"
    p = comparison.get("p_holm", comparison["p_value"])
    if comparison["p_floor"] > alpha:
        return (
            f"cannot reject at this n: the smallest attainable p with {comparison['n_nonzero']} "
            f"non-zero pairs is {comparison['p_floor']:.4g} > {alpha}; "
            "no detectable difference at this n"
        )
    if p <= alpha:
        if "p_holm" not in comparison:
            return f"difference detected (p ≤ {alpha}, one test, not corrected for others)"
        return f"difference detected (Holm-adjusted p ≤ {alpha})"
    if comparison["p_value"] <= alpha and "p_holm" in comparison:
        floor = comparison.get("holm_floor")
        why = (
            f"but no Holm-adjusted p of this table can fall below {floor:.4g} at this n"
            if floor is not None and floor > alpha
            else "not after Holm's correction over this table"
        )
        return (
            f"uncorrected p ≤ {alpha}, {why}; no detectable difference at this n after correction"
        )
    return "no detectable difference at this n"


def test_set_bootstrap(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    *,
    n_boot: int = TEST_BOOTSTRAPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """One run's 95 % percentile intervals of its test metrics, test images resampled with
    replacement. ``metric(y_true, y_score)`` returns ``{"acc", "auc"}``; resamples on which a
    metric is undefined (a class absent) are skipped and counted."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    rng = np.random.default_rng(seed)
    n = y_true.shape[0]
    values: dict[str, list[float]] = {"acc": [], "auc": []}
    skipped = 0
    for _ in range(n_boot):
        index = rng.integers(0, n, size=n)
        try:
            result = metric(y_true[index], y_score[index])
        except ValueError:
            skipped += 1
            continue
        for key in values:
            if result[key] is not None and math.isfinite(result[key]):
                values[key].append(result[key])
    tail = (1.0 - confidence) / 2.0
    out: dict[str, Any] = {"n_boot": n_boot, "skipped": skipped, "seed": seed}
    for key, vals in values.items():
        out[f"{key}_ci95"] = (
            [float(v) for v in np.quantile(vals, [tail, 1.0 - tail])] if vals else None
        )
    return out
