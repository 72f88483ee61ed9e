"""The quanvolution family: templates vs hand-computed states, Quanv2d vs a per-patch loop over
Qiskit's reference estimator, the feature cache, and 1-epoch CLI runs of ``quanv`` and ``qcnn``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit.library import UGate
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import Operator, Statevector

from qhqcnn.backends.base import make_backend
from qhqcnn.circuits import (
    amplitude_angles,
    amplitude_encoding,
    patch_angle_encoding,
    pixel_angles,
    qcnn_conv,
    qcnn_dense,
    qcnn_pool,
    qcnn_template,
    quanv_template,
    random_filter,
)
from qhqcnn.circuits.encodings import get_encoding
from qhqcnn.circuits.quanv import patch_qubits
from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec
from qhqcnn.errors import ConfigError
from qhqcnn.models import build_model, parameter_counts
from qhqcnn.nn.feature_cache import VARIANTS, cache_path, cached_features
from qhqcnn.nn.quanv2d import FeatureMemory, Quanv2d

EXACT = make_backend("exact")


def _state(circuit: QuantumCircuit, params=(), values=()) -> np.ndarray:
    bound = circuit.assign_parameters(dict(zip(params, values, strict=True))) if params else circuit
    return Statevector(bound).data


def _basis(index: int, num_qubits: int) -> np.ndarray:
    state = np.zeros(1 << num_qubits, dtype=complex)
    state[index] = 1
    return state


# -- encodings -------------------------------------------------------------------------------
def test_patch_angle_encoding_of_black_and_white_pixels():
    # pixels (row-major) 0, 1 / 1, 0 -> RY(0), RY(pi), RY(pi), RY(0): qubits 1 and 2 flipped
    circuit, inputs = patch_angle_encoding(4)
    angles = pixel_angles(torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(_state(circuit, inputs, angles), _basis(0b0110, 4), atol=1e-12)
    # a grey pixel x = 1/2 gives |+>: RY(pi/2)|0>
    circuit, inputs = patch_angle_encoding(1)
    state = _state(circuit, inputs, pixel_angles(torch.tensor([0.5])).numpy())
    np.testing.assert_allclose(state, [2**-0.5, 2**-0.5], atol=1e-7)


@pytest.mark.parametrize("num_qubits", [1, 2, 3, 4])
def test_amplitude_encoding_prepares_the_normalised_vector(num_qubits):
    circuit, inputs = amplitude_encoding(num_qubits)
    assert len(inputs) == 2**num_qubits - 1
    assert circuit.count_ops().get("cx", 0) == 2**num_qubits - 2
    rng = np.random.default_rng(num_qubits)
    for vector in (rng.uniform(size=2**num_qubits), rng.normal(size=2**num_qubits)):
        angles = amplitude_angles(torch.tensor(vector)).numpy()
        state = _state(circuit, inputs, angles)
        np.testing.assert_allclose(state, vector / np.linalg.norm(vector), atol=1e-12)


def test_amplitude_encoding_known_vector_zero_vector_and_lost_norm():
    circuit, inputs = amplitude_encoding(2)
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 6.0, 9.0, 12.0], [0.0, 0.0, 0.0, 0.0]])
    angles = amplitude_angles(values.double())
    assert angles.shape == (3, 3)
    expected = np.array([1, 2, 3, 4]) / np.sqrt(30)  # |00>, |01>, |10>, |11> (qubit 0 = LSB)
    np.testing.assert_allclose(_state(circuit, inputs, angles[0].numpy()), expected, atol=1e-12)
    torch.testing.assert_close(angles[0], angles[1])  # the norm is lost
    np.testing.assert_allclose(_state(circuit, inputs, angles[2].numpy()), _basis(0, 2))
    # differentiable and batched, with finite gradients even at the zero vector
    leaf = values.clone().requires_grad_(True)
    amplitude_angles(leaf).square().sum().backward()
    assert torch.isfinite(leaf.grad).all()
    with pytest.raises(ConfigError, match="2\\^n"):
        amplitude_angles(torch.ones(3))


# -- filters and QCNN blocks -----------------------------------------------------------------
def test_random_filter_is_seeded_fixed_and_entangling():
    a, b, c = random_filter(4, 2, seed=7), random_filter(4, 2, seed=7), random_filter(4, 2, seed=8)
    assert a.num_parameters == 0
    assert np.allclose(Operator(a).data, Operator(b).data)
    assert not np.allclose(Operator(a).data, Operator(c).data)
    assert a.count_ops()["cx"] == 6 and sum(a.count_ops().values()) == 2 * (4 + 3)
    template = quanv_template(seed=7)
    assert template.num_weights == 0 and template.init_weights(np.random.default_rng()).size == 0
    assert template.output_names == ("Z0", "Z1", "Z2", "Z3")


def test_pooling_acts_only_when_the_discarded_qubit_is_one():
    pool, weights, kept = qcnn_pool(2)
    assert kept == [0] and len(weights) == 3
    values = [0.7, -1.2, 0.4]
    psi = Statevector.from_label("0").evolve(UGate(1.1, 0.3, -0.5))
    for control, expected_kept in (
        ("0", psi),  # control |0>: kept qubit unchanged
        ("1", psi.evolve(UGate(*values))),  # control |1>: U3(theta, phi, lambda) applied
    ):
        start = Statevector.from_label(control).tensor(psi)  # qubit 1 = control, qubit 0 = kept
        out = start.evolve(pool.assign_parameters(dict(zip(weights, values, strict=True))))
        expected = Statevector.from_label(control).tensor(expected_kept)
        assert out.equiv(expected)


def test_conv_block_with_zero_weights_is_a_cnot_brickwork():
    conv, weights = qcnn_conv(4)
    assert len(weights) == 12  # one kernel shared by the pairs (0,1), (2,3), (1,2), (3,0)
    assert conv.count_ops()["cx"] == 4
    start = QuantumCircuit(4)
    start.x(0)
    start.compose(conv.assign_parameters(np.zeros(12)), inplace=True)  # U3(0,0,0) = I
    # |q0=1> -CX(0,1)-> q1=1 -CX(2,3)- -CX(1,2)-> q2=1 -CX(3,0)- : |0111> = index 7
    np.testing.assert_allclose(Statevector(start).data, _basis(7, 4), atol=1e-12)


def test_dense_block_counts_and_identity_rotations():
    dense, weights = qcnn_dense(2, 2)
    assert len(weights) == 3 * 2 * 2 + 2 * 2
    state = _state(dense, weights, np.zeros(len(weights)))
    np.testing.assert_allclose(state, _basis(0, 2), atol=1e-12)  # CX on |00> does nothing


def test_qcnn_template_shape():
    template = qcnn_template()
    assert (template.num_inputs, template.num_weights) == (15, 31)
    assert template.output_names == ("Z0", "Z2", "X0", "X2")  # kept qubits only
    assert set(template.circuit.parameters) == set(template.input_params) | set(
        template.weight_params
    )
    assert template.init_weights(np.random.default_rng(0)).shape == (31,)
    assert qcnn_template(encoding="angle").num_inputs == 4
    with pytest.raises(ConfigError):
        qcnn_template(3)
    with pytest.raises(ConfigError):
        patch_qubits(3, "amplitude")
    assert patch_qubits(4, "amplitude") == 4 and patch_qubits(2, "angle") == 4


# -- Quanv2d ---------------------------------------------------------------------------------
def _reference_quanv(template, encoding, images, window, stride, weights=()):
    """Per-patch loop over Qiskit's StatevectorEstimator (the obvious, slow way)."""
    estimator = StatevectorEstimator()
    batch, channels, height, width = images.shape
    side_h, side_w = (height - window) // stride + 1, (width - window) // stride + 1
    n_out = template.num_outputs
    out = np.zeros((batch, channels * n_out, side_h, side_w))
    for b in range(batch):
        for c in range(channels):
            for i in range(side_h):
                for j in range(side_w):
                    patch = images[b, c, i * stride : i * stride + window, j * stride :][:, :window]
                    angles = get_encoding(encoding).classical(patch.reshape(-1).double()).numpy()
                    values = dict(zip(template.input_params, angles, strict=True))
                    values.update(zip(template.weight_params, weights, strict=True))
                    bound = template.circuit.assign_parameters(values)
                    evs = estimator.run([(bound, list(template.observables))]).result()[0].data.evs
                    out[b, c * n_out : (c + 1) * n_out, i, j] = evs
    return out


@pytest.mark.parametrize(
    ("window", "stride", "encoding", "kind", "shape"),
    [
        (2, 2, "angle", "random", (1, 1, 6, 6)),
        (2, 1, "amplitude", "trainable", (1, 1, 4, 4)),
        (2, 2, "angle", "trainable", (2, 2, 4, 4)),
    ],
)
def test_quanv2d_equals_a_per_patch_reference_loop(window, stride, encoding, kind, shape):
    template = quanv_template(window, encoding=encoding, filter_kind=kind, layers=1, seed=3)
    layer = Quanv2d(template, EXACT, window=window, stride=stride, encoding=encoding, seed=5)
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = layer(images).numpy()
    weights = layer.quantum.weight.detach().double().numpy()
    expected = _reference_quanv(template, encoding, images, window, stride, weights)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_quanv2d_pixel_range_and_trainable_gradients():
    template = quanv_template(filter_kind="trainable", layers=1)
    layer = Quanv2d(template, EXACT, pixel_range=(-1.0, 1.0))
    images01 = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    plain = Quanv2d(template, EXACT)
    torch.testing.assert_close(layer(images01 * 2 - 1), plain(images01), atol=1e-6, rtol=0)
    out = layer(images01 * 2 - 1)
    assert out.requires_grad and not layer.memoizing
    out.sum().backward()
    assert layer.quantum.weight.grad is not None and layer.quantum.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="inputs"):
        Quanv2d(template, EXACT, window=3)


def test_fixed_filter_is_frozen_and_memoised():
    layer = Quanv2d(quanv_template(), EXACT)
    assert layer.is_fixed and layer.memoizing and not layer.quantum.weight.requires_grad
    images = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    first = layer(images)
    assert not first.requires_grad and len(layer.memory) == 3
    calls = []
    second = layer.memory(images, lambda x: calls.append(x) or layer.quanvolve(x))
    assert calls == [] and torch.equal(first, second)
    mixed = torch.cat([images[:1], torch.rand(1, 1, 6, 6)])
    layer.memory(mixed, lambda x: calls.append(x) or layer.quanvolve(x))
    assert len(calls) == 1 and calls[0].shape[0] == 1  # only the new image is computed
    layer.set_backend(make_backend("statevector"))
    assert len(layer.memory) == 0 and not layer.quantum.weight.requires_grad


def test_feature_memory_cap():
    memory = FeatureMemory(max_bytes=2 * 4 * 4)
    memory.store(torch.rand(3, 1, 2, 2), torch.rand(3, 4))
    assert len(memory) == 2 and memory.nbytes == 32


# -- the on-disk cache -----------------------------------------------------------------------
def test_feature_cache_hit_miss_and_invalidation(tmp_path):
    images = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3)) * 2 - 1
    where = {"cache_dir": tmp_path, "dataset": "toy", "dataset_md5": "0" * 32, "split": "train"}

    def fresh(seed=0):
        return Quanv2d(quanv_template(seed=seed), EXACT, pixel_range=(-1.0, 1.0))

    layer = fresh()
    features, path, hit = cached_features(layer, images, variants=tuple(VARIANTS), **where)
    assert not hit and path.exists() and features.shape == (4, 4, 4, 3, 3)
    np.testing.assert_allclose(features[2], layer.quanvolve(images.flip(-2)).numpy(), atol=1e-6)
    # every variant is now in memory: flipped batches cost no evaluation
    layer.memory(images.flip(-1), lambda x: pytest.fail("flipped images should be remembered"))

    again, path2, hit = cached_features(fresh(), images, variants=tuple(VARIANTS), **where)
    assert hit and path2 == path and np.array_equal(again, features)

    # a different filter, split or image set is a different entry (a miss)
    _, other, hit = cached_features(fresh(seed=1), images, variants=tuple(VARIANTS), **where)
    assert not hit and other != path
    assert cache_path(fresh(), images, **{**where, "split": "val"}) != cache_path(
        fresh(), images, **where
    )
    assert cache_path(fresh(), images[:3], **where) != cache_path(fresh(), images, **where)

    # a corrupt entry is recomputed and replaced
    path.write_bytes(b"not an npz")
    repaired, _, hit = cached_features(fresh(), images, variants=tuple(VARIANTS), **where)
    assert not hit and np.allclose(repaired, features)

    trainable = Quanv2d(quanv_template(filter_kind="trainable"), EXACT)
    with pytest.raises(ValueError, match="fixed"):
        cached_features(trainable, images, **where)


# -- models ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "quantum", "outputs"),
    [
        (ModelSpec(model="quanv"), 0, 2),
        (ModelSpec(model="quanv", quanv_filter="trainable", layers=1), 12, 2),
        (ModelSpec(model="quanv", encoding="amplitude", window=4, stride=4), 0, 2),
        (ModelSpec(model="qcnn", encoding="amplitude"), 31, 2),
        (ModelSpec(model="qcnn"), 31, 2),
    ],
)
def test_models_build_and_run(spec, quantum, outputs):
    model = build_model(spec, in_channels=1, num_classes=outputs, backend=EXACT, seed=0)
    counts = parameter_counts(model)
    assert counts["quantum"] == quantum and counts["head"] == quantum
    assert spec.is_quantum and model.head.template.name == spec.template().name
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    assert model(images).shape == (3, outputs)


def test_model_errors_and_hqcnn_untouched():
    assert ModelSpec().template().num_weights == 38
    with pytest.raises(ConfigError, match="backend"):
        build_model(ModelSpec(model="quanv"), 1, 2, None)
    with pytest.raises(ConfigError, match="2\\^n"):
        ModelSpec(model="quanv", encoding="amplitude", window=3).template()
    with pytest.raises(ConfigError, match="filter"):
        ModelSpec(model="quanv", quanv_filter="magic").template()


# -- end to end on real BreastMNIST ----------------------------------------------------------
SMALL = ["--max-train", "32", "--max-eval", "24", "--batch-size", "16", "--epochs", "1"]


def _train(tmp_path, name, *extra, data_dir):
    out = tmp_path / name
    argv = ["train", "--out", str(out), "--data-dir", data_dir, "--no-progress", *SMALL, *extra]
    return main(argv), out


def test_quanv_trains_one_epoch_and_reuses_the_cache(tmp_path, breast_dir, capsys, check_run):
    cache = tmp_path / "cache"
    code, out = _train(tmp_path, "q1", "--model", "quanv", "--cache-dir", str(cache),
                       data_dir=breast_dir)  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("computed") == 3 and "AUC" in printed
    record = json.loads((out / "config.json").read_text())
    assert record["parameters"]["quantum"] == 0
    assert record["circuit"]["name"] == "quanv" and record["circuit"]["backend"]["name"] == "exact"
    assert record["config"]["model"]["quanv_filter"] == "random"
    assert len(list((cache / "quanv").glob("breastmnist-*.npz"))) == 3
    check_run(out, n_images=24)

    code, _ = _train(tmp_path, "q2", "--model", "quanv", "--cache-dir", str(cache),
                     "--seed", "1", data_dir=breast_dir)  # fmt: skip
    assert code == 0 and capsys.readouterr().out.count("cache hit") == 3


def test_qcnn_trains_one_epoch(tmp_path, breast_dir):
    code, out = _train(tmp_path, "qc", "--model", "qcnn", "--encoding", "amplitude",
                       data_dir=breast_dir)  # fmt: skip
    assert code == 0
    record = json.loads((out / "config.json").read_text())
    assert record["parameters"]["quantum"] == 31 and record["parameters"]["classical"] == 10
    assert record["circuit"]["num_inputs"] == 15
    assert (out / "best.pt").exists() and (out / "metrics_test.json").exists()


# -- classical twins -------------------------------------------------------------------------
def _build(spec, seed=0, channels=1):
    torch.manual_seed(seed)  # as the Trainer does before building
    backend = EXACT if spec.is_quantum else None
    return build_model(spec, in_channels=channels, num_classes=2, backend=backend, seed=seed)


@pytest.mark.parametrize(
    ("options", "quanv_head", "twin_head"),
    [
        ({}, 0, 0),  # fixed random filter vs frozen random conv: no trainable weights
        ({"quanv_filter": "trainable"}, 24, 20),  # 3·4·2 circuit weights vs 2×2×4 + 4
        ({"quanv_filter": "trainable", "layers": 1}, 12, 20),
    ],
)
def test_quanv_twin_parameter_counts(options, quanv_head, twin_head):
    quantum = parameter_counts(_build(ModelSpec(model="quanv", **options)))
    twin = parameter_counts(_build(ModelSpec(model="quanv-classical", **options)))
    assert quantum["quantum"] == quanv_head and twin["quantum"] == 0
    # everything but the swapped layer is the same network
    assert twin["total"] - quantum["total"] == twin_head - quanv_head
    assert abs(twin["total"] - quantum["total"]) <= 8


@pytest.mark.parametrize(("encoding", "twin_weights"), [("angle", 31), ("amplitude", 24)])
def test_qcnn_twin_parameter_counts(encoding, twin_weights):
    quantum = parameter_counts(_build(ModelSpec(model="qcnn", encoding=encoding)))
    twin = parameter_counts(_build(ModelSpec(model="qcnn-classical", encoding=encoding)))
    assert quantum["quantum"] == 31 and twin["quantum"] == 0 and twin["head"] == twin_weights
    assert twin["total"] - quantum["total"] == twin_weights - 31
    assert abs(twin["total"] - quantum["total"]) <= 7  # 15 inputs: widths give 24 or 44


def test_matched_width():
    from qhqcnn.models.qcnn import matched_width

    assert matched_width(4, 4, 31) == 3  # 4·3 + 3 + 3·4 + 4 = 31
    assert matched_width(15, 4, 31) == 1  # 24 (h = 2 would give 44)
    assert matched_width(2, 2, 1) == 1


def test_twins_need_no_backend_and_stand_in_for_the_circuit():
    for quantum, twin in (("quanv", "quanv-classical"), ("qcnn", "qcnn-classical")):
        spec = ModelSpec(model=twin)
        assert not spec.is_quantum
        assert spec.template().name == ModelSpec(model=quantum).template().name
        model = build_model(spec, 3, 4, None, seed=0)
        assert not hasattr(model.head, "template")  # no circuit in its run record
        assert model(torch.rand(2, 3, 28, 28) * 2 - 1).shape == (2, 4)


def test_classical_quanv2d_layout_frozen_filter_and_seeds():
    from qhqcnn.models.quanv import ClassicalQuanv2d

    layer = ClassicalQuanv2d(2, 2, 4, trainable=False, seed=0)
    images = torch.rand(2, 3, 6, 6) * 2 - 1
    out = layer(images)
    assert out.shape == (2, 12, 3, 3) and out.abs().max() <= 1
    for c in range(3):  # output channel c·n_out + j is filter j on input channel c
        expected = torch.tanh(layer.conv(images[:, c : c + 1]))
        torch.testing.assert_close(out[:, 4 * c : 4 * c + 4], expected)
    assert layer.is_fixed and not any(p.requires_grad for p in layer.parameters())
    assert layer.out_channels(3) == 12 and layer.out_size(28) == 14
    # the frozen twin, like the fixed random filter, depends on filter_seed, not the run seed
    a = _build(ModelSpec(model="quanv-classical"), seed=0).head.conv.weight
    b = _build(ModelSpec(model="quanv-classical"), seed=1).head.conv.weight
    c = _build(ModelSpec(model="quanv-classical", filter_seed=1), seed=0).head.conv.weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    trainable = _build(ModelSpec(model="quanv-classical", quanv_filter="trainable")).head
    assert not trainable.is_fixed and trainable.conv.weight.requires_grad


@pytest.mark.parametrize(
    ("quantum", "twin"), [("quanv", "quanv-classical"), ("qcnn", "qcnn-classical")]
)
def test_twin_shares_the_initialisation_of_every_other_layer(quantum, twin):
    a = _build(ModelSpec(model=quantum), seed=3).state_dict()
    b = _build(ModelSpec(model=twin), seed=3).state_dict()
    shared = [k for k in a if not k.startswith("head.") and k in b]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)
