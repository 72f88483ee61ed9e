"""What the device runs computes what the trained model computes, and what comes back is mapped
to what the trained layers expect: the transpiler search is exact and shared with the ``aer``
backend; the calibrated readout recovers a known distortion and is never fitted on test images.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from qiskit.quantum_info import Operator

from qhqcnn.backends.devices import get_fake_backend
from qhqcnn.backends.search import calibrated_score, max_deviation, reordered
from qhqcnn.backends.transpile import transpile_template
from qhqcnn.circuits.hqcnn import hqcnn_template
from qhqcnn.errors import ConfigError
from qhqcnn.hardware.calibration import apply_affine, fit_affine
from qhqcnn.hardware.settings import ExecutionSettings

SEARCH = {"seeds": 2, "orders": 2}


@pytest.fixture(scope="module")
def searched():
    template = hqcnn_template()
    backend = get_fake_backend("fake_nairobi")
    return template, backend, transpile_template(template, backend, search=SEARCH)


def test_search_is_exact_at_random_parameters_and_not_worse_than_the_preset(searched):
    template, backend, prepared = searched
    # The ISA circuit's exact values equal the logical template's (inputs and weights random).
    assert max_deviation(prepared, template, count=3, seed=5) < 1e-8
    preset = transpile_template(template, backend, optimization_level=2, seed_transpiler=1234)
    assert prepared.info["two_qubit_gates"] <= preset.info["two_qubit_gates"]
    search = prepared.info["search"]
    assert (
        search["candidates"] == 4
        and search["chosen"]["two_qubit_gates"] == (prepared.info["two_qubit_gates"])
    )
    # The winner has the best calibrated score of the candidates it was chosen from.
    assert 0 < search["chosen"]["esp"] <= 1
    # Searched once per process: another instance of the template gets the cached circuit with
    # its own Parameter objects (EstimatorQNN binds by object), still exact.
    other = hqcnn_template()
    again = transpile_template(other, backend, search=SEARCH)
    assert set(again.circuit.parameters) == set(other.circuit.parameters)
    assert again.info["two_qubit_gates"] == prepared.info["two_qubit_gates"]
    assert max_deviation(again, other, count=2, seed=6) < 1e-8


def test_reordering_only_swaps_commuting_gates():
    template = hqcnn_template()
    rng = np.random.default_rng(3)
    params = list(template.input_params) + list(template.weight_params)
    values = dict(zip(params, rng.uniform(-np.pi, np.pi, len(params)), strict=True))
    original = template.circuit.assign_parameters(values)
    for seed in range(3):
        other = reordered(template.circuit, random.Random(seed)).assign_parameters(values)
        assert [i.operation.name for i in other.data] != [i.operation.name for i in original.data]
        assert Operator(other).equiv(Operator(original))


def test_the_aer_backend_runs_the_hardware_paths_transpile_step(searched):
    from qhqcnn.noise.backend import AerBackend

    template, _, prepared = searched
    aer = AerBackend(noise="fake_nairobi", search=SEARCH)
    full = aer.prepare(template).device_circuit
    assert full.info["two_qubit_gates"] == prepared.info["two_qubit_gates"]
    assert full.info["layout"] == prepared.info["layout"]
    assert full.info["search"]["chosen"] == prepared.info["search"]["chosen"]


def test_calibrated_score_penalises_more_gates(searched):
    _, backend, prepared = searched
    isa = prepared.circuit
    doubled = isa.compose(isa)
    assert (
        calibrated_score(doubled, backend.target, [0])["esp"]
        < calibrated_score(isa, backend.target, [0])["esp"]
    )


def test_affine_calibration_recovers_a_known_distortion():
    rng = np.random.default_rng(0)
    exact = rng.uniform(-1, 1, (40, 3))
    scale, shift = np.array([0.5, 0.42, 0.8]), np.array([0.03, -0.1, 0.0])
    measured = exact * scale + shift + rng.normal(0, 1e-3, exact.shape)
    fit = fit_affine(measured, exact, split="train", names=["a", "b", "c"])
    assert np.allclose(fit["scale"], scale, atol=5e-3)
    assert np.allclose(fit["shift"], shift, atol=5e-3)
    new_exact = rng.uniform(-1, 1, (10, 3))
    recovered = apply_affine(fit, new_exact * scale + shift)
    assert np.allclose(recovered, new_exact, atol=2e-2)


@pytest.mark.parametrize("split", ["test", "val"])
def test_calibration_refuses_anything_but_training_images(split):
    values = np.zeros((4, 2))
    with pytest.raises(ConfigError, match="train"):
        fit_affine(values, values, split=split)


def test_records_from_before_the_search_keep_their_preset_transpilation():
    old = ExecutionSettings.from_dict({"shots": 4096, "optimization_level": 2})
    assert old.search() is None
    new = ExecutionSettings()
    assert new.search() is not None and new.optimization_level == 3
    with pytest.raises(ConfigError):
        ExecutionSettings(calibration="quadratic")


def test_plan_estimates_every_choice_and_zne_costs_more(searched):
    from qhqcnn.hardware.plan import PLAN_CHOICES, format_choices, usage_by_choice

    _, backend, prepared = searched
    rows = usage_by_choice(prepared, backend, 100, 20, 1, ExecutionSettings())
    assert len(rows) == 2 * len(PLAN_CHOICES)
    cost = {(r["mitigation"], r["calibration"]): r["estimated_qpu_seconds"] for r in rows}
    assert cost[("zne", False)] > 2.5 * cost[("none", False)]
    assert cost[("trex", True)] > cost[("trex", False)] > cost[("none", False)]
    assert "trex+zne" in "\n".join(format_choices(rows))


def test_compare_table_is_written_into_its_own_section(tmp_path):
    from qhqcnn.hardware.compare import format_table, write_section

    metrics = {"acc": 0.8, "auc": 0.9, "mae": 0.1, "agreement": 0.9}
    row = {
        "device": "fake_nairobi", "method": "trex", "dataset": "breastmnist", "n_images": 4,
        "calibration_rows": 2, "exact": metrics, "raw": metrics, "calibrated": metrics,
        "two_qubit_gates": 89, "shots": 100, "estimated_qpu_seconds": 1.0, "jobs": 1,
        "wall_seconds": 2.0,
    }  # fmt: skip
    doc = tmp_path / "hardware.md"
    doc.write_text("# Hardware\n\nkept\n")
    write_section(doc, "a", format_table([row], "A"))
    write_section(doc, "a", format_table([row, row], "A"))
    text = doc.read_text()
    assert text.count("<!-- compare:a -->") == 1 and "kept" in text
    assert text.count("| fake_nairobi | trex | calibrated |") == 2


# -- trained-weight synthesis (--synthesis aqc) ------------------------------------------------
@pytest.fixture(scope="module")
def synthesized():
    """A 3-qubit HQCNN (attention on) at trained-like weights, its fixed part synthesized into
    16 CNOTs on a line (a generic 3-qubit unitary needs 14)."""
    from qhqcnn.backends.synthesis import SynthesisOptions, synthesize

    template = hqcnn_template(num_qubits=3, layers=1)
    weights = template.init_weights(np.random.default_rng(3))
    bound, record = synthesize(template, weights, SynthesisOptions(cnots=16))
    return template, weights, bound, record


def test_synthesis_computes_the_trained_model_within_its_stated_bound(synthesized):
    from qhqcnn.backends.search import template_values
    from qhqcnn.backends.synthesis import split_encoding

    template, weights, bound, record = synthesized
    assert record["accepted"] and record["cnots"] == 16 and record["method"] == "aqc"
    # The only parameters left are the inputs; the gates after the encoding are the network.
    assert {p.name for p in bound.circuit.parameters} == {p.name for p in template.input_params}
    assert bound.circuit.count_ops()["cx"] == 16
    # Exact values at random inputs, against the template with the weights bound: within the
    # stated bound, which here is floating-point precision.
    rng = np.random.default_rng(11)
    inputs = rng.uniform(-np.pi, np.pi, (6, template.num_inputs))
    expected = template_values(template, np.hstack([inputs, np.tile(weights, (6, 1))]))
    got = template_values(bound, inputs)
    assert np.max(np.abs(got - expected)) <= record["output_bound"] + 1e-12
    assert record["output_bound"] < 1e-8
    assert record["max_abs_deviation_random_inputs"] < 1e-8
    # The fixed part is one unitary only when every input gate comes first.
    encoding, rest = split_encoding(template)
    assert set(encoding.parameters) == set(template.input_params)
    assert not set(rest.parameters) & set(template.input_params)


def test_synthesized_circuit_runs_on_a_line_without_routing(synthesized):
    from qhqcnn.hardware.counts import synthesized_deviation

    template, weights, bound, _ = synthesized
    backend = get_fake_backend("fake_nairobi")
    prepared = transpile_template(bound, backend, search=SEARCH)
    assert prepared.info["two_qubit_gates"] == 16
    assert synthesized_deviation(prepared, template, weights) < 1e-8


def test_a_synthesis_above_the_bound_is_rejected_and_recorded():
    from qhqcnn.backends.synthesis import SynthesisOptions, synthesize

    template = hqcnn_template(num_qubits=3, layers=1)
    weights = template.init_weights(np.random.default_rng(3))
    kept, record = synthesize(template, weights, SynthesisOptions(cnots=2, maxiter=50))
    assert kept is template and not record["accepted"]
    assert record["tried"][0]["cnots"] == 2 and record["tried"][0]["output_bound"] > 1e-3


def test_synthesis_settings_are_recorded_and_off_by_default():
    settings = ExecutionSettings()
    assert settings.synthesis == "none" and settings.synthesis_options() is None
    chosen = ExecutionSettings(synthesis="aqc", synthesis_cnots=62, max_approx_error=1e-6)
    again = ExecutionSettings.from_dict(chosen.to_dict())
    assert again == chosen
    options = again.synthesis_options()
    assert (options.method, options.cnots, options.max_error) == ("aqc", 62, 1e-6)
    with pytest.raises(ConfigError):
        ExecutionSettings(synthesis="qsd")


def test_the_better_scored_candidate_is_chosen_and_the_reason_recorded():
    from qhqcnn.backends.synthesis import choose

    searched = {"predicted_mae": 0.10, "esp": 0.45}
    synthesized = {"predicted_mae": 0.14, "esp": 0.48}
    by_error = choose(searched, synthesized, "noisy")
    assert by_error["chosen"] == "searched" and "0.14" in by_error["reason"]
    assert choose(searched, synthesized, "esp")["chosen"] == "synthesized"
    assert choose(synthesized, searched, "noisy")["chosen"] == "synthesized"
    assert choose(searched, dict(searched), "noisy")["chosen"] == "searched"  # ties: searched
    assert choose({}, synthesized, "always")["chosen"] == "synthesized"
    # No noise model to predict with (a device without calibrations): by ESP, and said so.
    blind = choose({**searched, "predicted_mae": None}, synthesized, "noisy")
    assert blind["chosen"] == "synthesized" and blind["reason"].startswith("no noise-model")
    with pytest.raises(ConfigError):
        ExecutionSettings(synthesis_choice="fewest")
    # Records written before the choice existed ran every accepted synthesis.
    old = ExecutionSettings(synthesis="aqc").to_dict()
    del old["synthesis_choice"]
    assert ExecutionSettings.from_dict(old).synthesis_choice == "always"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, breast_dir):
    """A 3-qubit, 1-layer HQCNN trained for one epoch on 32 images (fast to synthesize)."""
    from qhqcnn.cli.main import main

    pytest.importorskip("qhqcnn.engine", reason="the exact engine is needed to train")
    out = tmp_path_factory.mktemp("synth-run") / "run"
    code = main(
        [
            "train", "--dataset", "breastmnist", "--qubits", "3", "--layers", "1",
            "--max-train", "32", "--max-eval", "16", "--epochs", "1", "--out", str(out),
            "--no-progress", "--backend", "exact", "--data-dir", breast_dir,
        ]
    )  # fmt: skip
    assert code == 0
    return out


def _synth_plan(run, data_dir, choice):
    from qhqcnn.hardware.plan import build_plan

    settings = ExecutionSettings(
        shots=256, synthesis="aqc", synthesis_cnots=16, synthesis_choice=choice,
        search_seeds=1, search_orders=1, calibration="affine", calibration_images=4,
    )  # fmt: skip
    return build_plan(run, "fake_nairobi", settings, limit=4, data_dir=data_dir)


def test_plan_runs_the_better_scored_of_synthesized_and_searched(small_run, breast_dir):
    from qhqcnn.hardware.plan import format_plan

    plan = _synth_plan(small_run, breast_dir, "noisy")
    record = plan.prepared.info["synthesis"]
    assert record["accepted"] and record["cnots"] == 16
    choice = record["choice"]
    facts = choice["candidates"]
    assert set(facts) == {"searched", "synthesized"} and choice["by"] == "noisy"
    for c in facts.values():  # what a report needs, for both candidates
        assert {"two_qubit_gates", "depth", "duration_s", "esp", "predicted_mae", "sx"} <= set(c)
        assert c["scored_images"] == 16  # training images, at least SYNTHESIS_SCORE_IMAGES
    assert facts["synthesized"]["two_qubit_gates"] == 16
    better = min(facts, key=lambda k: (facts[k]["predicted_mae"], k != "searched"))
    assert choice["chosen"] == better
    # The device circuit is the chosen one: the synthesis leaves only the input angles.
    inputs_only = plan.prepared.circuit.num_parameters == plan.template.num_inputs
    assert inputs_only == (better == "synthesized")
    assert plan.prepared.info["two_qubit_gates"] == facts[better]["two_qubit_gates"]
    text = format_plan(plan)
    assert f"runs         the {better} circuit" in text and "predicted MAE" in text


def test_plan_takes_the_searched_circuit_when_it_scores_better(small_run, breast_dir, monkeypatch):
    from qhqcnn.backends import synthesis

    real = synthesis.candidate_score

    def rigged(prepared, *args):  # the searched circuit (weights still parameters) wins
        facts = real(prepared, *args)
        searched = prepared.circuit.num_parameters > 3
        return {**facts, "predicted_mae": 0.01 if searched else 0.5}

    monkeypatch.setattr(synthesis, "candidate_score", rigged)
    plan = _synth_plan(small_run, breast_dir, "noisy")
    choice = plan.prepared.info["synthesis"]["choice"]
    assert choice["chosen"] == "searched" and "searched 0.01" in choice["reason"]
    assert plan.prepared.circuit.num_parameters > plan.template.num_inputs
    names = {p.name for p in plan.template.input_params + plan.template.weight_params}
    assert {p.name for p in plan.prepared.circuit.parameters} == names
    forced = _synth_plan(small_run, breast_dir, "always")
    assert forced.prepared.info["synthesis"]["choice"]["chosen"] == "synthesized"
    assert set(forced.prepared.info["synthesis"]["choice"]["candidates"]) == {"synthesized"}
    assert forced.prepared.circuit.num_parameters == forced.template.num_inputs
