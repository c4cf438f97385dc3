"""The `dsperse-node` console script: node's CLI plus the `simnet` command of this top layer.

Nothing may import simnet, so the composition happens here, on top: node's parser accepts extra
command modules from higher layers.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from node.cli import main as node_main
from simnet import cli as simnet_cli


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, extra=(simnet_cli,))


if __name__ == "__main__":
    sys.exit(main())
