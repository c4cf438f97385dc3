"""Choosing provers for a job's open slices from the bids (pure).

Per slice, largest circuits first: among the bids that cover it, from provers that have not
failed it and still have room (awards never exceed the slots a bid reserved), take the lowest
price, then the shortest expected time, then the best reputation, then a seeded tie-break.
So slices spread over provers instead of piling onto the cheapest one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from node.wire.market_messages import Bid, SliceTask


def choose_awards(
    tasks: Mapping[int, SliceTask],
    bids: Mapping[bytes, Bid],
    failed: Mapping[int, set[bytes]],
    busy: Mapping[bytes, int],
    reputation: Mapping[bytes, int],
    rng: random.Random,
) -> dict[int, tuple[bytes, int]]:
    """slice index -> (prover, price) for every slice some bid can take."""
    used = dict(busy)
    chosen: dict[int, tuple[bytes, int]] = {}
    order = sorted(tasks.values(), key=lambda t: (-t.logrows, t.index))
    ties = {p: rng.random() for p in sorted(bids)}
    for task in order:
        candidates = [
            (bid.price, bid.expected_ms, -reputation.get(p, 0), ties[p], p)
            for p, bid in bids.items()
            if task.index in bid.slices
            and p not in failed.get(task.index, set())
            and used.get(p, 0) < bid.capacity
            and bid.price <= task.max_price
        ]
        if not candidates:
            continue
        price, _, _, _, prover = min(candidates)
        used[prover] = used.get(prover, 0) + 1
        chosen[task.index] = (prover, price)
    return chosen
