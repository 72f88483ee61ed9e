"""The circuit inputs of a trained run: classical features computed locally, trained weights.

Only the circuit goes to the device. The classical layers before it run here
(``model.angles``), giving the circuit's input angles: one parameter set ("row") per image for
``hqcnn`` and ``qcnn``, one per image patch and channel for ``quanv`` (196 per 28×28
grey-scale image with the 2×2/stride-2 filter). The trained circuit weights come from the
quantum layer, and the trained layers after the circuit (``model.readout()``) are kept to turn
the rows' outputs back into each image's class scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qhqcnn.backends.base import make_backend
from qhqcnn.config import ModelSpec
from qhqcnn.errors import ConfigError
from qhqcnn.evaluation.evaluate import SPLITS, load_trained_model
from qhqcnn.models import build_model, classical_twins
from qhqcnn.reporting.plots import predicted_labels
from qhqcnn.training.metrics import medmnist_metrics, scores_from_logits
from qhqcnn.training.rundir import RunDir
from qhqcnn.training.trainer import load_data


@dataclass
class RunInputs:
    """Everything a hardware job needs from a trained run, for the chosen images.

    ``angles`` has ``rows_per_image`` rows (circuit parameter sets) per image, image by image.
    """

    run_dir: str
    dataset: str
    relabel: str | None
    split: str
    task: str
    n_channels: int
    n_classes: int
    spec: ModelSpec
    checkpoint_epoch: int
    indices: np.ndarray
    labels: np.ndarray
    angles: np.ndarray
    weights: np.ndarray
    classifier_state: dict[str, Any]
    rows_per_image: int = 1
    image_size: int = 28

    @property
    def n_images(self) -> int:
        return int(len(self.indices))


def select_indices(n_available: int, limit: int | None, offset: int = 0) -> np.ndarray:
    """Indices ``offset … offset+limit−1`` of a split with ``n_available`` images."""
    if offset < 0 or offset >= n_available:
        raise ConfigError(f"offset {offset} is outside the split's {n_available} images")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    stop = n_available if limit is None else min(n_available, offset + limit)
    return np.arange(offset, stop)


def load_run_inputs(
    run_dir: str | Path,
    split: str = "test",
    *,
    limit: int | None = None,
    offset: int = 0,
    data_dir: str | None = None,
) -> RunInputs:
    """Load a trained HQCNN, QCNN or quanv run and compute the circuit inputs of the chosen
    images."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    config = RunDir(run_dir).config()
    if not config.model.is_quantum:
        raise ConfigError(f"{run_dir} is a {config.model.model!r} run: it has no quantum circuit")
    # The whole split (training may have capped it with --max-eval), then the chosen slice.
    data = load_data(replace(config, max_train=None, max_eval=None), data_dir, splits=(split,))
    tensors = data.splits[split]
    indices = select_indices(int(tensors.images.shape[0]), limit, offset)
    # Any backend can rebuild the model: only its classical parts and stored weights are used.
    model, epoch = load_trained_model(run_dir, data.info, config, make_backend("statevector"))
    with torch.no_grad():
        angles = model.circuit_inputs(tensors.images[torch.as_tensor(indices)]).double().numpy()
    weights = model.head.weight.detach().double().numpy().copy()
    readout = model.readout().state_dict()
    classifier = {k: v.detach().cpu().numpy() for k, v in readout.items()}
    return RunInputs(
        run_dir=str(run_dir),
        dataset=config.dataset,
        relabel=config.relabel,
        split=split,
        task=data.info.task,
        n_channels=data.info.n_channels,
        n_classes=data.info.n_classes,
        spec=config.model,
        checkpoint_epoch=int(epoch),
        indices=indices,
        labels=tensors.labels.numpy()[indices],
        angles=angles,
        weights=weights,
        classifier_state=classifier,
        rows_per_image=angles.shape[0] // len(indices),
        image_size=config.size,
    )


def parameter_values(
    circuit,
    input_params: Sequence,
    weight_params: Sequence,
    angles: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """``(n_images, circuit.num_parameters)`` values in ``circuit.parameters`` order.

    Parameters are matched by name, so the template, its ISA circuit and a QPY copy of it all
    bind the same values.
    """
    angles = np.atleast_2d(np.asarray(angles, dtype=float))
    position = {param.name: i for i, param in enumerate(circuit.parameters)}
    names = [p.name for p in input_params] + [p.name for p in weight_params]
    missing = sorted(set(position) - set(names))
    unknown = sorted(set(names) - set(position))
    if missing or unknown:
        raise ConfigError(
            f"circuit parameters do not match the template (missing {missing}, unknown {unknown})"
        )
    values = np.empty((angles.shape[0], len(position)))
    for column, param in enumerate(input_params):
        values[:, position[param.name]] = angles[:, column]
    for column, param in enumerate(weight_params):
        values[:, position[param.name]] = weights[column]
    return values


def build_classifier(
    spec: ModelSpec,
    n_channels: int,
    n_classes: int,
    state: dict[str, Any],
    image_size: int = 28,
) -> nn.Module:
    """The trained layers after the circuit (``model.readout()``), in eval mode: circuit
    outputs, ``rows_per_image`` rows per image, → class logits."""
    twin = replace(spec, model=classical_twins()[spec.model])
    classifier = build_model(twin, n_channels, n_classes, image_size=image_size).readout()
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
    classifier.load_state_dict(tensors)
    return classifier.eval()


def score_outputs(
    classifier: nn.Module, outputs: np.ndarray, labels: np.ndarray, task: str
) -> dict[str, Any]:
    """Class scores, predicted classes and ACC/AUC from the circuit's expectation values."""
    with torch.no_grad():
        logits = classifier(torch.as_tensor(np.asarray(outputs), dtype=torch.float32))
    y_score = scores_from_logits(logits, task)
    metrics = medmnist_metrics(labels, y_score, task)
    return {"y_score": y_score, "y_pred": predicted_labels(y_score, task), **metrics}
