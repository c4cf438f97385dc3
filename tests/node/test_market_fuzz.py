"""Bad market input never crashes a node, never changes its replica, and every refusal is
counted by reason (Tier B: real NodeRuntimes with SQLite stores; hypothesis drives the inputs).

Three surfaces: the gossip validators of the jobs and proofs topics
(`runtime.validators[...]`), the bid server (`runtime.market.handle_bid`), and the market's
gossip intake (`runtime.market.on_gossip`). The validators are pure and are called on a node
that is not running. The bid server and the gossip intake need the market service running (it
spawns effects into its nursery), so they run in a `cluster`, and each hypothesis property runs
in a worker thread that calls into the trio loop (`trio.from_thread`): the nodes keep running
between examples, refusals accumulate on one node as they would in the field.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.containers import Bond, ProofStatement
from ledger.encoding import compute_statement_digest
from ledger.store import LedgerStore
from node.identity import NodeIdentity
from node.market.service import BID_TIMEOUT_S
from node.runtime import NodeRuntime
from node.topics import TOPIC_JOBS, TOPIC_PROOFS
from node.wire import (
    ENVELOPE_BYTES_MAX,
    SKEW_MS_DEFAULT,
    WireReason,
    decode_envelope,
    encode_envelope,
)
from node.wire.envelope import compute_signing_bytes
from node.wire.market_messages import Bid, BidReply, JobAnnounce, ProofStatementMsg, SliceTask
from p2p.abc import GossipMessage, PeerId, Verdict
from p2p.memory import MemoryNetwork
from tests.node.test_replica import (
    NETWORK_ID,
    Cluster,
    cluster,
    config,
    env,
    genesis_entries,
    identity,
    trio_ms,
    without_rate_limits,
)
from tests.node.wire_strategies import any_message, body_strategy

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FAST, max_examples=20)  # half-megabyte inputs: a few are enough
OTHER_NET = hashlib.sha256(b"another-network").digest()
WIRE_REASONS = frozenset(r.value for r in WireReason)
MARKET_TOPICS = {TOPIC_JOBS: JobAnnounce, TOPIC_PROOFS: ProofStatementMsg}

# Any msgpack value (what a hostile peer can put anywhere a field is expected).
MSGPACK_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
H32 = st.binary(min_size=32, max_size=32)


def snapshot(runtime: NodeRuntime) -> tuple[int, bytes]:
    replica = runtime.replica
    assert replica is not None
    return replica.store.count, replica.lattice.compute_root()


def signed_by(signer: NodeIdentity, body: Any, *, ts: int | None = None,
              net: bytes = NETWORK_ID) -> bytes:  # fmt: skip
    return encode_envelope(body, signer, trio_ms() if ts is None else ts, network_id=net,
                           bytes_max=2 * ENVELOPE_BYTES_MAX)  # fmt: skip


def task(index: int) -> SliceTask:
    return SliceTask(index, bytes([index % 256]) * 32, bytes(32), 10, 100, 50)


def job_announce(job_id: bytes = b"\x01" * 32, *, ezkl: str = "", until_ms: int = 0) -> JobAnnounce:
    return JobAnnounce(job_id, b"\x02" * 32, b"\x03" * 32, 0, until_ms or trio_ms() + 5_000,
                       trio_ms() + 60_000, "0.1.0", ezkl, (task(0), task(1)), ())  # fmt: skip


def statement_msg(signer: NodeIdentity | None, seed: int) -> ProofStatementMsg:
    rng = random.Random(seed)
    fields = [rng.randbytes(32) for _ in range(6)]
    statement = ProofStatement(fields[0], fields[1], seed % 65_536, fields[2], fields[3],
                               fields[4])  # fmt: skip
    sig = rng.randbytes(64) if signer is None else signer.sign(
        compute_statement_digest(statement, fields[5]))  # fmt: skip
    return ProofStatementMsg(fields[0], fields[1], seed % 65_536, fields[2], fields[3], fields[4],
                             fields[5], sig, 1000, bytes(32), rng.randbytes(32))  # fmt: skip


_NONCES = itertools.count()


def a_bid(job_id: bytes = b"\x09" * 32) -> Bid:
    """A valid bid, never twice the same (so only a deliberate replay is refused as one)."""
    return Bid(job_id, 0, (0, 1), 1, 10, 1_000, 100, 17, trio_ms() + 20_000 + next(_NONCES))


# -- (a) the jobs and proofs topics' validators -----------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeRuntime]:
    """Node 0 with a replica holding the genesis of accounts 0..2 (not running: the validators
    are pure and called directly)."""
    store = LedgerStore.open(tmp_path / "fuzz.sqlite", env())
    store.add_many(genesis_entries(3))
    me = identity(0)
    runtime = NodeRuntime(config(), me, MemoryNetwork(1).create(me.peer_id), control=False,
                          store=store, network_id=NETWORK_ID)  # fmt: skip
    without_rate_limits(runtime)
    assert runtime.market is not None
    yield runtime
    store.close()


class GossipJudge:
    """Feeds one topic's real validator; checks every verdict is counted once, by reason."""

    def __init__(self, runtime: NodeRuntime, topic: str) -> None:
        self.runtime = runtime
        self.topic = topic
        self.validator = runtime.validators[topic]
        self.before = snapshot(runtime)

    def __call__(self, data: bytes, source: NodeIdentity | str) -> tuple[Verdict, str]:
        peer = PeerId(source if isinstance(source, str) else source.peer_id)
        counted = Counter(self.validator.reasons)
        message = GossipMessage(self.topic, peer, peer, data, hashlib.sha256(data).digest())
        verdict = self.validator(message)
        delta = self.validator.reasons - counted
        assert sum(delta.values()) == 1, delta  # every verdict is counted, once
        [reason] = delta
        if verdict is Verdict.ACCEPT:
            assert reason == "accept"
        else:
            assert reason.startswith(f"{verdict.value}:"), (verdict, reason)
        assert snapshot(self.runtime) == self.before  # a validator never writes
        return verdict, reason

    def refused(self, data: bytes, source: NodeIdentity | str) -> tuple[Verdict, str]:
        verdict, reason = self(data, source)
        assert verdict is not Verdict.ACCEPT, reason
        return verdict, reason


topics = pytest.mark.parametrize("topic", sorted(MARKET_TOPICS))


@topics
def test_gossip_arbitrary_bytes_are_refused_and_counted(node: NodeRuntime, topic: str) -> None:
    judge = GossipJudge(node, topic)

    @FAST
    @given(data=st.binary(max_size=2048) | MSGPACK_VALUES.map(msgpack.packb))
    def prop(data: bytes) -> None:
        _verdict, reason = judge.refused(data, identity(1))
        assert reason.split(":", 1)[1] in WIRE_REASONS

    prop()


@topics
def test_gossip_valid_bodies_are_accepted_on_their_topic_only(
    node: NodeRuntime, topic: str
) -> None:
    judge = GossipJudge(node, topic)
    b = identity(1)

    @FAST
    @given(body=body_strategy(MARKET_TOPICS[topic]) | any_message())
    def prop(body: Any) -> None:
        verdict, reason = judge(signed_by(b, body), b)
        if isinstance(body, MARKET_TOPICS[topic]):
            assert verdict is Verdict.ACCEPT
        else:
            assert (verdict, reason) == (Verdict.REJECT, "reject:wrong_topic")

    prop()


def valid_message(topic: str, signer: NodeIdentity, **kw: Any) -> bytes:
    body = job_announce() if topic == TOPIC_JOBS else statement_msg(signer, 7)
    return signed_by(signer, body, **kw)


@topics
def test_gossip_mutated_valid_envelopes_are_refused(node: NodeRuntime, topic: str) -> None:
    judge = GossipJudge(node, topic)
    b = identity(1)
    valid = valid_message(topic, b)
    assert judge(valid, b) == (Verdict.ACCEPT, "accept")
    fields = msgpack.unpackb(valid)
    body_keys = sorted(fields["body"]) if isinstance(fields["body"], dict) else []

    @FAST
    @given(key=st.sampled_from(sorted(fields)), inner=st.sampled_from(body_keys or [""]),
           value=MSGPACK_VALUES, where=st.sampled_from(["envelope", "body", "bits"]),
           bit=st.integers(0, len(valid) * 8 - 1), cut=st.integers(0, len(valid) - 1))  # fmt: skip
    def prop(key: str, inner: str, value: Any, where: str, bit: int, cut: int) -> None:
        if where == "envelope":
            data = msgpack.packb(dict(fields, **{key: value}))
        elif where == "body" and body_keys:
            data = msgpack.packb(dict(fields, body=dict(fields["body"], **{inner: value})))
        else:
            flipped = bytearray(valid)
            flipped[bit // 8] ^= 1 << (bit % 8)
            data = bytes(flipped[: max(cut, bit // 8 + 1)])
        if data == valid:
            return
        judge.refused(data, b)

    prop()


def resigned(fields: dict[str, Any], signer: NodeIdentity, body: Any) -> bytes:
    """A correctly signed envelope around any body map (bypasses the schema's limits)."""
    sig = signer.sign(compute_signing_bytes(fields["type"], fields["v"], fields["net"],
                                            signer.public_key, fields["ts"], body))  # fmt: skip
    return msgpack.packb(dict(fields, body=body, signer=signer.public_key, sig=sig))  # type: ignore[no-any-return]


@topics
def test_gossip_oversize_is_rejected(node: NodeRuntime, topic: str) -> None:
    """Within its field limits no announcement or statement reaches the envelope limit (an
    announcement tops out near 76 KB), so an oversize one is signed around a stretched field."""
    judge = GossipJudge(node, topic)
    b = identity(1)
    fields = msgpack.unpackb(valid_message(topic, b))
    stretch = "software_version" if topic == TOPIC_JOBS else "signature"

    @FEW
    @given(extra=st.integers(1, 64 * 1024), seed=st.integers(0, 2**32), signed=st.booleans())
    def prop(extra: int, seed: int, signed: bool) -> None:
        rng = random.Random(seed)
        if signed:  # correctly signed, canonical, simply too big
            value = rng.randbytes(ENVELOPE_BYTES_MAX + extra)
            if topic == TOPIC_JOBS:
                value = value.hex()[: ENVELOPE_BYTES_MAX + extra]  # type: ignore[assignment]
            data = resigned(fields, b, dict(fields["body"], **{stretch: value}))
        else:
            data = rng.randbytes(ENVELOPE_BYTES_MAX + extra)
        assert len(data) > ENVELOPE_BYTES_MAX
        assert judge.refused(data, b) == (Verdict.REJECT, "reject:too_large")

    prop()


@topics
def test_gossip_wrong_network_signer_or_time_is_refused(node: NodeRuntime, topic: str) -> None:
    judge = GossipJudge(node, topic)
    b = identity(1)
    now = trio_ms()
    fields = msgpack.unpackb(valid_message(topic, b))

    @FAST
    @given(case=st.sampled_from(["network", "signer", "source", "signature", "stale", "future"]),
           net=st.just(b"") | H32.filter(lambda n: n != NETWORK_ID), seed=H32,
           sig=st.binary(min_size=64, max_size=64),
           ts=st.integers(0, now - SKEW_MS_DEFAULT - 1),
           ahead=st.integers(SKEW_MS_DEFAULT + 120_000, 2**40))  # fmt: skip
    def prop(case: str, net: bytes, seed: bytes, sig: bytes, ts: int, ahead: int) -> None:
        stranger = NodeIdentity.from_seed(seed)
        if case == "network":
            expected = (Verdict.IGNORE, "ignore:wrong_network")
            got = judge.refused(valid_message(topic, b, net=net), b)
        elif case == "signer":  # the stranger's own message, published under b's id
            expected = (Verdict.REJECT, "reject:signer_mismatch")
            got = judge.refused(valid_message(topic, stranger), b)
        elif case == "source":  # b's message, arriving as published by the stranger
            expected = (Verdict.REJECT, "reject:signer_mismatch")
            got = judge.refused(valid_message(topic, b), stranger)
        elif case == "signature":
            if sig == fields["sig"]:
                return
            expected = (Verdict.REJECT, "reject:bad_signature")
            got = judge.refused(msgpack.packb(dict(fields, sig=sig)), b)
        elif case == "stale":
            expected = (Verdict.IGNORE, "ignore:stale")
            got = judge.refused(valid_message(topic, b, ts=ts), b)
        else:
            expected = (Verdict.IGNORE, "ignore:future")
            got = judge.refused(valid_message(topic, b, ts=now + ahead), b)
        assert got == expected

    prop()


# -- (b) the bid server -------------------------------------------------------------------------


class BidJudge:
    """Sends requests to node 0's real bid server from a worker thread; checks every answer is a
    signed refusal, counted once by its reason, and that the replica never changed."""

    def __init__(self, c: Cluster) -> None:
        self.runtime = c.nodes[0]
        assert self.runtime.market is not None
        self.market = self.runtime.market
        self.before = snapshot(self.runtime)

    def counters(self) -> Counter[str]:
        return Counter(self.market.counters) + Counter(self.market.core.counters)

    def refused(self, peer: str, data: bytes) -> str:
        counted = self.counters()
        raw = trio.from_thread.run(self.market.handle_bid, PeerId(peer), data)
        envelope = decode_envelope(raw, trio_ms(), network_id=NETWORK_ID)
        assert envelope.signer == self.runtime.identity.public_key
        reply = envelope.body
        assert isinstance(reply, BidReply)
        assert reply.ok is False and reply.reason
        delta = self.counters() - counted
        assert delta == Counter({f"bids_refused:{reply.reason}": 1}), delta
        assert trio.from_thread.run_sync(snapshot, self.runtime) == self.before
        return reply.reason


async def test_bid_server_refuses_junk_and_counts_it(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as c:
        for n in c.nodes:
            without_rate_limits(n)
        judge = BidJudge(c)
        b = identity(1)
        replayed = signed_by(b, a_bid(b"\x07" * 32))
        valid_bytes = signed_by(b, a_bid())
        valid = msgpack.unpackb(valid_bytes)
        body_keys = sorted(valid["body"])

        @FAST
        @given(
            case=st.sampled_from(["bytes", "mutated", "unknown_job", "replay", "signer",
                                  "network", "stale", "type", "peer"]),
            data=st.binary(max_size=1024) | MSGPACK_VALUES.map(msgpack.packb),
            key=st.sampled_from(body_keys), value=MSGPACK_VALUES, job=H32, seed=H32,
            net=st.just(b"") | H32.filter(lambda n: n != NETWORK_ID),
            other=any_message().filter(lambda m: not isinstance(m, Bid)),
            peer=st.text(max_size=60),
        )  # fmt: skip
        def prop(case: str, data: bytes, key: str, value: Any, job: bytes, seed: bytes,
                 net: bytes, other: Any, peer: str) -> None:  # fmt: skip
            stranger = NodeIdentity.from_seed(seed)
            if case == "bytes":
                assert judge.refused(b.peer_id, data) in WIRE_REASONS
            elif case == "mutated":
                junk = msgpack.packb(dict(valid, body=dict(valid["body"], **{key: value})))
                if junk == valid_bytes:
                    return
                assert judge.refused(b.peer_id, junk) in WIRE_REASONS
            elif case == "unknown_job":  # node 0 has no jobs: a valid bid is for no job of ours
                assert judge.refused(b.peer_id, signed_by(b, a_bid(job))) == "unknown_job"
            elif case == "replay":
                reason = judge.refused(b.peer_id, replayed)
                assert reason in ("unknown_job", "replay")
            elif case == "signer":  # the stranger's bid arriving over b's connection
                assert judge.refused(b.peer_id, signed_by(stranger, a_bid(job))) == (
                    "signer_mismatch"
                )
            elif case == "network":
                data = signed_by(b, a_bid(job), net=net)
                assert judge.refused(b.peer_id, data) == "wrong_network"
            elif case == "stale":
                data = signed_by(b, a_bid(job), ts=trio_ms() - SKEW_MS_DEFAULT - 60_000)
                assert judge.refused(b.peer_id, data) == "stale"
            elif case == "type":
                assert judge.refused(b.peer_id, signed_by(b, other)) == "wrong_type"
            else:  # any peer string at all, with b's valid bid
                if peer == b.peer_id:
                    return
                assert judge.refused(peer, signed_by(b, a_bid(job))) == "signer_mismatch"

        await trio.to_thread.run_sync(prop)
        assert judge.market.counters.get("bids_refused:replay", 0) >= 1
        # Still serving: a fresh valid bid is answered as before.
        fresh = signed_by(b, a_bid())
        assert await trio.to_thread.run_sync(judge.refused, b.peer_id, fresh) == "unknown_job"


# -- (c) the market's gossip intake -------------------------------------------------------------


async def test_gossip_intake_never_raises(tmp_path: Path) -> None:
    """Random announcements and statements, signed or not, from anyone, straight into node 0's
    market (bonded, so announcements it can take make it bid: the bids fail and are counted)."""
    async with cluster(tmp_path, 2) as c:
        for n in c.nodes:
            without_rate_limits(n)
        runtime = c.nodes[0]
        market = runtime.market
        assert market is not None and runtime.replica is not None
        runtime.replica.submit(Bond(1_000))
        ezkl = market.core.profile.ezkl_version
        before = snapshot(runtime)
        signers = [identity(0), identity(1)]
        announcements = body_strategy(JobAnnounce) | st.builds(
            lambda j, e, d: job_announce(j, ezkl=ezkl if e else "x", until_ms=trio_ms() + d),
            H32, st.booleans(), st.integers(-1_000, 30_000),
        )  # fmt: skip
        statements = body_strategy(ProofStatementMsg) | st.builds(
            lambda who, seed: statement_msg(who, seed),
            st.none() | st.sampled_from(signers), st.integers(0, 2**32),
        )  # fmt: skip

        @FAST
        @given(body=announcements | statements, who=st.sampled_from(signers) | H32.map(
            NodeIdentity.from_seed), as_signer=st.booleans())  # fmt: skip
        def prop(body: Any, who: NodeIdentity, as_signer: bool) -> None:
            if isinstance(body, ProofStatementMsg) and as_signer:  # make its signature valid
                body = statement_msg(who, body.slice_index)
            trio.from_thread.run_sync(market.on_gossip, who.public_key, body)

        await trio.to_thread.run_sync(prop)
        k = market.core.counters
        assert k.get("bids_sent", 0) >= 1  # the intake went as far as bidding
        assert market.counters.get("statements_bad_signature", 0) >= 1
        # Every bid it sent (to peers that do not exist) is answered as lost, within the timeout.
        with trio.fail_after(BID_TIMEOUT_S + 5):
            while k.get("bids_sent", 0) > k.get("bids_lost", 0) + k.get(
                "bids_refused_by_requester", 0
            ):  # fmt: skip
                await trio.sleep(0.05)
        assert snapshot(runtime) == before  # gossip intake changes no replica by itself
        assert market.core.free_slots(trio_ms()) == market.core.profile.slots
