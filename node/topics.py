"""Every gossip topic and request/response protocol id of the network, versioned, in one place.

A breaking change to a message's meaning bumps the version in its name, so old and new nodes
never mistake each other's messages. Names follow libp2p's path style. The README lists the same
names; tests/p2p/test_node_shell.py checks they are unique, versioned and typed.
"""

from __future__ import annotations

from typing import Final

NETWORK: Final = "dsperse"

# Gossip topics: what every node must see. Small signed envelopes only (docs/design.md).
TOPIC_CAPACITY: Final = "/dsperse/capacity/1"  # signed CapacityAdvert, every advert_interval_s
TOPIC_JOBS: Final = "/dsperse/jobs/1"  # job announcements (bundle, slices, max price, deadline)
TOPIC_AWARDS: Final = "/dsperse/awards/1"  # requester awards a slice to a bidder
TOPIC_PROOFS: Final = "/dsperse/proofs/1"  # signed proof statements (proof bytes go by request)
TOPIC_LEDGER: Final = "/dsperse/ledger/1"  # new ledger entries

GOSSIP_TOPICS: Final = (TOPIC_CAPACITY, TOPIC_JOBS, TOPIC_AWARDS, TOPIC_PROOFS, TOPIC_LEDGER)

# Message types allowed on each topic (type names of node.wire registered bodies). A type on
# the wrong topic is rejected. Topics without registered types yet accept nothing.
TOPIC_MESSAGE_TYPES: Final[dict[str, frozenset[str]]] = {
    TOPIC_CAPACITY: frozenset({"capacity_advert"}),
    TOPIC_JOBS: frozenset({"job_announce"}),
    TOPIC_AWARDS: frozenset(),  # awards are ledger entries (on TOPIC_LEDGER)
    TOPIC_PROOFS: frozenset({"proof_statement"}),
    TOPIC_LEDGER: frozenset({"ledger_entries"}),
}

# Messages per second one publisher may originate on each topic (a burst of 4 s is allowed);
# beyond, its messages are ignored and counted (`ignore:rate_limited`).
TOPIC_RATE_PER_S: Final[dict[str, float]] = {
    TOPIC_CAPACITY: 20.0,  # adverts come every advert_interval_s (0.1 s at the least)
    TOPIC_JOBS: 5.0,
    TOPIC_AWARDS: 5.0,
    TOPIC_PROOFS: 20.0,
    TOPIC_LEDGER: 10.0,
}

# Request/response protocol ids: what one peer needs from another.
PROTOCOL_STATUS: Final = "/dsperse/status/1.0.0"  # peer's statistics summary (msgpack)
PROTOCOL_BID: Final = "/dsperse/bid/1.0.0"  # a prover's bid, sent to the requester
PROTOCOL_PROOF_FETCH: Final = "/dsperse/proof-fetch/1.0.0"  # proof bytes by hash (MiBs)
PROTOCOL_BUNDLE_FETCH: Final = "/dsperse/bundle-fetch/1.0.0"  # bundle files by hash
PROTOCOL_LEDGER_SYNC: Final = "/dsperse/ledger-sync/1.0.0"  # anti-entropy: entries we miss

REQUEST_PROTOCOLS: Final = (
    PROTOCOL_STATUS,
    PROTOCOL_BID,
    PROTOCOL_PROOF_FETCH,
    PROTOCOL_BUNDLE_FETCH,
    PROTOCOL_LEDGER_SYNC,
)
