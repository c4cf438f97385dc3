"""Per-peer rate limits for request/response protocols: two token buckets per peer (requests per
second and response bytes per second), for a bounded number of peers (the least recently seen
are forgotten first)."""

from __future__ import annotations

from collections import OrderedDict

PEERS_TRACKED_MAX = 1024


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, amount: float, now: float) -> bool:
        """Take `amount` if it is there (else take nothing): True if taken."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def charge(self, amount: float, now: float) -> None:
        """Take `amount` even beyond what is there (a response already sent), going into debt
        of at most one burst: the next requests wait until it is paid back."""
        self._refill(now)
        self.tokens = max(self.tokens - amount, -self.burst)

    def has_tokens(self, now: float) -> bool:
        self._refill(now)
        return self.tokens > 0


class PeerLimits:
    def __init__(self, requests_per_s: float, bytes_per_s: float) -> None:
        self.requests_per_s = requests_per_s
        self.bytes_per_s = bytes_per_s
        self._buckets: OrderedDict[str, tuple[TokenBucket, TokenBucket]] = OrderedDict()

    def get(self, peer: str, now: float) -> tuple[TokenBucket, TokenBucket]:
        """(requests, bytes) buckets of `peer`, bursts of two seconds' worth."""
        pair = self._buckets.get(peer)
        if pair is None:
            pair = (
                TokenBucket(self.requests_per_s, self.requests_per_s * 2, now),
                TokenBucket(self.bytes_per_s, self.bytes_per_s * 2, now),
            )
            self._buckets[peer] = pair
            while len(self._buckets) > PEERS_TRACKED_MAX:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(peer)
        return pair

    def admit(self, peer: str, now: float) -> bool:
        """One more request from `peer` now? (a request token, and no byte debt)"""
        requests, size = self.get(peer, now)
        return size.has_tokens(now) and requests.take(1, now)
