"""`dsperse-node verify BUNDLE RESULT_DIR`: check a job result offline (node.results).

Needs only the bundle, the result folder and the SRS the bundle names (looked up in
`<data dir>/cache`, the node's cache, or `--cache-dir`; never generated). Exit 0 only if every
proof verifies with EZKL and the chain, the input and the outputs hold; otherwise one line per
failure on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.cli.common import add_data_dir, resolve_data_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check a job result (proofs, chain, input, outputs) offline")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="the job's bundle folder")
    p.add_argument("result", type=Path, metavar="RESULT_DIR", help="the result folder")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="D",
        help="where the SRS is (default: <data dir>/cache)",
    )
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.proof_verifier import get_data_cache_dir
    from node.results import MANIFEST_NAME, read_result_manifest, verify_result

    cache_dir = args.cache_dir or get_data_cache_dir(resolve_data_dir(args))
    failures = verify_result(args.bundle, args.result, cache_dir)
    if args.json:
        print(json.dumps({"ok": not failures, "failures": failures}, indent=2))
    elif not failures:
        doc = read_result_manifest(args.result)
        print(f"result ok: job {doc['job_id']} on bundle {doc['bundle_id']}")
        print(
            f"{len(doc['slices'])} slice proof(s) verified with EZKL; chain, input and "
            f"outputs hold ({args.result / MANIFEST_NAME})"
        )
    for line in failures:
        print(f"dsperse-node verify: {line}", file=sys.stderr)
    return 1 if failures else 0
