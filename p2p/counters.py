"""Counters and bounded hand-off queues shared by the transport implementations.

Every message that is not delivered is counted here under a reason, so no drop is silent. The
delivery queues are bounded memory channels filled with `send_nowait`: a slow consumer costs
counted drops, never unbounded memory or a stalled network task.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from p2p.abc import GossipMessage, PeerEvent, Validator, Verdict

T = TypeVar("T")
_log = logging.getLogger("p2p")


class BoundedOutbox(Generic[T]):
    """A bounded channel written without blocking; overflow is counted under `drop_reason`."""

    def __init__(self, size: int, counters: TransportCounters, drop_reason: str) -> None:
        self.send, self.receive = trio.open_memory_channel[T](size)
        self._counters = counters
        self._drop_reason = drop_reason

    def put(self, item: T) -> bool:
        try:
            self.send.send_nowait(item)
        except trio.WouldBlock:
            self._counters.drop(self._drop_reason)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._counters.drop("receiver_closed")
            return False
        return True

    def depth(self) -> int:
        return self.send.statistics().current_buffer_used


class TransportCounters:
    """Message and request counters by topic/protocol, verdict and drop reason."""

    def __init__(self) -> None:
        self.messages_in: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.messages_out: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.requests_in: Counter[str] = Counter()
        self.requests_out: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._changed = trio.Event()

    def verdict(self, topic: str, verdict: Verdict) -> None:
        self.messages_in[topic][verdict.value] += 1
        self._notify()

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds, re-checked whenever a verdict or drop is counted."""
        with trio.fail_after(timeout_s):
            while not predicate():
                await self._changed.wait()

    def snapshot_in(self) -> dict[str, dict[str, int]]:
        return {topic: dict(c) for topic, c in self.messages_in.items()}


def judge(
    validator: Validator | None, message: GossipMessage, bytes_max: int, counters: TransportCounters
) -> Verdict:
    """The verdict on one inbound gossip message, shared by both transports, counted by topic."""
    if validator is None:
        counters.drop("not_subscribed")
        verdict = Verdict.IGNORE
    elif len(message.data) > bytes_max:
        counters.drop("oversize")
        verdict = Verdict.REJECT
    else:
        try:
            verdict = validator(message)
        except Exception:  # a validator bug must not let a remote peer crash the node
            _log.exception("validator for %s raised; message rejected", message.topic)
            counters.drop("validator_error")
            verdict = Verdict.REJECT
    counters.verdict(message.topic, verdict)
    return verdict


class Deliveries:
    """Per-topic bounded subscriber queues plus the peer-event queue of one transport."""

    def __init__(self, counters: TransportCounters, queue_max: int, events_max: int) -> None:
        self._counters = counters
        self._queue_max = queue_max
        self._topics: dict[str, BoundedOutbox[GossipMessage]] = {}
        self.events: BoundedOutbox[PeerEvent] = BoundedOutbox(
            events_max, counters, "peer_events_full"
        )

    def open(self, topic: str) -> trio.MemoryReceiveChannel[GossipMessage]:
        outbox: BoundedOutbox[GossipMessage] = BoundedOutbox(
            self._queue_max, self._counters, f"delivery_full:{topic}"
        )
        self._topics[topic] = outbox
        return outbox.receive

    def is_subscribed(self, topic: str) -> bool:
        return topic in self._topics

    def topics(self) -> tuple[str, ...]:
        return tuple(sorted(self._topics))

    def deliver(self, message: GossipMessage) -> None:
        outbox = self._topics.get(message.topic)
        if outbox is None:
            self._counters.drop("not_subscribed")
            return
        if outbox.put(message):
            self._counters.delivered[message.topic] += 1

    def depths(self) -> dict[str, int]:
        out = {f"delivery:{t}": o.depth() for t, o in self._topics.items()}
        out["peer_events"] = self.events.depth()
        return out

    def close(self) -> None:
        for outbox in self._topics.values():
            outbox.send.close()
        self.events.send.close()
