"""Ledger benchmark: `python -m bench.ledger [--json PATH] [--entries N] [--reconcile N]`.

Measures, with real ed25519 signatures (node.identity) and real msgpack decoding:
- apply: decode + entry checks (signature) + placement + state transition, entries arriving in
  order (the incremental path), and shuffled (the pending pool and re-ordering path);
- store: the same into SQLite (WAL, synchronous=FULL), batches of 1000 per transaction;
- state root: `Lattice.compute_root()` over the resulting state;
- reconcile: a replica missing N entries pulls them from a peer with the sync message bodies
  (`ledger.sync.pull_from`: frontiers, ranges, decode, verify, apply) until the roots agree.
Prints a table and, with --json, writes the figures (keys include entries_per_s, reconcile_100k_s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ledger.builders import ChainWriter
from ledger.config import mainnet_config
from ledger.containers import Bond, Entry, GenesisAllocation, Transfer, Unbond
from ledger.encoding import decode_entry, encode_entry
from ledger.env import LedgerEnv
from ledger.lattice import Lattice
from ledger.store import LedgerStore
from ledger.sync import pull_from
from node.identity import Ed25519Scheme, NodeIdentity
from node.proof_verifier import UndecidedVerifier


def _identity(i: int) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(b"bench-ledger-%d" % i).digest())


def make_workload(n_entries: int, n_accounts: int, seed: int) -> tuple[LedgerEnv, list[Entry]]:
    """Genesis funds every account, then random transfers (85%), bonds and unbonds."""
    rng = random.Random(seed)
    genesis = ChainWriter(_identity(-1))
    # The workload files no claims or evidence, so no proof reaches the verifier; were one to,
    # the honest answer of a replica without bundles is "cannot decide" (None), never a verdict.
    env = LedgerEnv(mainnet_config(genesis.account), Ed25519Scheme(), UndecidedVerifier())
    writers = [ChainWriter(_identity(i)) for i in range(n_accounts)]
    entries = [genesis.append(GenesisAllocation(w.account, 10**9)) for w in writers]
    height = genesis.height
    while len(entries) < n_entries:
        w = rng.choice(writers)
        roll = rng.random()
        if roll < 0.85:
            recipient, amount = rng.choice(writers).account, rng.randrange(1, 1000)
            if recipient == w.account:
                continue
            op: Transfer | Bond | Unbond = Transfer(recipient, amount)
        elif roll < 0.95:
            op = Bond(rng.randrange(1, 1000))
        else:
            op = Unbond(rng.randrange(1, 100))
        w.observe_height(height)
        entries.append(w.append(op))
        height = w.height
    return env, entries[:n_entries]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_apply(env: LedgerEnv, encoded: list[bytes]) -> tuple[float, Lattice]:
    lattice = Lattice(env)
    proof_max = env.config.proof_bytes_max

    def run() -> None:
        for data in encoded:
            lattice.add(decode_entry(data, proof_max))
        lattice.compute_root()  # any deferred re-ordering is paid inside the timing

    return _timed(run), lattice


def _time_libsodium_verify(entries: list[Entry]) -> float:
    """For comparison only: the same verifications through libsodium (0.0 if unavailable)."""
    try:
        from nacl.bindings import crypto_sign_open
    except ImportError:
        return 0.0
    start = time.perf_counter()
    for e in entries:
        crypto_sign_open(e.header.signature + e.hash, e.header.account)
    return time.perf_counter() - start


def bench_late_entry(lattice: Lattice, entries: list[Entry]) -> float:
    """A concurrent entry that sorts 1000 entries back: the cost of re-ordering."""
    height = entries[-1000].header.height
    late = ChainWriter(_identity(10**6), height=height - 1).append(Bond(1))
    lattice.compute_root()

    def run() -> None:
        lattice.add(late)
        lattice.compute_root()

    return _timed(run)


def bench_store(env: LedgerEnv, entries: list[Entry]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = LedgerStore.open(Path(tmp) / "ledger.sqlite", env)

        def run() -> None:
            for i in range(0, len(entries), 1000):
                store.add_many(entries[i : i + 1000])

        seconds = _timed(run)
        store.close()
    return seconds


Row = tuple[str, str, str]


def measure_apply(args: argparse.Namespace, figures: dict[str, float | int]) -> list[Row]:
    env, entries = make_workload(args.entries, args.accounts, args.seed)
    encoded = [encode_entry(e) for e in entries]
    n = len(entries)
    proof_max = env.config.proof_bytes_max
    t_sig = _timed(
        lambda: [
            env.signatures.verify(e.header.account, e.hash, e.header.signature) for e in entries
        ]
    )
    t_decode = _timed(lambda: [decode_entry(d, proof_max) for d in encoded])
    t_sodium = _time_libsodium_verify(entries)
    t_apply, lattice = bench_apply(env, encoded)
    shuffled = encoded[:]
    random.Random(args.seed).shuffle(shuffled)
    t_shuffled, shuffled_lattice = bench_apply(env, shuffled)
    assert shuffled_lattice.compute_root() == lattice.compute_root(), "order changed the root"
    t_store = bench_store(env, entries)
    t_root = sorted(_timed(lattice.compute_root) for _ in range(5))[2]
    t_late = bench_late_entry(lattice, entries)
    figures.update(
        entries=n,
        accounts=args.accounts,
        entries_per_s=round(n / t_apply),
        entries_shuffled_per_s=round(n / t_shuffled),
        store_entries_per_s=round(n / t_store),
        signature_verify_us=round(t_sig / n * 1e6, 1),
        decode_us=round(t_decode / n * 1e6, 1),
        libsodium_verify_us=round(t_sodium / n * 1e6, 1) if t_sodium else 0,
        apply_us=round(t_apply / n * 1e6, 1),
        state_root_s=round(t_root, 4),
        late_entry_reorder_s=round(t_late, 4),
    )
    return [
        (
            "apply in order (decode+verify+apply)",
            f"{figures['entries_per_s']:,} entries/s",
            f"{figures['apply_us']} µs/entry",
        ),
        (
            "apply shuffled (pending pool, re-order)",
            f"{figures['entries_shuffled_per_s']:,} entries/s",
            "",
        ),
        ("store (SQLite WAL FULL, 1000/tx)", f"{figures['store_entries_per_s']:,} entries/s", ""),
        ("  of which ed25519 verify", f"{figures['signature_verify_us']} µs/entry", ""),
        ("  of which decode (strict, canonical)", f"{figures['decode_us']} µs/entry", ""),
        (
            "  (ed25519 verify via libsodium instead)",
            f"{figures['libsodium_verify_us']} µs/entry",
            "PyNaCl; not used by the ledger",
        ),
        (
            f"state root ({args.accounts} accounts, {n} entries)",
            f"{t_root * 1000:.1f} ms",
            "median of 5",
        ),
        (
            "late entry (1000 back) re-ordered",
            f"{t_late * 1000:.1f} ms",
            "re-applied from the nearest snapshot",
        ),
    ]


def measure_reconcile(args: argparse.Namespace, figures: dict[str, float | int]) -> list[Row]:
    base = min(10_000, args.entries)
    env, all_entries = make_workload(base + args.reconcile, args.accounts, args.seed + 1)
    full = Lattice(env)
    full.add_many(all_entries, verified=True)
    full.compute_root()
    behind = Lattice(env)
    behind.add_many(all_entries[:base], verified=True)
    behind.compute_root()
    start = time.perf_counter()
    report = pull_from(behind, full)  # decodes and verifies every entry it receives
    root = behind.compute_root()
    t_rec = time.perf_counter() - start
    assert root == full.compute_root(), "replicas did not converge"
    assert report.added == args.reconcile
    key = "reconcile_100k_s" if args.reconcile == 100_000 else f"reconcile_{args.reconcile}_s"
    figures[key] = round(t_rec, 2)
    figures["reconcile_entries_per_s"] = round(args.reconcile / t_rec)
    note = f"{figures['reconcile_entries_per_s']:,} entries/s, {report.rounds} rounds"
    return [(f"reconcile {args.reconcile:,} missing entries", f"{t_rec:.2f} s", note)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--entries", type=int, default=20_000, help="entries for apply/store")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument(
        "--reconcile", type=int, default=100_000, help="entries the replicas differ by (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    figures: dict[str, float | int] = {}
    rows = measure_apply(args, figures)
    if args.reconcile:
        rows += measure_reconcile(args, figures)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    rows.append(("peak RSS", f"{figures['peak_rss_mb']} MB", ""))
    rows.append(("machine load (1 min avg, at the end)", f"{figures['load_avg_1m']}", ""))
    width = max(len(r[0]) for r in rows)
    print(f"ledger benchmark (pid {os.getpid()}, {os.cpu_count()} cpus)")
    print(f"{'measure':<{width}}  {'result':>22}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
