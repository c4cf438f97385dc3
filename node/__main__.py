"""`python -m node ...` is the same as `dsperse-node ...`."""

import sys

from node.cli import main

sys.exit(main())
