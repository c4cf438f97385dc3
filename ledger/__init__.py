"""ledger: a pure, deterministic, coordinator-free replicated ledger of stakes, escrow, rewards and
slashes. Imports only the standard library, msgpack and cryptography; never node/, p2p/, slicing/.

Design in one page (each module's docstring has the details):

- **Entries** (`containers.py`, `encoding.py`): every account (a 32-byte ed25519 key) signs its
  own hash-chain of entries (seq, prev hash, Lamport height, operation): a block-lattice with no
  global order and no leader. Kinds: genesis allocation and genesis bond (only the network's
  genesis key), transfer, bond, unbond, withdraw, job escrow, award, reward claim, refund, slash.
- **Entry-only checks** (`verify.py`): signatures, claim proofs (through the injected
  `ProofVerifier`) and slash evidence are checked once, on arrival, from the entry alone, so their
  verdict is the same everywhere. Invalid entries are refused with a `Reason`.
- **Convergence** (`lattice.py`): the state is a fold of the canonical entries in the canonical
  order (Lamport height, hash): a function of the *set* of entries. Forks resolve to the lowest
  hash; conflicting awards/claims/reports resolve to the first in the canonical order; entries
  missing a dependency wait in a bounded pending pool. State-dependent failures (overdraft, a
  second award for a slice, a second report of an offence) leave the entry in the set with no
  effect and a recorded reason.
- **Unbonding delay**: an unbond made at height h matures at h + `unbond_delay_heights`; a
  `Withdraw` at a height at or above that moves it back to the balance. Heights are Lamport
  clocks that an account can advance at will, so the delay alone would not stop a cheater;
  what does is that evidence is applied at the *offence's* position in the canonical order (the
  height of the award it concerns, or of the forked entries), not where the report lands. A prover
  that cheats on an award and then unbonds and withdraws is slashed before its unbond (which then
  fails for lack of bond), whenever the report arrives. Stake still unbonding stays slashable.
- **Slashing** (`transition.process_slash`): a fraction of bonded + unbonding stake, a share to
  the reporter, the rest burned; once per offence id. Honest keys never sign the conflicting or
  invalid objects evidence needs, so they cannot be slashed.
- **Persistence** (`store.py`): SQLite WAL, synchronous=FULL, one transaction per write; the
  integrity check on open re-hashes rows, re-links chains and compares the state root.
- **Sync** (`sync.py`): frontiers, entry ranges and fetch-by-hash as pure functions and frozen
  message bodies for node/ to carry.

Known limits (not solved here): there is no finality. An account that forks its chain can, by
publishing a lower-hash branch, undo its own entries after the fork point (say, an award that was
already proven); the fork is slashable, so the market should only trust counterparties whose
stake at risk covers the value. Lamport heights are self-declared: a low height only costs
re-application from the nearest snapshot, and writers should raise their height only from
entries they depend on. The pending pool is bounded; node/ should rate-limit orphans per peer.
"""
