"""Cross-process wakes: an OTP pushed to a sender that a drain in another worker process owns
reaches that drain at once.

Without it the owner sees the OTP only at its next planned look (up to the reservation
horizon later, measured ~110 ms median on ``wanotify bench pacing``), since a push to an
owned sender kicks nobody. ``lua/push.lua`` publishes the sender's name on
:data:`~wanotify.pacing.lanes.WAKE_CHANNEL`; every worker runtime listens and sets the
waker of its drain for that sender, if it has one. A lost wake costs only latency (the drain
still looks at its planned time), so the listener reconnects quietly after a Redis outage
or a Sentinel failover.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aredis

from wanotify.pacing.lanes import WAKE_CHANNEL

log = logging.getLogger("wanotify.dispatch")

RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)


async def listen(client: aredis.Redis, wake: Callable[[str], None],
                 ready: asyncio.Event | None = None) -> None:
    """Call ``wake(sender)`` for every wake published, until cancelled."""
    failures = 0
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(WAKE_CHANNEL)
            if ready is not None:
                ready.set()
            if failures:
                log.info("wake channel listened to again")
            failures = 0
            while True:
                msg = await pubsub.get_message(timeout=5.0)
                if msg is None or msg.get("type") != "message":
                    continue
                data = msg.get("data")
                wake(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away or failing over: wakes are an optimisation
            if failures == 0:
                log.warning("wake channel lost (%s); OTPs wait for the next planned look", type(exc).__name__)
            await asyncio.sleep(RECONNECT_S[min(failures, len(RECONNECT_S) - 1)])
            failures += 1
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # the connection is already gone
                log.debug("closing the wake subscription failed", exc_info=True)
