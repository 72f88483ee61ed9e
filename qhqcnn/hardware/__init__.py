"""Hardware validation of trained HQCNN runs on IBM Quantum through qiskit-ibm-runtime.

The classical backbone runs locally; only the trained circuit goes to the device, transpiled
once to its ISA, with every image as one parameter set of a few broadcast PUBs inside a single
``Batch``. A job record directory keeps everything needed to resume and to report::

    plan      what would be sent (circuit, PUB shapes, jobs, estimated QPU usage)
    submit    write the record, submit every chunk (one job each), return
    status    ask the service how each chunk's job stands (read-only)
    retrieve  save finished results; resubmit chunks that are missing, failed or cancelled
    report    hardware vs exact vs noisy simulation on the same images (Markdown + PNG)

Fake backends (``fake_*``) run the same code in qiskit-ibm-runtime's local testing mode.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names -> defining module, imported on first use (the CLI parser stays light). The
#: ``submit`` and ``retrieve`` functions live in the modules of the same names.
_EXPORTS = {
    "MITIGATIONS": "settings",
    "ExecutionSettings": "settings",
    "HardwarePlan": "plan",
    "build_plan": "plan",
    "format_plan": "plan",
    "JobRecord": "manifest",
    "JobRecordError": "manifest",
    "load_record": "manifest",
    "chunk_states": "retrieve",
    "build_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qhqcnn.hardware' has no attribute {name!r}")
    return getattr(importlib.import_module(f"qhqcnn.hardware.{_EXPORTS[name]}"), name)
