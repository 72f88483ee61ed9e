"""The study's figure for one dataset: every seed's test metrics and the table's paired differences.

Top row: test ACC and test AUC of every finished run (one dot per seed, the model's mean as a
black bar); grey lines join the runs of one seed, the pairing the tests use; a dashed line marks
the dataset's target (the best published 28×28 classical result), when it has one. Bottom row:
each tested comparison of the table, first − second, its mean paired difference with the 95 %
paired bootstrap interval over seeds and its Holm-adjusted p (bold where a difference is
detected). Drawn from ``results.json`` alone (:func:`qhqcnn.study.reproduce.run_study` writes it
beside ``results.md``), so the figure and the tables cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qhqcnn.reporting.plots import new_figure, styled
from qhqcnn.study.stats import ALPHA

#: (cell key, axis name, index in a (ACC, AUC) target pair)
METRICS = (("test_acc", "ACC", 0), ("test_auc", "AUC", 1))


def _seed_values(cells: Sequence[Mapping[str, Any]], models: Sequence[str], key: str) -> dict:
    """``{seed: [value per model or nan]}`` for the grey lines that join one seed's runs."""
    values: dict[int, list[float]] = {}
    for c in cells:
        values.setdefault(c["seed"], [np.nan] * len(models))[models.index(c["model"])] = c[key]
    return values


def _draw_runs(ax, cells, models, key, label, goal) -> None:
    x = np.arange(len(models))
    for row in _seed_values(cells, models, key).values():
        ax.plot(x, row, color="0.82", lw=0.8, zorder=1)
    for i, model in enumerate(models):
        values = [c[key] for c in cells if c["model"] == model]
        ax.scatter(np.full(len(values), i), values, s=16, color=f"C{i}", zorder=2)
        ax.hlines(np.mean(values), i - 0.28, i + 0.28, color="black", lw=2, zorder=3)
    if goal is not None:
        ax.axhline(goal, color="0.4", ls="--", lw=1)
        where = ("axes fraction", "data")
        ax.annotate(f"target {goal} (best published 28×28)", (0.01, goal), xycoords=where,
                    va="bottom", ha="left", fontsize=9, color="0.3")  # fmt: skip
    n = [sum(c["model"] == m for c in cells) for m in models]
    ax.set_xticks(x, [f"{m} (n={k})" for m, k in zip(models, n, strict=True)], rotation=20,
                  ha="right", rotation_mode="anchor")  # fmt: skip
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylabel(f"test {label}")
    ax.set_title(f"Test {label}, one dot per seed (bar: mean)")


def _draw_differences(ax, comparisons, label, *, names: bool) -> None:
    if not comparisons:
        ax.text(0.5, 0.5, "no comparison has 2 common seeds yet", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return
    y = np.arange(len(comparisons))[::-1]
    for yi, c in zip(y, comparisons, strict=True):
        low, high = c["ci95"]
        mean = c["mean_difference"]
        detected = c["p_holm"] <= ALPHA
        ax.errorbar(mean, yi, xerr=[[mean - low], [high - mean]], fmt="o", ms=5, capsize=3,
                    color="C3" if detected else "0.3")  # fmt: skip
        weight = "bold" if detected else "normal"
        ax.annotate(f"Holm p {c['p_holm']:.3g}", (1.01, yi), xycoords=("axes fraction", "data"),
                    va="center", fontsize=9, fontweight=weight)  # fmt: skip
    ax.axvline(0, color="0.5", lw=0.8)
    low = min(0.0, *(c["ci95"][0] for c in comparisons))
    high = max(0.0, *(c["ci95"][1] for c in comparisons))
    pad = 0.08 * (high - low or 1.0)
    ax.set_xlim(low - pad, high + pad)  # zero always inside, never on the frame
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ticks = [f"{c['quantum']} − {c['classical']} (n={c['n_pairs']})" for c in comparisons]
    ax.set_yticks(y, ticks if names else [])
    ax.set_ylim(-0.7, len(comparisons) - 0.3)
    ax.set_xlabel(f"difference in test {label}, 95 % paired bootstrap CI")
    ax.set_title(f"Paired differences, test {label}")


@styled
def plot_study(
    study: Mapping[str, Any], dataset: str, *, target: tuple[float, float] | None = None
) -> Figure:
    """The figure of ``dataset`` in a study record (the dict ``results.json`` holds).

    ``target`` is the dataset's (ACC, AUC) target, drawn as a dashed line when given.
    Raises :class:`ValueError` when no run of ``dataset`` has finished.
    """
    cells = [c for c in study["cells"] if c["dataset"] == dataset]
    if not cells:
        raise ValueError(f"no finished run of {dataset} in this study")
    models = [m for m in study["models"] if any(c["model"] == m for c in cells)]
    tested = [c for c in study["comparisons"].get(dataset, []) if c.get("p_value") is not None]
    fig = new_figure(13, 9)
    axes = fig.subplots(2, 2, height_ratios=[1.2, 1])
    for col, (key, label, index) in enumerate(METRICS):
        goal = None if target is None else target[index]
        _draw_runs(axes[0, col], cells, models, key, label, goal)
        comparisons = [c for c in tested if c["metric"] == key]
        _draw_differences(axes[1, col], comparisons, label, names=col == 0)
    fig.suptitle(f"{dataset}: official test split, paired by seed")
    return fig
