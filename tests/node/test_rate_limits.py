"""Per-publisher gossip rate limits and per-peer request limits (node.ratelimit)."""

from __future__ import annotations

from node.gossip import TopicValidator
from node.ratelimit import PeerLimits, TokenBucket
from node.topics import TOPIC_CAPACITY
from p2p.abc import GossipMessage, PeerId, Verdict
from tests.p2p.test_gossip_validators import ALICE, GOOD, NOW_MS


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(source: str, data: bytes = GOOD, n: int = 0) -> GossipMessage:
    return GossipMessage(TOPIC_CAPACITY, PeerId(source), PeerId(source), data, bytes([n]) * 32)


def test_a_publisher_over_its_rate_is_ignored_and_counted_others_are_not() -> None:
    clock = Clock()
    v = TopicValidator(TOPIC_CAPACITY, lambda: NOW_MS, rate_per_s=1.0, clock=clock)
    verdicts = [v(message(ALICE.peer_id, n=i)) for i in range(6)]
    assert verdicts[:4] == [Verdict.ACCEPT] * 4  # a burst of 4 s
    assert verdicts[4:] == [Verdict.IGNORE] * 2
    assert v.reasons["ignore:rate_limited"] == 2
    # Another publisher has its own budget; time refills the first one's.
    assert v(message("12D3KooWother", n=9)) is not Verdict.ACCEPT  # a signer mismatch: REJECT
    assert v.reasons["ignore:rate_limited"] == 2
    clock.now = 1.0
    assert v(message(ALICE.peer_id, n=7)) is Verdict.ACCEPT


def test_token_bucket_charges_a_sent_answer_in_full_within_one_burst_of_debt() -> None:
    bucket = TokenBucket(rate=10.0, burst=20.0, now=0.0)
    bucket.charge(50.0, 0.0)
    assert bucket.tokens == -20.0 and not bucket.has_tokens(0.0)
    assert bucket.has_tokens(2.1)  # paid back at 10/s


def test_peer_limits_refuse_a_flood_from_one_peer_only() -> None:
    limits = PeerLimits(requests_per_s=5.0, bytes_per_s=1000.0)
    admitted = sum(limits.admit("a", 0.0) for _ in range(20))
    assert admitted == 10  # a burst of 2 s
    assert limits.admit("b", 0.0)
    limits.get("b", 0.0)[1].charge(5000.0, 0.0)  # a big answer: b waits for its debt
    assert not limits.admit("b", 0.0)
    assert limits.admit("b", 2.1)
