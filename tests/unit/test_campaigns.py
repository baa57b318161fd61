"""Campaigns: audience import, state changes, the daily budget, and a run end to end."""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from wanotify.campaigns.audience import import_audience
from wanotify.campaigns.records import CampaignError
from wanotify.campaigns.service import change, create, status
from wanotify.compliance.consent import Preference, record_preferences


def _rnd() -> str:
    # Ends in 7: never one of the sandbox's failure-rule numbers (*0000, *0001, *0002), which
    # one run in twenty hit among 240 random numbers (a campaign that never all arrived).
    return f"+9198{uuid.uuid4().int % 10**7:07d}7"


def _campaign(**kw: Any) -> uuid.UUID:
    return uuid.UUID(create(kw.pop("name", "Winter sale"), kw.pop("template", "seasonal_sale"), **kw)["id"])


def test_csv_import_validates_every_row_and_reports_lines(db: Any) -> None:
    cid = _campaign()
    opted, dup = _rnd(), _rnd()
    with db() as s:
        record_preferences(s, [Preference(opted, True, datetime.now(UTC), "keyword")])
    csv_text = "\n".join([
        "to,body_1,body_2,tz,email",          # 1
        f"{_rnd()},Asha,20%,Asia/Kolkata,",   # 2 ok
        f"{dup},Ravi,10%,,ravi@example.com",  # 3 ok
        "+91123,Bad,10%,,",                   # 4 phone
        f"{_rnd()},Meera,,,",                 # 5 empty body_2
        f"{_rnd()},Too,many,cells,,x",        # 6 cell count
        f"{_rnd()},Zed,5%,Mars/Base,",        # 7 tz
        f"{dup},Ravi again,15%,,",            # 8 duplicate
        f"{opted},Opted,30%,,",               # 9 opted out
        "",                                   # 10 blank
        f'{_rnd()},"Line\nbreak",25%,,',      # 11-12 quoted newline: ok
        f"{_rnd()},Last,{'x' * 1100},,",      # 13 too long
    ])
    r = import_audience(cid, io.StringIO(csv_text, newline=""))
    assert r.accepted == 3 and r.duplicates == 1 and r.opted_out == 1
    assert [(x["line"], x["reason"].split(":")[0]) for x in r.rejected] == [
        (4, "to"), (5, "body_2"), (6, "6 cells; the header has 5"), (7, "tz"), (13, "body_2")]
    assert "missing parameter" in r.rejected[1]["reason"]
    st = status(cid)
    assert st["counts"]["total"] == 4 and st["counts"]["rejected"] == 5 and st["counts"]["opted_out"] == 1


def test_jsonl_import_and_a_header_without_to(db: Any) -> None:
    cid = _campaign()
    lines = [f'{{"to": "{_rnd()}", "params": ["Asha", "20%"], "tz": "Europe/London"}}', "not json",
             f'{{"to": "{_rnd()}", "params": ["Only one"]}}']
    r = import_audience(cid, io.StringIO("\n".join(lines)), "jsonl")
    assert r.accepted == 1 and [x["line"] for x in r.rejected] == [2, 3]
    r2 = import_audience(cid, io.StringIO("phone,body_1\n+919811176543,x\n", newline=""))
    assert r2.rejected == [{"line": 1, "reason": "the header has no 'to' column"}]


def test_state_changes_and_their_refusals(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wanotify.campaigns.service.kick_fanout", lambda *a, **k: True)
    cid = _campaign(kind="transactional", template="appointment_reminder")
    with pytest.raises(CampaignError) as e:
        change(cid, "start")
    assert e.value.status == 409 and e.value.field == "audience"
    import_audience(cid, io.StringIO(f"to,body_1,body_2,body_3\n{_rnd()},Asha,3 Dec,10:30\n", newline=""))
    for action, want in (("start", "running"), ("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        assert change(cid, action)["status"] == want
    for action in ("start", "pause", "resume", "cancel"):
        with pytest.raises(CampaignError) as e:
            change(cid, action)
        assert e.value.status == 409
    with pytest.raises(CampaignError):
        import_audience(cid, io.StringIO("to,body_1\n", newline=""))
    later = _campaign(start_at=datetime.now(UTC) + timedelta(hours=1))
    import_audience(later, io.StringIO(f"to,body_1,body_2\n{_rnd()},A,5%\n", newline=""))
    assert change(later, "start")["status"] == "scheduled"
    with pytest.raises(CampaignError) as e:
        change(uuid.uuid4(), "start")
    assert e.value.status == 404


def test_bad_campaigns_are_refused_naming_the_field(db: Any) -> None:
    for kw, field in ((dict(template="nope"), "template"), (dict(sender="ghost"), "sender"),
                      (dict(kind="otp"), "kind"), (dict(start_at=datetime(2026, 12, 1)), "start_at"),
                      (dict(cron="0 9 * *"), "cron"), (dict(cron="61 * * * *"), "cron"),
                      (dict(cron="CRON_TZ=Mars/Base 0 9 * * *"), "cron")):
        with pytest.raises(CampaignError) as e:
            _campaign(**kw)
        assert e.value.field == field and e.value.status == 422


def test_the_daily_budget_refuses_a_campaign_too_large(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    from wanotify.config import reset_settings

    senders = json.loads(os.environ["WANOTIFY_SENDERS"])
    senders[0]["daily_unique_limit"] = 3  # marketing may use 80%: 2 recipients
    monkeypatch.setenv("WANOTIFY_SENDERS", json.dumps(senders))
    reset_settings()
    try:
        cid = _campaign()
        rows = "".join(f"{_rnd()},A,5%\n" for _ in range(3))
        import_audience(cid, io.StringIO("to,body_1,body_2\n" + rows, newline=""))
        with pytest.raises(CampaignError) as e:
            change(cid, "start")
        assert e.value.status == 409 and "3 recipients" in e.value.reason and "2 of 3" in e.value.reason
    finally:
        monkeypatch.undo()
        reset_settings()


def test_a_campaign_end_to_end_with_pause_and_resume(stack: Any, db: Any) -> None:
    """HTTP only: create, upload, start, pause mid-way (nothing goes while paused), resume;
    every recipient gets exactly one message; counts add up."""
    from conftest import wait_for

    n = 240  # three seconds at 80 mps
    phones = [_rnd() for _ in range(n)]
    csv_text = "to,body_1,body_2\n" + "".join(f"{p},Guest {i},{i % 50}%\n" for i, p in enumerate(phones))
    csv_text += "+91123,Bad,1%\n"
    with stack.api() as api, stack.sandbox() as sb:
        before = sb.get("/_sandbox/messages", params={"limit": 1}).json()["last_seq"]
        r = api.post("/v1/campaigns", json={"name": "Winter", "template": "seasonal_sale", "language": "en"})
        assert r.status_code == 201 and r.json()["status"] == "draft"
        cid = r.json()["id"]
        up = api.post(f"/v1/campaigns/{cid}/audience", content=csv_text.encode(),
                      headers={"Content-Type": "text/csv"})
        assert up.status_code == 200 and up.json()["accepted"] == n
        assert up.json()["rejected"] == [{"line": n + 2, "reason": up.json()["rejected"][0]["reason"]}]
        assert api.post(f"/v1/campaigns/{cid}:start").json()["status"] == "running"

        def sent() -> int:
            log = sb.get("/_sandbox/messages", params={"after": before, "limit": 100000}).json()["data"]
            return sum(1 for m in log if m["code"] == 0)

        wait_for(lambda: sent() >= 40, what="sending started")
        assert api.post(f"/v1/campaigns/{cid}:pause").json()["status"] == "paused"
        paused_at = time.time()
        time.sleep(1.0)  # what was already at the gate may still go
        at_pause = sent()
        time.sleep(2.5)
        after_pause = sent()
        if after_pause != at_pause:
            log = sb.get("/_sandbox/messages", params={"after": before, "limit": 100000}).json()["data"]
            late = [m for m in log if m["code"] == 0][at_pause:]
            raise AssertionError(f"sent while paused (pause at {paused_at}): {late}")
        assert after_pause == at_pause < n  # nothing while paused
        assert api.post(f"/v1/campaigns/{cid}:resume").json()["status"] == "running"
        counts: dict[str, int] = {}

        def reached() -> bool:
            counts.update(api.get(f"/v1/campaigns/{cid}").json()["counts"])
            return counts["delivered"] + counts["read"] == n

        try:
            wait_for(reached, timeout=60, what="every recipient delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; counts {counts}") from None
        log = sb.get("/_sandbox/messages", params={"after": before, "limit": 100000}).json()["data"]
        mine = {p.lstrip("+") for p in phones}  # (other tests' held jobs may go meanwhile)
        got = [m["to"].lstrip("+") for m in log if m["code"] == 0 and m["to"].lstrip("+") in mine]
        dupes = sorted({g for g in got if got.count(g) > 1})
        assert not dupes, f"sent twice: {dupes}"
        assert sorted(got) == sorted(p.lstrip("+") for p in phones)  # each exactly once
        st = api.get(f"/v1/campaigns/{cid}").json()
        assert st["counts"]["total"] == n and st["counts"]["rejected"] == 1
        assert st["cost"]["billable"] >= 1 and "marketing" in st["cost"]["billable_by_category"]
        wait_for(lambda: api.get(f"/v1/campaigns/{cid}").json()["status"] == "completed", timeout=30,
                 what="completed")
        st = api.get(f"/v1/campaigns/{cid}").json()
        from prometheus_client.parser import text_string_to_metric_families

        samples = {(x.name, x.labels.get("status") or x.labels.get("state") or x.labels.get("category")): x.value
                   for fam in text_string_to_metric_families(httpx.get(f"{stack.web_url}/metrics").text)
                   for x in fam.samples if x.labels.get("campaign") == cid and x.labels.get("name") == "Winter"}
        assert samples[("wanotify_campaign_state", "completed")] == 1.0
        for k in ("delivered", "read", "rejected", "total"):
            assert samples[("wanotify_campaign_messages", k)] == st["counts"][k]
        assert samples[("wanotify_campaign_billable_messages", "marketing")] == \
            st["cost"]["billable_by_category"]["marketing"]
        assert api.post(f"/v1/campaigns/{cid}:pause").status_code == 409
        assert api.get(f"/v1/campaigns/{uuid.uuid4()}").status_code == 404
        assert api.get("/v1/campaigns/nope").status_code == 422
    assert httpx.get(f"{stack.web_url}/v1/campaigns/{cid}").status_code == 401


def test_cancel_ends_queued_jobs_at_once(stack: Any, db: Any) -> None:
    from conftest import wait_for

    n = 400
    csv_text = "to,body_1,body_2\n" + "".join(f"{_rnd()},G,{i % 50}%\n" for i in range(n))
    with stack.api() as api:
        cid = api.post("/v1/campaigns", json={"name": "Cancel me", "template": "seasonal_sale"}).json()["id"]
        api.post(f"/v1/campaigns/{cid}/audience", content=csv_text.encode(), headers={"Content-Type": "text/csv"})
        api.post(f"/v1/campaigns/{cid}:start")
        wait_for(lambda: api.get(f"/v1/campaigns/{cid}").json()["counts"]["accepted"]
                 + api.get(f"/v1/campaigns/{cid}").json()["counts"]["delivered"] > 10, what="sending")
        assert api.post(f"/v1/campaigns/{cid}:cancel").json()["status"] == "cancelled"
        time.sleep(2.0)
        st = api.get(f"/v1/campaigns/{cid}").json()
        c = st["counts"]
    assert c["cancelled"] > 0 and c["queued"] == 0
    with db() as s:
        open_jobs = s.execute(text("SELECT count(*) FROM notifications WHERE campaign_id = :c"
                                   " AND status IN ('queued', 'sending')"), {"c": cid}).scalar_one()
    assert open_jobs == 0


def _running(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> uuid.UUID:
    monkeypatch.setattr("wanotify.campaigns.service.kick_fanout", lambda *a, **k: True)
    cid = _campaign(**kw)
    n = 3 if kw.get("template") == "appointment_reminder" else 2
    head = ",".join(f"body_{i}" for i in range(1, n + 1))
    import_audience(cid, io.StringIO(f"to,{head}\n{_rnd()}," + ",".join("x" * n) + "\n", newline=""))
    assert change(cid, "start")["status"] == "running"
    return cid


@pytest.mark.parametrize("fixture", ["template_status_paused.json", "template_quality_update_red.json"])
def test_meta_pausing_a_template_or_rating_it_red_pauses_its_campaigns(
        db: Any, monkeypatch: pytest.MonkeyPatch, fixture: str, no_stack_ingest: None) -> None:
    import json
    from pathlib import Path

    from wanotify.inbound.ingest import ingest_inbox, store_webhooks

    cid = _running(monkeypatch)
    other = _running(monkeypatch, template="appointment_reminder", kind="transactional")
    doc = json.loads((Path(__file__).resolve().parents[1] / "data" / "webhooks" / fixture).read_text())
    doc["entry"][0]["changes"][0]["value"]["message_template_name"] = "seasonal_sale"
    ingest_inbox(store_webhooks([json.dumps(doc).encode()]))
    st = status(cid)
    assert st["status"] == "paused" and "seasonal_sale" in st["status_reason"]
    assert status(other)["status"] == "running"
    assert change(cid, "resume")["status"] == "running"  # an operator decides


def test_spam_or_policy_errors_pause_the_senders_campaigns(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from wanotify.campaigns.pausing import auto_pause

    cid = _running(monkeypatch)
    assert str(cid) in auto_pause("Meta error 131048 on sender main", sender="main")
    assert status(cid)["status"] == "paused" and "131048" in status(cid)["status_reason"]


def test_cron_schedules_are_parsed_by_celery_and_name_what_is_wrong() -> None:
    from wanotify.campaigns.cron import CronError, parse

    wed = datetime(2026, 11, 25, 19, 0, tzinfo=UTC)  # a Wednesday
    assert parse("30 9 * * 1-5").next_after(wed) == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert parse("30 9 * * 1-5").next_after(datetime(2026, 11, 27, 10, 0, tzinfo=UTC)) == \
        datetime(2026, 11, 30, 9, 30, tzinfo=UTC)  # Friday after 09:30: Monday
    assert parse("CRON_TZ=Asia/Kolkata 30 9 * * *").next_after(wed) == datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
    assert parse("@hourly").next_after(wed) == datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    assert parse("*/5 * * * *").next_after(wed + timedelta(seconds=30)) == wed + timedelta(minutes=5)
    assert parse("  0   0 1 1 * ").expression == "0 0 1 1 *"
    for bad, words in (("", "empty"), ("* * *", "3 fields"), ("61 * * * *", "61"),
                       ("* * 31 2 *", "never occurs"), ("CRON_TZ=Nowhere/X * * * * *", "time zone")):
        with pytest.raises(CronError, match=words):
            parse(bad)


def test_a_recurring_campaign_starts_a_run_each_time_and_follows_pause_and_cancel(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from wanotify.campaigns.fanout import start_due_runs

    kicked: list[uuid.UUID] = []
    monkeypatch.setattr("wanotify.campaigns.service.kick_fanout", lambda cid, *a, **k: kicked.append(cid) or True)
    cid = _campaign(name="Monday digest", cron="0 9 * * 1")
    phones = [_rnd() for _ in range(3)]
    import_audience(cid, io.StringIO("to,body_1,body_2\n" + "".join(f"{p},A,5%\n" for p in phones)
                                     + "+91123,Bad,1%\n", newline=""))
    out = change(cid, "start")
    assert out["status"] == "scheduled"
    first = datetime.fromisoformat(out["next_run_at"])
    assert first > datetime.now(UTC) and first.weekday() == 0 and (first.hour, first.minute) == (9, 0)
    assert start_due_runs(first - timedelta(seconds=1)) == []  # not yet
    runs = start_due_runs(first + timedelta(seconds=2))
    assert len(runs) == 1 and kicked == []  # the tick kicks; start_due_runs only creates
    run = status(runs[0])
    assert run["status"] == "running" and run["parent_id"] == str(cid) and run["name"] == "Monday digest #1"
    assert run["counts"]["total"] == 3 and run["counts"]["pending"] == 3 and run["counts"]["rejected"] == 1
    parent = status(cid)
    assert parent["status"] == "scheduled" and parent["run_count"] == 1
    assert datetime.fromisoformat(parent["next_run_at"]) == first + timedelta(days=7)
    assert [r["id"] for r in parent["recent_runs"]] == [str(runs[0])]
    # Beat down for three weeks: one run when it comes back, and the next time from then.
    later = first + timedelta(days=21, hours=1)
    assert len(start_due_runs(later)) == 1
    assert datetime.fromisoformat(status(cid)["next_run_at"]) == first + timedelta(days=28)
    # Pausing the recurring campaign pauses its active runs and stops new ones.
    assert change(cid, "pause")["status"] == "paused"
    assert status(runs[0])["status"] == "paused"
    assert start_due_runs(first + timedelta(days=60)) == []
    resumed = change(cid, "resume")
    assert resumed["status"] == "scheduled" and status(runs[0])["status"] == "running"
    assert datetime.fromisoformat(resumed["next_run_at"]) > datetime.now(UTC)
    assert change(cid, "cancel")["status"] == "cancelled"
    assert status(runs[0])["status"] == "cancelled"


def test_a_recurring_campaign_is_checked_against_the_budget_at_start_and_at_each_run(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    from wanotify.campaigns.fanout import start_due_runs
    from wanotify.config import reset_settings

    monkeypatch.setattr("wanotify.campaigns.service.kick_fanout", lambda *a, **k: True)
    senders = json.loads(os.environ["WANOTIFY_SENDERS"])
    senders[0]["daily_unique_limit"] = 3  # marketing may reach 2 a day
    monkeypatch.setenv("WANOTIFY_SENDERS", json.dumps(senders))
    reset_settings()
    try:
        big = _campaign(cron="@daily")
        import_audience(big, io.StringIO("to,body_1,body_2\n" + "".join(f"{_rnd()},A,5%\n" for _ in range(3)),
                                         newline=""))
        with pytest.raises(CampaignError) as e:
            change(big, "start")
        assert e.value.status == 409 and "reach 2 unique recipients a day" in e.value.reason
        small = _campaign(cron="@daily")
        import_audience(small, io.StringIO(f"to,body_1,body_2\n{_rnd()},A,5%\n{_rnd()},B,5%\n", newline=""))
        nxt = datetime.fromisoformat(change(small, "start")["next_run_at"])
        monkeypatch.setattr("wanotify.pacing.lanes.Tier.used", lambda self, r: 2)  # today's budget is spent
        assert start_due_runs(nxt + timedelta(seconds=1)) == []
        st = status(small)
        assert st["run_count"] == 0 and "skipped" in st["status_reason"] and "0 unique recipients left" in \
            st["status_reason"]
        assert datetime.fromisoformat(st["next_run_at"]) == nxt + timedelta(days=1)
    finally:
        monkeypatch.undo()
        reset_settings()


def test_a_recurring_campaign_over_http_sends_each_run(stack: Any, db: Any) -> None:
    """Created with a cron schedule over HTTP; when its time comes (set in the database here,
    as the clock would), the worker's tick starts a run that sends to every recipient."""
    from conftest import wait_for

    phones = [_rnd() for _ in range(5)]
    csv_text = "to,body_1,body_2\n" + "".join(f"{p},Guest,{i}%\n" for i, p in enumerate(phones))
    with stack.api() as api:
        bad = api.post("/v1/campaigns", json={"name": "R", "template": "seasonal_sale", "cron": "every day"})
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "cron"
        cid = api.post("/v1/campaigns", json={"name": "Weekly", "template": "seasonal_sale",
                                              "cron": "CRON_TZ=Asia/Kolkata 0 10 * * 6"}).json()["id"]
        api.post(f"/v1/campaigns/{cid}/audience", content=csv_text.encode(), headers={"Content-Type": "text/csv"})
        st = api.post(f"/v1/campaigns/{cid}:start").json()
        assert st["status"] == "scheduled"
        with db() as s:
            s.execute(text("UPDATE campaigns SET next_run_at = now() - interval '1 second' WHERE id = :id"),
                      {"id": cid})
        got = wait_for(lambda: (api.get(f"/v1/campaigns/{cid}").json()["recent_runs"] or [None])[0],
                       timeout=30, what="a run started")
        wait_for(lambda: api.get(f"/v1/campaigns/{got['id']}").json()["status"] == "completed", timeout=60,
                 what="the run completed")
        run = api.get(f"/v1/campaigns/{got['id']}").json()
        assert run["counts"]["total"] == 5 and run["counts"]["delivered"] + run["counts"]["read"] == 5
        parent = api.get(f"/v1/campaigns/{cid}").json()
        assert parent["status"] == "scheduled" and parent["run_count"] == 1
        assert datetime.fromisoformat(parent["next_run_at"]) > datetime.now(UTC) + timedelta(hours=1)
