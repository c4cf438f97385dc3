"""ledger: a pure, deterministic, coordinator-free replicated ledger.

Tracks stakes, escrow, rewards and slashes.

Imports only the standard library, msgpack and cryptography. Never imports node/, p2p/ or slicing/.
"""
