"""Calibrated readout: undo the per-output scale and shift the device applies to ⟨O⟩.

Device noise (depolarisation, relaxation, residual readout error) shrinks each expectation value
toward a fixed point: to first order, ⟨O_j⟩ measured ≈ a_j · ⟨O_j⟩ exact + b_j with 0 < a_j < 1.
The trained layers after the circuit saw exact values, so they get a compressed, shifted input.

``--calibration affine`` runs a small set of *training* images (``calibration_images``, never test
images) in the same Batch as the evaluated images, fits ``a_j, b_j`` per output by least squares
against their exact values (computed locally on the exact engine), and maps every measured
value back, ``(m − b_j) / a_j``, before the trained layers. The fit, its inputs and residuals are
written to ``calibration.json`` in the job record and to the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qhqcnn.errors import ConfigError

CALIBRATION_FILE = "calibration.json"
#: The split calibration images come from; fitting on any other is refused.
CALIBRATION_SPLIT = "train"
#: Scales below this are clipped (a near-zero scale would blow up the shot noise).
MIN_SCALE = 0.05


def check_calibration_split(split: str) -> None:
    """Calibration is fitted on training images only: the test split must stay unseen."""
    if split != CALIBRATION_SPLIT:
        raise ConfigError(
            f"calibration must be fitted on {CALIBRATION_SPLIT} images, not {split!r} images: "
            "fitting it on the evaluated (test) images would leak their answers into the report"
        )


def fit_affine(
    measured: np.ndarray,
    exact: np.ndarray,
    *,
    split: str,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Per-output least-squares ``measured ≈ scale · exact + shift`` on calibration rows."""
    check_calibration_split(split)
    measured, exact = np.atleast_2d(measured).astype(float), np.atleast_2d(exact).astype(float)
    if measured.shape != exact.shape or measured.shape[0] < 2:
        raise ConfigError(
            f"calibration needs matching (rows >= 2, outputs) arrays, got {measured.shape} and "
            f"{exact.shape}"
        )
    scales, shifts, residuals = [], [], []
    for j in range(measured.shape[1]):
        x, y = exact[:, j], measured[:, j]
        if np.ptp(x) < 1e-9:  # an output that never varies: only a shift is identifiable
            scale, shift = 1.0, float(np.mean(y - x))
        else:
            scale, shift = (float(v) for v in np.polyfit(x, y, 1))
        residuals.append(float(np.sqrt(np.mean((y - (scale * x + shift)) ** 2))))
        scales.append(scale)
        shifts.append(shift)
    return {
        "method": "affine",
        "split": split,
        "rows": int(measured.shape[0]),
        "outputs": names or [f"o{j}" for j in range(measured.shape[1])],
        "scale": scales,
        "shift": shifts,
        "rmse": residuals,
        "min_scale": MIN_SCALE,
    }


def apply_affine(fit: dict[str, Any], measured: np.ndarray) -> np.ndarray:
    """``(measured − shift) / scale`` per output (scales clipped away from zero)."""
    scale = np.asarray(fit["scale"], dtype=float)
    shift = np.asarray(fit["shift"], dtype=float)
    scale = np.where(np.abs(scale) < MIN_SCALE, np.copysign(MIN_SCALE, scale), scale)
    return (np.asarray(measured, dtype=float) - shift) / scale
