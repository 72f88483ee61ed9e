"""Figures of a run: training curves, ROC curves and confusion matrices (matplotlib, Agg).

Every function returns a :class:`matplotlib.figure.Figure` drawn on an Agg canvas (no pyplot
state, nothing is ever shown); :func:`save_figure` writes it atomically and reproducibly (no
dates in the files, fixed SVG ids), so regenerating a figure gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, roc_auc_score, roc_curve

from qhqcnn.io.files import atomic_write
from qhqcnn.training.metrics import MULTI_LABEL

#: Metadata that would make files differ between two runs of the same code (dates).
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}, "png": {}}
_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "svg.hashsalt": "qhqcnn",
}
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#d62728"


def styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under the package's figure style (readable fonts) without changing global rcParams."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on its own Agg canvas (independent of pyplot and its backend)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(
    fig: Figure,
    path: str | os.PathLike,
    *,
    dpi: int = 150,
    tight: bool = False,
    palette: bool = False,
) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: png, svg, pdf) atomically.

    Dates are left out and SVG ids are salted with a constant, so the bytes depend only on the
    figure and the matplotlib version. ``tight`` crops the white margins; ``palette`` stores a
    PNG with 256 colours (about 3x smaller; right for circuit drawings, which use few colours).
    """
    fmt = Path(path).suffix.lstrip(".").lower()
    metadata = _METADATA.get(fmt, {})

    def render(target) -> None:
        with matplotlib.rc_context({"svg.hashsalt": "qhqcnn"}):
            fig.savefig(
                target,
                format=fmt,
                dpi=dpi,
                metadata=metadata,
                facecolor="white",
                bbox_inches="tight" if tight else None,
                pad_inches=0.1,
            )

    def write(tmp: Path) -> None:
        if not (palette and fmt == "png"):
            render(tmp)
            return
        from PIL import Image

        buffer = io.BytesIO()
        render(buffer)
        buffer.seek(0)
        with Image.open(buffer) as image:
            quantized = image.convert("RGB").quantize(
                colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
        quantized.save(tmp, format="PNG", optimize=True)

    return atomic_write(path, write)


def short_name(name: str, limit: int = 22) -> str:
    """A class name cut to ``limit`` characters for axis labels and legends."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1].rstrip(" ,(") + "…"


def class_labels(class_names: Sequence[str], n: int, limit: int = 22) -> list[str]:
    """``"k: name"`` for classes 0..n-1 (names cut to ``limit``; just ``k`` when name is k)."""
    labels = []
    for k in range(n):
        name = str(class_names[k]) if k < len(class_names) else str(k)
        labels.append(name if name == str(k) else f"{k}: {short_name(name, limit)}")
    return labels


# -- training curves ---------------------------------------------------------------------------
_PANELS = (
    ("loss", "Loss", "loss (nats)"),
    ("acc", "Accuracy", "accuracy (fraction correct)"),
    ("auc", "ROC AUC", "area under the ROC curve"),
)


def best_record(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The epoch record with the best validation AUC (the checkpoint that is evaluated)."""

    def auc(record: Mapping[str, Any]) -> float:
        value = record.get("val_auc")
        return float("-inf") if value is None or np.isnan(value) else float(value)

    return max(history, key=auc)


@styled
def plot_training_curves(
    history: Sequence[Mapping[str, Any]], *, title: str = "", loss_name: str = "cross-entropy"
) -> Figure:
    """Loss, ACC and AUC per epoch, train and validation, with the best validation epoch marked.

    Train values are those measured while training (augmentation and dropout active); records
    without ``train_acc``/``train_auc`` (older runs) show validation only.
    """
    if not history:
        raise ValueError("the history is empty: no epoch has finished")
    epochs = np.array([record["epoch"] for record in history])
    marker = "o" if len(epochs) <= 30 else None
    best = best_record(history)
    fig = new_figure(13.0, 4.0)
    axes = fig.subplots(1, 3)
    for ax, (key, panel, ylabel) in zip(axes, _PANELS, strict=True):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            values = [record.get(f"{split}_{key}") for record in history]
            if all(v is None for v in values):
                continue
            ys = np.array([np.nan if v is None else v for v in values], dtype=float)
            label = "train" if split == "train" else "validation"
            ax.plot(epochs, ys, color=color, marker=marker, markersize=4, label=label)
        ax.axvline(
            best["epoch"],
            color="0.45",
            linestyle=":",
            linewidth=1.4,
            label=f"best val AUC (epoch {best['epoch']})",
        )
        ax.set_title(f"{panel} ({loss_name})" if key == "loss" else panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{loss_name} {ylabel}" if key == "loss" else ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.04)
        if key != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    if title:
        fig.suptitle(title, fontsize=13)
    return fig


# -- ROC curves -------------------------------------------------------------------------------
def _one_vs_rest(y_true: np.ndarray, y_score: np.ndarray, task: str) -> list[tuple[int, Any, Any]]:
    """(class index, binary truth, score) for each curve to draw."""
    y_score = np.asarray(y_score, dtype=float)
    if task == MULTI_LABEL:
        truth = np.asarray(y_true).reshape(len(y_score), -1)
        return [(k, truth[:, k], y_score[:, k]) for k in range(y_score.shape[1])]
    labels = np.asarray(y_true).reshape(-1)
    if y_score.ndim == 1 or y_score.shape[1] == 1:
        return [(1, labels == 1, y_score.reshape(-1))]
    if y_score.shape[1] == 2:  # binary: the positive class (index 1), as medmnist scores it
        return [(1, labels == 1, y_score[:, 1])]
    return [(k, labels == k, y_score[:, k]) for k in range(y_score.shape[1])]


@styled
def plot_roc_curves(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: str,
    class_names: Sequence[str],
    *,
    title: str = "ROC curves",
) -> Figure:
    """ROC curve of the positive class (binary) or one-vs-rest per class / label, with AUCs.

    A class absent from ``y_true`` (or present in every sample) has no ROC curve; its legend entry
    says so.
    """
    curves = _one_vs_rest(y_true, y_score, task)
    many = len(curves) > 6
    fig = new_figure(9.4 if many else 6.0, 5.6 if many else 5.2)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
    colors = matplotlib.colormaps["tab20" if len(curves) > 10 else "tab10"]
    aucs = []
    names = class_labels(class_names, max(k for k, _, _ in curves) + 1)
    for i, (k, truth, score) in enumerate(curves):
        name = names[k]
        truth = np.asarray(truth, dtype=bool)
        if truth.all() or not truth.any():
            ax.plot([], [], color=colors(i), label=f"{name} (not in both groups)")
            continue
        fpr, tpr, _ = roc_curve(truth, score)
        auc = roc_auc_score(truth, score)
        aucs.append(auc)
        ax.plot(fpr, tpr, color=colors(i), linewidth=1.8, label=f"{name} (AUC {auc:.3f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    if len(curves) > 1 and aucs:
        title = f"{title}\none-vs-rest, mean AUC {np.mean(aucs):.3f}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:  # beside the axes; constrained layout makes room for a figure legend "outside"
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", frameon=False)
    else:
        ax.legend(loc="lower right")
    return fig


# -- confusion matrix -------------------------------------------------------------------------
def predicted_labels(y_score: np.ndarray, task: str) -> np.ndarray:
    """Predictions as medmnist's ACC counts them: argmax, or score > 0.5 per label (multi-label)."""
    y_score = np.asarray(y_score, dtype=float)
    if task == MULTI_LABEL:
        return (y_score > 0.5).astype(int)
    if y_score.ndim == 1 or y_score.shape[1] == 1:
        return (y_score.reshape(-1) > 0.5).astype(int)
    return np.argmax(y_score, axis=1)


def _annotate(ax, matrix: np.ndarray, text: np.ndarray, image) -> None:
    """Write ``text[i, j]`` on each cell in black or white, whichever reads better."""
    threshold = image.norm(matrix.max()) / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if image.norm(value) > threshold else "black"
        ax.text(j, i, text[i, j], ha="center", va="center", color=color, fontsize=9)


@styled
def plot_confusion_matrix(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: str,
    class_names: Sequence[str],
    *,
    title: str = "Confusion matrix",
) -> Figure:
    """Counts and row percentages (true class → predicted class), from sklearn.

    Multi-label tasks get one row per label with its TN, FP, FN and TP counts.
    """
    y_pred = predicted_labels(y_score, task)
    if task == MULTI_LABEL:
        per_label = multilabel_confusion_matrix(np.asarray(y_true).astype(int), y_pred)
        matrix = per_label.reshape(len(per_label), 4)  # tn, fp, fn, tp
        fig = new_figure(6.4, 1.2 + 0.38 * len(matrix))
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="Blues", aspect="auto")
        _annotate(ax, matrix, matrix.astype(str), image)
        ax.set_xticks(range(4), ["TN", "FP", "FN", "TP"])
        ax.set_yticks(range(len(matrix)), class_labels(class_names, len(matrix), 18))
        ax.set_xlabel("outcome per label (threshold 0.5)")
        ax.set_ylabel("label")
    else:
        labels = np.asarray(y_true).reshape(-1).astype(int)
        n = max(len(class_names), int(labels.max(initial=0)) + 1, int(y_pred.max(initial=0)) + 1)
        matrix = confusion_matrix(labels, y_pred, labels=list(range(n)))
        rows = matrix.sum(axis=1, keepdims=True)
        percent = np.divide(100.0 * matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
        text = np.array(
            [
                [f"{c}\n{p:.0f}%" if c else "0" for c, p in zip(r, q, strict=True)]
                for r, q in zip(matrix, percent, strict=True)
            ]
        )
        side = 3.2 + 0.55 * n
        fig = new_figure(side + 1.6, side)
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="Blues")
        _annotate(ax, matrix, text, image)
        ticks = class_labels(class_names, n, 18)
        ax.set_xticks(
            range(n), ticks, rotation=45 if n > 2 else 0, ha="right" if n > 2 else "center"
        )
        ax.set_yticks(range(n), ticks)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    bar = fig.colorbar(image, ax=ax, label="images")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    detail = "per label" if task == MULTI_LABEL else "count and % of the true class"
    ax.set_title(f"{title}\n(n = {len(y_pred)} images; {detail})")
    return fig
