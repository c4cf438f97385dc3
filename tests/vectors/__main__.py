"""`python -m tests.vectors [--out DIR]`: write the ledger's pre/entry/post vectors."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.vectors import VECTORS_DIR, write


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.vectors")
    parser.add_argument("--out", type=Path, default=VECTORS_DIR)
    args = parser.parse_args()
    count = write(args.out)
    print(f"wrote {count} files under {args.out}")


if __name__ == "__main__":
    main()
