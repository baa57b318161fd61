"""The sweeper: makes sure nothing committed is ever stranded.

* a sender with work and no live dispatcher (its worker died) gets a dispatcher;
* a job committed but never pushed (crash between commit and push), or lost from Redis
  (Redis restarted), is pushed again; claims make a second copy harmless;
* webhook bodies stored but not ingested are ingested; early statuses are applied.

Every worker runs it on a timer; a Redis lock makes one run per interval.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from wanotify.campaigns.fanout import tick
from wanotify.config import get_settings
from wanotify.core.phones import digits
from wanotify.db import session_scope
from wanotify.delivery.fallback import due_for_deadline, stale_running
from wanotify.inbound.apply import reconcile_unmatched
from wanotify.inbound.ingest import drain_spool, pending_inbox_ids
from wanotify.pacing.lanes import Lanes, entry, kick_lane, push_entries
from wanotify.privacy.retention import wipe_otp_codes
from wanotify.queues import enqueue
from wanotify.redis import get_redis

log = logging.getLogger("wanotify.worker.sweeper")

LOCK_KEY = "wn:sweeper:lock"


def sweep(force: bool = False) -> dict[str, int]:
    settings = get_settings()
    r = get_redis()
    interval_ms = int(settings.sweep_interval_s * 1000)
    if not force and not r.set(LOCK_KEY, "1", nx=True, px=max(1000, interval_ms - 200)):
        return {"skipped": 1}
    lanes = Lanes(r)
    kicked = 0
    for s in settings.sender_list:
        lane = lanes.needs_dispatch(s.name)
        if lane is not None:
            kick_lane(s.name, lane)
            kicked += 1
    repushed = repush_stranded(settings.lease_s)
    spooled = drain_spool()  # bodies kept in Redis while Postgres was away
    pending = spooled + pending_inbox_ids(older_than_s=max(5.0, settings.sweep_interval_s))
    for k in range(0, len(pending), 100):
        enqueue.ingest(pending[k : k + 100], top_up=False)
    failed_late = reconcile_unmatched()
    enqueue.fallback(failed_late, "failed status webhook")
    late = due_for_deadline(settings.otp_delivery_deadline_s)
    enqueue.fallback(late, "not delivered within the deadline")
    again = stale_running(settings.lease_s)
    enqueue.fallback(again, "fallback runner lost")
    campaigns = tick()  # beat does this too; here it also runs where no beat is deployed
    wiped = wipe_otp_codes()  # OTP codes are not kept once nothing can send them
    out = {"kicked": kicked, "repushed": repushed, "ingest": len(pending), "failed_late": len(failed_late),
           "fallback_deadline": len(late), "fallback_retried": len(again), **campaigns,
           "otp_codes_wiped": wiped}
    if any(out.values()):
        log.info("sweep", extra=out)
    return out


def repush_stranded(lease_s: float, limit: int = 5000) -> int:
    """Push jobs that Postgres says are waiting but no Redis lane or lease holds."""
    cutoff = datetime.now(UTC) - timedelta(seconds=max(10.0, lease_s / 4))
    with session_scope() as s:
        rows = s.execute(
            text(
                "SELECT id, sender, kind, to_number FROM notifications"
                " WHERE open_since < :cut"  # (open: queued or sending; since its last update)
                " AND (campaign_id IS NULL OR NOT EXISTS (SELECT 1 FROM campaigns c"
                "      WHERE c.id = campaign_id AND c.status = 'paused'))"  # resume re-pushes those
                " ORDER BY open_since LIMIT :n"
            ),
            {"cut": cutoff, "n": limit},
        ).all()
    if not rows:
        return 0
    lanes = Lanes(get_redis())
    by_sender: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for row in rows:
        by_sender[row.sender].append((str(row.id), row.kind, row.to_number))
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    n = 0
    for sender, items in by_sender.items():
        present = lanes.contains(sender, [i for i, _, _ in items])
        for (job_id, kind, to), here in zip(items, present, strict=True):
            if not here:
                groups[(sender, kind)].append(entry(kind, job_id, digits(to)))
                n += 1
    if groups:
        log.warning("re-pushing %d stranded jobs", n)
        push_entries(groups)  # kicks a dispatcher wherever none owns the sender
    return n


class SweeperThread(threading.Thread):
    """Runs ``sweep`` every interval inside a worker process."""

    def __init__(self) -> None:
        super().__init__(name="wanotify-sweeper", daemon=True)
        self.stop_event = threading.Event()

    def run(self) -> None:
        interval = get_settings().sweep_interval_s
        while not self.stop_event.wait(interval):
            try:
                sweep()
            except Exception:
                log.exception("sweep failed; will try again")

    def stop(self) -> None:
        self.stop_event.set()
