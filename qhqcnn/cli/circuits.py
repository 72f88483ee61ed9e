"""``qhqcnn circuits``: list, show and export the circuit library."""

from __future__ import annotations

import argparse
import shutil

from qhqcnn.cli.options import add_deprecated_backend_flag
from qhqcnn.export.library import DEFAULT_BACKENDS, DEFAULT_OUT, TEMPLATES


def register(sub) -> None:
    """Add ``circuits list|show|export`` to the ``qhqcnn`` subparsers ``sub``."""
    group = sub.add_parser("circuits", help="list, show and export the circuit templates")
    commands = group.add_subparsers(dest="circuits_command", metavar="SUBCOMMAND")
    commands.required = True

    p = commands.add_parser("list", help="the exportable circuit templates")
    p.set_defaults(handler=_cmd_list)

    p = commands.add_parser("show", help="print a template's text diagram and summary")
    p.add_argument("name", help=f"template: {', '.join(TEMPLATES)}")
    p.add_argument(
        "--ibm-backend",
        dest="ibm_backend",
        default=None,
        metavar="NAME",
        help="show the ISA circuit for this IBM device (fake_torino, ...) instead",
    )
    add_deprecated_backend_flag(p)
    p.add_argument(
        "--fold", type=int, default=None, help="diagram width in characters (default: terminal)"
    )
    p.set_defaults(handler=_cmd_show)

    p = commands.add_parser(
        "export",
        help="write diagrams (txt/png/svg/tex), OpenQASM 3, QPY and JSON cards of every template",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"library folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--ibm-backend",
        dest="ibm_backend",
        action="append",
        default=None,
        metavar="NAME",
        help="also export the ISA circuit and its layout for this IBM device (repeatable; "
        f"default: {', '.join(DEFAULT_BACKENDS)})",
    )
    add_deprecated_backend_flag(p, append=True)
    p.add_argument("--no-isa", action="store_true", help="logical circuits only (no --ibm-backend)")
    p.add_argument(
        "--only", action="append", default=None, metavar="NAME", help="export only these templates"
    )
    p.add_argument("--no-images", action="store_true", help="skip the PNG/SVG drawings")
    p.add_argument(
        "--no-layout", action="store_true", help="skip the layout plots (they need Graphviz)"
    )
    p.add_argument(
        "--pdf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the LaTeX sources to PDF (default: where pdflatex exists)",
    )
    p.set_defaults(handler=_cmd_export)

    p = commands.add_parser(
        "check", help="regenerate the library in a temporary folder and list what is stale"
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"library folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--images", action="store_true", help="also redraw the images and compare their bytes"
    )
    p.add_argument("--verbose", action="store_true", help="also list the files not compared")
    p.set_defaults(handler=_cmd_check)


def _cmd_list(args: argparse.Namespace) -> int:
    from qhqcnn.export.library import load_template

    for name in TEMPLATES:
        template = load_template(name)
        print(f"{name:<24}{template.num_qubits} qubits  {template.description}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from qhqcnn.export.library import load_template, text_diagram

    template = load_template(args.name)
    fold = args.fold or max(40, shutil.get_terminal_size().columns)
    if args.ibm_backend:
        from qhqcnn.backends.devices import get_backend
        from qhqcnn.backends.transpile import transpile_template

        backend = get_backend(args.ibm_backend)
        prepared = transpile_template(template, backend)
        print(text_diagram(prepared.circuit, fold=fold, isa=True), end="")
        info = prepared.info
        print(
            f"{args.name} on {backend.name}: physical qubits {info['layout']} (after routing), "
            f"depth {info['depth']}, {info['two_qubit_gates']} two-qubit gates"
        )
        return 0
    print(text_diagram(template.circuit, fold=fold), end="")
    summary = template.summary()
    print(
        f"{args.name}: {summary['num_qubits']} qubits, {summary['num_inputs']} inputs, "
        f"{summary['num_weights']} weights, depth {summary['depth']}"
        + (f", outputs {', '.join(template.output_names)}" if template.output_names else "")
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from qhqcnn.export.library import ExportOptions, export_library, stale_files, template_names

    backends = () if args.no_isa else tuple(args.ibm_backend or DEFAULT_BACKENDS)
    options = ExportOptions(
        backends=backends, images=not args.no_images, layout=not args.no_layout, pdf=args.pdf
    )
    names = args.only or template_names()
    out = export_library(args.out, names=names, options=options, log=print)
    print(f"circuit library written to {out}")
    stale = stale_files(out, names, options)
    if stale:
        print(f"{len(stale)} file(s) in {out} were not written by this export (delete them?):")
        for path in stale:
            print(f"  {path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from qhqcnn.export.library import check_library

    result = check_library(args.out, images=args.images)
    for line in result.differences:
        print(line)
    if result.skipped:
        print(f"{len(result.skipped)} file(s) exist but were not compared (--verbose lists them)")
        for line in result.skipped if args.verbose else []:
            print(f"  {line}")
    if not result.ok:
        print(f"{args.out} is stale: regenerate it with `qhqcnn circuits export --out {args.out}`")
        return 1
    print(f"{args.out} matches the code")
    return 0
