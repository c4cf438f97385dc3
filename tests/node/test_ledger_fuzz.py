"""Bad ledger input never crashes a node, never changes its replica, and every refusal is counted
by reason (Tier B: a real NodeRuntime with a SQLite store; hypothesis drives the inputs).

Three surfaces: the ledger topic's gossip validator (`runtime.validators[TOPIC_LEDGER]`), the
anti-entropy server (`runtime.sync.handle_request`), and, after both were fuzzed, a real sync
exchange between two running nodes (the node is not wedged). Hypothesis properties are sync
functions defined inside each test (one node per test, shared by its examples, so refusals
accumulate on one replica as they would in the field); the async sync server is driven with one
`trio.run` per example on a shared `MockClock` that the test moves on, so rate limits refill
deterministically.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st

from ledger.builders import ChainWriter, build_entry
from ledger.constants import HEIGHT_MAX, SEQ_MAX
from ledger.containers import Bond, Entry, Transfer
from ledger.encoding import decode_entry, encode_entry
from ledger.lattice import AddStatus, LatticeStatistics
from ledger.store import LedgerStore
from node.identity import NodeIdentity
from node.ledger_sync import REQUEST_BYTES_MAX
from node.replica import WalletRefusal
from node.runtime import NodeRuntime
from node.topics import PROTOCOL_LEDGER_SYNC, TOPIC_LEDGER
from node.wire import (
    ENVELOPE_BYTES_MAX,
    REGISTRY,
    SKEW_MS_DEFAULT,
    Envelope,
    WireError,
    WireReason,
    decode_envelope,
    encode_envelope,
)
from node.wire.envelope import compute_signing_bytes
from node.wire.ledger_messages import (
    SYNC_REQUEST_TYPES,
    SYNC_RESPONSE_BYTES_MAX,
    LedgerEntries,
    SyncEntriesRequest,
    SyncEntriesResponse,
    SyncFrontierRequest,
    SyncFrontierResponse,
    SyncHashesRequest,
    SyncHashesResponse,
    SyncRefused,
)
from node.wire.schema import FieldSpec, body_from_wire, field_specs, to_wire
from p2p.abc import GossipMessage, PeerId, Verdict
from p2p.memory import MemoryNetwork
from tests.ledger.test_encoding import operations
from tests.node.test_replica import (
    GENESIS_KEY,
    NETWORK_ID,
    cluster,
    config,
    env,
    genesis_entries,
    identity,
    trio_ms,
    without_rate_limits,
)
from tests.node.wire_strategies import any_message, body_strategy, strategy_for

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=25)  # half-megabyte inputs: a few are enough
OTHER_NET = hashlib.sha256(b"another-network").digest()
WIRE_REASONS = frozenset(r.value for r in WireReason)
SERVED = {
    SyncFrontierRequest: SyncFrontierResponse,
    SyncEntriesRequest: SyncEntriesResponse,
    SyncHashesRequest: SyncHashesResponse,
}

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


def say(text: str) -> None:
    """A note in hypothesis's failure report (also usable outside an example)."""
    if currently_in_test_context():
        note(text)


# -- a node and what must never change --------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeRuntime]:
    """Node 0 with a replica holding the genesis of accounts 0..2 (not running: the validator
    and the sync server are called directly)."""
    store = LedgerStore.open(tmp_path / "fuzz.sqlite", env())
    store.add_many(genesis_entries(3))
    me = identity(0)
    runtime = NodeRuntime(config(), me, MemoryNetwork(1).create(me.peer_id), control=False,
                          store=store, network_id=NETWORK_ID)  # fmt: skip
    yield without_rate_limits(runtime)
    store.close()


def snapshot(runtime: NodeRuntime) -> tuple[int, bytes, LatticeStatistics]:
    replica = runtime.replica
    assert replica is not None
    return replica.store.count, replica.lattice.compute_root(), replica.lattice.statistics()


def fresh_entry(runtime: NodeRuntime, signer: NodeIdentity, op: Any = None) -> Entry:
    """A valid next entry of `signer`'s chain that the replica does not hold yet."""
    replica = runtime.replica
    assert replica is not None
    head = replica.lattice.get_head(signer.public_key)
    seq, prev, height = head if head is not None else (0, bytes(32), 0)
    writer = ChainWriter(signer, seq, prev, height)
    writer.observe_height(replica.lattice.get_max_height())
    return writer.append(op if op is not None else Transfer(identity(2).public_key, 5))


def raw_envelope(
    type_name: str,
    version: int,
    body_wire: Any,
    signer: NodeIdentity,
    ts: int,
    net: bytes = NETWORK_ID,
) -> bytes:
    """A correctly signed canonical envelope around any body map (bypasses the schema)."""
    sig = signer.sign(compute_signing_bytes(type_name, version, net, signer.public_key, ts,
                                            body_wire))  # fmt: skip
    fields = {"type": type_name, "v": version, "net": net, "signer": signer.public_key,
              "ts": ts, "body": body_wire, "sig": sig}  # fmt: skip
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


def ledger_message(
    signer: NodeIdentity, entries: tuple[bytes, ...], *, ts: int | None = None,
    net: bytes = NETWORK_ID,
) -> bytes:  # fmt: skip
    return encode_envelope(LedgerEntries(entries), signer, trio_ms() if ts is None else ts,
                           network_id=net)  # fmt: skip


# -- gossip: one verdict, exactly one counted reason ------------------------------------------


class GossipJudge:
    """Feeds the ledger topic's real validator and checks the bookkeeping of every verdict."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.validator = runtime.validators[TOPIC_LEDGER]
        self.before = snapshot(runtime)

    def __call__(self, data: bytes, source: NodeIdentity | str) -> tuple[Verdict, str]:
        peer = PeerId(source if isinstance(source, str) else source.peer_id)
        counted = Counter(self.validator.reasons)
        message = GossipMessage(TOPIC_LEDGER, peer, peer, data, hashlib.sha256(data).digest())
        verdict = self.validator(message)
        delta = self.validator.reasons - counted
        assert sum(delta.values()) == 1, delta  # every verdict is counted, once
        [reason] = delta
        assert reason == "accept" if verdict is Verdict.ACCEPT else reason.startswith(
            f"{verdict.value}:"
        ), (verdict, reason)  # fmt: skip
        say(f"verdict {verdict.value} ({reason})")
        return verdict, reason

    def refused(self, data: bytes, source: NodeIdentity | str) -> tuple[Verdict, str]:
        verdict, reason = self(data, source)
        assert verdict is not Verdict.ACCEPT, reason
        assert snapshot(self.runtime) == self.before  # a validator never writes
        return verdict, reason


def test_gossip_arbitrary_bytes_are_refused_and_counted(node: NodeRuntime) -> None:
    judge = GossipJudge(node)
    b = identity(1)

    @FAST
    @given(data=st.binary(max_size=2048) | MSGPACK_VALUES.map(msgpack.packb))
    def prop(data: bytes) -> None:
        _verdict, reason = judge.refused(data, b)
        assert reason.split(":", 1)[1] in WIRE_REASONS

    prop()


def test_gossip_envelope_fields_replaced_by_junk_are_refused(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    valid = ledger_message(b, (encode_entry(fresh_entry(runtime, b)),))
    assert judge(valid, b)[0] is Verdict.ACCEPT
    fields = msgpack.unpackb(valid)

    @FAST
    @given(key=st.sampled_from(sorted(fields)), value=MSGPACK_VALUES)
    def prop(key: str, value: Any) -> None:
        junk = dict(fields, **{key: value})
        if junk == fields:
            return
        judge.refused(msgpack.packb(junk), b)

    prop()


def test_gossip_valid_envelopes_with_random_entry_bytes_are_rejected(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    valid = encode_entry(fresh_entry(runtime, b))
    shaped = st.tuples(  # an entry's 6-array shape with hostile fields: reaches deeper checks
        st.sampled_from([b.public_key, bytes(32)]) | MSGPACK_VALUES,
        st.integers(0, 2**64 - 1) | MSGPACK_VALUES,
        st.binary(min_size=32, max_size=32) | MSGPACK_VALUES,
        st.integers(0, 2**64 - 1),
        st.binary(min_size=64, max_size=64) | MSGPACK_VALUES,
        st.lists(MSGPACK_VALUES, max_size=5).map(lambda xs: [len(xs), *xs]) | MSGPACK_VALUES,
    ).map(lambda t: msgpack.packb(list(t)))
    flipped = st.tuples(st.integers(0, len(valid) * 8 - 1)).map(
        lambda t: bytes(x ^ (1 << (t[0] % 8)) if i == t[0] // 8 else x for i, x in enumerate(valid))
    )
    cut = st.integers(1, len(valid) - 1).map(lambda n: valid[:n])
    longer = st.binary(min_size=1, max_size=8).map(lambda tail: valid + tail)
    entry = st.binary(min_size=1, max_size=300) | shaped | flipped | cut | longer

    @FAST
    @given(entries=st.lists(entry, min_size=1, max_size=4), keep_valid=st.booleans())
    def prop(entries: list[bytes], keep_valid: bool) -> None:
        batch = (valid, *entries) if keep_valid else tuple(entries)  # one bad entry spoils all
        verdict, reason = judge.refused(ledger_message(b, batch), b)
        assert verdict is Verdict.REJECT and reason.startswith("reject:entry_"), reason

    prop()


def test_gossip_well_formed_entries_of_any_kind_never_crash_the_replica(node: NodeRuntime) -> None:
    """Entries that decode and carry the publisher's valid signature, with any operation and
    any seq, prev and height: refused with a counted reason, or accepted and then placed,
    pended or refused by the replica (counted) as the runtime would do on delivery."""
    runtime = node
    replica = runtime.replica
    assert replica is not None
    judge = GossipJudge(runtime)
    b = identity(1)
    outcomes = [s.value for s in AddStatus]

    @FAST
    @given(op=operations, seq=st.integers(0, 3) | st.integers(0, SEQ_MAX),
           prev=st.just(bytes(32)) | st.binary(min_size=32, max_size=32),
           height=st.integers(0, 8) | st.integers(0, HEIGHT_MAX))  # fmt: skip
    def prop(op: Any, seq: int, prev: bytes, height: int) -> None:
        data = ledger_message(b, (encode_entry(build_entry(b, seq, prev, height, op)),))
        verdict, reason = judge(data, b)
        if verdict is not Verdict.ACCEPT:
            assert snapshot(runtime) == judge.before
            assert reason.startswith(("reject:entry_", "ignore:entry_", "ignore:duplicate"))
            return
        counted = sum(replica.counters[o] for o in outcomes) + sum(replica.refused.values())
        replica.on_gossip(decode_envelope(data, trio_ms(), network_id=NETWORK_ID))
        after = sum(replica.counters[o] for o in outcomes) + sum(replica.refused.values())
        assert after >= counted + 1  # the delivered entry's outcome was counted
        judge.before = snapshot(runtime)

    prop()


def test_gossip_truncated_or_bit_flipped_messages_are_refused(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    valid = ledger_message(b, (encode_entry(fresh_entry(runtime, b)),))
    assert judge(valid, b)[0] is Verdict.ACCEPT

    @FAST
    @given(cut=st.integers(0, len(valid) - 1), bit=st.integers(0, len(valid) * 8 - 1),
           how=st.sampled_from(["cut", "flip", "both", "append"]))  # fmt: skip
    def prop(cut: int, bit: int, how: str) -> None:
        data = bytearray(valid)
        if how in ("flip", "both"):
            data[bit // 8] ^= 1 << (bit % 8)
        if how in ("cut", "both"):
            del data[cut:]
        if how == "append":
            data.append(bit % 256)
        judge.refused(bytes(data), b)

    prop()


def test_gossip_oversize_is_rejected_before_decoding(node: NodeRuntime) -> None:
    judge = GossipJudge(node)
    b = identity(1)

    @SLOW
    @given(extra=st.integers(1, 64 * 1024), seed=st.integers(0, 2**32), signed=st.booleans())
    def prop(extra: int, seed: int, signed: bool) -> None:
        rng = random.Random(seed)
        if signed:  # a real, correctly signed envelope that is simply too big
            entry = rng.randbytes(ENVELOPE_BYTES_MAX + extra)
            data = encode_envelope(LedgerEntries((entry,)), b, trio_ms(), network_id=NETWORK_ID,
                                   bytes_max=2 * ENVELOPE_BYTES_MAX)  # fmt: skip
        else:
            data = rng.randbytes(ENVELOPE_BYTES_MAX + extra)
        assert judge.refused(data, b) == (Verdict.REJECT, "reject:too_large")

    prop()


def test_gossip_signed_by_another_key_than_the_publisher_is_rejected(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    own = encode_entry(fresh_entry(runtime, b))
    fields = msgpack.unpackb(ledger_message(b, (own,)))

    @FAST
    @given(seed=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64),
           case=st.sampled_from(["other_signer", "other_source", "bad_signature"]))  # fmt: skip
    def prop(seed: bytes, sig: bytes, case: str) -> None:
        stranger = NodeIdentity.from_seed(seed)
        if case == "other_signer":  # the stranger's own valid entry, published under b's id
            entry = encode_entry(fresh_entry(runtime, stranger, Bond(10)))
            expected = judge.refused(ledger_message(stranger, (entry,)), b)
            assert expected == (Verdict.REJECT, "reject:signer_mismatch")
        elif case == "other_source":  # b's message arriving as published by someone else
            expected = judge.refused(ledger_message(b, (own,)), stranger)
            assert expected == (Verdict.REJECT, "reject:signer_mismatch")
        elif sig != fields["sig"]:
            data = msgpack.packb(dict(fields, sig=sig))
            assert judge.refused(data, b) == (Verdict.REJECT, "reject:bad_signature")

    prop()


def test_gossip_entries_of_another_account_than_the_publisher_are_rejected(
    node: NodeRuntime,
) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    others = [identity(0), identity(2), GENESIS_KEY]
    own = encode_entry(fresh_entry(runtime, b))

    @FAST
    @given(who=st.lists(st.sampled_from(range(len(others))), min_size=1, max_size=3),
           with_own=st.booleans(), seed=st.binary(min_size=32, max_size=32))  # fmt: skip
    def prop(who: list[int], with_own: bool, seed: bytes) -> None:
        signers = [others[i] for i in who] + [NodeIdentity.from_seed(seed)]
        foreign = tuple(encode_entry(fresh_entry(runtime, s, Bond(10))) for s in signers)
        batch = (own, *foreign) if with_own else foreign
        verdict = judge.refused(ledger_message(b, batch), b)
        assert verdict == (Verdict.REJECT, "reject:entry_not_publishers")

    prop()


def test_gossip_of_another_network_is_ignored(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    own = encode_entry(fresh_entry(runtime, b))

    @FAST
    @given(net=st.just(b"") | st.binary(min_size=32, max_size=32).filter(lambda n: n != NETWORK_ID))
    def prop(net: bytes) -> None:
        verdict = judge.refused(ledger_message(b, (own,), net=net), b)
        assert verdict == (Verdict.IGNORE, "ignore:wrong_network")

    prop()


def test_gossip_with_a_stale_or_future_timestamp_is_ignored(node: NodeRuntime) -> None:
    runtime = node
    judge = GossipJudge(runtime)
    b = identity(1)
    own = encode_entry(fresh_entry(runtime, b))
    now = trio_ms()
    # Margins cover the wall clock moving on while the test runs (it runs well under a minute).
    stale = st.integers(0, now - SKEW_MS_DEFAULT - 1)
    future = st.integers(now + SKEW_MS_DEFAULT + 120_000, 2**63 - 1)

    @FAST
    @given(ts=stale | future)
    def prop(ts: int) -> None:
        verdict = judge.refused(ledger_message(b, (own,), ts=ts), b)
        assert verdict == (Verdict.IGNORE, "ignore:stale" if ts < now else "ignore:future")

    prop()


def test_gossip_of_other_message_types_is_rejected(node: NodeRuntime) -> None:
    judge = GossipJudge(node)
    b = identity(1)

    @FAST
    @given(body=any_message())
    def prop(body: Any) -> None:
        data = encode_envelope(body, b, trio_ms(), network_id=NETWORK_ID)
        verdict, reason = judge.refused(data, b)
        assert verdict is Verdict.REJECT
        if not isinstance(body, LedgerEntries):
            assert reason == "reject:wrong_topic"
        else:  # random entry bytes
            assert reason.startswith("reject:entry_"), reason

    prop()


def test_gossip_replayed_entries_are_ignored_once_held(node: NodeRuntime) -> None:
    runtime = node
    replica = runtime.replica
    assert replica is not None
    judge = GossipJudge(runtime)
    b = identity(1)
    batch = (encode_entry(fresh_entry(runtime, b)),)
    valid = ledger_message(b, batch)
    assert judge(valid, b) == (Verdict.ACCEPT, "accept")
    replica.on_gossip(decode_envelope(valid, trio_ms(), network_id=NETWORK_ID))  # delivered
    added = snapshot(runtime)
    assert added[0] == judge.before[0] + 1 and added[1] != judge.before[1]
    judge.before = added

    @FAST
    @given(again=st.booleans(), delay_ms=st.integers(1, 60_000))
    def prop(again: bool, delay_ms: int) -> None:
        # The very same bytes, or the same entries in a new envelope (another timestamp).
        data = valid if again else ledger_message(b, batch, ts=trio_ms() + delay_ms)
        assert judge.refused(data, b) == (Verdict.IGNORE, "ignore:duplicate")

    prop()
    # Delivering them again anyway (a replayed delivery) changes nothing either.
    replica.on_gossip(decode_envelope(valid, trio_ms(), network_id=NETWORK_ID))
    again = decode_entry(batch[0], replica.env.config.proof_bytes_max)
    assert replica.add_entries([again], verified=False, source="gossip") == 0
    assert snapshot(runtime) == added


@pytest.mark.parametrize("funded", [True, False])
def test_an_inflated_height_from_a_peer_does_not_stop_the_node_from_signing(
    node: NodeRuntime, funded: bool
) -> None:
    runtime = node
    replica = runtime.replica
    assert replica is not None
    judge = GossipJudge(runtime)
    signer = identity(1) if funded else NodeIdentity.from_seed(b"\x07" * 32)
    me = replica.identity.public_key
    gift = 1000  # to us, at the highest height there is
    entry = build_entry(signer, 0, bytes(32), HEIGHT_MAX, Transfer(me, gift))
    data = ledger_message(signer, (encode_entry(entry),))
    verdict, _reason = judge(data, signer)
    if verdict is Verdict.ACCEPT:
        replica.on_gossip(decode_envelope(data, trio_ms(), network_id=NETWORK_ID))
    # The node still signs its own next entry, at a height that leaves room for the future.
    result = replica.submit(Transfer(identity(2).public_key, 1))
    assert result["height"] < HEIGHT_MAX // 2
    if verdict is Verdict.ACCEPT and funded:
        # The gift sorts after every entry we can sign: it is not spendable, and the wallet
        # says so instead of signing an entry the ledger would skip.
        balance = replica.wallet()["balance"]
        with pytest.raises(WalletRefusal, match="insufficient balance"):
            replica.submit(Bond(balance - gift + 1))
        replica.submit(Bond(balance - gift))


# -- sync server: one refusal, exactly one counted reason -------------------------------------


class SyncJudge:
    """Sends requests to the node's real sync server, one `trio.run` each, on a shared
    MockClock moved on by one second per request (the per-peer bucket refills, so only the rate
    limit test is ever rate limited)."""

    def __init__(self, runtime: NodeRuntime) -> None:
        assert runtime.sync is not None
        self.runtime = runtime
        self.sync = runtime.sync
        self.clock = trio.testing.MockClock()
        self.before = snapshot(runtime)

    def __call__(self, data: bytes, peer: NodeIdentity | str) -> Envelope:
        peer_id = PeerId(peer if isinstance(peer, str) else peer.peer_id)
        self.clock.jump(1.0)
        response = trio.run(self.sync.handle_request, peer_id, data, clock=self.clock)
        envelope = decode_envelope(response, trio_ms(), network_id=NETWORK_ID,
                                   bytes_max=SYNC_RESPONSE_BYTES_MAX)  # fmt: skip
        assert envelope.signer == self.runtime.identity.public_key
        assert snapshot(self.runtime) == self.before  # serving never writes
        return envelope

    def refused(self, data: bytes, peer: NodeIdentity | str) -> str:
        counted = Counter(self.sync.refused_in)
        served = self.sync.counters["served"]
        envelope = self(data, peer)
        assert isinstance(envelope.body, SyncRefused), envelope.type
        reason: str = envelope.body.reason
        assert self.sync.refused_in - counted == Counter({reason: 1})
        assert self.sync.counters["served"] == served
        say(f"refused: {reason}")
        return reason

    def served(self, data: bytes, peer: NodeIdentity | str, expect: type) -> Any:
        counted = Counter(self.sync.refused_in)
        served = self.sync.counters["served"]
        envelope = self(data, peer)
        assert isinstance(envelope.body, expect), envelope.body
        assert self.sync.refused_in == counted
        assert self.sync.counters["served"] == served + 1
        return envelope.body


def request(signer: NodeIdentity, body: Any = None, *, ts: int | None = None,
            net: bytes = NETWORK_ID) -> bytes:  # fmt: skip
    body = SyncFrontierRequest(b"", 16, b"") if body is None else body
    return encode_envelope(body, signer, trio_ms() if ts is None else ts, network_id=net)


def test_sync_arbitrary_bytes_are_refused_and_counted(node: NodeRuntime) -> None:
    runtime = node
    judge = SyncJudge(runtime)
    b = identity(1)
    fields = msgpack.unpackb(request(b))

    junk_field = st.tuples(st.sampled_from(sorted(fields)), MSGPACK_VALUES).map(
        lambda kv: msgpack.packb(dict(fields, **{kv[0]: kv[1]}))
    )

    @FAST
    @given(data=st.binary(max_size=2048) | MSGPACK_VALUES.map(msgpack.packb) | junk_field)
    def prop(data: bytes) -> None:
        if data == msgpack.packb(fields):
            return
        assert judge.refused(data, b) in WIRE_REASONS

    prop()


def test_sync_bad_envelopes_are_refused_by_reason(node: NodeRuntime) -> None:
    runtime = node
    judge = SyncJudge(runtime)
    b = identity(1)
    now = trio_ms()
    stamps = iter(range(now, 2**62))
    body = to_wire(SyncFrontierRequest(b"", 16, b""), SyncFrontierRequest)

    @FAST
    @given(seed=st.binary(min_size=32, max_size=32),
           net=st.just(b"") | st.binary(min_size=32, max_size=32).filter(lambda n: n != NETWORK_ID),
           skew=st.integers(SKEW_MS_DEFAULT + 120_000, 10**12), type_name=st.text(min_size=1,
           max_size=64), version=st.integers(0, 2**16 - 1), sig=st.binary(min_size=64,
           max_size=64),
           case=st.sampled_from(["network", "signer", "source", "stale", "future", "type",
                                 "version", "signature"]))  # fmt: skip
    def prop(seed: bytes, net: bytes, skew: int, type_name: str, version: int, sig: bytes,
             case: str) -> None:  # fmt: skip
        stranger = NodeIdentity.from_seed(seed)
        fresh = next(stamps)  # never a replay of an earlier example (hypothesis replays some)
        if case == "network":
            assert judge.refused(request(b, ts=fresh, net=net), b) == "wrong_network"
        elif case == "signer":  # signed by a stranger, sent by b
            assert judge.refused(request(stranger, ts=fresh), b) == "signer_mismatch"
        elif case == "source":  # signed by b, sent by a stranger
            assert judge.refused(request(b, ts=fresh), stranger) == "signer_mismatch"
        elif case == "stale":
            assert judge.refused(request(b, ts=max(0, now - skew)), b) == "stale"
        elif case == "future":
            assert judge.refused(request(b, ts=now + skew), b) == "future"
        elif case == "type" and type_name not in {name for (name, _), _c in REGISTRY}:
            data = raw_envelope(type_name, 1, body, b, fresh)
            assert judge.refused(data, b) == "unknown_type"
        elif case == "version" and version != 1:
            data = raw_envelope("sync_frontier_request", version, body, b, fresh)
            assert judge.refused(data, b) == "unsupported_version"
        elif case == "signature":
            fields = msgpack.unpackb(request(b, ts=fresh))
            if sig != fields["sig"]:
                assert judge.refused(msgpack.packb(dict(fields, sig=sig)), b) == "bad_signature"

    prop()


def test_sync_oversize_requests_are_refused(node: NodeRuntime) -> None:
    judge = SyncJudge(node)
    b = identity(1)

    @SLOW
    @given(extra=st.integers(1, 64 * 1024), seed=st.integers(0, 2**32), signed=st.booleans())
    def prop(extra: int, seed: int, signed: bool) -> None:
        rng = random.Random(seed)
        if signed:  # schema-valid fields, but too many bytes for a request
            hashes = tuple(rng.randbytes(32) for _ in range(256))
            body = to_wire(SyncHashesRequest(hashes), SyncHashesRequest)
            body["pad"] = rng.randbytes(REQUEST_BYTES_MAX + extra)
            data = raw_envelope("sync_hashes_request", 1, body, b, trio_ms() + seed)
        else:
            data = rng.randbytes(REQUEST_BYTES_MAX + extra)
        assert len(data) > REQUEST_BYTES_MAX
        assert judge.refused(data, b) == "too_large"

    prop()


def test_sync_a_replayed_request_is_refused(node: NodeRuntime) -> None:
    judge = SyncJudge(node)
    b = identity(1)
    now = trio_ms()

    @FAST
    @given(offset=st.integers(0, 10**9), items_max=st.integers(1, 4096))
    def prop(offset: int, items_max: int) -> None:
        # A distinct request per example (hypothesis also replays examples while shrinking).
        data = request(b, SyncFrontierRequest(b"", items_max, b""), ts=now + offset % 60_000)
        if data in seen:
            assert judge.refused(data, b) == "replay"
            return
        seen.add(data)
        judge.served(data, b, SyncFrontierResponse)
        assert judge.refused(data, b) == "replay"
        assert judge.refused(data, b) == "replay"

    seen: set[bytes] = set()
    prop()


def bad_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Values that break one field's schema: out of range, too long or short, wrong type."""
    lim = spec.limits
    options: list[st.SearchStrategy[Any]] = []
    if spec.kind is int:
        if lim.value_min > -(2**63):
            options.append(st.integers(-(2**63), lim.value_min - 1))
        if lim.value_max < 2**64 - 1:
            options.append(st.integers(lim.value_max + 1, 2**64 - 1))
        options.append(MSGPACK_VALUES.filter(lambda v: type(v) is not int))
    elif spec.kind is bytes:
        assert lim.length_max is not None
        options.append(st.binary(min_size=lim.length_max + 1, max_size=lim.length_max + 64))
        if lim.length_min > 0:
            options.append(st.binary(max_size=lim.length_min - 1))
        options.append(MSGPACK_VALUES.filter(lambda v: not isinstance(v, bytes)))
    else:  # tuple[bytes, ...]
        assert lim.length_max is not None and lim.item is not None
        item = st.binary(min_size=32, max_size=32)
        options.append(st.lists(item, min_size=lim.length_max + 1, max_size=lim.length_max + 4))
        if lim.length_min > 0:
            options.append(st.just([]))
        bad_item = bad_value(FieldSpec("item", bytes, lim.item))
        options.append(st.tuples(st.lists(item, max_size=3), bad_item).map(lambda t: [*t[0], t[1]]))
        options.append(MSGPACK_VALUES.filter(lambda v: not isinstance(v, list)))
    return st.one_of(options)


@st.composite
def bad_request_body(draw: st.DrawFn) -> tuple[str, Any]:
    cls = draw(st.sampled_from(SYNC_REQUEST_TYPES))
    specs = field_specs(cls)
    body: Any = {s.name: to_wire(draw(strategy_for(s.kind, s.limits)), s.kind) for s in specs}
    how = draw(st.sampled_from(["field", "field", "field", "missing", "extra", "order", "map"]))
    if how == "field":
        spec = draw(st.sampled_from(specs))
        body[spec.name] = draw(bad_value(spec))
    elif how == "missing":
        del body[draw(st.sampled_from([s.name for s in specs]))]
    elif how == "extra":
        body[draw(st.text(max_size=8).filter(lambda k: k not in body))] = draw(MSGPACK_VALUES)
    elif how == "order" and len(specs) > 1:
        body = dict(reversed(body.items()))
    else:
        body = draw(MSGPACK_VALUES.filter(lambda v: not isinstance(v, dict)))
    name, _version = REGISTRY.key_of(cls)
    return name, body


def test_sync_malformed_request_bodies_are_refused_by_schema_reason(node: NodeRuntime) -> None:
    judge = SyncJudge(node)
    b = identity(1)
    stamps = iter(range(trio_ms(), 2**62))

    @settings(FAST, max_examples=300)
    @given(case=bad_request_body())
    def prop(case: tuple[str, Any]) -> None:
        name, body = case
        cls = REGISTRY.lookup(name, 1)
        with pytest.raises(WireError) as schema:  # the schema's own verdict on this body
            body_from_wire(body, cls)
        reason = judge.refused(raw_envelope(name, 1, body, b, next(stamps)), b)
        assert reason == schema.value.reason.value
        assert reason in {"bad_fields", "bad_field_type", "field_too_large", "invalid_value",
                          "value_out_of_range", "not_canonical"}  # fmt: skip

    prop()


def test_sync_any_well_formed_request_is_served_without_a_crash(node: NodeRuntime) -> None:
    runtime = node
    judge = SyncJudge(runtime)
    b = identity(1)
    replica = runtime.replica
    assert replica is not None
    known = sorted(replica.lattice.get_accounts())
    stamps = iter(range(trio_ms(), 2**62))
    # Requests about what the node holds, besides random ones (which mostly miss).
    near = st.builds(SyncEntriesRequest, st.sampled_from(known), st.integers(0, 2**40),
                     st.binary(min_size=32, max_size=32), st.integers(1, 512)) | st.builds(
        SyncFrontierRequest, st.sampled_from([b"", *known]) | st.binary(max_size=32),
        st.integers(1, 4096), st.just(b"") | st.binary(min_size=32, max_size=32))  # fmt: skip
    bodies = st.one_of([near, *(body_strategy(c) for c in SYNC_REQUEST_TYPES)])

    @FAST
    @given(body=bodies)
    def prop(body: Any) -> None:
        judge.served(request(b, body, ts=next(stamps)), b, SERVED[type(body)])

    prop()


def test_sync_other_message_types_are_refused_as_wrong_type(node: NodeRuntime) -> None:
    judge = SyncJudge(node)
    b = identity(1)
    stamps = iter(range(trio_ms(), 2**62))

    @FAST
    @given(body=any_message().filter(lambda m: not isinstance(m, SYNC_REQUEST_TYPES)))
    def prop(body: Any) -> None:
        assert judge.refused(request(b, body, ts=next(stamps)), b) == "wrong_type"

    prop()


async def test_sync_rate_limits_a_flooding_peer_and_still_serves_another(
    node: NodeRuntime, mock_clock: trio.testing.MockClock
) -> None:
    runtime = node
    sync = runtime.sync
    assert sync is not None
    before = snapshot(runtime)
    flood, quiet = identity(7), identity(8)  # fresh buckets; the clock stands still
    burst = int(2 * runtime.config.ledger.sync_requests_per_s)
    extra = 25
    now = trio_ms()
    answers: list[Any] = []

    async def ask(peer: NodeIdentity, ts: int) -> None:
        raw = await sync.handle_request(PeerId(peer.peer_id), request(peer, ts=ts))
        answers.append(decode_envelope(raw, trio_ms(), network_id=NETWORK_ID,
                                       bytes_max=SYNC_RESPONSE_BYTES_MAX).body)  # fmt: skip

    async with trio.open_nursery() as nursery:
        for i in range(burst + extra):  # all at once
            nursery.start_soon(ask, flood, now + i)
    limited = [a for a in answers if isinstance(a, SyncRefused)]
    assert len(limited) == extra
    assert all(a.reason == "rate_limited" and a.retry_after_ms == 1000 for a in limited)
    assert sum(isinstance(a, SyncFrontierResponse) for a in answers) == burst
    assert sync.refused_in == Counter({"rate_limited": extra})
    answers.clear()
    await ask(quiet, now)  # another peer has its own bucket
    await ask(flood, now + burst + extra)  # still limited: no time has passed
    assert isinstance(answers[0], SyncFrontierResponse)
    assert isinstance(answers[1], SyncRefused) and answers[1].reason == "rate_limited"
    mock_clock.jump(1.0)  # a second later the flooder's bucket has refilled a little
    await ask(flood, now + burst + extra + 1)
    assert isinstance(answers[2], SyncFrontierResponse)
    assert sync.refused_in == Counter({"rate_limited": extra + 1})
    assert snapshot(runtime) == before


# -- after all that: the node still syncs -----------------------------------------------------


async def test_a_fuzzed_node_still_serves_a_real_sync(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as c:
        for n in c.nodes:
            without_rate_limits(n)
        a, b = c.nodes
        assert a.replica and b.replica and a.sync and b.sync
        rng = random.Random(20240611)
        before = snapshot(a)
        # Bad requests over the real request/response path, from b to a.
        bad = [rng.randbytes(rng.randrange(1, 600)) for _ in range(40)]
        bad.append(request(b.identity, net=OTHER_NET))
        bad.append(request(identity(5)))  # signer != the requesting peer
        replayed = request(b.identity, ts=trio_ms() - 1000)
        bad += [replayed, replayed]
        refused = []
        to_a = PeerId(a.identity.peer_id)
        for data in bad:
            raw = await b.transport.request(to_a, PROTOCOL_LEDGER_SYNC, data, 10)
            body = decode_envelope(raw, trio_ms(), network_id=NETWORK_ID,
                                   bytes_max=SYNC_RESPONSE_BYTES_MAX).body  # fmt: skip
            if isinstance(body, SyncRefused):
                refused.append(body.reason)
        assert len(refused) == len(bad) - 1  # all but the first copy of `replayed`
        assert {"wrong_network", "signer_mismatch", "replay"} <= set(refused)
        assert all(a.sync.refused_in[r] >= refused.count(r) for r in set(refused))
        # Bad gossip published by b: a's validator refuses and counts each, delivers nothing.
        validator = a.validators[TOPIC_LEDGER]
        counted = sum(validator.reasons.values())
        stranger = NodeIdentity.from_seed(bytes(32))
        own = encode_entry(fresh_entry(a, b.identity))
        gossip = [rng.randbytes(rng.randrange(1, 600)) for _ in range(20)]
        gossip += [ledger_message(b.identity, (own,), net=OTHER_NET),
                   ledger_message(b.identity, (encode_entry(fresh_entry(a, stranger)),)),
                   ledger_message(b.identity, (b"\x93\x01",))]  # fmt: skip
        for data in gossip:
            await b.transport.publish(TOPIC_LEDGER, data)
        await c.wait_until(lambda: sum(validator.reasons.values()) >= counted + len(gossip))
        assert snapshot(a) == before
        assert a.transport.statistics().drops.get("validator_error", 0) == 0
        # Entries that gossip cannot carry to b (partitioned), then a real sync session.
        c.net.partition({a.identity.peer_id}, {b.identity.peer_id})
        hashes = [a.replica.submit(Transfer(b.identity.public_key, 7))["hash"] for _ in range(5)]
        c.net.heal()
        assert await b.sync.sync_with(to_a)
        assert all(b.replica.has_entry(bytes.fromhex(h)) for h in hashes)
        assert b.replica.lattice.compute_root() == a.replica.lattice.compute_root()
        assert b.sync.counters["entries_received"] >= 5
