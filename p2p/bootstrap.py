"""Keep a connection to one bootstrap peer: redial whenever it is gone, with jittered backoff.

Transport-independent: the caller passes how to dial, how to tell whether the peer is connected
and how to wait for a change in the peer set.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import trio

from p2p.abc import TransportSettings
from p2p.counters import TransportCounters
from p2p.errors import DialFailed

_log = logging.getLogger("p2p.bootstrap")


async def keep_connected(
    addr: str,
    dial: Callable[[str], Awaitable[object]],
    is_connected: Callable[[], bool],
    wait_peers_changed: Callable[[], Awaitable[None]],
    settings: TransportSettings,
    counters: TransportCounters,
    rng: random.Random | None = None,
) -> None:
    """Runs until cancelled."""
    rng = rng or random.Random()
    backoff = settings.bootstrap_backoff_s_min
    while True:
        if is_connected():
            backoff = settings.bootstrap_backoff_s_min
            # Re-check at least every backoff_s_max even if no change is signalled.
            with trio.move_on_after(settings.bootstrap_backoff_s_max):
                await wait_peers_changed()
            continue
        try:
            await dial(addr)
        except DialFailed as exc:
            counters.drop("bootstrap_dial_failed")
            _log.info("bootstrap %s unreachable (%s); retry in %.1f s", addr, exc, backoff)
            await trio.sleep(backoff * rng.uniform(0.75, 1.25))
            backoff = min(backoff * 2, settings.bootstrap_backoff_s_max)
