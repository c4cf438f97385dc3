"""A ledger writer for the SIGKILL test: `python -m tests.ledger.writer_proc DB [MAX]`.

Opens the store, continues the chains it finds, and prints each entry's hash (hex) on stdout
only after `store.add` returned (the acknowledgement). Runs until killed or MAX entries.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ledger.builders import ChainWriter
from ledger.containers import GenesisAllocation, Transfer
from ledger.store import LedgerStore
from tests.ledger.helpers import GENESIS, identity, make_env

NAMES = ("kill-a", "kill-b", "kill-c")


def main() -> None:
    path = Path(sys.argv[1])
    count_max = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    store = LedgerStore.open(path, make_env())
    lattice = store.lattice
    writers = []
    for signer in (GENESIS, *(identity(n) for n in NAMES)):
        head = lattice.get_head(signer.public_key)
        writer = ChainWriter(signer) if head is None else ChainWriter(signer, *head)
        writer.observe_height(lattice.get_max_height())
        writers.append(writer)
    genesis, people = writers[0], writers[1:]
    for i in range(count_max):
        if i % 10 == 0:
            writer, op = genesis, GenesisAllocation(people[i % 3].account, 5)
        else:
            writer = people[i % 3]
            op = Transfer(people[(i + 1) % 3].account, 1)  # type: ignore[assignment]
        writer.observe_height(max(w.height for w in writers))
        entry = writer.append(op)
        store.add(entry)
        sys.stdout.write(entry.hash.hex() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
