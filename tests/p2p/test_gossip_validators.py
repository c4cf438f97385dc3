"""node.gossip validators fuzzed: malformed, wrongly signed, oversize, replayed, stale, misplaced.

The validator must never raise, never accept anything but an intact envelope signed by the
publisher, and count every refusal under its reason.
"""

from __future__ import annotations

import hashlib

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.gossip import ReplayFilter, TopicValidator, validate_gossip
from node.identity import NodeIdentity
from node.topics import GOSSIP_TOPICS, TOPIC_CAPACITY, TOPIC_JOBS
from node.wire import ENVELOPE_BYTES_MAX, SKEW_MS_DEFAULT, encode_envelope
from node.wire.messages import CapacityAdvert
from p2p.abc import GossipMessage, PeerId, TransportSettings, Verdict
from p2p.memory import MemoryNetwork

NOW_MS = 1_800_000_000_000
ALICE = NodeIdentity.from_seed(b"\x01" * 32)
BOB = NodeIdentity.from_seed(b"\x02" * 32)
ADVERT = CapacityAdvert(
    free_slots=1,
    total_slots=2,
    price_per_slice=10,
    max_logrows=17,
    memory_mb_max=4096,
    software_version="0.1.0",
    ezkl_version="23.0.5",
    listen_addrs=("/ip4/127.0.0.1/tcp/4001/p2p/" + ALICE.peer_id,),
)
GOOD = encode_envelope(ADVERT, ALICE, NOW_MS)


def gossip(data: bytes, source: str = ALICE.peer_id, topic: str = TOPIC_CAPACITY) -> GossipMessage:
    return GossipMessage(
        topic, PeerId(source), PeerId(BOB.peer_id), data, hashlib.sha256(data).digest()
    )


def fresh_validator(topic: str = TOPIC_CAPACITY) -> TopicValidator:
    return TopicValidator(topic, lambda: NOW_MS)


def test_an_intact_advert_from_its_signer_is_accepted() -> None:
    v = fresh_validator()
    assert v(gossip(GOOD)) is Verdict.ACCEPT
    assert validate_gossip(TOPIC_CAPACITY, GOOD, ALICE.peer_id, NOW_MS).body == ADVERT
    assert v.reasons == {"accept": 1}


@given(st.binary(max_size=4096), st.sampled_from(GOSSIP_TOPICS))
def test_arbitrary_bytes_never_crash_and_are_counted(data: bytes, topic: str) -> None:
    v = fresh_validator(topic)
    verdict = v(gossip(data, topic=topic))
    assert verdict in (Verdict.REJECT, Verdict.IGNORE)
    assert sum(v.reasons.values()) == 1
    (reason,) = v.reasons
    assert reason.startswith(verdict.value + ":")


@given(st.data())
@settings(max_examples=300)
def test_any_mutation_of_a_valid_advert_is_refused(data: st.DataObject) -> None:
    raw = bytearray(GOOD)
    positions = data.draw(
        st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4, unique=True)
    )
    for pos in positions:
        raw[pos] ^= data.draw(st.integers(1, 255))
    v = fresh_validator()
    assert v(gossip(bytes(raw))) is not Verdict.ACCEPT
    assert sum(v.reasons.values()) == 1


@given(st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_envelopes_are_rejected(tail: bytes) -> None:
    v = fresh_validator()
    assert v(gossip(GOOD + tail)) is Verdict.REJECT
    assert v(gossip(GOOD[: -len(tail)] if len(tail) < len(GOOD) else b"")) is Verdict.REJECT
    assert v.reasons["reject:malformed"] + v.reasons["reject:not_canonical"] >= 1


def test_wrong_signature_signer_topic_size_and_time_each_have_a_reason() -> None:
    v = fresh_validator()
    bad_sig = GOOD[:-1] + bytes([GOOD[-1] ^ 1])  # the signature is the last field
    cases = [
        (gossip(bad_sig), Verdict.REJECT),
        (gossip(GOOD, source=BOB.peer_id), Verdict.REJECT),  # re-published by someone else
        (gossip(b"\x00" * (ENVELOPE_BYTES_MAX + 1)), Verdict.REJECT),
        (gossip(encode_envelope(ADVERT, ALICE, NOW_MS - SKEW_MS_DEFAULT - 1)), Verdict.IGNORE),
        (gossip(encode_envelope(ADVERT, ALICE, NOW_MS + SKEW_MS_DEFAULT + 1)), Verdict.IGNORE),
    ]
    for message, expected in cases:
        assert v(message) is expected
    jobs = fresh_validator(TOPIC_JOBS)
    assert jobs(gossip(GOOD, topic=TOPIC_JOBS)) is Verdict.REJECT
    assert v.reasons == {
        "reject:bad_signature": 1,
        "reject:signer_mismatch": 1,
        "reject:too_large": 1,
        "ignore:stale": 1,
        "ignore:future": 1,
    }
    assert jobs.reasons == {"reject:wrong_topic": 1}


def test_validators_are_pure_and_replays_are_dropped_after_delivery() -> None:
    v = fresh_validator()
    replays = ReplayFilter(lambda: NOW_MS)
    message = gossip(GOOD)
    assert [v(message), v(message)] == [Verdict.ACCEPT, Verdict.ACCEPT]  # pure: same verdict
    assert replays.process(message) is not None
    assert replays.process(message) is None
    assert replays.replays == 1


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
@settings(max_examples=25, deadline=None)
def test_fuzzed_gossip_through_the_memory_transport_is_counted_not_delivered(
    payloads: list[bytes],
) -> None:
    async def main() -> None:
        net = MemoryNetwork(7)
        s = TransportSettings(topics=GOSSIP_TOPICS, gossip_bytes_max=ENVELOPE_BYTES_MAX)
        a, b = net.create(ALICE.peer_id, s), net.create(BOB.peer_id, s)
        validator = TopicValidator(TOPIC_CAPACITY, lambda: NOW_MS)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await a.subscribe(TOPIC_CAPACITY, fresh_validator())
            inbox = await b.subscribe(TOPIC_CAPACITY, validator)
            await b.connect(a.listen_addrs()[0])
            for data in payloads:
                await a.publish(TOPIC_CAPACITY, data)
            await a.publish(TOPIC_CAPACITY, GOOD)
            with trio.fail_after(5):
                assert (await inbox.receive()).data == GOOD
            nursery.cancel_scope.cancel()
        counts = b.statistics().messages_in[TOPIC_CAPACITY]
        dup_of_good = payloads.count(GOOD)
        assert counts.get("accept", 0) == 1 + dup_of_good
        assert counts.get("reject", 0) + counts.get("ignore", 0) == len(payloads) - dup_of_good
        assert sum(validator.reasons.values()) == len(payloads) + 1

    trio.run(main)
