"""A trained circuit with its weights bound, exported for other tools and for devices.

The inputs stay parameters (one value set per image at run time); the trained weights become
numbers. QPY keeps the input parameters' names and order exactly (OpenQASM 3 renames them);
the text and PNG diagrams are for reading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit

from qhqcnn.errors import ConfigError
from qhqcnn.io.files import atomic_write_json, atomic_write_text

FORMATS = ("qpy", "qasm3", "txt", "png")


def _quantum_layer(source: Any):
    from qhqcnn.nn.quantum_layer import QuantumLayer

    if isinstance(source, QuantumLayer):
        return source
    if isinstance(source, (str, os.PathLike)):
        from qhqcnn.evaluation.evaluate import load_trained_model
        from qhqcnn.training.rundir import RunDir
        from qhqcnn.training.trainer import load_data

        config = RunDir(source).config()
        info = load_data(config, splits=("val",)).info
        source, _ = load_trained_model(source, info, config)
    layer = getattr(source, "quantum_layer", None)
    if layer is None:
        raise ConfigError("this model has no quantum layer: there is no circuit to export")
    return layer


def bound_circuit(source: Any) -> QuantumCircuit:
    """The trained circuit of ``source`` with its weights bound and its inputs free.

    Args:
        source: a :class:`~qhqcnn.nn.QuantumLayer`, a model with a quantum layer, or a run
            directory (its best checkpoint).
    """
    layer = _quantum_layer(source)
    weights = layer.weight.detach().cpu().double().numpy()
    values = dict(zip(layer.template.weight_params, weights.tolist(), strict=True))
    return layer.template.circuit.assign_parameters(values)


def export_trained_circuit(
    source: Any,
    out_dir: str | os.PathLike[str],
    *,
    name: str = "trained",
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Path]:
    """Write the trained circuit (weights bound, inputs free) as QPY, OpenQASM 3 and diagrams.

    Args:
        source: a quantum layer, a model with one, or a run directory.
        out_dir: the folder to write into.
        name: the files' stem (``<name>.qpy``, ``<name>.qasm``, ``<name>.txt``, ``<name>.png``,
            and ``<name>.json`` with the inputs' order and the observables).
        formats: a subset of :data:`FORMATS`.

    Returns:
        ``{format: path}`` of what was written.
    """
    from qhqcnn.export.library import (
        mpl_diagram,
        observable_terms,
        qasm_text,
        text_diagram,
        write_qpy,
    )

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"unknown export format(s) {sorted(unknown)}; choose from {FORMATS}")
    layer = _quantum_layer(source)
    circuit = bound_circuit(layer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "qpy" in formats:
        written["qpy"] = write_qpy(out / f"{name}.qpy", circuit)
    if "qasm3" in formats:
        written["qasm3"] = atomic_write_text(out / f"{name}.qasm", qasm_text(circuit))
    if "txt" in formats:
        written["txt"] = atomic_write_text(out / f"{name}.txt", text_diagram(circuit))
    if "png" in formats:
        import matplotlib.pyplot as plt

        from qhqcnn.reporting.plots import save_figure

        figure = mpl_diagram(circuit)
        try:
            written["png"] = save_figure(figure, out / f"{name}.png", dpi=110, tight=True)
        finally:
            plt.close(figure)
    written["json"] = atomic_write_json(
        out / f"{name}.json",
        {
            "template": layer.template.name,
            "inputs": [p.name for p in layer.template.input_params],
            "outputs": list(layer.template.output_names),
            "observables": observable_terms(layer.template),
            "weights": layer.weight.detach().cpu().double().tolist(),
        },
    )
    return written
