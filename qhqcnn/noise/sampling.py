"""Shot noise by sampling, not Gaussian jitter.

Aer's ``EstimatorV2`` turns a precision p > 0 into ``N(⟨O⟩, p)`` noise on the exact value. This
wrapper instead draws what a device would report: each Pauli term P (eigenvalues ±1) measured
with ``shots`` shots gives 2k/shots − 1 with k ~ Binomial(shots, (1 + ⟨P⟩)/2), the exact
distribution of the single-setting estimate. A precision p > 0 means ``ceil(1/p²)`` shots (IBM
Runtime's convention); p = 0 returns exact values. Terms of one observable are sampled
independently (one measurement setting each), and a (Pauli, parameter set) pair is sampled once
per PUB, so correlations between observables measured in the same shots are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.primitive_job import PrimitiveJob

from qhqcnn.errors import ConfigError


def shots_for_precision(precision: float) -> int:
    return math.ceil(1.0 / precision**2)


class ShotEstimator(BaseEstimatorV2):
    """An exact estimator with binomial shot sampling of every Pauli term on top."""

    def __init__(self, exact: BaseEstimatorV2, shots: int, seed: int | None = None) -> None:
        if shots < 1:
            raise ConfigError(f"shots must be >= 1, got {shots}")
        self.exact = exact
        self.shots = int(shots)
        self.default_precision = 1.0 / math.sqrt(self.shots)
        self._rng = np.random.default_rng(seed)

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> PrimitiveJob[PrimitiveResult[PubResult]]:
        if precision is None:
            precision = self.default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        job = PrimitiveJob(self._run, coerced)
        job._submit()
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        plans = [_PauliPlan(pub) for pub in pubs]
        exact = self.exact.run([plan.exact_pub for plan in plans], precision=0.0).result()
        results = [
            plan.sample(res.data.evs, self._rng) for plan, res in zip(plans, exact, strict=True)
        ]
        return PrimitiveResult(results, metadata={"version": 2, "sampling": "binomial"})


class _PauliPlan:
    """One PUB split into its distinct Pauli terms (one exact value per term and parameter set)."""

    def __init__(self, pub: EstimatorPub) -> None:
        self.pub = pub
        self.precision = float(pub.precision or 0.0)
        observables = np.asarray(pub.observables)  # object array of {pauli: coeff}
        self.terms = sorted({label for obs in observables.ravel() for label in obs})
        param_shape = pub.parameter_values.shape
        self.param_index = np.broadcast_to(
            np.arange(max(1, math.prod(param_shape))).reshape(param_shape), pub.shape
        )
        self.coefficients = {
            label: np.vectorize(lambda obs, key=label: obs.get(key, 0.0), otypes=[float])(
                observables
            )
            for label in self.terms
        }
        term_obs = np.array(self.terms, dtype=object).reshape((-1,) + (1,) * len(param_shape))
        self.exact_pub = EstimatorPub.coerce(
            (pub.circuit, term_obs.tolist(), pub.parameter_values), 0.0
        )

    def sample(self, term_evs: np.ndarray, rng: np.random.Generator) -> PubResult:
        term_evs = term_evs.reshape(len(self.terms), -1)  # (terms, flat parameter sets)
        shots = shots_for_precision(self.precision) if self.precision > 0 else 0
        if shots:
            ones = rng.binomial(shots, np.clip((1.0 + term_evs) / 2.0, 0.0, 1.0))
            term_values = 2.0 * ones / shots - 1.0
        else:
            term_values = term_evs
        evs = np.zeros(self.pub.shape)
        variances = np.zeros(self.pub.shape)
        for row, label in enumerate(self.terms):
            coeff = np.broadcast_to(self.coefficients[label], self.pub.shape)
            evs += coeff * term_values[row][self.param_index]
            if shots:
                exact = term_evs[row][self.param_index]
                variances += coeff**2 * (1.0 - exact**2) / shots
        return PubResult(
            DataBin(evs=evs, stds=np.sqrt(variances), shape=evs.shape),
            metadata={"target_precision": self.precision, "shots": shots},
        )
