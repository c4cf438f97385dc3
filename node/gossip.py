"""Gossip validation: bytes from the transport -> ACCEPT / IGNORE / REJECT, with counted reasons.

Written like the Ethereum p2p spec: `validate_gossip` raises `GossipIgnore` or `GossipReject`
with a reason; `TopicValidator` wraps it into the transport's `Verdict` and counts every refusal
by reason. Validators are pure (py-libp2p caches verdicts per message id): they depend only on
the bytes, the topic and the clock window. Replay checks need state, so they run after delivery
(`ReplayFilter`).

REJECT (the forwarder misbehaved, its score drops): malformed, oversize, not canonical, bad
envelope or fields, bad signature, a type not allowed on the topic, a signer other than the
publisher. IGNORE (nobody is provably at fault): unknown type or version (a newer peer), a
timestamp outside the skew window (clock drift or delay), a message of another network (its
genesis differs; counted as `wrong_network`, never acted on).

A topic can add its own content check (`content_check`): the ledger topic checks every entry it
carries with the ledger's entry-only rules (signature, body, proof) before it is forwarded.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from ledger.interfaces import SignatureScheme
from node.errors import NodeError
from node.identity import compute_peer_id
from node.ratelimit import PEERS_TRACKED_MAX, TokenBucket
from node.topics import TOPIC_MESSAGE_TYPES
from node.wire import ENVELOPE_BYTES_MAX, Envelope, ReplayGuard, WireError, WireReason
from node.wire import decode_envelope as decode_wire_envelope
from p2p.abc import GossipMessage, Verdict

_IGNORED_REASONS = frozenset(
    {
        WireReason.UNKNOWN_TYPE,
        WireReason.UNSUPPORTED_VERSION,
        WireReason.STALE,
        WireReason.FUTURE,
        # Another network's message says nothing bad about the peer that forwarded it (it may
        # serve both networks); it is dropped and counted, never scored.
        WireReason.WRONG_NETWORK,
    }
)

# A topic's extra check on a decoded envelope: raises GossipIgnore / GossipReject.
ContentCheck = Callable[[Envelope], None]


class GossipRefusal(NodeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GossipIgnore(GossipRefusal):
    """Drop silently: not useful now, nobody provably at fault."""


class GossipReject(GossipRefusal):
    """Drop and penalise the forwarding peer."""


def validate_gossip(
    topic: str,
    data: bytes,
    source_peer_id: str,
    now_ms: int,
    bytes_max: int = ENVELOPE_BYTES_MAX,
    scheme: SignatureScheme | None = None,
    network_id: bytes = b"",
) -> Envelope:
    """The decoded envelope, or raise GossipIgnore / GossipReject. Pure."""
    allowed = TOPIC_MESSAGE_TYPES.get(topic)
    # [IGNORE] the topic is one we know (the transport only delivers subscribed topics)
    if allowed is None:
        raise GossipIgnore("unknown_topic")
    # [REJECT] the payload fits the envelope limit (checked before any decoding work)
    if len(data) > bytes_max:
        raise GossipReject(WireReason.TOO_LARGE.value)
    try:
        envelope = decode_wire_envelope(
            data, now_ms, bytes_max=bytes_max, scheme=scheme, network_id=network_id
        )
    except WireError as exc:
        if exc.reason in _IGNORED_REASONS:
            raise GossipIgnore(exc.reason.value) from None
        raise GossipReject(exc.reason.value) from None
    # [REJECT] the message type belongs on this topic
    if envelope.type not in allowed:
        raise GossipReject("wrong_topic")
    # [REJECT] the envelope's signer is the peer that published it (no re-publishing others')
    if compute_peer_id(envelope.signer) != source_peer_id:
        raise GossipReject("signer_mismatch")
    return envelope


class TopicValidator:
    """The transport-facing validator of one topic; counts each verdict's reason."""

    def __init__(
        self,
        topic: str,
        now_ms: Callable[[], int],
        *,
        network_id: bytes = b"",
        content_check: ContentCheck | None = None,
        rate_per_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self._now_ms = now_ms
        self.network_id = network_id
        self.content_check = content_check
        self.reasons: Counter[str] = Counter()  # "reject:bad_signature", "ignore:stale", ...
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _admit(self, source: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate_per_s, self.rate_per_s * 4, now)
            while len(self._buckets) > PEERS_TRACKED_MAX:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(source)
        return bucket.take(1, now)

    def __call__(self, message: GossipMessage) -> Verdict:
        # [IGNORE] a publisher over its rate on this topic (validators run once per message id,
        # so this counts what each publisher originates, not what neighbours forward)
        if self.rate_per_s and not self._admit(message.source):
            self.reasons["ignore:rate_limited"] += 1
            return Verdict.IGNORE
        try:
            envelope = validate_gossip(
                self.topic,
                message.data,
                message.source,
                self._now_ms(),
                network_id=self.network_id,
            )
            if self.content_check is not None:
                self.content_check(envelope)
        except GossipIgnore as exc:
            self.reasons[f"ignore:{exc.reason}"] += 1
            return Verdict.IGNORE
        except GossipReject as exc:
            self.reasons[f"reject:{exc.reason}"] += 1
            return Verdict.REJECT
        self.reasons["accept"] += 1
        return Verdict.ACCEPT


class _VerifiedByValidator:
    """Transports deliver only what the topic validator accepted, and the validator checked the
    signature of these exact bytes: checking it again after delivery would only repeat the
    most expensive step of the hot path."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return True


_VERIFIED = _VerifiedByValidator()


class ReplayFilter:
    """After delivery: decode again with a replay guard; a repeat envelope is dropped, counted.
    Only ever fed delivered (validator-accepted) messages, so the signature is not re-checked."""

    def __init__(self, now_ms: Callable[[], int], network_id: bytes = b"") -> None:
        self._now_ms = now_ms
        self._network_id = network_id
        self._guard = ReplayGuard()
        self.replays = 0
        self.expired = 0

    def process(self, message: GossipMessage) -> Envelope | None:
        now = self._now_ms()
        try:
            envelope = validate_gossip(
                message.topic,
                message.data,
                message.source,
                now,
                scheme=_VERIFIED,
                network_id=self._network_id,
            )
            self._guard.check_and_remember(envelope, now)
        except GossipRefusal:  # the clock moved past the window between validation and delivery
            self.expired += 1
            return None
        except WireError:  # REPLAY
            self.replays += 1
            return None
        return envelope
