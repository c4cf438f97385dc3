"""p2p: moves bytes between peers (py-libp2p adapter, in-memory twin). Knows nothing of proofs."""
