"""Notifications end to end below the scheduler loop, on both databases and with real
receivers: events become messages on a real webhook and a real SMTP server, through Apprise;
cooldown, resolutions, reminders, escalation, quiet hours and storm digests follow an injected
clock; a dead channel fails with retries and delays no other; secrets stay encrypted."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.config import ConfigError, Settings, load_settings
from core.events import new_event
from core.fleet import acknowledge_service_failed
from core.groups import assign_group, create_group
from core.models import Client, Notification, NotificationChannel, NotificationRule
from core.notify_channels import (
    ChannelError,
    SecretBox,
    create_channel,
    parse_notify_urls,
    redact,
)
from core.notify_messages import plain
from core.notify_plan import Policy
from scheduler.notifications import (
    PlanNotifications,
    SendNotifications,
    SyncDeclaredChannels,
    retry_delay,
)
from tests.helpers import wait_until
from tests.receivers import dead_url, smtp_server, webhook_server

T0 = datetime(2026, 11, 30, 3, 12, tzinfo=UTC)
SCREEN = "00000000-0000-4000-8000-000000000001"
UNIT = "infoscreen-player.service"


class Notifier:
    """The scheduler's notification jobs, stepped by the test with its own clock."""

    def __init__(self, db, **settings):
        self.db = db
        self.settings = Settings.model_validate({"DATABASE_URL": db.url, **settings})
        self.sync = SyncDeclaredChannels(self.settings)
        self.plan = PlanNotifications(Policy.from_settings(self.settings))
        self.sender = SendNotifications.from_settings(self.settings)

    def step(self, job, now):
        with self.db.sessions() as session, session.begin():
            return job(session, now)

    def cycle(self, now: datetime) -> None:
        """As one scheduler cycle: channels, planning until done, a send step; then the
        sends' outcomes are written."""
        self.step(self.sync, now)
        while self.step(self.plan, now):
            pass
        self.step(self.sender, now)
        self.settle(now)

    def settle(self, now: datetime) -> None:
        def landed() -> bool:
            self.step(self.sender, now)
            return not self.sender.flights

        wait_until(landed, timeout=20, message="the sends to finish")

    def log(self) -> list[Notification]:
        with self.db.sessions() as session:
            return list(session.scalars(select(Notification).order_by(Notification.id)))

    def close(self) -> None:
        self.sender.close()


@pytest.fixture
def notifier_for(db):
    made = []

    def make(**settings) -> Notifier:
        notifier = Notifier(db, **settings)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def add_screen(db, uuid=SCREEN, hostname="entrance-hall", group: str | None = None) -> str:
    with db.sessions() as session, session.begin():
        session.add(Client(uuid=uuid, hostname=hostname, first_seen_at=T0, last_seen_at=T0))
        session.flush()
        if group:
            made = create_group(session, T0, name=group, description=None,
                                supported_actions=None, actor="test")
            assign_group(session, T0, uuid, made.id, "test")
    return uuid


def raise_event(db, type_: str, severity: str, at: datetime, uuid: str | None = SCREEN,
                **details) -> None:
    with db.sessions() as session, session.begin():
        if type_ == "service_failed":
            client = session.get(Client, uuid)
            client.service_failed_at, client.service_failed_unit = at, details.get("unit")
            client.service_failed_acknowledged_at = None
        session.add(new_event(type_, severity, at, uuid, **details))


def texts(hook) -> list[str]:
    return [f"{m.get('title')}\n{m.get('message')}" for m in hook.received]


# Delivery ---------------------------------------------------------------------------------


def test_a_service_failure_reaches_the_webhook_once_and_its_acknowledgement_resolves_it(
        db, notifier_for):
    add_screen(db, group="Building A")
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url)
        raise_event(db, "service_failed", "error", T0, unit=UNIT)
        notifier.cycle(T0)
        [message] = texts(hook)
        assert "entrance-hall" in message and UNIT in message and "Building A" in message
        assert f"/clients/{SCREEN}" in message
        assert hook.received[0]["type"] == "failure"

        raise_event(db, "service_failed", "error", T0 + timedelta(minutes=5), unit=UNIT)
        notifier.cycle(T0 + timedelta(minutes=5))
        assert len(hook.received) == 1  # within the cooldown: nothing

        with db.sessions() as session, session.begin():
            acknowledge_service_failed(session, SCREEN, actor="olga",
                                       now=T0 + timedelta(minutes=6))
        notifier.cycle(T0 + timedelta(minutes=6))
        assert len(hook.received) == 2
        assert "acknowledged" in texts(hook)[1] and "olga" in texts(hook)[1]
        assert hook.received[1]["type"] == "success"
    states = [(n.kind, n.state, n.attempts) for n in notifier.log()]
    assert states == [("alert", "sent", 1), ("resolution", "sent", 1)]


def test_an_email_arrives_with_the_screens_name_in_its_subject(db, notifier_for):
    add_screen(db)
    with smtp_server() as mailbox:
        notifier = notifier_for(NOTIFY_URLS=mailbox.url)
        raise_event(db, "client_down", "error", T0)
        notifier.cycle(T0)
        [mail] = mailbox.messages
    assert "entrance-hall" in mail["Subject"] and mail["To"] == "ops@example.org"
    assert "entrance-hall" in mail.get_body(("plain",)).get_content()


def test_a_resolution_goes_only_where_the_alert_went(db, notifier_for):
    add_screen(db)
    with webhook_server() as first, webhook_server() as second:
        notifier = notifier_for(NOTIFY_URLS=first.url)
        raise_event(db, "client_down", "error", T0)
        notifier.cycle(T0)
        later = notifier_for(NOTIFY_URLS=f"{first.url} {second.url}")
        raise_event(db, "client_recovered", "info", T0 + timedelta(minutes=1))
        later.cycle(T0 + timedelta(minutes=1))
        assert len(first.received) == 2 and second.received == []
        raise_event(db, "crash_cleared", "info", T0 + timedelta(minutes=2))  # no alert before
        later.cycle(T0 + timedelta(minutes=2))
        assert len(first.received) == 2


def test_a_dead_channel_retries_with_backoff_then_fails_and_delays_no_other(db, notifier_for):
    add_screen(db)
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=f"{dead_url()},{hook.url}", NOTIFY_MAX_ATTEMPTS=3,
                                NOTIFY_SEND_TIMEOUT_SECONDS=2)
        raise_event(db, "client_down", "error", T0)
        notifier.cycle(T0)
        assert len(hook.received) == 1
        dead = [n for n in notifier.log() if n.state != "sent"]
        [row] = dead
        assert (row.state, row.attempts) == ("pending", 1) and row.error
        assert row.next_attempt_at == T0 + retry_delay(1)
        notifier.cycle(T0 + timedelta(seconds=10))  # not due yet
        assert notifier.log()[0].attempts == 1
        for n in (1, 2):
            notifier.cycle(T0 + retry_delay(1) + retry_delay(2) * (n - 1) + timedelta(seconds=1))
        [row] = [n for n in notifier.log() if n.state != "sent"]
        assert (row.state, row.attempts) == ("failed", 3)
        assert "127.0.0.1" not in row.error or "gone" not in row.error  # no URL in the error
    assert retry_delay(2) == 2 * retry_delay(1) and retry_delay(50) == timedelta(hours=1)


# Noise control ----------------------------------------------------------------------------


def test_twenty_screens_down_together_are_one_digest(db, notifier_for):
    for n in range(20):
        add_screen(db, uuid=f"00000000-0000-4000-8000-{n:012d}", hostname=f"hall-{n:02d}",
                   group="Building A" if n == 0 else None)
    with db.sessions() as session, session.begin():
        group_id = session.scalar(select(Client.group_id).where(Client.hostname == "hall-00"))
        for n in range(1, 20):
            session.get(Client, f"00000000-0000-4000-8000-{n:012d}").group_id = group_id
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url)
        with db.sessions() as session, session.begin():
            session.add_all(new_event("client_down", "error", T0, f"00000000-0000-4000-8000-"
                                      f"{n:012d}") for n in range(20))
        notifier.cycle(T0)
        [message] = hook.received
    assert message["title"].startswith("20 screens down in Building A, since 2026-11-30 03:12")
    assert "hall-00 is down" in message["message"] and "hall-19 is down" in message["message"]
    kinds = sorted({(n.kind, n.state) for n in notifier.log()})
    assert kinds == [("alert", "folded"), ("digest", "sent")]


def test_after_a_digest_what_follows_within_the_window_is_gathered(db, notifier_for):
    uuids = [add_screen(db, uuid=f"00000000-0000-4000-8000-{n:012d}", hostname=f"hall-{n:02d}")
             for n in range(12)]
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url, NOTIFY_DIGEST_THRESHOLD=3)
        for uuid in uuids[:6]:
            raise_event(db, "client_down", "error", T0, uuid)
        notifier.cycle(T0)
        assert len(hook.received) == 1  # a digest of six
        for n, uuid in enumerate(uuids[6:9]):
            raise_event(db, "client_down", "error", T0 + timedelta(seconds=10 + n), uuid)
            notifier.cycle(T0 + timedelta(seconds=10 + n))
        assert len(hook.received) == 1  # gathered
        notifier.cycle(T0 + timedelta(seconds=61))
        assert len(hook.received) == 2 and hook.received[1]["title"].startswith("3 screens down")


def test_quiet_hours_send_only_errors_then_sum_up_the_rest(db, notifier_for):
    add_screen(db)
    night = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url, NOTIFY_QUIET_HOURS="22:00-06:00",
                                NOTIFY_TIMEZONE="Europe/Berlin")
        raise_event(db, "screen_black", "warning", night)
        raise_event(db, "certificate_expiring", "warning", night, None, daysLeft=10)
        raise_event(db, "client_down", "error", night + timedelta(minutes=1))
        notifier.cycle(night + timedelta(minutes=1))
        assert [m["title"] for m in hook.received] == ["entrance-hall is down"]
        notifier.cycle(night + timedelta(hours=6))  # 05:30 in Berlin: still quiet
        assert len(hook.received) == 1
        notifier.cycle(night + timedelta(hours=7))  # 06:30: over
        assert len(hook.received) == 2
        summary = hook.received[1]
    assert summary["title"] == "2 notifications during quiet hours"
    assert "black screen" in summary["message"] and "certificate" in summary["message"]


def test_an_unacknowledged_alert_is_reminded_then_escalated(db, notifier_for):
    add_screen(db)
    with webhook_server() as hook, webhook_server() as boss:
        notifier = notifier_for(NOTIFY_URLS=f"{hook.url} escalation={boss.url}",
                                NOTIFY_REMINDER_SECONDS=3600, NOTIFY_ESCALATE_AFTER_SECONDS=5400)
        raise_event(db, "service_failed", "error", T0, unit=UNIT)
        notifier.cycle(T0)
        assert (len(hook.received), len(boss.received)) == (1, 1)  # the alert goes to both
        notifier.cycle(T0 + timedelta(minutes=59))
        assert len(hook.received) == 1
        notifier.cycle(T0 + timedelta(minutes=61))
        assert hook.received[1]["title"].startswith("Reminder: Service failed on entrance-hall")
        notifier.cycle(T0 + timedelta(minutes=91))
        assert boss.received[-1]["title"].startswith("Escalation: Service failed")
        assert len(hook.received) == 2  # the escalation goes to the escalation channel only
        notifier.cycle(T0 + timedelta(minutes=200))
        assert len([m for m in boss.received if m["title"].startswith("Escalation")]) == 1
        with db.sessions() as session, session.begin():
            acknowledge_service_failed(session, SCREEN, actor="olga",
                                       now=T0 + timedelta(minutes=201))
        before = len(hook.received)
        notifier.cycle(T0 + timedelta(minutes=400))
        assert [m["type"] for m in hook.received[before:]] == ["success"]  # no more reminders


def test_rules_choose_event_types_severity_channels_and_group(db, notifier_for):
    add_screen(db, group="Building A")
    add_screen(db, uuid="00000000-0000-4000-8000-000000000002", hostname="library")
    with webhook_server() as a, webhook_server() as b:
        notifier = notifier_for(NOTIFY_URLS=f"{a.url} {b.url}")
        notifier.step(notifier.sync, T0)
        with db.sessions() as session, session.begin():
            first, second = session.scalars(select(NotificationChannel.id)
                                            .order_by(NotificationChannel.id)).all()
            group_id = session.get(Client, SCREEN).group_id
            session.add(NotificationRule(event_types=["tv_power_error"], min_severity="warning",
                                         channel_ids=[second], group_id=group_id, created_at=T0))
        raise_event(db, "tv_power_error", "warning", T0)
        raise_event(db, "tv_power_error", "warning", T0,
                    "00000000-0000-4000-8000-000000000002")  # not in the group
        raise_event(db, "client_down", "error", T0)  # no rule for it any more
        notifier.cycle(T0)
    assert a.received == [] and [m["title"] for m in b.received] == [
        "tv_power_error on entrance-hall"]


# Channels and secrets -------------------------------------------------------------------------


def test_channel_urls_are_encrypted_at_rest_and_shown_redacted(db):
    box = SecretBox("a" * 40)
    url = "json://ops:hunter2-secret@hooks.example.org:8443/path/token-abc?x=1"
    with db.sessions() as session, session.begin():
        channel = create_channel(session, box, T0, name="ops", url=url, actor="test")
        stored, shown = channel.url_encrypted, channel.url_redacted
    assert "hunter2" not in stored and "token-abc" not in stored
    assert box.decrypt(stored) == url
    assert shown == "json://ops:****@hooks.example.org:8443/…"
    with pytest.raises(ChannelError, match="NOTIFY_SECRET_KEY"):
        SecretBox("b" * 40).decrypt(stored)
    assert redact("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general").startswith(
        "slack://T...2/")


def test_notify_urls_are_split_tagged_and_checked():
    channels = parse_notify_urls(
        "json://a.example/hook, escalation=mailto://u:p@mail.example?to=a@x.org,b@x.org "
        "ops+night=ntfy://ntfy.sh/alerts")
    assert [(c.url.split("://")[0], c.tags) for c in channels] == [
        ("json", ()), ("mailto", ("escalation",)), ("ntfy", ("ops", "night"))]
    assert channels[1].url.endswith("to=a@x.org,b@x.org")
    with pytest.raises(ChannelError, match="entry 2: a nope:// URL") as caught:
        parse_notify_urls("json://a.example/ok nope://secret-token@x")
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize("environ, said", [
    ({"NOTIFY_URLS": "nope://hidden-token@x"}, "NOTIFY_URLS entry 1"),
    ({"NOTIFY_QUIET_HOURS": "22-06"}, "NOTIFY_QUIET_HOURS"),
    ({"NOTIFY_QUIET_HOURS": "25:00-06:00"}, "NOTIFY_QUIET_HOURS"),
    ({"NOTIFY_TIMEZONE": "Mars/Olympus"}, "NOTIFY_TIMEZONE"),
    ({"NOTIFY_LANGUAGE": "fr"}, "NOTIFY_LANGUAGE"),
])
def test_bad_notification_settings_are_refused_by_name(environ, said, tmp_path):
    (tmp_path / ".env").write_text("")
    with pytest.raises(ConfigError, match=said) as caught:
        load_settings(environ, dotenv_path=tmp_path / ".env")
    assert "hidden-token" not in str(caught.value)


def test_production_refuses_a_missing_or_weak_notify_secret_key(tmp_path):
    base = {"INFOSCREEN_ENV": "production", "MQTT_USER": "svc", "MQTT_PASSWORD": "p" * 40,
            "SECRET_KEY": "s" * 40}
    (tmp_path / ".env").write_text("")
    with pytest.raises(ConfigError, match="NOTIFY_SECRET_KEY"):
        load_settings(base, dotenv_path=tmp_path / ".env")
    key_file = tmp_path / "notify.key"
    key_file.write_text("k" * 40 + "\n")
    settings = load_settings({**base, "NOTIFY_SECRET_KEY_FILE": str(key_file)},
                             dotenv_path=tmp_path / ".env")
    assert settings.notify_secret_key == "k" * 40


# Messages ---------------------------------------------------------------------------------


def test_device_text_is_plain_text_in_every_channel(db, notifier_for):
    add_screen(db, hostname="**hall** [click](http://evil.example) <b>x</b> #1\n`rm`")
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url)
        raise_event(db, "service_failed", "error", T0, unit="<script>alert(1)</script>")
        notifier.cycle(T0)
        [message] = texts(hook)
    for markup in ("**", "[click]", "](", "<b>", "<script>", "`", "\n#"):
        assert markup not in message
    assert plain("a\x00b\x1b[31mc") == "a b ［31mc"


def test_messages_in_german(db, notifier_for):
    add_screen(db)
    with webhook_server() as hook:
        notifier = notifier_for(NOTIFY_URLS=hook.url, NOTIFY_LANGUAGE="de",
                                NOTIFY_TIMEZONE="Europe/Berlin")
        raise_event(db, "service_failed", "error", T0, unit=UNIT)
        notifier.cycle(T0)
        with db.sessions() as session, session.begin():
            acknowledge_service_failed(session, SCREEN, actor="olga", now=T0)
        notifier.cycle(T0 + timedelta(seconds=1))
    assert hook.received[0]["title"] == "Dienst ausgefallen auf entrance-hall"
    assert "04:12 CET" in hook.received[0]["message"]
    assert hook.received[1]["title"] == "Dienstausfall auf entrance-hall quittiert"


def test_notify_urls_channels_follow_the_setting(db, notifier_for):
    with webhook_server() as a, webhook_server() as b:
        notifier_for(NOTIFY_URLS=f"{a.url} {b.url}").step(
            SyncDeclaredChannels(Settings(NOTIFY_URLS=f"{a.url} {b.url}")), T0)
        again = notifier_for(NOTIFY_URLS=b.url)
        again.step(again.sync, T0)
        with db.sessions() as session:
            [channel] = session.scalars(select(NotificationChannel)).all()
            assert channel.source == "env" and channel.url_redacted.startswith("json://127.0.0.1")


def test_a_channel_that_never_answers_holds_up_neither_the_scheduler_nor_others(db,
                                                                                notifier_for):
    import socket

    add_screen(db)
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        with webhook_server() as hook:
            notifier = notifier_for(
                NOTIFY_URLS=f"json://127.0.0.1:{silent.getsockname()[1]}/slow {hook.url}",
                NOTIFY_SEND_TIMEOUT_SECONDS=2, NOTIFY_MAX_ATTEMPTS=1)
            raise_event(db, "client_down", "error", T0)
            notifier.step(notifier.sync, T0)
            notifier.step(notifier.plan, T0)
            notifier.step(notifier.sender, T0)  # hands both out and returns at once
            assert len(notifier.sender.flights) == 2
            wait_until(lambda: hook.received, timeout=10, message="the live channel's message")
            notifier.settle(T0)
        rows = {n.channel_shown.split("/")[2]: n for n in notifier.log()}
        slow = rows[f"127.0.0.1:{silent.getsockname()[1]}"]
        assert (slow.state, slow.attempts) == ("failed", 1) and slow.error
    finally:
        silent.close()


def test_the_examples_in_the_notifications_guide_are_urls_apprise_takes():
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "notifications.md").read_text()
    examples = re.findall(r'^NOTIFY_URLS="([^"]+)"', guide, re.M)
    assert len(examples) >= 6
    for example in examples:
        assert parse_notify_urls(example), example


def test_a_reminder_that_fails_is_not_written_again_every_cycle(db, notifier_for):
    add_screen(db)
    notifier = notifier_for(NOTIFY_URLS=dead_url(), NOTIFY_MAX_ATTEMPTS=1,
                            NOTIFY_REMINDER_SECONDS=3600, NOTIFY_ESCALATE_AFTER_SECONDS=0,
                            NOTIFY_SEND_TIMEOUT_SECONDS=2)
    raise_event(db, "service_failed", "error", T0, unit=UNIT)
    notifier.cycle(T0)
    [alert] = notifier.log()
    assert alert.state == "failed"  # the alert never went out: nothing to remind of
    with db.sessions() as session, session.begin():
        session.get(Notification, alert.id).state = "sent"  # say it did go out once
    for minutes in (61, 62, 63):
        notifier.cycle(T0 + timedelta(minutes=minutes))
    reminders = [n for n in notifier.log() if n.kind == "reminder"]
    assert [(r.state, r.attempts) for r in reminders] == [("failed", 1)]
