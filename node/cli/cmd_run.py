"""`dsperse-node run`: start a node that joins the mesh and advertises its capacity.

Flags override the data dir's config.toml. At start it prints its peer id, its listen multiaddrs
(with /p2p/<peer id>, ready to hand to other nodes as --bootstrap) and the control API address
on stdout; logs (text or JSON lines) go to stderr. SIGINT or SIGTERM stops it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.common import add_data_dir, resolve_data_dir
from node.config import NodeConfig, load_config
from node.errors import DataDirError
from node.identity import KEY_FILE_NAME, load_identity

if TYPE_CHECKING:
    from ledger.store import LedgerStore
    from node.genesis import Genesis


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="start a node that joins the mesh")
    add_data_dir(p)
    p.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="listen address, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default from config)",
    )
    p.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join through: /ip4/…/tcp/…/p2p/<peer id> (repeatable; adds to config)",
    )
    p.add_argument("--control-listen", metavar="HOST:PORT", help="control API (loopback only)")
    p.add_argument("--advert-interval", type=float, metavar="S", help="seconds between adverts")
    p.add_argument("--log-format", choices=("text", "json"), help="log format on stderr")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--capacity", type=int, metavar="N", help="proof slots (= prover.slots)")
    p.add_argument("--price", type=int, metavar="P", help="price per slice proof")
    p.add_argument("--no-prove", action="store_true", help="relay and verify only (0 slots)")
    p.add_argument(
        "--genesis",
        type=Path,
        metavar="FILE",
        help="install this network genesis (as `init --genesis`) and run on that network",
    )
    p.add_argument(
        "--resync",
        action="store_true",
        help="move a damaged ledger.sqlite aside and rebuild the replica from peers",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="fault injection for tests and the simnet (repeatable): "
        "drop-ledger-gossip, fork-own-chain, tamper-proofs",
    )
    p.set_defaults(func=run)


def apply_flags(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    """Flags on top of the file, through the same validation as the file."""
    from node.config import config_from_mapping

    network: dict[str, Any] = {}
    if args.listen:
        network["listen"] = list(args.listen)
    if args.bootstrap:
        network["bootstrap"] = [*config.network.bootstrap, *args.bootstrap]
    if args.advert_interval is not None:
        network["advert_interval_s"] = args.advert_interval
    control = {"listen": args.control_listen} if args.control_listen else {}
    prover: dict[str, Any] = {}
    if getattr(args, "capacity", None) is not None:
        prover["slots"] = args.capacity
    if getattr(args, "price", None) is not None:
        prover["price_per_slice"] = args.price
    if getattr(args, "no_prove", False):
        prover["slots"] = 0
    log = {k: v for k, v in (("format", args.log_format), ("level", args.log_level)) if v}
    checked = config_from_mapping(
        {"network": network, "control": control, "log": log, "prover": prover}, config.data_dir
    )
    config = config.with_overrides("prover", **{k: getattr(checked.prover, k) for k in prover})
    config = config.with_overrides("network", **{k: getattr(checked.network, k) for k in network})
    config = config.with_overrides("control", **{k: getattr(checked.control, k) for k in control})
    return config.with_overrides("log", **{k: getattr(checked.log, k) for k in log})


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args)
    if not (data_dir / KEY_FILE_NAME).exists():
        raise DataDirError(f"{data_dir} has no identity; run `dsperse-node init` first")
    from node.faults import parse_faults

    faults = parse_faults(args.fault)
    config = apply_flags(load_config(data_dir), args)
    identity = load_identity(data_dir / KEY_FILE_NAME)
    genesis = _find_genesis(data_dir, args.genesis or config.ledger.genesis_path(data_dir))
    store: LedgerStore | None = None
    writable = True
    if genesis is not None:
        store, writable = open_replica(data_dir, genesis, args.resync, identity.public_key)

    from node.logs import setup_logging

    setup_logging(config.log.level, config.log.format)
    import trio

    from node.control import remove_control_file, write_control_file
    from node.runtime import NodeRuntime
    from node.topics import GOSSIP_TOPICS
    from node.wire import ENVELOPE_BYTES_MAX
    from p2p.abc import TransportSettings
    from p2p.libp2p_transport import Libp2pTransport  # heavy: imported only to run

    settings = TransportSettings(topics=GOSSIP_TOPICS, gossip_bytes_max=ENVELOPE_BYTES_MAX)
    transport = Libp2pTransport(
        identity.seed(),
        listen=config.network.listen,
        bootstrap=config.network.bootstrap,
        settings=settings,
    )
    from node.control import write_control_token

    token = write_control_token(config.data_dir)
    runtime = NodeRuntime(
        config,
        identity,
        transport,
        store=store,
        network_id=genesis.network_id if genesis is not None else b"",
        writable=writable,
        control_token=token,
        faults=faults,
    )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.run)
                print(f"peer id:   {identity.peer_id}")
                if genesis is None:
                    print("network:   none (no genesis: mesh only, no ledger; install one with "
                          "`run --genesis FILE`)")  # fmt: skip
                else:
                    print(f"network:   {genesis.network_id.hex()}")
                for addr in transport.listen_addrs():
                    print(f"listening: {addr}")
                print(f"control:   http://{runtime.control_addr}/status", flush=True)
                write_control_file(config.data_dir, runtime.control_addr)
                async for signum in signals:
                    print(f"stopping ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        raise _single_leaf(group) from None
    finally:
        remove_control_file(config.data_dir)
        if store is not None:
            store.close()
    return 0


def _find_genesis(data_dir: Path, source: Path | None) -> Genesis | None:
    from node.genesis import install_genesis, load_installed_genesis

    if source is not None:
        return install_genesis(data_dir, source)
    return load_installed_genesis(data_dir)


def open_replica(
    data_dir: Path, genesis: Genesis, resync: bool, account: bytes
) -> tuple[LedgerStore, bool]:
    """The node's replica with the genesis applied, and whether it may sign entries yet.

    A replica that holds none of its own entries (new, or rebuilt with --resync) signs nothing
    before one sync with a peer: if this key already has a chain out there, signing seq 0
    again would fork it, and forks are slashed."""
    from ledger.env import LedgerEnv
    from ledger.errors import StoreCorrupted, StoreError
    from ledger.store import LEDGER_FILE_NAME, LedgerStore
    from node.identity import Ed25519Scheme
    from node.proof_verifier import BundleProofVerifier

    path = data_dir / LEDGER_FILE_NAME
    if resync and path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.rename(path.with_name(f"{path.name}.damaged-{stamp}{suffix}"))
        print(f"moved {path} aside ({path.name}.damaged-{stamp}); rebuilding from peers",
              file=sys.stderr)  # fmt: skip
    env = LedgerEnv(genesis.config, Ed25519Scheme(), BundleProofVerifier.for_data_dir(data_dir))
    try:
        store = LedgerStore.open(path, env)
    except StoreCorrupted as exc:
        raise DataDirError(
            f"{exc}; nothing was changed. `dsperse-node run --resync` moves {path.name} aside "
            "and rebuilds the replica from peers"
        ) from None
    except StoreError as exc:
        raise DataDirError(
            f"{exc}: {path} does not belong to network {genesis.network_id.hex()[:16]}…; "
            "use the data dir of that network, or --resync to start this replica afresh"
        ) from None
    store.add_many(genesis.entries)
    return store, store.lattice.get_head(account) is not None


def _single_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one real error inside nested trio exception groups (else the group itself)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
