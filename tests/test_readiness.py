"""/readyz names each check (database, broker, the scheduler's last good cycle) and answers
503 when one fails; the scheduler records a cycle as good only when no job failed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import utc_now
from core.scheduler_state import last_good_cycle, record_good_cycle
from scheduler.loop import Scheduler
from server import create_app
from tests.conftest import make_settings
from tests.helpers import close_web_app, free_port

pytestmark = pytest.mark.broker


def web_app(settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def record(db, ago: float) -> None:
    with db.sessions() as session, session.begin():
        record_good_cycle(session, utc_now() - timedelta(seconds=ago))


def test_ready_when_database_broker_and_scheduler_are(db, broker):
    app = web_app(make_settings(broker, db.url, SECRET_KEY="k" * 40))
    try:
        client = app.test_client()
        waiting = client.get("/readyz")
        assert waiting.status_code == 503
        checks = waiting.json["checks"]
        assert checks["database"]["ok"] and checks["broker"]["ok"]
        assert checks["scheduler"] == {"ok": False, "detail": "no good cycle recorded yet",
                                       "maxAgeSeconds": 120}
        record(db, 5)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json["status"] == "ok"
        assert ready.json["checks"]["scheduler"]["ageSeconds"] >= 5
        record(db, 600)  # a scheduler that stopped ten minutes ago
        stale = client.get("/readyz")
        assert stale.status_code == 503 and not stale.json["checks"]["scheduler"]["ok"]
    finally:
        close_web_app(app)


def test_not_ready_without_the_broker(db, broker):
    record(db, 1)
    app = web_app(make_settings(broker, db.url, SECRET_KEY="k" * 40, MQTT_PORT=free_port()))
    try:
        response = app.test_client().get("/readyz")
    finally:
        close_web_app(app)
    assert response.status_code == 503
    assert response.json["checks"]["broker"]["ok"] is False
    assert response.json["checks"]["database"]["ok"] is True


def test_a_cycle_is_good_only_when_no_job_failed(db):
    def fine(session, now):
        return False

    def broken(session, now):
        raise RuntimeError("a job's bad day")

    with db.sessions() as session:
        assert last_good_cycle(session) is None
    Scheduler(db.sessions, [("broken", broken), ("fine", fine)]).run_cycle()
    with db.sessions() as session:
        assert last_good_cycle(session) is None
    Scheduler(db.sessions, [("fine", fine)]).run_cycle()
    with db.sessions() as session:
        assert last_good_cycle(session) is not None


def test_a_standing_by_scheduler_records_nothing(db):
    Scheduler(db.sessions, [("fine", lambda s, n: False)], leader=lambda: False).run_cycle()
    with db.sessions() as session:
        assert last_good_cycle(session) is None
