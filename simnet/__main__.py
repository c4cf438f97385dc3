"""`python -m simnet ...` is the same as `dsperse-node ...` (with the simnet command)."""

import sys

from simnet.entry import main

sys.exit(main())
