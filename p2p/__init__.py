"""Peer-to-peer transport: bytes by gossip topic and by request/response protocol id.

`p2p.abc` defines the `Transport` protocol; `p2p.libp2p_transport` (py-libp2p, the only module
importing libp2p, imported on demand because it is heavy) and `p2p.memory` implement it.
"""
