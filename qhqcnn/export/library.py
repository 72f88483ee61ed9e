"""The circuit library: every shipped circuit template exported as diagrams, OpenQASM 3 and QPY.

``export_library("circuits", options=ExportOptions(backends=("fake_torino",)))`` (the CLI:
``qhqcnn circuits export``) writes, for each template registered in :data:`TEMPLATES`::

    circuits/NAME/NAME.txt .png .svg .tex (.pdf)   text, matplotlib and LaTeX-source diagrams
    circuits/NAME/NAME.qasm  NAME.qpy              OpenQASM 3 and QPY (QPY keeps parameters)
    circuits/NAME/NAME.json                        card: qubits, parameters, depth, gates, outputs
    circuits/NAME/BACKEND/NAME_isa.{txt,png,qasm,qpy,json}   the transpiled ISA circuit
    circuits/NAME/BACKEND/NAME_layout.png          its qubits on the device's coupling map
    circuits/manifest.json, circuits/README.md     generator versions, options and the index

Everything is deterministic (fixed transpiler seed, no dates in images), so regenerating gives
the same files and ``tests/test_export.py`` can tell when ``circuits/`` is stale. A PDF is
compiled from the LaTeX source only where ``pdflatex`` exists; the layout plot needs Graphviz.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qhqcnn.errors import ConfigError, QhqcnnError
from qhqcnn.io.files import atomic_write, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # Qiskit and the templates are imported when used: `qhqcnn --help` stays fast
    import numpy as np
    from qiskit import QuantumCircuit

    from qhqcnn.circuits import CircuitTemplate

#: Exported templates: name -> "module:function"; ``function()`` returns a CircuitTemplate.
#: Other model families add their templates here (e.g. ``"quanv": "qhqcnn.circuits.quanv:..."``).
TEMPLATES: dict[str, str] = {
    "hqcnn": "qhqcnn.circuits:hqcnn_template",
    "encoding_angle": "qhqcnn.export.library:encoding_angle_block",
    "encoding_superposition": "qhqcnn.export.library:encoding_superposition_block",
    "entangling": "qhqcnn.export.library:entangling_block",
    "attention": "qhqcnn.export.library:attention_block",
    "fourier_ladder": "qhqcnn.export.library:fourier_ladder_block",
    "toffoli_ring": "qhqcnn.export.library:toffoli_ring_block",
    "rotations": "qhqcnn.export.library:rotations_block",
    "quanv": "qhqcnn.circuits.quanv:quanv_template",
    "quanv_trainable": "qhqcnn.circuits.quanv:quanv_trainable_template",
    "quanv_amplitude": "qhqcnn.circuits.quanv:quanv_amplitude_template",
    "qcnn": "qhqcnn.circuits.quanv:qcnn_template",
    "qcnn_angle": "qhqcnn.circuits.quanv:qcnn_angle_template",
}

DEFAULT_OUT = "circuits"
DEFAULT_BACKENDS = ("fake_torino",)
TEXT_FOLD = 120
SEED_TRANSPILER = 1234
#: Fixed drawing options (they also override any ~/.qiskit/settings.conf defaults).
DRAW = {"reverse_bits": False, "justify": "left", "plot_barriers": True, "initial_state": False}
MPL_STYLE = "iqp"
MPL_FOLD = {False: 22, True: 40}  # layers per row: logical templates, ISA circuits
BLOCK_QUBITS, BLOCK_LAYERS = 4, 2  # the blocks as they appear in the default hqcnn template


# -- the blocks as templates -----------------------------------------------------------------
def block_template(
    name: str, circuit: QuantumCircuit, inputs: Iterable = (), description: str = ""
) -> CircuitTemplate:
    """A circuit block as a template: given inputs, every other parameter is a weight."""
    from qhqcnn.circuits import CircuitTemplate

    input_params = tuple(inputs)
    weights = tuple(p for p in circuit.parameters if p not in set(input_params))

    def init_weights(rng: np.random.Generator) -> np.ndarray:
        raise ConfigError(f"{name} is a block of a model, not a trainable model on its own")

    return CircuitTemplate(
        name=name,
        circuit=circuit,
        input_params=input_params,
        weight_params=weights,
        observables=(),
        output_names=(),
        init_weights=init_weights,
        description=description,
    )


def encoding_angle_block() -> CircuitTemplate:
    from qhqcnn.circuits import angle_encoding

    circuit, inputs = angle_encoding(BLOCK_QUBITS)
    return block_template("encoding_angle", circuit, inputs, "angle encoding RY(x_i)")


def encoding_superposition_block() -> CircuitTemplate:
    from qhqcnn.circuits import angle_encoding

    circuit, inputs = angle_encoding(BLOCK_QUBITS, superposition=True)
    return block_template(
        "encoding_superposition", circuit, inputs, "superposition encoding H then RY(x_i)"
    )


def entangling_block() -> CircuitTemplate:
    from qhqcnn.circuits import entangling_layers

    circuit = entangling_layers(BLOCK_QUBITS, BLOCK_LAYERS)
    return block_template(
        "entangling", circuit, (), f"{BLOCK_LAYERS} x [U3(theta) on every qubit, CNOT ring]"
    )


def attention_block() -> CircuitTemplate:
    from qhqcnn.circuits import fourier_attention

    circuit, _ = fourier_attention(BLOCK_QUBITS)
    return block_template(
        "attention", circuit, (), "Fourier attention F(phi)^dagger . Toffoli ring . F(phi)"
    )


def fourier_ladder_block() -> CircuitTemplate:
    from qiskit.circuit import ParameterVector

    from qhqcnn.circuits import fourier_ladder

    phases = ParameterVector("phi", BLOCK_QUBITS * (BLOCK_QUBITS - 1) // 2)
    circuit = fourier_ladder(BLOCK_QUBITS, list(phases))
    return block_template(
        "fourier_ladder", circuit, (), "QFT-style ladder F(phi): H and controlled phases"
    )


def toffoli_ring_block() -> CircuitTemplate:
    from qhqcnn.circuits import toffoli_ring

    return block_template(
        "toffoli_ring",
        toffoli_ring(BLOCK_QUBITS),
        (),
        "Toffoli ring: each qubit flipped by the AND of its two ring neighbours",
    )


def rotations_block() -> CircuitTemplate:
    from qhqcnn.circuits import rotation_layer

    circuit, _ = rotation_layer(BLOCK_QUBITS)
    return block_template("rotations", circuit, (), "final RY(rho) RZ(rho') on every qubit")


def template_names() -> list[str]:
    return list(TEMPLATES)


def load_template(name: str) -> CircuitTemplate:
    """Build the registered template ``name``."""
    if name not in TEMPLATES:
        raise ConfigError(f"unknown circuit {name!r}; available: {', '.join(TEMPLATES)}")
    module_name, func_name = TEMPLATES[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)()


# -- drawings ---------------------------------------------------------------------------------
def text_diagram(circuit: QuantumCircuit, *, fold: int = TEXT_FOLD, isa: bool = False) -> str:
    """The text drawing (ISA circuits: active qubits only, without the global phase)."""
    drawn = _without_phase(circuit) if isa else circuit
    return str(drawn.draw("text", fold=fold, idle_wires=not isa, **DRAW)) + "\n"


def mpl_diagram(circuit: QuantumCircuit, *, isa: bool = False):
    """The matplotlib drawing of ``circuit`` as a Figure."""
    drawn = _without_phase(circuit) if isa else circuit
    return drawn.draw("mpl", style=MPL_STYLE, fold=MPL_FOLD[isa], idle_wires=not isa, **DRAW)


def _without_phase(circuit: QuantumCircuit) -> QuantumCircuit:
    # A transpiled circuit carries a long symbolic global phase, which has no effect on
    # expectation values and would swamp the drawing; QPY/QASM files keep it.
    copy = circuit.copy()
    copy.global_phase = 0
    return copy


def latex_source(circuit: QuantumCircuit) -> str:
    return circuit.draw("latex_source", **DRAW)


def compile_pdf(tex_path: Path) -> Path | None:
    """``tex_path`` compiled with pdflatex beside it (``None`` where pdflatex is absent)."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        return None
    pdf_path = tex_path.with_suffix(".pdf")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(
            [pdflatex, "-interaction=nonstopmode", "-halt-on-error", str(tex_path.resolve())],
            cwd=work,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        built = Path(work) / f"{tex_path.stem}.pdf"
        if result.returncode != 0 or not built.exists():
            raise QhqcnnError(f"pdflatex failed on {tex_path}:\n{result.stdout[-2000:]}")
        atomic_write(pdf_path, lambda tmp: shutil.copyfile(built, tmp))
    return pdf_path


def _maybe_pdf(tex: Path, pdf: bool | None, log: Callable[[str], None]) -> None:
    """Compile ``tex`` if asked (``pdf=True``: failures are errors) or possible (``None``)."""
    if pdf is False:
        return
    try:
        if compile_pdf(tex) is None and pdf:
            raise QhqcnnError("a PDF was asked for (--pdf) but pdflatex is not installed")
    except QhqcnnError as exc:
        if pdf:
            raise
        log(f"no PDF for {tex.name}: {str(exc).splitlines()[0]}")


def graphviz_available() -> bool:
    return shutil.which("dot") is not None


def layout_figure(isa: QuantumCircuit, backend, title: str):
    """The ISA circuit's qubits on the device's coupling map (needs Graphviz ``dot``)."""
    if not graphviz_available():
        raise QhqcnnError(
            "drawing a layout needs Graphviz: install it (e.g. `apt-get install graphviz`) or "
            "export with --no-layout"
        )
    from qiskit.visualization import plot_circuit_layout

    fig = plot_circuit_layout(isa, backend, view="virtual")
    fig.suptitle(title, fontsize=14)
    return fig


# -- serialisation ----------------------------------------------------------------------------
def qasm_text(circuit: QuantumCircuit) -> str:
    """OpenQASM 3 source of ``circuit`` (parameters become ``input float`` declarations)."""
    from qiskit import qasm3

    return qasm3.dumps(circuit) + "\n"


def qpy_bytes(circuit: QuantumCircuit) -> bytes:
    from qiskit import qpy

    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


def write_qpy(path: Path, circuit: QuantumCircuit) -> Path:
    """Write ``circuit`` as QPY unless ``path`` already holds the same circuit.

    QPY stores random parameter UUIDs, so rewriting an unchanged circuit would change its bytes;
    keeping the old file keeps the library stable under version control.
    """
    if path.exists():
        try:
            if circuit_fingerprint(load_qpy(path)) == circuit_fingerprint(circuit):
                return path
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            pass
    data = qpy_bytes(circuit)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_qpy(path: str | os.PathLike) -> QuantumCircuit:
    from qiskit import qpy

    with open(path, "rb") as handle:
        return qpy.load(handle)[0]


def circuit_fingerprint(circuit: QuantumCircuit) -> dict[str, Any]:
    """What makes two circuits the same, with parameters compared by name (not by UUID)."""
    return {
        "num_qubits": circuit.num_qubits,
        "parameters": [p.name for p in circuit.parameters],
        "global_phase": str(circuit.global_phase),
        "layout": (
            list(circuit.layout.final_index_layout()) if circuit.layout is not None else None
        ),
        "instructions": [
            (
                instr.operation.name,
                [circuit.find_bit(q).index for q in instr.qubits],
                [str(p) for p in instr.operation.params],
            )
            for instr in circuit.data
        ],
    }


def observable_terms(template: CircuitTemplate, observables=None) -> list[dict[str, Any]]:
    """Each output's observable as sparse Pauli terms: ``[["Z", [qubit], coeff], ...]``."""
    observables = template.observables if observables is None else observables
    cards = []
    for name, obs in zip(template.output_names, observables, strict=True):
        terms = [
            [label, [int(q) for q in qubits], float(complex(coeff).real)]
            for label, qubits, coeff in obs.to_sparse_list()
        ]
        cards.append({"name": name, "terms": terms})
    return cards


def template_card(name: str, template: CircuitTemplate) -> dict[str, Any]:
    """The JSON card of a logical template."""
    summary = template.summary()
    return {
        "name": name,
        "builder": TEMPLATES.get(name, ""),
        "description": template.description,
        "num_qubits": summary["num_qubits"],
        "depth": summary["depth"],
        "size": template.circuit.size(),
        "gate_counts": dict(sorted(summary["gate_counts"].items())),
        "num_inputs": template.num_inputs,
        "num_weights": template.num_weights,
        "inputs": [p.name for p in template.input_params],
        "weights": [p.name for p in template.weight_params],
        "observables": observable_terms(template),
    }


def initial_layout(isa: QuantumCircuit) -> list[int]:
    """Physical qubit of each virtual qubit before routing (``layout`` in the card is after)."""
    return list(isa.layout.initial_index_layout(filter_ancillas=True))


def isa_card(name: str, template: CircuitTemplate, prepared, backend) -> dict[str, Any]:
    """The JSON card of a template transpiled for ``backend``."""
    info = prepared.info
    return {
        "name": name,
        "backend": backend.name,
        "backend_qubits": backend.num_qubits,
        "operations": sorted(str(g) for g in backend.operation_names),
        "optimization_level": info["optimization_level"],
        "seed_transpiler": SEED_TRANSPILER,
        "initial_layout": initial_layout(prepared.circuit),
        "layout": info["layout"],
        "depth": info["depth"],
        "two_qubit_gates": info["two_qubit_gates"],
        "size": prepared.circuit.size(),
        "gate_counts": dict(sorted(info["gate_counts"].items())),
        "observables": observable_terms(template, prepared.observables),
        "note": "diagrams show the active qubits and omit the global phase; QPY/QASM keep it",
    }


# -- the export -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportOptions:
    """What ``export_library`` writes (saved in ``manifest.json``)."""

    backends: tuple[str, ...] = DEFAULT_BACKENDS
    images: bool = True
    layout: bool = True
    pdf: bool | None = None  # None: where pdflatex exists; PDFs are never compared by tests

    def to_dict(self) -> dict[str, Any]:
        return {"backends": list(self.backends), "images": self.images, "layout": self.layout}


LOGICAL_SUFFIXES = ("txt", "tex", "qasm", "qpy", "json")
IMAGE_SUFFIXES = ("png", "svg")
ISA_SUFFIXES = ("txt", "qasm", "qpy", "json")


def template_files(name: str, options: ExportOptions) -> list[str]:
    """Paths (relative to the library) of every file exported for ``name``, PDFs aside."""
    suffixes = (IMAGE_SUFFIXES if options.images else ()) + LOGICAL_SUFFIXES
    files = [f"{name}/{name}.{suffix}" for suffix in suffixes]
    for backend in options.backends:
        isa = (("png",) if options.images else ()) + ISA_SUFFIXES
        files += [f"{name}/{backend}/{name}_isa.{suffix}" for suffix in isa]
        if options.layout:
            files.append(f"{name}/{backend}/{name}_layout.png")
    return files


def library_files(names: Iterable[str], options: ExportOptions) -> list[str]:
    """Every file of a library of ``names`` exported with ``options`` (PDFs aside)."""
    files = ["README.md", "manifest.json"]
    for name in names:
        files += template_files(name, options)
    return sorted(files)


def _write_figure(fig, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    from qhqcnn.reporting.plots import save_figure

    try:
        save_figure(fig, path, dpi=dpi, tight=True, palette=True)
    finally:
        plt.close(fig)


def export_template(
    name: str, out_dir: Path, options: ExportOptions, log: Callable[[str], None]
) -> dict:
    """Write every file of one template into ``out_dir / name``; returns its card."""
    template = load_template(name)
    folder = out_dir / name
    circuit = template.circuit
    atomic_write_text(folder / f"{name}.txt", text_diagram(circuit))
    atomic_write_text(folder / f"{name}.qasm", qasm_text(circuit))
    write_qpy(folder / f"{name}.qpy", circuit)
    tex = atomic_write_text(folder / f"{name}.tex", latex_source(circuit))
    _maybe_pdf(tex, options.pdf, log)
    if options.images:
        for suffix in IMAGE_SUFFIXES:
            _write_figure(mpl_diagram(circuit), folder / f"{name}.{suffix}", dpi=150)
    card = template_card(name, template)
    atomic_write_json(folder / f"{name}.json", card)
    log(f"{name}: {card['num_qubits']} qubits, depth {card['depth']}")
    for backend_name in options.backends:
        export_isa(name, template, backend_name, folder, options, log)
    return card


def export_isa(
    name: str,
    template: CircuitTemplate,
    backend_name: str,
    folder: Path,
    options: ExportOptions,
    log: Callable[[str], None],
) -> dict:
    """The template transpiled for ``backend_name``: ISA diagram, QASM, QPY, card, layout."""
    from qhqcnn.backends.devices import get_backend
    from qhqcnn.backends.transpile import transpile_template

    backend = get_backend(backend_name)
    prepared = transpile_template(template, backend, seed_transpiler=SEED_TRANSPILER)
    isa, target = prepared.circuit, folder / backend_name
    atomic_write_text(target / f"{name}_isa.txt", text_diagram(isa, isa=True))
    atomic_write_text(target / f"{name}_isa.qasm", qasm_text(isa))
    write_qpy(target / f"{name}_isa.qpy", isa)
    card = isa_card(name, template, prepared, backend)
    atomic_write_json(target / f"{name}_isa.json", card)
    if options.images:
        _write_figure(mpl_diagram(isa, isa=True), target / f"{name}_isa.png", dpi=60)
    if options.layout:
        title = (
            f"{name} on {backend.name}: virtual qubits 0–{template.num_qubits - 1} on physical "
            f"{card['initial_layout']}"
        )
        _write_figure(layout_figure(isa, backend, title), target / f"{name}_layout.png", dpi=64)
    log(f"{name} on {backend.name}: depth {card['depth']}, {card['two_qubit_gates']} 2q gates")
    return card


def generator_versions() -> dict[str, str]:
    """Versions of the packages whose output the library files depend on."""
    versions = {}
    for package in ("qiskit", "qiskit-ibm-runtime", "matplotlib", "pillow", "pylatexenc"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["graphviz"] = graphviz_version()
    return versions


def graphviz_version() -> str:
    """``dot -V``'s version (layout plots are drawn by Graphviz), or ``"not installed"``."""
    dot = shutil.which("dot")
    if dot is None:
        return "not installed"
    out = subprocess.run([dot, "-V"], capture_output=True, text=True, timeout=30)
    words = (out.stderr or out.stdout).split()
    return words[words.index("version") + 1] if "version" in words else "unknown"


def export_library(
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    names: Iterable[str] | None = None,
    options: ExportOptions | None = None,
    log: Callable[[str], None] = lambda _: None,
    draw: bool = True,
) -> Path:
    """Export the templates ``names`` (default: all registered) into ``out``; returns ``out``.

    ``draw=False`` skips the PNG/SVG/layout images but writes the manifest and README as if
    they had been drawn (what :func:`check_library` compares).
    """
    from qhqcnn.backends.devices import get_backend

    options = options or ExportOptions()
    drawing = replace(options, images=options.images and draw, layout=options.layout and draw)
    if drawing.layout and options.backends and not graphviz_available():
        raise QhqcnnError(
            "the layout plots need Graphviz `dot` (e.g. `apt-get install graphviz`); "
            "pass --no-layout to export without them"
        )
    # Folder names are the devices' own names (``FakeTorino`` -> ``fake_torino``).
    backends = tuple(get_backend(b).name for b in options.backends)
    options, drawing = replace(options, backends=backends), replace(drawing, backends=backends)
    out_dir = Path(out)
    selected = list(names) if names is not None else template_names()
    unknown = [name for name in selected if name not in TEMPLATES]
    if unknown:
        raise ConfigError(f"unknown circuits {unknown}; available: {', '.join(TEMPLATES)}")
    cards = {name: export_template(name, out_dir, drawing, log) for name in selected}
    manifest = {
        "generated_by": "qhqcnn circuits export",
        "versions": generator_versions(),
        "options": options.to_dict(),
        "templates": selected,
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    atomic_write_text(out_dir / "README.md", library_readme(cards, manifest, out_dir))
    return out_dir


def stale_files(out: str | os.PathLike, names: Iterable[str], options: ExportOptions) -> list[str]:
    """Files under ``out`` that an export of ``names`` with ``options`` does not write."""
    expected = set(library_files(names, options))
    root = Path(out)
    found = {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.suffix != ".pdf"
    }
    return sorted(found - expected)


def _links(files: Iterable[str]) -> str:
    """Markdown links to ``files``, each labelled with its format (``layout`` for layouts)."""
    links = []
    for file in files:
        label = "layout" if file.endswith("_layout.png") else file.rsplit(".", 1)[1]
        links.append(f"[{label}]({file})")
    return " · ".join(links)


def library_readme(cards: dict[str, dict], manifest: dict, out_dir: Path) -> str:
    """``README.md`` of the library: an index of every template and file."""
    versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
    options = options_from_manifest(manifest)
    lines = [
        "# Circuit library",
        "",
        "Diagrams (text, PNG, SVG, LaTeX source), OpenQASM 3, QPY and JSON cards of every circuit",
        "template shipped by `qhqcnn`, generated from the code by",
        "",
        "```bash",
        "qhqcnn circuits export --out circuits"
        + "".join(f" --ibm-backend {b}" for b in options.backends),
        "```",
        "",
        "`tests/test_export.py` fails when these files no longer match what the code generates;",
        "rerun the command above after changing a circuit (the Python API is",
        "`qhqcnn.export.library.export_library`; templates are registered in "
        "`qhqcnn.export.library.TEMPLATES`).",
        f"Generated with {versions}.",
        "",
        "| circuit | description | qubits | inputs | weights | depth | gates | files |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for name, card in cards.items():
        gates = ", ".join(f"{g} {n}" for g, n in card["gate_counts"].items() if g != "barrier")
        files = [f for f in template_files(name, options) if f.count("/") == 1]
        lines.append(
            f"| `{name}` | {card['description']} | {card['num_qubits']} | {card['num_inputs']} "
            f"| {card['num_weights']} | {card['depth']} | {gates} | {_links(files)} |"
        )
    for backend in options.backends:
        lines += [
            "",
            f"## Transpiled for `{backend}`",
            "",
            f"ISA circuits (optimization level 2, `seed_transpiler={SEED_TRANSPILER}`). Physical",
            "qubits of virtual qubits 0, 1, … before and after routing. Diagrams show the active",
            "qubits and omit the global phase; QPY and QASM keep everything.",
            "",
            "| circuit | physical qubits (initial → final) | depth | 2-qubit gates | files |",
            "|---|---|---:|---:|---|",
        ]
        for name in cards:
            isa = json.loads((out_dir / name / backend / f"{name}_isa.json").read_text("utf-8"))
            files = [f for f in template_files(name, options) if f"/{backend}/" in f]
            lines.append(
                f"| `{name}` | {isa['initial_layout']} → {isa['layout']} | {isa['depth']} "
                f"| {isa['two_qubit_gates']} | {_links(files)} |"
            )
    if "hqcnn" in cards and options.images:
        lines += ["", "## The HQCNN circuit", "", "![hqcnn](hqcnn/hqcnn.png)"]
    lines += [
        "",
        "## Loading a circuit",
        "",
        "```python",
        "from qiskit import qpy",
        "",
        'with open("circuits/hqcnn/hqcnn.qpy", "rb") as handle:',
        "    circuit = qpy.load(handle)[0]",
        "```",
        "",
        "QPY keeps parameter names and order exactly; an OpenQASM 3 round trip renames them",
        "(`theta[0]` becomes `_theta_0_`) and orders them alphabetically.",
        "",
    ]
    return "\n".join(lines)


def options_from_manifest(manifest: dict) -> ExportOptions:
    """The options a library was exported with (PDFs off: they are never compared)."""
    saved = manifest["options"]
    return ExportOptions(
        backends=tuple(saved["backends"]), images=saved["images"], layout=saved["layout"], pdf=False
    )


# -- staleness check --------------------------------------------------------------------------
@dataclass
class LibraryCheck:
    """Result of :func:`check_library`: what differs, and what could not be compared here."""

    differences: list[str]
    skipped: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


#: Which generator versions must equal the manifest's for a file kind to be compared exactly.
_EXACT_WHEN = {
    "stable": (),
    "logical": ("qiskit",),
    "isa": ("qiskit", "qiskit-ibm-runtime"),
    "image": ("qiskit", "matplotlib", "pillow"),
    "isa_image": ("qiskit", "qiskit-ibm-runtime", "matplotlib", "pillow"),
    "layout": ("qiskit", "qiskit-ibm-runtime", "matplotlib", "pillow", "graphviz"),
    "index": ("qiskit", "qiskit-ibm-runtime", "matplotlib", "pillow", "pylatexenc", "graphviz"),
}


def _kind(path: str) -> str:
    if "/" not in path:
        return "index"
    isa = path.count("/") == 2
    if path.endswith("_layout.png"):
        return "layout"
    if path.endswith((".png", ".svg")):
        return "isa_image" if isa else "image"
    if path.endswith((".json", ".qpy")) and not isa:
        return "stable"  # cards and logical circuits depend on the code only
    return "isa" if isa else "logical"


def _same_file(path: str, committed: Path, fresh: Path) -> bool:
    if path.endswith(".qpy"):
        return circuit_fingerprint(load_qpy(committed)) == circuit_fingerprint(load_qpy(fresh))
    if path == "manifest.json":
        old, new = json.loads(committed.read_text("utf-8")), json.loads(fresh.read_text("utf-8"))
        return all(old[k] == new[k] for k in ("templates", "options"))
    return committed.read_bytes() == fresh.read_bytes()


def check_library(
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    names: Iterable[str] | None = None,
    images: bool = False,
) -> LibraryCheck:
    """Regenerate the library in a temporary folder and compare it with ``out``.

    Files that depend on package versions (diagrams, transpiled circuits, images) are compared
    exactly only where the installed versions equal those in ``out/manifest.json``; otherwise
    they are only required to exist, and the check lists them as skipped. Images are compared
    byte for byte only with ``images=True`` (slow; any change of a circuit already shows in its
    text diagram, QASM and card).
    """
    root = Path(out)
    manifest = read_manifest(root)
    options = options_from_manifest(manifest)
    names = list(names) if names is not None else template_names()
    installed = generator_versions()
    changed = {k for k, v in installed.items() if manifest["versions"].get(k) != v}
    differences: list[str] = []
    skipped: list[str] = []
    if manifest["templates"] != names:
        differences.append(f"manifest.json lists {manifest['templates']}, the code has {names}")
    expected = library_files(names, options)
    for path in expected:
        if not (root / path).is_file():
            differences.append(f"missing: {path}")
    differences += [
        f"not generated by the code: {path}" for path in stale_files(root, names, options)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if images and options.layout and not graphviz_available():
            images = False  # the layout plots cannot be redrawn: compare no image
            skipped.append("images: not redrawn, Graphviz is not installed")
        export_library(tmp, names=names, options=options, draw=images)
        for path in expected:
            needs = set(_EXACT_WHEN[_kind(path)]) & changed
            if not (root / path).is_file():
                continue
            if needs or not (Path(tmp) / path).is_file():
                why = f"other {', '.join(sorted(needs))}" if needs else "not regenerated"
                skipped.append(f"{path} (exists; not compared: {why})")
            elif not _same_file(path, root / path, Path(tmp) / path):
                differences.append(f"differs: {path}")
    return LibraryCheck(differences, skipped)


def read_manifest(out: str | os.PathLike = DEFAULT_OUT) -> dict:
    path = Path(out) / "manifest.json"
    if not path.exists():
        raise QhqcnnError(f"{path} is missing: run `qhqcnn circuits export --out {out}`")
    return json.loads(path.read_text(encoding="utf-8"))
