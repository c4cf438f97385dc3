"""`dsperse-node slice | prove-local | run-local`: make a bundle, prove it locally, run it unproven.

`slice` cuts an ONNX model under a budget and writes a bundle (ONNX slices, EZKL settings and
compiled circuits calibrated on the chained activations, vk files, manifest). `prove-local` proves
every slice of a bundle on one input, each in its own process, verifies every proof and the chain's
linkage and prints a per-slice table. `run-local` runs the slices chained in onnxruntime and writes
the outputs. Heavy packages load inside the handlers so `--help` stays fast; EZKL itself only ever
runs in spawned worker processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.common import CliError

if TYPE_CHECKING:
    from slicing.progress import NullProgress, RichProgress

REPORT_COLUMNS = (
    ("slice", "index", "{:d}"),
    ("logrows", "logrows", "{:.0f}"),
    ("rows", "rows", "{:.0f}"),
    ("witness s", "witness_s", "{:.2f}"),
    ("prove s", "prove_s", "{:.2f}"),
    ("verify s", "verify_s", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("proof bytes", "proof_bytes", "{:.0f}"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "slice", help="cut an ONNX model into provable, linked EZKL slices (a bundle)"
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        metavar="SAMPLE.json",
        help='calibration sample, EZKL format {"input_data": [[...], ...]}',
    )
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE_DIR")
    p.add_argument(
        "--max-logrows",
        type=int,
        default=None,
        metavar="N",
        help="largest circuit per slice (default 15: a proof peaks near 740 MB, under 1 GB)",
    )
    p.add_argument(
        "--max-memory-mb",
        type=int,
        default=None,
        metavar="M",
        help="proving memory budget per slice",
    )
    p.add_argument(
        "--no-circuits",
        action="store_true",
        help="only plan: write the ONNX slices and manifest (fast, any model size)",
    )
    p.add_argument(
        "--exact-cost",
        action="store_true",
        help="let the planner measure candidate slices with EZKL (gen_settings)",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        metavar="S",
        help="fixed-point scale (bits) of every slice (default 7)",
    )
    _add_common(p)
    p.set_defaults(func=run_slice)
    _register_prove_local(sub)
    _register_run_local(sub)


def _register_prove_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prove-local", help="prove every slice of a bundle here, verify the chain")
    p.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    p.add_argument("--input", type=Path, required=True, metavar="X.json")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="REPORT",
        help="write per-slice figures, proven_fraction and chain_verified as JSON",
    )
    p.add_argument(
        "--max-rss-mb",
        type=float,
        default=None,
        metavar="M",
        help="kill a proving worker above this resident memory",
    )
    _add_bundle_id(p)
    _add_common(p)
    p.set_defaults(func=run_prove_local)


def _register_run_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run-local", help="run a bundle's slices chained (no proofs), write outputs")
    p.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    p.add_argument("--input", type=Path, required=True, metavar="X.json")
    p.add_argument("--output", type=Path, required=True, metavar="OUT.json")
    _add_bundle_id(p)
    p.set_defaults(func=run_run_local)


def _add_bundle_id(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle-id",
        default=None,
        metavar="ID",
        help="refuse the bundle unless its id (sha256 of the manifest) is ID",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--srs",
        type=Path,
        default=None,
        metavar="PATH",
        help="SRS file to use (e.g. a ceremony file); default: generate locally (dev)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="D",
        help="SRS and proving-key cache (default $DSPERSE_CACHE_DIR or ~/.cache/dsperse-node)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _progress(quiet: bool) -> NullProgress | RichProgress:
    """A progress context: rich bars on stderr, or nothing with --quiet."""
    from slicing.progress import NullProgress, RichProgress

    return NullProgress() if quiet else RichProgress()


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise CliError(f"{what} not found: {path}")


def _require_out_dir(out: Path) -> None:
    """Refuse an --out no bundle can be made at before a long build (e.g. under a regular file);
    other refusals (permissions) surface as OSErrors, one line each (node.cli.main)."""
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CliError(f"cannot create bundle {out}: {ancestor} is not a directory")


def _warn_dev_srs(args: argparse.Namespace) -> None:
    from slicing.srs import DEV_SRS_WARNING

    if args.srs is None:
        print(f"warning: {DEV_SRS_WARNING}", file=sys.stderr)
    else:
        _require_file(args.srs, "SRS file")


def run_slice(args: argparse.Namespace) -> int:
    from slicing import api
    from slicing.bundle import ScalePolicy
    from slicing.srs import get_cache_dir
    from slicing.types import Budget

    _require_file(args.model, "model")
    _require_file(args.input, "input file")
    _require_out_dir(args.out)
    logging.basicConfig(level=logging.ERROR)
    default = Budget()
    budget = Budget(
        max_logrows=args.max_logrows if args.max_logrows is not None else default.max_logrows,
        max_memory_mb=args.max_memory_mb,
    )
    if args.max_logrows is None and args.max_memory_mb is not None:
        budget = Budget(max_logrows=None, max_memory_mb=args.max_memory_mb)
    policy = ScalePolicy() if args.scale is None else ScalePolicy(scale=args.scale)
    if not 1 <= policy.scale <= 20:
        raise CliError(f"--scale {policy.scale} outside 1..20")
    opts = api.BuildOptions(
        budget=budget,
        policy=policy,
        cache_dir=get_cache_dir(args.cache_dir),
        srs_file=args.srs,
        circuits=not args.no_circuits,
        exact_cost=args.exact_cost,
    )
    if opts.circuits:
        _warn_dev_srs(args)
    with _progress(args.quiet) as progress:
        bundle = api.build_bundle(args.model, args.input, args.out, opts, progress)
    proven = sum(1 for e in bundle.slices if e["proven"])
    print(f"bundle {bundle.bundle_id} at {bundle.root}")
    for e in bundle.slices:
        where = f"logrows {e['logrows']}, {e['rows']} rows" if e["proven"] else e["fallback"]
        print(f"  slice {e['index']}: {e['note'] or '-'}  ({where})")
    print(f"{len(bundle.slices)} slices, {proven} provable")
    return 0


def _format_table(rows: list[dict[str, Any]]) -> str:
    header = [name for name, _, _ in REPORT_COLUMNS]
    lines = [header]
    for row in rows:
        if not row["proven"]:
            lines.append([str(row["index"]), "unproven (onnxruntime)"] + [""] * (len(header) - 2))
            continue
        lines.append([fmt.format(row[key]) for _, key, fmt in REPORT_COLUMNS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def run_prove_local(args: argparse.Namespace) -> int:
    from slicing import api
    from slicing.bundle import load_bundle
    from slicing.prover import EzklProver
    from slicing.srs import get_cache_dir

    bundle = load_bundle(args.bundle, args.bundle_id)
    inputs = api.read_inputs(bundle, args.input)
    if not any(e["proven"] for e in bundle.slices) and not bundle.manifest["circuits"]:
        raise CliError(f"bundle {args.bundle} has no circuits (made with --no-circuits)")
    _warn_dev_srs(args)
    prover = EzklProver(get_cache_dir(args.cache_dir), args.srs, max_rss_mb=args.max_rss_mb)
    with _progress(args.quiet) as progress:
        report = api.prove_chain(bundle, inputs, prover, progress)
    print(_format_table(report.slices))
    for name, out in report.outputs.items():
        values = ", ".join(f"{v:.4g}" for v in out["data"][:16])
        more = " …" if len(out["data"]) > 16 else ""
        print(f"output {name} {out['shape']}: [{values}{more}]")
    print(
        f"proven_fraction {report.proven_fraction:.2f}  chain_verified {report.chain_verified}"
        f"  linkage {report.linkage}"
    )
    if args.json is not None:
        _write_json(args.json, report.to_json())
    return 0 if report.chain_verified or report.proven_fraction < 1 else 1


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write JSON atomically (a temp file renamed), so a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def run_run_local(args: argparse.Namespace) -> int:
    from slicing import api
    from slicing.bundle import load_bundle

    bundle = load_bundle(args.bundle, args.bundle_id)
    inputs = api.read_inputs(bundle, args.input)
    outputs = api.run_local(bundle, inputs)
    _write_json(args.output, {"outputs": outputs})
    print(f"wrote {args.output} ({', '.join(outputs)})")
    return 0
