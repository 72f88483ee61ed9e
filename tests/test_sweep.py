"""The fused block plan of the many-qubit layout (:mod:`qhqcnn.engine.sweep`): rotated layouts,
gates sunk into later blocks, widened narrow blocks and the product prefix (an angle encoding
applied as one product state) give the reference path's values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector

from qhqcnn.engine import ExactTorchLayer, StatevectorSimulator, sweep
from qhqcnn.engine.compile import compile_circuit
from qhqcnn.engine.observables import pauli_sum

TOL = 1e-12
#: The module switches of the new plan and their reference (previous path) values.
NEW = {
    "PRODUCT_PREFIX": True,
    "SINK": True,
    "ROTATE": True,
    "FUSED_MIN_QUBITS": 4,
    "PREFIX_FACTOR_QUBITS": 2,
    "BATCHED_PREFIX_TERMS": True,
    "BATCHED_SUMMED_TERMS": True,
    "BATCHED_BUILD": True,
}
REFERENCE = {
    "PRODUCT_PREFIX": False,
    "SINK": False,
    "ROTATE": False,
    "FUSED_MIN_QUBITS": 1,
    "PREFIX_FACTOR_QUBITS": 0,
    "BATCHED_PREFIX_TERMS": False,
    "BATCHED_SUMMED_TERMS": False,
    "BATCHED_BUILD": False,
}
#: The batched forms of the fused sweep's small products (prefix terms, row-summed terms, block
#: building) and their block-by-block reference.
BATCHED = {"BATCHED_PREFIX_TERMS": True, "BATCHED_SUMMED_TERMS": True, "BATCHED_BUILD": True}
BY_BLOCK = dict.fromkeys(BATCHED, False)


def ring_layer(n: int, layers: int = 3, variant: str = "ry"):
    """RY (or per-row U / CRX) encoding, then ``layers`` x [U3 on every qubit (+ an RZZ) + CX
    ring]."""
    x = ParameterVector("x", n)
    w = ParameterVector("w", 3 * n * layers)
    qc = QuantumCircuit(n)
    if variant == "shared-first":
        qc.h(0)  # a shared gate before the encoding: no product prefix
    for i in range(n):
        if variant == "u" and i % 2:
            qc.u(x[i], 0.5 * x[i], -x[i], i)  # angle-dependent generators
        elif variant == "crx" and i == 1:
            qc.crx(x[i], 1, 2)  # a two-qubit per-row gate inside the encoding
        else:
            qc.ry(x[i], i)
        if variant == "ryrz":  # two per-row gates on one qubit: regrouped, order kept
            qc.rz(0.5 * x[i] + 0.1, i)
    v = ParameterVector("v", layers)
    k = 0
    for layer in range(layers):
        for i in range(n):
            qc.u(w[k], w[k + 1], w[k + 2], i)
            k += 3
        if variant == "rzz":  # a two-qubit weight gate among the U3 gates of a block
            qc.rzz(v[layer], 1, 2)
        for i in range(n):
            qc.cx(i, (i + 1) % n)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]
    obs.append(SparsePauliOp.from_sparse_list([("XY", [0, n - 1], 0.5)], n))
    return qc, list(x), list(w) + (list(v) if variant == "rzz" else []), obs


def _switch(monkeypatch, settings) -> None:
    for name, value in settings.items():
        monkeypatch.setattr(sweep, name, value)


def _layer_step(monkeypatch, settings, qc, x, w, obs, inputs, weights, upstream, dtype):
    _switch(monkeypatch, settings)  # a copy of the circuit: its own compiled program and plan
    layer = ExactTorchLayer(qc.copy(), obs, x, w, initial_weights=weights, dtype=dtype)
    tensor = torch.tensor(inputs, requires_grad=True)
    out = layer(tensor)
    (out * torch.as_tensor(upstream)).sum().backward()
    trace = layer._forward(torch.tensor(inputs), layer.weight.detach())[1][0]
    prefix = sweep._product_prefix(trace.blocks)
    return (
        out.detach().numpy(),
        tensor.grad.numpy(),
        layer.weight.grad.numpy(),
        trace.blocks,
        prefix,
    )


@pytest.mark.parametrize(
    ("n", "variant", "prefix"),
    [
        (6, "ry", 3),
        (8, "ry", 4),
        (9, "u", 5),
        (7, "crx", 3),
        (6, "shared-first", 0),
        (7, "rzz", 4),
        (7, "ryrz", 4),
    ],
)
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_layer_matches_the_reference_plan_and_statevector(monkeypatch, n, variant, prefix, dtype):
    qc, x, w, obs = ring_layer(n, variant=variant)
    rng = np.random.default_rng(n)
    inputs = rng.uniform(-np.pi, np.pi, (5, len(x)))
    weights = rng.uniform(-np.pi, np.pi, len(w))
    upstream = rng.normal(size=(5, len(obs)))
    args = (qc, x, w, obs, inputs, weights, upstream, dtype)
    *new, blocks, new_prefix = _layer_step(monkeypatch, NEW, *args)
    *ref, _, ref_prefix = _layer_step(monkeypatch, REFERENCE, *args)
    assert (new_prefix, ref_prefix) == (prefix, 0)  # the new path is taken, not the reference
    assert all(b.space.width >= min(4, n) for b in blocks if not b.per_row)
    tol = TOL if dtype == torch.complex128 else 2e-5
    for got, want in zip(new, ref, strict=True):
        np.testing.assert_allclose(got, want, atol=tol, rtol=0)
    if dtype == torch.complex128:
        for row, values in zip(inputs, new[0], strict=True):
            bound = qc.assign_parameters(dict(zip(x + w, list(row) + list(weights), strict=True)))
            state = Statevector(bound)
            expected = [state.expectation_value(o).real for o in obs]
            np.testing.assert_allclose(values, expected, atol=TOL)


@pytest.mark.parametrize(
    ("n", "variant"), [(8, "ry"), (9, "u"), (7, "crx"), (7, "rzz"), (7, "ryrz")]
)
def test_batched_small_products_match_block_by_block(monkeypatch, n, variant):
    """The batched prefix terms, row-summed terms and block building equal the block-by-block
    forms (same plan otherwise) at 1e-12, and are the paths taken."""
    qc, x, w, obs = ring_layer(n, variant=variant)
    rng = np.random.default_rng(n + 1)
    inputs = rng.uniform(-np.pi, np.pi, (5, len(x)))
    weights = rng.uniform(-np.pi, np.pi, len(w))
    upstream = rng.normal(size=(5, len(obs)))
    args = (qc, x, w, obs, inputs, weights, upstream, torch.complex128)
    calls = {"batched": 0, "by_block": 0}

    def spy(name, kind):
        original = getattr(sweep, name)

        def wrapped(*a, **k):
            calls[kind] += 1
            return original(*a, **k)

        monkeypatch.setattr(sweep, name, wrapped)

    spy("_batched_summed_terms", "batched")
    spy("_fused_build_structure", "batched")
    for name in ("_summed_terms", "_prefix_terms_by_block", "_build_fused_by_block"):
        spy(name, "by_block")
    *ref, _, _ = _layer_step(monkeypatch, {**NEW, **BY_BLOCK}, *args)
    assert calls["by_block"] > 0 and calls["batched"] == 0
    calls.update(batched=0, by_block=0)
    *new, _, prefix = _layer_step(monkeypatch, NEW, *args)
    assert calls["batched"] > 0 and calls["by_block"] == 0 and prefix > 0
    for got, want in zip(new, ref, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_layer_gradients_match_finite_differences(monkeypatch):
    """Central differences of the layer's own forward (step 1e-6) at 1e-8."""
    _switch(monkeypatch, NEW)
    qc, x, w, obs = ring_layer(6)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-np.pi, np.pi, (2, len(x)))
    weights = rng.uniform(-np.pi, np.pi, len(w))
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    upstream = torch.as_tensor(rng.normal(size=(2, len(obs))))
    tensor = torch.tensor(inputs, requires_grad=True)
    (layer(tensor) * upstream).sum().backward()

    def loss(inp, wts):
        layer.weight.data = torch.as_tensor(wts)
        with torch.no_grad():
            return float((layer(torch.as_tensor(inp)) * upstream).sum())

    eps = 1e-6
    for index in [(0, 0), (1, 3), (1, 5)]:
        plus, minus = inputs.copy(), inputs.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (loss(plus, weights) - loss(minus, weights)) / (2 * eps)
        assert abs(numeric - tensor.grad[index].item()) < 1e-8
    grad = layer.weight.grad.clone()
    for p in [0, 7, len(w) - 1]:
        plus, minus = weights.copy(), weights.copy()
        plus[p] += eps
        minus[p] -= eps
        numeric = (loss(inputs, plus) - loss(inputs, minus)) / (2 * eps)
        assert abs(numeric - grad[p].item()) < 1e-8


@pytest.mark.parametrize("options", [{}, {"memory_budget": 1}, {"keep_states_bytes": 0}])
def test_simulator_gradients_match_gatewise_with_chunks_and_undone_states(monkeypatch, options):
    """Several observables (co-states), row chunks (rows ``start:stop`` of the prefix factors)
    and the undo path (no kept states) against the gatewise reference layout."""
    _switch(monkeypatch, NEW)
    qc, _, _, obs = ring_layer(7, layers=2, variant="u")
    program = compile_circuit(qc)
    rng = np.random.default_rng(3)
    rows = rng.uniform(-np.pi, np.pi, (4, qc.num_parameters))
    rows[:, 7:] = rows[0, 7:]  # the weights are shared, the inputs per row
    sums = [pauli_sum(o) for o in obs]
    fused = StatevectorSimulator(dense_max_qubits=0, **options)
    gatewise = StatevectorSimulator(dense_max_qubits=0, fusion=False)
    got = fused.run(program, rows, sums, None, gradient=True)
    want = gatewise.run(program, rows, sums, None, gradient=True)
    np.testing.assert_allclose(got.values, want.values, atol=TOL)
    np.testing.assert_allclose(got.gradients, want.gradients, atol=TOL)
    complex_got = fused.run(program, rows, sums, None, gradient=True, real_only=False)
    complex_want = gatewise.run(program, rows, sums, None, gradient=True, real_only=False)
    np.testing.assert_allclose(complex_got.gradients, complex_want.gradients, atol=TOL)
    states = fused.states(program, rows)
    for row, state in zip(rows, states, strict=True):
        np.testing.assert_allclose(
            state.numpy(), Statevector(qc.assign_parameters(row)).data, atol=TOL
        )


def test_plan_rotates_sinks_and_widens(monkeypatch):
    """At 12 qubits the ring layer's wrap-around blocks use rotated layouts, the U3 gates that
    opened blocks of their own are sunk into the entangler blocks (10 shared blocks, 12 before),
    and the lone last CX is widened to four qubits."""
    qc, x, w, obs = ring_layer(12)
    counts = {}
    for name, settings in (("new", NEW), ("reference", REFERENCE)):
        _switch(monkeypatch, settings)
        layer = ExactTorchLayer(qc.copy(), obs, x, w)
        inputs = torch.zeros((2, 12))
        blocks = layer._forward(inputs, layer.weight.detach())[1][0].blocks
        counts[name] = sum(not b.per_row for b in blocks)
        if name == "new":
            assert (11, 0, 1, 2, 3) in [b.space.qubits for b in blocks]
            assert blocks[-1].space.width == 4 and len(blocks[-1].ops) == 1
            for b in blocks:  # a rotated layout: the register in cyclic order from its start
                start = b.layout[0]
                assert b.layout == tuple((start + j) % 12 for j in range(12))
    assert counts == {"new": 10, "reference": 12}


def test_layer_pool_reuses_states_without_changing_results():
    """Kept states and co-state buffers go back to the layer's pool after a backward pass and
    are reused by the next step; a step on other inputs and weights still equals a fresh
    layer's (several chunks, so several pooled shapes)."""
    qc, x, w, obs = ring_layer(7)
    rng = np.random.default_rng(7)
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=rng.uniform(-2, 2, len(w)))
    for step in range(3):
        inputs = torch.as_tensor(rng.uniform(-2, 2, (6, len(x))), dtype=torch.float64)
        weights = torch.as_tensor(rng.uniform(-2, 2, len(w)))
        layer.weight.data = weights.clone()
        tensor = inputs.clone().requires_grad_(True)
        layer.zero_grad()
        layer(tensor).sum().backward()
        if step:
            assert layer._pool._held > 0  # the previous step's buffers were handed back
        fresh = ExactTorchLayer(qc.copy(), obs, x, w, initial_weights=weights)
        fresh_input = inputs.clone().requires_grad_(True)
        fresh(fresh_input).sum().backward()
        np.testing.assert_allclose(tensor.grad.numpy(), fresh_input.grad.numpy(), atol=TOL)
        np.testing.assert_allclose(layer.weight.grad.numpy(), fresh.weight.grad.numpy(), atol=TOL)


def test_layer_pool_stays_bounded_and_serves_every_state(monkeypatch):
    """After the first step, every state-sized tensor the forward pass and the sweep take (kept
    states, the product state, the relayouts' scratch, co-states) comes from the pool, and the
    pool holds the same buffers step after step (it does not grow by a product state per step)."""
    qc, x, w, obs = ring_layer(7)
    rng = np.random.default_rng(9)
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=rng.uniform(-2, 2, len(w)))
    inputs = torch.as_tensor(rng.uniform(-2, 2, (6, len(x))))
    misses = []
    take = sweep.StatePool.take

    def counting_take(pool, shape):
        misses.append(not pool._free.get(tuple(shape)))
        return take(pool, shape)

    monkeypatch.setattr(sweep.StatePool, "take", counting_take)
    monkeypatch.setattr(sweep.StatePool, "__call__", counting_take)
    held, workspaces = [], []
    for _ in range(4):
        misses.clear()
        tensor = inputs.clone().requires_grad_(True)
        layer.zero_grad()
        layer(tensor).sum().backward()
        held.append(layer._pool._held)
        workspace = layer.prepared.memo["workspace"]  # the row-summed terms' scratch
        workspaces.append({key: t.data_ptr() for key, t in workspace.items()})
    assert misses and not any(misses)  # the last step took everything from the pool
    assert held[1] == held[2] == held[3] > 0
    assert workspaces[0] and workspaces[0] == workspaces[3]  # reused, not reallocated


def test_layer_pool_across_row_chunks(monkeypatch):
    """Row chunks (``CHUNK_BYTES`` small) each take and return their own buffers."""
    from qhqcnn.engine import torch_layer

    monkeypatch.setattr(torch_layer, "CHUNK_BYTES", 1 << 14)
    qc, x, w, obs = ring_layer(6)
    rng = np.random.default_rng(8)
    weights = rng.uniform(-2, 2, len(w))
    inputs = torch.as_tensor(rng.uniform(-2, 2, (9, len(x))))
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    assert len(layer._chunks(9)) > 1
    results = []
    for _ in range(2):
        tensor = inputs.clone().requires_grad_(True)
        layer.zero_grad()
        out = layer(tensor)
        out.sum().backward()
        results.append((out.detach().numpy(), tensor.grad.numpy(), layer.weight.grad.numpy()))
    monkeypatch.setattr(torch_layer, "POOL_BYTES", 0)
    plain = ExactTorchLayer(qc.copy(), obs, x, w, initial_weights=weights)
    tensor = inputs.clone().requires_grad_(True)
    out = plain(tensor)
    out.sum().backward()
    for got in results:
        np.testing.assert_allclose(got[0], out.detach().numpy(), atol=TOL)
        np.testing.assert_allclose(got[1], tensor.grad.numpy(), atol=TOL)
        np.testing.assert_allclose(got[2], plain.weight.grad.numpy(), atol=TOL)


def test_layer_pool_with_two_graphs_alive_equals_fresh_layers():
    """Two forward passes before either backward (gradient accumulation, two losses), the
    backward passes in reverse order, then a third step: the pool never hands out a state
    that a pending backward pass still needs, and the first outputs are not overwritten."""
    qc, x, w, obs = ring_layer(7)
    rng = np.random.default_rng(11)
    weights = rng.uniform(-2, 2, len(w))
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    batches = [torch.as_tensor(rng.uniform(-2, 2, (6, len(x)))) for _ in range(3)]
    expected = []
    for batch in batches:
        fresh = ExactTorchLayer(qc.copy(), obs, x, w, initial_weights=weights)
        tensor = batch.clone().requires_grad_(True)
        out = fresh(tensor)
        (out * torch.arange(1, out.shape[1] + 1)).sum().backward()
        expected.append((out.detach().clone(), tensor.grad.clone(), fresh.weight.grad.clone()))
    for _ in range(2):  # the second round runs on a warm pool
        tensors = [batch.clone().requires_grad_(True) for batch in batches]
        outs = [layer(tensors[0]), layer(tensors[1])]
        grads = []
        for k in (1, 0):
            layer.zero_grad()
            (outs[k] * torch.arange(1, outs[k].shape[1] + 1)).sum().backward()
            grads.append((k, layer.weight.grad.clone()))
        layer.zero_grad()
        outs.append(layer(tensors[2]))
        (outs[2] * torch.arange(1, outs[2].shape[1] + 1)).sum().backward()
        grads.append((2, layer.weight.grad.clone()))
        for k, weight_grad in grads:
            out, input_grad, fresh_weight_grad = expected[k]
            np.testing.assert_allclose(outs[k].detach().numpy(), out.numpy(), atol=TOL)
            np.testing.assert_allclose(tensors[k].grad.numpy(), input_grad.numpy(), atol=TOL)
            np.testing.assert_allclose(weight_grad.numpy(), fresh_weight_grad.numpy(), atol=TOL)
