"""Jobs that run their function inline (no worker thread) but keep Qiskit's job interface."""

from __future__ import annotations

from concurrent.futures import Future

from qiskit.primitives.primitive_job import PrimitiveJob
from qiskit.providers import JobError
from qiskit_machine_learning.algorithm_job import AlgorithmJob


class _InlineSubmit:
    """``_submit`` computes the result immediately; errors surface at ``result()`` as usual."""

    _future: Future | None

    def _submit(self) -> None:
        if self._future is not None:
            raise JobError("Primitive job has been submitted already.")
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(self._function(*self._args, **self._kwargs))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - re-raised by result(), like PrimitiveJob
            future.set_exception(exc)
        self._future = future


class InlineJob(_InlineSubmit, PrimitiveJob):
    """A :class:`PrimitiveJob` that has finished when ``run`` returns."""


class InlineAlgorithmJob(_InlineSubmit, AlgorithmJob):
    """An :class:`AlgorithmJob` (what estimator gradients return) that runs inline."""

    def submit(self) -> None:
        self._submit()
