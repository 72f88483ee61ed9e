"""Every private attribute of an upstream package that qhqcnn uses, in one place.

Each function here reads or sets one private part of Qiskit, qiskit-aer or
qiskit-machine-learning; ``tests/test_compat.py`` has a test per function, so an upstream
upgrade that moves one of them fails loudly here instead of silently somewhere else. The
versions these were checked against are the upper bounds in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

# -- qiskit-aer NoiseModel ---------------------------------------------------------------------


def local_quantum_errors(model: Any) -> dict[str, dict[tuple[int, ...], Any]]:
    """``{instruction: {qubits: QuantumError}}``: errors on specific qubits."""
    return model._local_quantum_errors


def default_quantum_errors(model: Any) -> dict[str, Any]:
    """``{instruction: QuantumError}``: errors on every qubit."""
    return model._default_quantum_errors


def local_readout_errors(model: Any) -> dict[tuple[int, ...], Any]:
    """``{qubits: ReadoutError}``: readout errors on specific qubits."""
    return model._local_readout_errors


def default_readout_error(model: Any) -> Any:
    """The all-qubit ``ReadoutError`` (or ``None``)."""
    return model._default_readout_error


def custom_noise_passes(model: Any) -> list[Any]:
    """The transpiler passes a model applies (Aer's relaxation and the like)."""
    return model._custom_noise_passes


def set_custom_noise_passes(model: Any, passes: list[Any]) -> None:
    """Give ``model`` the custom noise passes ``passes``."""
    model._custom_noise_passes = list(passes)


# -- qiskit-machine-learning -------------------------------------------------------------------


def assign_unique_parameters(*args: Any, **kwargs: Any) -> Any:
    """qiskit-machine-learning's ``gradients.utils._assign_unique_parameters``."""
    from qiskit_machine_learning.gradients.utils import _assign_unique_parameters

    return _assign_unique_parameters(*args, **kwargs)


def set_connector_network(connector: Any, network: Any) -> None:
    """Make ``TorchConnector`` evaluate ``network`` while keeping its weight ``Parameter``
    (the object optimisers and checkpoints hold)."""
    if not hasattr(connector, "_neural_network"):
        raise AttributeError("TorchConnector no longer has _neural_network")
    connector._neural_network = network


def connector_network(connector: Any) -> Any:
    """The neural network a ``TorchConnector`` evaluates."""
    return connector._neural_network
